"""mpi4py.futures beside parjob's mpi backend (issue 12): MPIPoolExecutor.map of pjwork's add()
and spin_us() through ctypes — the same machine code bench/mpi_bench calls — with the best of
several chunksizes.  scripts/bench runs it as rank 0 of the same layouts as mpi_bench:

    mpirun -n 3 python3 -m mpi4py.futures bench/mpi_peer.py    # 2 worker ranks
    mpirun -n 2 python3 -m mpi4py.futures bench/mpi_peer.py    # 1 worker rank

mpi4py.futures runs one task per worker rank (no local workers), so the 1-rank layout has one
worker.  Lines as bench/bench_util.h prints them: bench=mpi_peer workload=... metric=...
Environment: PJWORK_LIB (libpjwork.so), PJBENCH_RUNS (default 5), PJBENCH_MPI_TINY (tasks,
default 20000: mpi4py is slow per task)."""
import ctypes
import os
import statistics
import time

from mpi4py.futures import MPIPoolExecutor

_lib = None


def lib():
    global _lib
    if _lib is None:
        _lib = ctypes.CDLL(os.environ["PJWORK_LIB"])
        _lib.add.restype, _lib.add.argtypes = ctypes.c_int, [ctypes.c_int, ctypes.c_int]
        _lib.spin_us.restype, _lib.spin_us.argtypes = ctypes.c_double, [ctypes.c_double]
    return _lib


def add_one(i):
    return lib().add(i, 1)


def spin_5ms(_):
    return lib().spin_us(5000.0)


def timed(ex, fn, n, chunksize, runs):
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        for _ in ex.map(fn, range(n), chunksize=chunksize):
            pass
        times.append(time.perf_counter() - t0)
    return times


def report(workload, metric, values, extra):
    values = sorted(values)
    print(f"bench=mpi_peer workload={workload} metric={metric} median={statistics.median(values):.6g}"
          f" min={values[0]:.6g} max={values[-1]:.6g} runs={len(values)} {extra}", flush=True)


def main():
    runs = int(os.environ.get("PJBENCH_RUNS", "5"))
    n_tiny = int(os.environ.get("PJBENCH_MPI_TINY", "20000"))
    from mpi4py import MPI
    workers = MPI.COMM_WORLD.Get_size() - 1  # the -m mpi4py.futures layout: the others serve
    with MPIPoolExecutor() as ex:
        list(ex.map(add_one, range(workers * 4)))  # every worker started
        best = None
        for chunk in (1, 16, 256, 4096):
            rates = [n_tiny / t for t in timed(ex, add_one, n_tiny, chunk, runs)]
            if best is None or statistics.median(rates) > statistics.median(best[1]):
                best = (chunk, rates)
        report("tiny", "tasks_per_s", best[1],
               f"peer=mpi4py_futures workers={workers} tasks={n_tiny} chunksize={best[0]}")
        n = 40 * workers
        best = None
        for chunk in (1, 4):
            speedups = []
            for _ in range(runs):  # each against a serial loop timed just before it
                t0 = time.perf_counter()
                for i in range(n):
                    spin_5ms(i)
                serial = time.perf_counter() - t0
                speedups.append(serial / timed(ex, spin_5ms, n, chunk, 1)[0])
            if best is None or statistics.median(speedups) > statistics.median(best[1]):
                best = (chunk, speedups)
        report("cpu5ms", "speedup", best[1],
               f"peer=mpi4py_futures workers={workers} tasks={n} chunksize={best[0]}")


if __name__ == "__main__":
    main()
