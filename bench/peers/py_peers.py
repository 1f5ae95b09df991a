#!/usr/bin/python3
"""Python peers of parjob: joblib (threading and loky backends) and
concurrent.futures.ProcessPoolExecutor, each calling the C work functions of libpjwork.so
through ctypes, against a serial Python + ctypes loop measured in the same run.

Run with Debian's /usr/bin/python3 (it has joblib):
    /usr/bin/python3 bench/peers/py_peers.py --lib build-bench/peers/libpjwork.so
Environment: PJBENCH_RUNS (default 5), PJBENCH_ONLY (comma list of workloads:
tiny,cpu5ms,cpu50us,sweep,seed,startup,futures), PJWORK_ITERS_PER_US (shared calibration).

Output: one figure per line, in the C harness's format, e.g.
    peer=joblib_loky prog=py_peers workload=cpu50us task_us=50 metric=speedup median=1.6 ...
Where a peer cannot run the full task count in reasonable time (1e6 tiny tasks through joblib's
threading backend take half a minute), it runs fewer, sized from a pilot run to take about
--target seconds, and the line says n=<tasks run> scaled_from=<nominal n>: tasks_per_s is
n / time, and speedup is the ratio of tasks_per_s to the serial loop's.
"""
import argparse
import itertools
import os
import statistics
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree, here or in workers
os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
HERE = os.path.dirname(os.path.abspath(__file__))
PROG = "py_peers"
NCPU = len(os.sched_getaffinity(0))


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lib", default=os.environ.get("PJWORK_LIB",
                    os.path.join(HERE, "..", "..", "build-bench", "peers", "libpjwork.so")))
    ap.add_argument("--runs", type=int, default=int(os.environ.get("PJBENCH_RUNS", "5")))
    ap.add_argument("--target", type=float, default=0.5,
                    help="seconds one measured run of a scaled-down peer should take")
    return ap.parse_args()


ARGS = parse_args()
# Before any worker starts: workers find pjwork.py and the library through the environment.
os.environ["PJWORK_LIB"] = os.path.abspath(ARGS.lib)
os.environ["PYTHONPATH"] = HERE + os.pathsep + os.environ.get("PYTHONPATH", "")
sys.path.insert(0, HERE)

import pjwork  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from joblib import Parallel, delayed  # noqa: E402
import joblib  # noqa: E402


def enabled(name):
    only = os.environ.get("PJBENCH_ONLY", "")
    return not only or name in only.split(",")


def emit(peer, workload, metric, vals, n=None, workers=None, task_us=None, **extra):
    s = sorted(vals)
    fields = [f"peer={peer}", f"prog={PROG}", f"workload={workload}"]
    if task_us is not None:
        fields.append(f"task_us={task_us:g}")
    fields += [f"metric={metric}", f"median={statistics.median(s):.6g}", f"min={s[0]:.6g}",
               f"max={s[-1]:.6g}", f"runs={len(s)}"]
    if n is not None:
        fields.append(f"n={n}")
    if workers is not None:
        fields.append(f"workers={workers}")
    fields += [f"{k}={v}" for k, v in extra.items()]
    print(" ".join(fields), flush=True)


# --- peers: each returns a function run(n) -> seconds that runs n tasks of one kind ---------
# A task is (fn, args_of(i)); results are checked so no peer can skip work.

def check(res, n, expect):
    if len(res) != n or (expect is not None and any(r != e for r, e in zip(res, expect(n)))):
        sys.exit(f"{PROG}: wrong results")


def serial_peer(fn, args_of, expect):
    def run(n):
        t0 = time.perf_counter()
        res = [fn(*args_of(i)) for i in range(n)]
        t = time.perf_counter() - t0
        check(res, n, expect)
        return t
    return run


def joblib_peer(par, fn, args_of, expect):
    def run(n):
        t0 = time.perf_counter()
        res = par(delayed(fn)(*args_of(i)) for i in range(n))
        t = time.perf_counter() - t0
        check(res, n, expect)
        return t
    return run


def ppe_peer(ex, fn, args_of, expect, chunks):
    """ex.map with chunksize = n / (chunks per worker * workers), the usual hand tuning."""
    def run(n):
        cs = max(1, n // chunks)
        cols = zip(*(args_of(i) for i in range(n)))
        t0 = time.perf_counter()
        res = list(ex.map(fn, *cols, chunksize=cs))
        t = time.perf_counter() - t0
        check(res, n, expect)
        return t
    return run


class Peers:
    """The four peers of one workload, with their pools kept warm across repetitions."""

    def __init__(self, n_jobs):
        self.n_jobs = n_jobs
        self.thr = Parallel(n_jobs=n_jobs, backend="threading")
        self.loky = Parallel(n_jobs=n_jobs)  # joblib's default backend: loky, batch_size auto
        self.ppe = ProcessPoolExecutor(n_jobs)
        self.thr.__enter__()
        self.loky.__enter__()

    def close(self):
        self.thr.__exit__(None, None, None)
        self.loky.__exit__(None, None, None)
        self.ppe.shutdown(wait=True)

    def variants(self, fn, args_of, expect, serial=True):
        v = [("joblib_threading", joblib_peer(self.thr, fn, args_of, expect), {}),
             ("joblib_loky", joblib_peer(self.loky, fn, args_of, expect), {}),
             ("py_ppe_map", ppe_peer(self.ppe, fn, args_of, expect, 4 * self.n_jobs),
              {"chunks": 4 * self.n_jobs})]
        if serial:
            v.insert(0, ("py_serial_ctypes", serial_peer(fn, args_of, expect), {}))
        return v


def pick_n(run, n_nominal, target):
    """Largest n <= n_nominal whose run should take about `target` seconds (pilot-sized)."""
    n_pilot = min(n_nominal, 2000)
    t = run(n_pilot)
    t = run(n_pilot)  # second pilot: pools and batch sizes warmed up
    if t <= 0:
        return n_nominal
    n = int(n_pilot * target / t)
    if n >= n_nominal:
        return n_nominal
    return max(n_pilot, int(float(f"{n:.2g}")))  # two significant digits


def bench(workload, variants, n_nominal, task_us=None, workers=NCPU, wall=False):
    """variants[0] is the baseline when it is the serial loop. Warm-up, then interleaved runs."""
    ns = {}
    for peer, run, _ in variants:
        ns[peer] = n_nominal if wall else pick_n(run, n_nominal, ARGS.target)
    times = {peer: [] for peer, _, _ in variants}
    for r in range(-1, ARGS.runs):
        for peer, run, _ in variants:
            t = run(ns[peer])
            if r >= 0:
                times[peer].append(t)
    base = variants[0][0] if variants[0][0] == "py_serial_ctypes" else None
    for peer, _, extra in variants:
        n, w = ns[peer], 1 if peer == base else workers
        more = dict(extra)
        if "chunks" in more:
            more = {"chunksize": max(1, n // more["chunks"])}
        if n != n_nominal:
            more["scaled_from"] = n_nominal
        if wall:
            emit(peer, workload, "wall_s", times[peer], n, w, task_us, **more)
            continue
        tps = [n / t for t in times[peer]]
        emit(peer, workload, "tasks_per_s", tps, n, w, task_us, **more)
        if base and peer != base:
            nb = ns[base]
            sp = [(n / t) / (nb / tb) for t, tb in zip(times[peer], times[base])]
            emit(peer, workload, "speedup", sp, n, w, task_us, baseline=base, **more)


def spin_args(us, ipu):
    iters = max(1, round(us * ipu))
    return lambda i: (iters,)


def bench_startup():
    """Time from a cold pool to the first results: thread pool / fresh loky workers / fresh
    ProcessPoolExecutor. Loky's reusable executor is shut down before each run so every run
    pays worker start-up (checked: the worker pids change)."""
    from joblib.externals.loky import get_reusable_executor
    w = NCPU
    t_thr, t_loky, t_ppe, pids = [], [], [], set()
    for r in range(-1, ARGS.runs):
        t0 = time.perf_counter()
        Parallel(n_jobs=w, backend="threading")(delayed(pjwork.add)(1, 2) for _ in range(w))
        t1 = time.perf_counter()
        get_reusable_executor().shutdown(wait=True)
        t2 = time.perf_counter()
        got = Parallel(n_jobs=w)(delayed(pjwork.pid)() for _ in range(w))
        t3 = time.perf_counter()
        if pids & set(got):
            sys.exit(f"{PROG}: loky workers were reused, start-up not measured")
        pids |= set(got)
        t4 = time.perf_counter()
        ex = ProcessPoolExecutor(w)
        ex.submit(pjwork.add, 1, 2).result()
        t5 = time.perf_counter()
        ex.shutdown(wait=True)
        if r >= 0:
            t_thr.append(t1 - t0)
            t_loky.append(t3 - t2)
            t_ppe.append(t5 - t4)
    wl = "startup"
    emit("joblib_threading", wl, "startup_s", t_thr, w, w, what="first_Parallel_call")
    emit("joblib_loky", wl, "startup_s", t_loky, w, w, what="first_Parallel_call")
    emit("py_ppe_map", wl, "startup_s", t_ppe, 1, w, what="create_to_first_result")


def bench_futures():
    """concurrent.futures.ProcessPoolExecutor.submit, the peer of parjob's futures
    (bench/futures_bench.c, same figures, same C add() through ctypes), on a warm pool of NCPU
    workers. futures_latency: submit one future, wait for its result; latency_s is the median
    of ROUND_TRIPS round trips, per run. futures_throughput: submit n futures, then wait for
    every result; n is 100 000 scaled down to about 4 x --target seconds (scaled_from says so)."""
    w, trips, n_nominal = NCPU, 500, 100000
    ex = ProcessPoolExecutor(w)

    def latency_run():
        lat = []
        for _ in range(trips):
            t0 = time.perf_counter()
            r = ex.submit(pjwork.add, 1, 2).result()
            lat.append(time.perf_counter() - t0)
            if r != 3:
                sys.exit(f"{PROG}: wrong result")
        return statistics.median(lat)

    def throughput_run(n):
        t0 = time.perf_counter()
        futures = [ex.submit(pjwork.add, i % 1000, 1) for i in range(n)]
        res = [f.result() for f in futures]
        t = time.perf_counter() - t0
        check(res, n, lambda n: (i % 1000 + 1 for i in range(n)))
        return t

    n = pick_n(throughput_run, n_nominal, 4 * ARGS.target)
    lats, tps = [], []
    for r in range(-1, ARGS.runs):  # run -1 warms up
        lat, t = latency_run(), throughput_run(n)
        if r >= 0:
            lats.append(lat)
            tps.append(n / t)
    ex.shutdown(wait=True)
    more = {"scaled_from": n_nominal} if n != n_nominal else {}
    emit("py_ppe_submit", "futures_latency", "latency_s", lats, trips, w)
    emit("py_ppe_submit", "futures_throughput", "tasks_per_s", tps, n, w, **more)


def main():
    ipu = pjwork.iters_per_us()
    print(f"# py_peers: python={sys.version.split()[0]} joblib={joblib.__version__} "
          f"cpus={NCPU} iters_per_us={ipu:.2f} runs={ARGS.runs}", flush=True)
    add_args, add_expect = (lambda i: (i, 1)), (lambda n: range(1, n + 1))
    spin_workloads = [("cpu5ms", 5000, 40), ("cpu50us", 50, 4000)]
    sweep = [(0.05, 1000000), (1, 100000), (10, 10000), (100, 1000), (1000, 100), (10000, 20)]

    if any(enabled(x) for x in ("tiny", "cpu5ms", "cpu50us", "sweep")):
        peers = Peers(NCPU)
        if enabled("tiny"):
            bench("tiny", peers.variants(pjwork.add, add_args, add_expect), 1000000)
        for name, us, n in spin_workloads:
            if enabled(name):
                bench(name, peers.variants(pjwork.spin_iters, spin_args(us, ipu), None), n, us)
        if enabled("sweep"):
            for us, n in sweep:
                bench("sweep", peers.variants(pjwork.spin_iters, spin_args(us, ipu), None),
                      n, us)
        peers.close()

    if enabled("seed"):
        # The seed tutorial: ten 1 s sleeps, n_jobs=10; warm pools (start-up is its own figure).
        peers = Peers(10)
        v = peers.variants(pjwork.sleep_s, lambda i: (1.0,), lambda n: [1.0] * n, serial=False)
        v[2] = ("py_ppe_map", ppe_peer(peers.ppe, pjwork.sleep_s, lambda i: (1.0,),
                                       lambda n: [1.0] * n, 10), {"chunks": 10})
        bench("seed", v, 10, workers=10, wall=True)
        peers.close()

    if enabled("startup"):
        bench_startup()

    if enabled("futures"):
        bench_futures()


if __name__ == "__main__":
    main()
