#!/usr/bin/env python3
"""CPython multiprocessing start methods, measured like fsbench and added to its JSON.

For each start method (fork, forkserver, spawn) of the python3 running this script:
Process(target=noop).start() + join(), ACTIVE at a time, TOTAL per repetition, repeated.
Results go into the fsbench JSON file given, as methods mp_fork, mp_forkserver, mp_spawn,
so that they sit beside fsbench's figures from the same run. Standard library only.
"""
import argparse
import json
import multiprocessing as mp
import platform
import statistics
import time


def noop():
    pass


def run(ctx, active, total):
    lat, live, started, done = [], [], 0, 0
    t0 = time.perf_counter()
    while done < total:
        while len(live) < active and started < total:
            p = ctx.Process(target=noop)
            live.append((p, time.perf_counter()))
            p.start()
            started += 1
        p, ts = live.pop(0)
        p.join()
        if p.exitcode != 0:
            raise RuntimeError(f"worker exit code {p.exitcode}")
        lat.append((time.perf_counter() - ts) * 1e6)
        done += 1
    return total / (time.perf_counter() - t0), lat


def pct(v, p):
    v = sorted(v)
    return v[int((len(v) - 1) * p + 0.5)] if v else 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", required=True, help="fsbench JSON file to add results to")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--methods", help="accepted for fsbench's sake; ignored")
    ap.add_argument("--sizes", help="accepted for fsbench's sake; ignored")
    ap.add_argument("--actives", default="1,2,8",
                    help="comma-separated numbers of processes alive at once, as fsbench's")
    ap.add_argument("--totals", help="comma-separated, as fsbench's (capped at 256: CPython "
                    "start methods are slow)")
    args = ap.parse_args()
    reps = min(args.reps, 3) if args.quick else args.reps
    totals = [64] if args.quick else [64, 256]
    if args.totals:
        totals = sorted({min(int(t), 256) for t in args.totals.split(",")})
    actives = [int(a) for a in args.actives.split(",")]
    methods = ["fork", "forkserver", "spawn"]
    with open(args.json) as f:
        doc = json.load(f)
    doc["machine"]["python"] = platform.python_version()
    doc["mp_reps"] = reps
    for total in totals:
        for active in actives:
            rates = {m: [] for m in methods}
            lats = {m: [] for m in methods}
            for rep in range(reps):
                for k in range(len(methods)):
                    m = methods[(k + rep) % len(methods)]  # interleaved, rotating
                    # spawn is ~100x slower: fewer of them, same rate measure
                    n = max(8, total // 8) if m == "spawn" else total
                    r, lat = run(mp.get_context(m), active, n)
                    rates[m].append(r)
                    lats[m].extend(lat)
            for m in methods:
                res = {
                    "method": "mp_" + m, "program": "", "profile": "", "zygote_mib": 0,
                    "active": active, "total": total if m != "spawn" else max(8, total // 8),
                    "procs_per_sec": {"median": round(statistics.median(rates[m]), 1),
                                      "min": round(min(rates[m]), 1),
                                      "max": round(max(rates[m]), 1)},
                    "latency_us": {k: round(pct(lats[m], q), 1) for k, q in
                                   (("p50", 0.5), ("p99", 0.99), ("p10", 0.1), ("p90", 0.9),
                                    ("min", 0), ("max", 1))},
                }
                doc["results"].append(res)
                print(f"{res['method']:<18} N={active} total={res['total']:<5} "
                      f"{res['procs_per_sec']['median']:9.0f}/s  p50 {res['latency_us']['p50']:9.1f} us")
    with open(args.json, "w") as f:
        json.dump(doc, f, indent=1)


if __name__ == "__main__":
    main()
