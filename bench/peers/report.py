#!/usr/bin/python3
"""Turn bench/results.txt (one figure per line, key=value) into bench/RESULTS.md and the
gnuplot data for bench/sweep.png.

    report.py RESULTS_TXT RESULTS_MD DATADIR

Writes DATADIR/<peer>.dat (task_us median min max of the sweep speedup) for every peer that
has sweep speedups, and prints those peer names, space-separated, on stdout for plot.gp.
Any program that prints lines in the same format (parjob's bench programs included) shows up
in every table and in the plot without changes here.
"""
import os
import sys
from collections import OrderedDict

ORDER = ["tiny", "cpu5ms", "cpu50us", "sweep", "sweep_fixed", "seed", "startup",
         "futures_latency", "futures_throughput", "calibration"]
TITLES = {
    "tiny": "Tiny tasks: 1e6 calls of `int add(int, int)`",
    "cpu5ms": "CPU-bound 5 ms tasks (40 tasks)",
    "cpu50us": "CPU-bound 50 us tasks (4000 tasks)",
    "seed": "Seed example: ten 1 s sleeps, 10 workers (warm pools)",
    "startup": "Start-up: cold pool to first result",
    "futures_latency": "Futures: submit one future of `add`, wait for its result (warm pool)",
    "futures_throughput": "Futures: submit 100 000 futures of `add`, wait for all (warm pool)",
    "sweep_fixed": "Task-duration sweep, parjob with a fixed batch of n / (4 x workers) tasks",
    "calibration": "Calibration: how long spin_us(task_us) really takes",
    "add10m": "Bulk calls (pj_run_bulk): `int add(int, int)` over 10 M pairs",
}
for _n in (64, 128, 256, 512, 1024, 2048):  # scale_bench (issue 18); plot: bench/scale.png
    TITLES[f"scale_n{_n}"] = (f"Worker pools, n_jobs={_n}: {_n} sleeps of 100 ms from "
                              "pj_parallel_new, then free (plot: scale.png)")
TITLES["idle_memory"] = ("Memory of 1024 idle workers: PSS and page tables per worker, and the "
                         "parent's growth per worker (KiB)")
FIXED = {"peer", "prog", "bench", "workload", "task_us", "metric", "median", "min", "max", "runs", "n",
         "workers", "baseline"}


def parse(path):
    rows, notes = [], []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            if line.startswith("#"):
                notes.append(line[1:].strip())
                continue
            kv = dict(tok.split("=", 1) for tok in line.split() if "=" in tok)
            # bench/bench_util.h prints bench=<program> and may omit peer: name it from
            # its backend and batch fields so it lands in the same tables and plot.
            if "prog" not in kv and "bench" in kv:
                kv["prog"] = kv.pop("bench")
            if "peer" not in kv and "prog" in kv:
                kv["peer"] = "_".join(["parjob"] + [kv[k] for k in ("backend", "batch")
                                                    if k in kv])
            kv.setdefault("prog", "?")
            if {"peer", "workload", "metric", "median"} <= kv.keys():
                rows.append(kv)
    return rows, notes


def num(s):
    v = float(s)
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.3g}M"
    if a >= 1e4:
        return f"{v / 1e3:.3g}k"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 0.01:
        return f"{v:.3g}"
    return f"{v:.2e}"


def cell(r):
    return f"{num(r['median'])} ({num(r['min'])}–{num(r['max'])})"


def workload_table(out, rows):
    """One row per (peer, prog, task_us); one column per metric: median (min–max)."""
    metrics = list(OrderedDict.fromkeys(r["metric"] for r in rows))
    keyed = OrderedDict()
    for r in rows:
        keyed.setdefault((r["peer"], r["prog"], r.get("task_us", "")), {})[r["metric"]] = r
    with_us = len({k[2] for k in keyed}) > 1
    out.append("| peer | prog | " + ("task_us | " if with_us else "") + "workers | n | "
               + " | ".join(
        m + (" (vs " + next((r["baseline"] for r in rows if r["metric"] == m
                             and "baseline" in r), "") + ")" if m == "speedup" else "")
        for m in metrics) + " | notes |")
    out.append("|" + "---|" * (len(metrics) + 5 + with_us))
    for (peer, prog, us), ms in keyed.items():
        any_r = next(iter(ms.values()))
        notes = " ".join(f"{k}={v}" for k, v in any_r.items() if k not in FIXED)
        out.append(f"| {peer} | {prog} | " + (f"{us} | " if with_us else "")
                   + f"{any_r.get('workers', '')} | {any_r.get('n', '')} | "
                   + " | ".join(cell(ms[m]) if m in ms else "" for m in metrics)
                   + f" | {notes} |")
    out.append("")


def sweep_table(out, rows):
    sp = [r for r in rows if r["metric"] == "speedup"]
    durations = sorted({float(r["task_us"]) for r in sp})
    grid = OrderedDict()
    for r in sp:
        grid.setdefault((r["peer"], r["prog"]), {})[float(r["task_us"])] = r
    out.append("| peer | prog | baseline | " + " | ".join(
        f"{d:g} us" for d in durations) + " |")
    out.append("|" + "---|" * (len(durations) + 3))
    for (peer, prog), by in grid.items():
        base = next(iter(by.values())).get("baseline", "")
        out.append(f"| {peer} | {prog} | {base} | " + " | ".join(
            f"{float(by[d]['median']):.3g}" if d in by else "" for d in durations) + " |")
    out.append("")
    out.append("Each cell: median speedup (serial time / peer time for the same tasks, "
               "i.e. throughput relative to serial) over the runs; min and max are in "
               "results.txt. Task counts per duration are in results.txt (`n=`).")
    out.append("")
    return grid


# ---- Targets (issue 6): each computed from this run's figures --------------------------------
# Rule: where the peer's clock includes building its tasks (the pthread pool mallocs one per
# call, joblib builds delayed() objects), parjob's figure counts pj_delayed too; OpenMP builds
# nothing, so against it parjob's pj_run figure is used as measured.
BACKENDS = ["threading", "fork", "spawn"]


def find(rows, peer, workload, metric):
    hit = [r for r in rows if r["peer"] == peer and r["workload"] == workload
           and r["metric"] == metric]
    return hit[-1] if hit else None


def fig(r, fmt="{:.3g}"):
    return num(r["median"]) if fmt is None else fmt.format(float(r["median"]))


def noisy(*rs):
    bad = [r for r in rs if r and float(r["median"]) > 0
           and (float(r["max"]) - float(r["min"])) / float(r["median"]) > 0.3]
    return " (noisy: " + "; ".join(f"{r['peer']} {num(r['min'])}–{num(r['max'])}"
                                   for r in bad) + ")" if bad else ""


def verdict(ok):
    return "**met**" if ok else "**not met**"


def with_delayed(rate, delayed):
    """Tasks per second once pj_delayed's ns per task is added to each task's share."""
    return 1.0 / (1.0 / rate + delayed * 1e-9) if delayed else rate


def targets(rows):
    out = ["## Targets", "",
           "Computed by `bench/peers/report.py` from this run's medians. parjob figures are "
           "`pj_run` + `pj_results_free` over tasks built beforehand, as the issues define "
           "tiny-task throughput (against a serial loop over calls whose arguments exist). "
           "Where a peer's clock also covers building its tasks (the pthread pool's malloc per "
           "call, joblib's `delayed()`), each line also gives parjob's figure with "
           "`pj_delayed`'s measured cost per task added (*end to end*): what a program that "
           "builds its tasks just before one run sees. "
           "The sequential backend is the n_jobs=1 path: it has no speedup or seed target.", ""]
    dl = find(rows, "parjob_delayed", "tiny", "ns_per_task")
    d_ns = float(dl["median"]) if dl else 0.0
    thr = find(rows, "parjob_threading_auto", "tiny", "tasks_per_s")
    omp = find(rows, "omp_dyn64_direct", "tiny", "tasks_per_s")
    pools = [r for r in (find(rows, p, "tiny", "tasks_per_s")
                         for p in ("pool_mutex_direct", "pool_mutex_ffi")) if r]
    if thr and omp:
        ratio = float(thr["median"]) / float(omp["median"])
        out.append(f"- threading, tiny tasks, ≥ 0.5x OpenMP `dynamic,64` calling `add` directly: "
                   f"{verdict(ratio >= 0.5)} — {ratio:.2f}x ({fig(thr, None)} against "
                   f"{fig(omp, None)} tasks/s){noisy(thr, omp)}")
    else:
        out.append("- threading vs OpenMP, tiny tasks: not measured in this run")
    if thr and pools:
        pool = max(pools, key=lambda r: float(r["median"]))
        full = with_delayed(float(thr["median"]), d_ns)
        ratio = float(thr["median"]) / float(pool["median"])
        out.append(f"- threading, tiny tasks, ≥ 3x the hand-written pthread pool: "
                   f"{verdict(ratio >= 3)} — {ratio:.1f}x ({fig(thr, None)} against "
                   f"`{pool['peer']}`'s {fig(pool, None)} tasks/s); end to end "
                   f"{full / float(pool['median']):.1f}x ({num(full)}){noisy(thr, pool)}")
    else:
        out.append("- threading vs the pthread pool, tiny tasks: not measured in this run")
    parts, ok, missing = [], True, []
    for b in BACKENDS:
        a = find(rows, f"parjob_{b}_auto", "cpu5ms", "speedup")
        fx = [r for r in rows if r["peer"].startswith(f"parjob_{b}_b")
              and r["workload"] == "cpu5ms" and r["metric"] == "speedup"]
        if not a:
            missing.append(b)
            continue
        ok &= float(a["median"]) >= 1.9
        parts.append(f"{b} {fig(a, '{:.3f}')}x"
                     + (f" (fixed batch {fig(fx[-1], '{:.3f}')}x)" if fx else "")
                     + noisy(a))
    ref = [r for r in (find(rows, p, "cpu5ms", "speedup")
                       for p in ("omp_dyn1_direct", "pool_mutex_direct")) if r]
    out.append(f"- every backend, 5 ms tasks, speedup ≥ 1.9x on {cpus_of(rows)} cores: "
               + (verdict(ok and not missing) + " — " + ", ".join(parts) if parts
                  else "not measured in this run")
               + ("; not measured: " + ", ".join(missing) if missing and parts else "")
               + ("; for reference, in the same run: " + ", ".join(
                   f"{r['peer']} {fig(r)}x" for r in ref) if ref else ""))
    loky = find(rows, "joblib_loky", "tiny", "tasks_per_s")
    for b in ("fork", "spawn"):
        r = find(rows, f"parjob_{b}_auto", "tiny", "tasks_per_s")
        if not (r and loky):
            out.append(f"- {b}, tiny tasks, ≥ 100x joblib's default backend: not measured")
            continue
        full = with_delayed(float(r["median"]), d_ns)
        ratio = float(r["median"]) / float(loky["median"])
        out.append(f"- {b}, tiny tasks, ≥ 100x joblib's default backend (loky): "
                   f"{verdict(ratio >= 100)} — {ratio:.0f}x ({fig(r, None)} against "
                   f"{fig(loky, None)} tasks/s); end to end "
                   f"{full / float(loky['median']):.0f}x ({num(full)}: `pj_delayed` "
                   f"{d_ns:.0f} ns a task in this program){noisy(r, loky)}")
    parts, ok, missing = [], True, []
    for b in BACKENDS:
        r = find(rows, f"parjob_{b}_auto", "seed", "wall_s")
        if not r:
            missing.append(b)
            continue
        ok &= float(r["max"]) < 1.1
        parts.append(f"{b} {float(r['median']):.3f} s (max {float(r['max']):.3f})")
    out.append("- seed example (ten 1 s sleeps, n_jobs=10) under 1.1 s on every backend, "
               "every run: " + (verdict(ok and not missing) + " — " + ", ".join(parts)
                                if parts else "not measured in this run")
               + ("; not measured: " + ", ".join(missing) if missing and parts else ""))
    out.append("")
    return out


KEY_PEERS = [
    ("c_serial_direct", "omp", "serial C loop, direct calls"),
    ("omp_dyn64_direct", "omp", "OpenMP `dynamic,64`, direct calls"),
    ("omp_dyn1_direct", "omp", "OpenMP `dynamic,1`, direct calls"),
    ("pool_mutex_direct", "pthread_pool", "hand-written pthread pool"),
    ("joblib_threading", "py_peers", "joblib, threading"),
    ("joblib_loky", "py_peers", "joblib, default (loky)"),
    ("py_ppe_map", "py_peers", "ProcessPoolExecutor.map"),
    ("parjob_sequential_auto", "parjob_peers", "parjob sequential"),
    ("parjob_threading_auto", "parjob_peers", "parjob threading"),
    ("parjob_fork_auto", "parjob_peers", "parjob fork"),
    ("parjob_spawn_auto", "parjob_peers", "parjob spawn"),
]


def key_figures(rows):
    """One short table of the figures a reader compares first (the README shows it)."""
    def get(peer, prog, wl, metric):
        if wl == "startup":  # start-up lines name the pool, not a batching variant
            peer = {"pool_mutex_direct": "pool_mutex_ffi"}.get(peer, peer.replace("_auto", ""))
        hit = [r for r in rows if r["workload"] == wl and r["metric"] == metric
               and r["peer"] == peer and (r["prog"] == prog or wl in ("seed", "startup"))]
        return hit[-1] if hit else None

    cols = [("tiny", "tasks_per_s", "tiny tasks/s"), ("cpu5ms", "speedup", "5 ms speedup"),
            ("cpu50us", "speedup", "50 us speedup"), ("seed", "wall_s", "seed (s)"),
            ("startup", "startup_s", "start-up (ms)")]
    out = ["## Key figures", "",
           "Medians of this run, auto batching for parjob; speedups against the serial loop of "
           "the same program (C: direct calls; Python: ctypes calls). Details below.", "",
           "| | " + " | ".join(c[2] for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for peer, prog, label in KEY_PEERS:
        cells = []
        for wl, metric, _ in cols:
            r = get(peer, prog, wl, metric)
            if r is None:
                cells.append("")
            elif metric == "startup_s":
                cells.append(f"{float(r['median']) * 1e3:.3g}")
            elif metric == "wall_s":
                cells.append(f"{float(r['median']):.3f}")
            elif metric == "speedup":
                cells.append(f"{float(r['median']):.2f}x")
            else:
                cells.append(num(r["median"]))
        if any(cells):
            out.append(f"| {label} | " + " | ".join(cells) + " |")
    out.append("")
    return out


def cpus_of(rows):
    ws = {r.get("workers") for r in rows if r["peer"].startswith("parjob_")
          and r["workload"] == "cpu5ms"}
    ws.discard("1")
    return "/".join(sorted(w for w in ws if w)) or "?"


def load_note(notes):
    """A sentence on how busy the machine was, from scripts/bench's loadavg and cpus notes."""
    kv = {}
    for n in notes:
        for tok in n.replace(":", " ").split():
            if "=" in tok:
                k, v = tok.split("=", 1)
                kv[k] = v
    try:
        cpus = int(kv["cpus"])
        starts = [float(x) for x in kv["loadavg_start"].split(",")]
        ends = [float(x) for x in kv.get("loadavg_end", kv["loadavg_start"]).split(",")]
    except (KeyError, ValueError):
        return []
    if max(starts[0], ends[0], ends[2]) <= cpus * 0.75:
        return []
    return [f"**The machine was shared during this run** (1-minute load average "
            f"{starts[0]:g} at the start, {ends[0]:g} at the end, {ends[2]:g} over the last "
            f"15 minutes, on {cpus} CPUs): absolute rates are noisy, and ratios taken within one "
            f"program, repetition by repetition (`speedup`), hold up better than ratios across "
            f"programs.", ""]


def main():
    src, md, datadir = sys.argv[1:4]
    rows, notes = parse(src)
    by_wl = OrderedDict()
    for r in rows:
        by_wl.setdefault(r["workload"], []).append(r)
    names = [w for w in ORDER if w in by_wl] + [w for w in by_wl if w not in ORDER]

    out = ["# parjob benchmark results", "",
           "Generated by `scripts/bench` from `bench/results.txt`; do not edit by hand.",
           "Every figure is the median of the runs (min–max in brackets). `speedup` is "
           "baseline time / peer time, per repetition, against the serial loop measured in "
           "the same run: C peers against `c_serial_direct` (a plain loop of direct calls), "
           "Python peers against `py_serial_ctypes` (a Python loop of ctypes calls).", ""]
    if notes:
        out += ["```"] + notes + ["```", ""]
    out += load_note(notes)
    out += targets(rows)
    out += key_figures(rows)
    grid = {}
    for w in names:
        if w == "sweep":
            out += ["## Task-duration sweep: throughput relative to serial", "",
                    "![sweep](sweep.png)", ""]
            grid = sweep_table(out, by_wl[w])
        else:
            out += [f"## {TITLES.get(w, w)}", ""]
            workload_table(out, by_wl[w])
    with open(md, "w") as f:
        f.write("\n".join(out))

    os.makedirs(datadir, exist_ok=True)
    peers = []
    for (peer, prog), by in grid.items():
        if peer in peers:  # the same serial loop measured by two programs: plot it once
            continue
        peers.append(peer)
        with open(os.path.join(datadir, peer + ".dat"), "w") as f:
            f.write(f"# {peer} ({prog}): task_us median min max\n")
            for d in sorted(by):
                r = by[d]
                f.write(f"{d:g} {r['median']} {r['min']} {r['max']}\n")
    print(" ".join(peers))


if __name__ == "__main__":
    main()
