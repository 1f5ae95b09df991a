"""joblib's side of shared_bench (issue 13): one array of WORDS uint64 (1 GiB by default) read
whole by TASKS tasks, with joblib's automatic memmapping (loky, max_nbytes='1M', mmap_mode='r':
the array is dumped once and every worker maps it), and with threads, each task calling the
same C checksum as parjob's (libpjshared, through ctypes).

    shared_joblib.py LIBPJSHARED WORDS TASKS RUNS N_JOBS

Prints shared_bench's lines (bench=shared_bench peer=joblib_<backend> ...): wall seconds of
each run after the workers started, and the parent's peak RSS over all of them (ru_maxrss)."""
import ctypes
import resource
import statistics
import sys
import time

import numpy as np
from joblib import Parallel, delayed

LIB = sys.argv[1]
WORDS, TASKS, RUNS, N_JOBS = map(int, sys.argv[2:6])
_lib = None  # each worker loads its own: a ctypes handle cannot be pickled


def load():
    lib = ctypes.CDLL(LIB)
    lib.pjshared_checksum.restype = ctypes.c_uint64
    lib.pjshared_checksum.argtypes = [ctypes.c_void_p, ctypes.c_uint64]
    return lib


def checksum(a):
    global _lib
    if _lib is None:
        _lib = load()
    return _lib.pjshared_checksum(a.ctypes.data, a.size)


def line(peer, metric, values, extra=""):
    print("bench=shared_bench workload=read_1g peer=%s metric=%s median=%.6g min=%.6g max=%.6g "
          "runs=%d%s" % (peer, metric, statistics.median(values), min(values), max(values),
                         len(values), extra), flush=True)


def main():
    a = np.arange(WORDS, dtype=np.uint64)
    want = load().pjshared_checksum(a.ctypes.data, a.size)  # not _lib: it is pickled
    for backend in ("loky", "threading"):
        times = []
        with Parallel(n_jobs=N_JOBS, backend=backend, max_nbytes="1M", mmap_mode="r") as par:
            par(delayed(checksum)(a) for _ in range(2))  # the workers start
            for r in range(RUNS):
                t0 = time.perf_counter()
                got = par(delayed(checksum)(a) for _ in range(TASKS))
                times.append(time.perf_counter() - t0)
                assert all(g == want for g in got), "wrong checksum"
        line("joblib_" + backend, "wall_s", times, " tasks=%d bytes=%d" % (TASKS, WORDS * 8))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    line("joblib", "parent_peak_rss_over_input", [rss / (WORDS * 8)])


main()
