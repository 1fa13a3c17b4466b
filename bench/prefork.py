#!/usr/bin/env python3
"""Pre-forked fork-mode workers (--prefork) against a fork per request, side by side.

Starts two forkserverd with --preload build/bench/libbench.so, one with --prefork N and one
with --prefork 0, and measures, interleaved (one spawn on each in turn):
  - spawn latency (spawn request -> SPAWNED reply) and create -> exit, one job at a time
    with a pause between jobs (--gap-ms: the pool refills in it, as for a user who starts one
    job at a time);
  - then the memory of N idle children: their PSS (proportional set size: what they add,
    their pages shared with the zygote divided among all sharers) and RSS, from
    /proc/PID/smaps_rollup, beside the zygote's.
Ratios are what carry over between machines; absolute times on a shared VM do not.
Usage: bench/prefork.py [--spawns K] [--gap-ms MS] [--prefork N] [--python]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "client", "python"))
import forkserver  # noqa: E402

BUILD = os.path.join(ROOT, "build")


def start(dirname, prefork, python):
    sock, key = os.path.join(dirname, "s.sock"), os.path.join(dirname, "key")
    subprocess.run([os.path.join(BUILD, "client", "forkctl"), "keygen", "-o", key],
                   check=True, capture_output=True)
    r, w = os.pipe()
    lib = ["--python-preload", ""] if python else \
        ["--preload", os.path.join(BUILD, "bench", "libbench.so")]
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "client", "python"))
    daemon = os.environ.get("FORKSERVERD") or os.path.join(BUILD, "forkserver", "forkserverd")
    p = subprocess.Popen([daemon, "--foreground",
                          "--socket", sock, "--key-file", key, "--ready-fd", str(w),
                          "--allow-root-workers", "--log-level", "warning",
                          "--prefork", str(prefork)] + lib, pass_fds=[w], env=env)
    os.close(w)
    if os.read(r, 16) != b"READY\n":
        sys.exit("prefork.py: forkserverd did not start")
    os.close(r)
    return p, forkserver.connect(sock, key)


def children(ppid, comm):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
            with open(f"/proc/{d}/comm") as f:
                c = f.read().strip()
        except OSError:
            continue
        if int(st[st.rindex(")") + 2:].split()[1]) == ppid and c.startswith(comm):
            out.append(int(d))
    return out


def mem_kib(pid):
    v = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            k, _, rest = line.partition(":")
            if k in ("Rss", "Pss"):
                v[k] = int(rest.split()[0])
    return v


def spawn_one(fs, python):
    t0 = time.perf_counter()
    if python:
        w = fs.spawn(entry="libforkserver-python:forkserver_python_worker", channel=True)
        t1 = time.perf_counter()
        w.channel.close()  # the worker loop ends at EOF
    else:
        w = fs.spawn(entry="libbench:noop")
        t1 = time.perf_counter()
    w.wait()
    t2 = time.perf_counter()
    w.close()
    return (t1 - t0) * 1e6, (t2 - t0) * 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--spawns", type=int, default=300)
    ap.add_argument("--gap-ms", type=float, default=5.0)
    ap.add_argument("--prefork", type=int, default=8)
    ap.add_argument("--python", action="store_true", help="the Python zygote's workers")
    ap.add_argument("--json")
    a = ap.parse_args()
    res = {}
    with tempfile.TemporaryDirectory(prefix="fs-prefork-") as d:
        os.mkdir(os.path.join(d, "a"), 0o700)
        os.mkdir(os.path.join(d, "b"), 0o700)
        pa, fa = start(os.path.join(d, "a"), a.prefork, a.python)
        pb, fb = start(os.path.join(d, "b"), 0, a.python)
        lat = {"prefork": ([], []), "fork": ([], [])}
        try:
            for i in range(a.spawns):
                for name, fs in (("prefork", fa), ("fork", fb)) if i % 2 else \
                        (("fork", fb), ("prefork", fa)):
                    s, e = spawn_one(fs, a.python)
                    if i >= 10:  # the pool's first spawns fork
                        lat[name][0].append(s)
                        lat[name][1].append(e)
                    time.sleep(a.gap_ms / 1000)
            for name, (s, e) in lat.items():
                res[name] = {"spawn_p50_us": statistics.median(s),
                             "exit_p50_us": statistics.median(e)}
            res["ratio_spawn_p50"] = res["fork"]["spawn_p50_us"] / res["prefork"]["spawn_p50_us"]
            res["ratio_exit_p50"] = res["fork"]["exit_p50_us"] / res["prefork"]["exit_p50_us"]
            # the pool grows to --prefork under that many requests at once
            for _ in range(4):
                entry = "libforkserver-python:forkserver_python_worker" if a.python \
                    else "libbench:noop"
                reqs = [fa.spawn_request(entry=entry, channel=a.python)
                        for _ in range(a.prefork + 1)]
                ws = [fa.spawn_result(r) for r in reqs]
                for w in ws:
                    if a.python:
                        w.channel.close()
                    w.wait()
                    w.close()
            t0 = time.time()
            while fa.status().get("prefork", {}).get("idle", 0) < a.prefork and time.time() - t0 < 10:
                time.sleep(0.05)
            time.sleep(0.2)
            idle = children(pa.pid, "forkserverd-idl")
            zyg = children(pa.pid, "forkserverd-zys")  # the one requests for "default" go to
            m = [mem_kib(p) for p in idle]
            zm = mem_kib(zyg[0]) if zyg else {}
            res["idle"] = len(idle)
            res["idle_pss_kib_each"] = statistics.median(x["Pss"] for x in m) if m else 0
            res["idle_pss_kib_total"] = sum(x["Pss"] for x in m)
            res["idle_rss_kib_each"] = statistics.median(x["Rss"] for x in m) if m else 0
            res["zygote_pss_kib"] = zm.get("Pss")
            res["zygote_rss_kib"] = zm.get("Rss")
        finally:
            fa.close()
            fb.close()
            pa.terminate()
            pb.terminate()
            pa.wait()
            pb.wait()
    print(json.dumps(res, indent=1))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
