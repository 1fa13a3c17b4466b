#!/usr/bin/env python3
"""forkserver.Pool against multiprocessing.Pool, side by side in one run, same Python.

    bench/pool_compare.py [--tasks N] [--items N] [--reps R] [--processes P] [--only TEXT]
                          [--maxtasks K,...] [--maxtasks-tasks N] [--quick] [--json FILE]

Five kinds of figure: tiny tasks with long-lived workers, one message per task
(chunksize=1), the pool's start and end included; 10 x as many on a pool already running
(the per-task cost alone); --items items (200,000) at map's default chunksize, where the
cost is pickling and messages; maxtasksperchild=K for each K of --maxtasks (default 1, where
every task needs a new process), with --maxtasks-tasks tasks (default --tasks); and the time
from creating a pool to its first result. --quick: 2 rounds, 100 tasks, 50,000 items, 20
tasks at maxtasksperchild. For each, the methods run in turns (R rounds, each
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


def steady(method: str, tasks: int, processes: int) -> float:
    """Tasks per second on a pool already running, its workers started: what a task costs
    once a pool is up (tiny tasks, chunksize=1)."""
    with make_pool(method, processes, None) as pool:
        pool.map(task, range(processes * 50), chunksize=1)
        t0 = time.perf_counter()
        out = pool.map(task, range(tasks), chunksize=1)
        rate = tasks / (time.perf_counter() - t0)
    assert out == [x * x for x in range(tasks)]
    return rate


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
    ap.add_argument("--maxtasks", default="1",
                    help="comma-separated maxtasksperchild values, one workload each")
    ap.add_argument("--maxtasks-tasks", type=int,
                    help="tasks in a maxtasksperchild workload (default: --tasks)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json")
    a = ap.parse_args()
    if a.quick:
        a.reps, a.tasks, a.items = min(a.reps, 2), min(a.tasks, 100), min(a.items, 50_000)
        a.maxtasks_tasks = min(a.maxtasks_tasks or 20, 20)
    mtasks = a.maxtasks_tasks or a.tasks
    methods = ["forkserver-zygote", "forkserver-exec", "mp-fork", "mp-forkserver", "mp-spawn"]
    results = {}
    # (label, description, unit, maxtasksperchild, tasks, function)
    workloads = [
        ("tiny tasks", f"{a.tasks} tasks, chunksize=1", "tasks/s", None, a.tasks,
         lambda m: run(m, a.tasks, a.processes, None)),
        ("tiny tasks, warm pool", f"{a.tasks * 10} tasks, chunksize=1, the pool's start "
         "and end left out", "tasks/s", None, a.tasks * 10,
         lambda m: steady(m, a.tasks * 10, a.processes)),
        ("tiny tasks, default chunksize", f"{a.items} items, map's default chunksize",
         "items/s", None, a.items, lambda m: run(m, a.items, a.processes, None, None))]
    for k in sorted({int(x) for x in a.maxtasks.split(",") if x}):
        workloads.append((f"maxtasksperchild={k}", f"{mtasks} tasks, chunksize=1", "tasks/s",
                          k, mtasks, lambda m, k=k: run(m, mtasks, a.processes, k)))
    workloads.append(("time to first result", "pool created, one apply", "ms", None, 1,
                      lambda m: first_result(m, a.processes)))
    for label, what, unit, maxtasks, ntasks, fn in workloads:
        if a.only and a.only not in label:
            continue
        rates: dict[str, list[float]] = {m: [] for m in methods}
        for _ in range(a.reps):
            for m in methods:
                rates[m].append(fn(m))
        med = {m: statistics.median(v) for m, v in rates.items()}
        results[label] = {"unit": unit, "median": med, "runs": rates, "tasks": ntasks,
                          "maxtasksperchild": maxtasks, "processes": a.processes,
                          "python": sys.version.split()[0]}
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
