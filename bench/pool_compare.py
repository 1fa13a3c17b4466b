#!/usr/bin/env python3
"""forkserver.Pool against multiprocessing.Pool, side by side in one run, same Python.

    bench/pool_compare.py [--tasks N] [--items N] [--reps R] [--processes P] [--only TEXT]
                          [--json FILE]

Four figures: tiny tasks with long-lived workers, one message per task (chunksize=1); the
same with --items items (200,000) and map's default chunksize, where the cost is pickling
and messages; maxtasksperchild=1, where every task needs a new process; and the time from
creating a pool to its first result. For each, the methods run in turns (R rounds, each
method once per round, interleaved); medians per method and the ratios are printed.
forkserver.Pool needs a forkserverd with --python-preload (for the zygote method) reachable
at $FORKSERVER_SOCKET; bench/pool.sh starts one.
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


def make_pool(method: str, processes: int, maxtasks: int | None):
    if method.startswith("forkserver-"):
        return forkserver.Pool(processes, maxtasksperchild=maxtasks,
                               mode=method.split("-", 1)[1])
    return mp.get_context(method.split("-", 1)[1]).Pool(processes, maxtasksperchild=maxtasks)


def run(method: str, tasks: int, processes: int, maxtasks: int | None,
        chunksize: int | None = 1) -> float:
    """Tasks per second, the pool's start and end included."""
    t0 = time.perf_counter()
    with make_pool(method, processes, maxtasks) as pool:
        out = pool.map(task, range(tasks), chunksize=chunksize)
    assert out == [x * x for x in range(tasks)]
    return tasks / (time.perf_counter() - t0)


def first_result(method: str, processes: int) -> float:
    """Milliseconds from creating the pool to its first result."""
    t0 = time.perf_counter()
    with make_pool(method, processes, None) as pool:
        pool.apply(task, (3,))
        return (time.perf_counter() - t0) * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--items", type=int, default=200_000)
    ap.add_argument("--only", help="run only the workloads whose name contains this")
    ap.add_argument("--json")
    a = ap.parse_args()
    methods = ["forkserver-zygote", "forkserver-exec", "mp-fork", "mp-forkserver", "mp-spawn"]
    results = {}
    workloads = (
        ("tiny tasks", f"{a.tasks} tasks, chunksize=1", "tasks/s",
         lambda m: run(m, a.tasks, a.processes, None)),
        ("tiny tasks, default chunksize", f"{a.items} items, map's default chunksize",
         "items/s", lambda m: run(m, a.items, a.processes, None, None)),
        ("maxtasksperchild=1", f"{a.tasks} tasks, chunksize=1", "tasks/s",
         lambda m: run(m, a.tasks, a.processes, 1)),
        ("time to first result", "pool created, one apply", "ms",
         lambda m: first_result(m, a.processes)))
    for label, what, unit, fn in workloads:
        if a.only and a.only not in label:
            continue
        rates: dict[str, list[float]] = {m: [] for m in methods}
        for _ in range(a.reps):
            for m in methods:
                rates[m].append(fn(m))
        med = {m: statistics.median(v) for m, v in rates.items()}
        results[label] = {"unit": unit, "median": med, "runs": rates}
        print(f"{label}: {what}, {a.processes} processes, median of {a.reps} "
              f"(Python {sys.version.split()[0]})")
        for m in methods:
            # a ratio above 1 is better: a rate's own, a time's inverse
            r = (lambda b: med[m] / med[b]) if unit != "ms" else (lambda b: med[b] / med[m])
            print(f"  {m:18s} {med[m]:11.1f} {unit:7s} x{r('mp-forkserver'):.2f} "
                  f"mp-forkserver   x{r('mp-fork'):.2f} mp-fork")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
