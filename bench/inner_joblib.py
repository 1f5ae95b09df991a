"""joblib's side of inner_bench: the same OpenMP task (omp_steps of this build's libpjomp,
called through ctypes) with joblib's default backend (loky), n_jobs=-1, with joblib's limit on
inner threads (its default, cpu_count() // n_jobs) and off (inner_max_num_threads = cpu_count(),
what a worker's OpenMP would start unlimited), against a serial loop in this process.

    inner_joblib.py LIBPJOMP TASKS STEPS ITERS RUNS

Prints inner_bench's lines (bench=joblib ...): the speedup of each round (a serial loop, then a
run of each setting after a warm-up run), and the context switches of one more run of each
setting and its CPU seconds (this process and its reaped workers: the difference between
starting the workers and running twice, and starting them and running once)."""
import ctypes
import resource
import statistics
import sys
import time

from joblib import Parallel, cpu_count, delayed, parallel_backend
from joblib.externals.loky import get_reusable_executor

LIB, TASKS, STEPS, ITERS, RUNS = sys.argv[1], *map(int, sys.argv[2:6])
_lib = None  # loaded where the task runs: a ctypes handle cannot be pickled


def omp_steps(steps, iters):
    global _lib
    if _lib is None:
        _lib = ctypes.CDLL(LIB)
        _lib.omp_steps.restype = ctypes.c_double
        _lib.omp_steps.argtypes = [ctypes.c_long, ctypes.c_long]
    return _lib.omp_steps(steps, iters)


def usage():
    """Context switches (all, involuntary) and CPU seconds of this process and reaped children."""
    s = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (s.ru_nvcsw + c.ru_nvcsw + s.ru_nivcsw + c.ru_nivcsw, s.ru_nivcsw + c.ru_nivcsw,
            s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime)


def serial(lib):
    t0 = time.perf_counter()
    for _ in range(TASKS):
        lib.omp_steps(STEPS, ITERS)
    return time.perf_counter() - t0


def timed_run(inner):
    """A warm-up run (loky restarts its workers when the limit changes), then a timed one."""
    with parallel_backend("loky", inner_max_num_threads=inner):
        par = Parallel(n_jobs=-1, batch_size=1)
        par(delayed(omp_steps)(STEPS, ITERS) for _ in range(TASKS))
        t0 = time.perf_counter()
        par(delayed(omp_steps)(STEPS, ITERS) for _ in range(TASKS))
        return time.perf_counter() - t0


def window(inner, timed):
    """What starting workers, a warm-up run and `timed` more runs use, workers reaped."""
    get_reusable_executor().shutdown(wait=True)
    u0 = usage()
    with parallel_backend("loky", inner_max_num_threads=inner):
        par = Parallel(n_jobs=-1, batch_size=1)
        for _ in range(1 + timed):
            par(delayed(omp_steps)(STEPS, ITERS) for _ in range(TASKS))
    get_reusable_executor().shutdown(wait=True)
    return [b - a for a, b in zip(u0, usage())]


def line(metric, values, extra):
    print(f"bench=joblib workload=omp50ms metric={metric} median={statistics.median(values):.6g}"
          f" min={min(values):.6g} max={max(values):.6g} runs={len(values)} {extra}", flush=True)


serial_lib = ctypes.CDLL(LIB)
serial_lib.omp_steps.restype = ctypes.c_double
serial_lib.omp_steps.argtypes = [ctypes.c_long, ctypes.c_long]
serial(serial_lib)
settings = (("on", None), ("off", cpu_count()))
bases, speedups = [], {limit: [] for limit, _ in settings}
for _ in range(RUNS):  # rounds interleave, as inner_bench's do: the load drifts
    bases.append(serial(serial_lib))
    for limit, inner in settings:
        speedups[limit].append(bases[-1] / timed_run(inner))
u0 = usage()
serial(serial_lib)
u1 = usage()
line("serial_s", bases, f"tasks={TASKS} csw={u1[0] - u0[0]} nivcsw={u1[1] - u0[1]} "
     f"cpu_s={u1[2] - u0[2]:.3f}")
for limit, inner in settings:
    one = [b - a for a, b in zip(window(inner, 0), window(inner, 1))]
    line("speedup", speedups[limit], f"backend=loky limit={limit} n_jobs={cpu_count()} "
         f"csw={one[0]} nivcsw={one[1]} cpu_s={one[2]:.3f}")
