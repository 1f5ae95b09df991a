"""ctypes binding of libpjwork.so, importable by worker processes.

Tasks sent to process pools must be picklable, and a ctypes function pointer is not: the work
functions are therefore plain module-level functions here, pickled by reference
(``pjwork.add``), and each process loads the library once when it imports this module.
The library path comes from $PJWORK_LIB (py_peers.py sets it before starting any worker).
"""
import ctypes
import os


def _load():
    lib = ctypes.CDLL(os.environ["PJWORK_LIB"])
    lib.add.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.add.restype = ctypes.c_int
    lib.spin_iters.argtypes = [ctypes.c_long]
    lib.spin_iters.restype = ctypes.c_double
    lib.spin_us.argtypes = [ctypes.c_double]
    lib.spin_us.restype = ctypes.c_double
    lib.sleep_s.argtypes = [ctypes.c_double]
    lib.sleep_s.restype = ctypes.c_double
    lib.pjwork_iters_per_us.argtypes = []
    lib.pjwork_iters_per_us.restype = ctypes.c_double
    return lib


_lib = _load()
_add, _spin_iters, _sleep_s = _lib.add, _lib.spin_iters, _lib.sleep_s


def add(a, b):
    return _add(a, b)


def spin_iters(iters):
    """Spin for a precomputed iteration count: workers need no calibration of their own."""
    return _spin_iters(iters)


def sleep_s(s):
    return _sleep_s(s)


def iters_per_us():
    return _lib.pjwork_iters_per_us()


def pid(_=None):
    return os.getpid()
