"""joblib's side of inner_bench: the same tasks with joblib's default backend (loky),
n_jobs=-1, with joblib's limit on inner threads (its default, cpu_count() // n_jobs) and off
(inner_max_num_threads = cpu_count(), what a worker's runtime would start unlimited), against a
serial loop in this process.

    inner_joblib.py LIBPJOMP omp50ms TASKS STEPS ITERS RUNS   omp_steps of this build's
                                                              libpjomp, through ctypes
    inner_joblib.py LIBPJOMP dgemm TASKS N REPS RUNS          numpy's matmul of N x N matrices
                                                              (Debian's libblas.so.3: OpenBLAS
                                                              where libopenblas-dev is there)

Prints inner_bench's lines (bench=joblib ...): the speedup of each round (a serial loop, then a
run of each setting after a warm-up run), and the context switches and CPU seconds of one more
run of each setting, summed over its tasks as each worker measures them (getrusage of the
worker, whose runtime threads are its own; inner_bench's own figures are of whole processes)."""
import ctypes
import resource
import statistics
import sys
import time

from joblib import Parallel, cpu_count, delayed, parallel_backend
from joblib.externals.loky import get_reusable_executor

LIB, WORKLOAD = sys.argv[1:3]
TASKS, A, B, RUNS = map(int, sys.argv[3:7])
_lib = None  # the workers' own handle: a ctypes handle cannot be pickled


def load():
    lib = ctypes.CDLL(LIB)
    lib.omp_steps.restype = ctypes.c_double
    lib.omp_steps.argtypes = [ctypes.c_long, ctypes.c_long]
    return lib


def omp_steps(steps, iters):
    global _lib
    if _lib is None:
        _lib = load()
    return _lib.omp_steps(steps, iters)


def dgemm(n, reps):
    import numpy as np
    a = (np.arange(2 * n * n) % 7 * 0.5).reshape(2 * n, n)
    for _ in range(reps):
        c = a[:n] @ a[n:]
    return float(c[1, 1])


TASK = omp_steps if WORKLOAD == "omp50ms" else dgemm


def usage():
    """Context switches (all, involuntary) and CPU seconds of this process, all its threads."""
    u = resource.getrusage(resource.RUSAGE_SELF)
    return (u.ru_nvcsw + u.ru_nivcsw, u.ru_nivcsw, u.ru_utime + u.ru_stime)


def measured(a, b):
    """TASK(a, b) in a worker, and what the worker used meanwhile (it runs one task at a time:
    its runtime's threads are its own)."""
    u0 = usage()
    TASK(a, b)
    return [y - x for x, y in zip(u0, usage())]


def serial(call):
    t0 = time.perf_counter()
    for _ in range(TASKS):
        call(A, B)
    return time.perf_counter() - t0


def timed_run(inner, task=TASK):
    """A warm-up run (loky restarts its workers when the limit changes), then a timed one:
    its time and results."""
    with parallel_backend("loky", inner_max_num_threads=inner):
        par = Parallel(n_jobs=-1, batch_size=1)
        par(delayed(task)(A, B) for _ in range(TASKS))
        t0 = time.perf_counter()
        out = par(delayed(task)(A, B) for _ in range(TASKS))
        return time.perf_counter() - t0, out


def line(metric, values, extra):
    print(f"bench=joblib workload={WORKLOAD} metric={metric} median={statistics.median(values):.6g}"
          f" min={min(values):.6g} max={max(values):.6g} runs={len(values)} {extra}", flush=True)


if WORKLOAD == "dgemm":
    try:
        import numpy  # noqa: F401
    except ImportError:
        sys.exit(print("inner_joblib.py: numpy not installed, joblib's dgemm skipped",
                       file=sys.stderr))
here = load().omp_steps if WORKLOAD == "omp50ms" else dgemm
serial(here)
settings = (("on", None), ("off", cpu_count()))
bases, speedups = [], {limit: [] for limit, _ in settings}
for _ in range(RUNS):  # rounds interleave, as inner_bench's do: the load drifts
    bases.append(serial(here))
    for limit, inner in settings:
        speedups[limit].append(bases[-1] / timed_run(inner)[0])
u0 = usage()
serial(here)
u1 = usage()
line("serial_s", bases, f"tasks={TASKS} csw={u1[0] - u0[0]} nivcsw={u1[1] - u0[1]} "
     f"cpu_s={u1[2] - u0[2]:.3f}")
for limit, inner in settings:
    used = [sum(col) for col in zip(*timed_run(inner, measured)[1])]
    line("speedup", speedups[limit], f"backend=loky limit={limit} n_jobs={cpu_count()} "
         f"csw={used[0]} nivcsw={used[1]} cpu_s={used[2]:.3f}")
get_reusable_executor().shutdown(wait=True)
