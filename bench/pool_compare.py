#!/usr/bin/env python3
"""forkserver.Pool against multiprocessing.Pool, side by side in one run, same Python.

    bench/pool_compare.py [--tasks N] [--reps R] [--processes P] [--json FILE]

Two workloads: tiny tasks with long-lived workers, and maxtasksperchild=1, where every task
needs a new process. For each, the methods run in turns (R rounds, each method once per
round); the median tasks/s per method and the ratios are printed. forkserver.Pool needs a
forkserverd with --python-preload (for the zygote method) reachable at $FORKSERVER_SOCKET;
bench/pool.sh starts one.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "client",
                                "python"))
import forkserver  # noqa: E402


def task(x: int) -> int:
    return x * x


def run(method: str, tasks: int, processes: int, maxtasks: int | None) -> float:
    t0 = time.perf_counter()
    if method.startswith("forkserver-"):
        with forkserver.Pool(processes, maxtasksperchild=maxtasks,
                             mode=method.split("-", 1)[1]) as pool:
            out = pool.map(task, range(tasks), chunksize=1)
    else:
        ctx = mp.get_context(method.split("-", 1)[1])
        with ctx.Pool(processes, maxtasksperchild=maxtasks) as pool:
            out = pool.map(task, range(tasks), chunksize=1)
    assert out == [x * x for x in range(tasks)]
    return tasks / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--json")
    a = ap.parse_args()
    methods = ["forkserver-zygote", "forkserver-exec", "mp-fork", "mp-forkserver", "mp-spawn"]
    results = {}
    for label, maxtasks in (("tiny tasks", None), ("maxtasksperchild=1", 1)):
        rates: dict[str, list[float]] = {m: [] for m in methods}
        for _ in range(a.reps):
            for m in methods:
                rates[m].append(run(m, a.tasks, a.processes, maxtasks))
        med = {m: statistics.median(v) for m, v in rates.items()}
        results[label] = {"median_tasks_per_s": med, "runs": rates}
        print(f"{label}: {a.tasks} tasks, {a.processes} processes, median of {a.reps} "
              f"(Python {sys.version.split()[0]})")
        for m in methods:
            print(f"  {m:18s} {med[m]:9.1f} tasks/s   x{med[m] / med['mp-forkserver']:.2f} "
                  f"mp-forkserver   x{med[m] / med['mp-fork']:.2f} mp-fork")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
