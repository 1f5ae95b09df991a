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

ORDER = ["tiny", "cpu5ms", "cpu50us", "sweep", "seed", "startup", "calibration"]
TITLES = {
    "tiny": "Tiny tasks: 1e6 calls of `int add(int, int)`",
    "cpu5ms": "CPU-bound 5 ms tasks (40 tasks)",
    "cpu50us": "CPU-bound 50 us tasks (4000 tasks)",
    "seed": "Seed example: ten 1 s sleeps, 10 workers (warm pools)",
    "startup": "Start-up: cold pool to first result",
    "calibration": "Calibration: how long spin_us(task_us) really takes",
}
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
