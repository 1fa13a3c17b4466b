#!/usr/bin/env python3
"""Plots a results JSON with gnuplot: procs/sec by method (zygote size 0, the largest total
of each method), and procs/sec against zygote size (N=2). Usage: plot.py RESULTS.json OUTDIR"""
import json
import subprocess
import sys

doc = json.load(open(sys.argv[1]))
out = sys.argv[2]
res = doc["results"]
m = doc["machine"]
title = f"{m['cpu']}, {m['cores']} cores, {m['kernel']}"


def label(r):
    s = r["method"]
    if r["program"]:
        s += " " + r["program"].split("/")[-1]
    if r["profile"]:
        s += " (" + r["profile"] + ")"
    return s


def gnuplot(script):
    subprocess.run(["gnuplot"], input=script.encode(), check=True)


# 1. rates by method
base = [r for r in res if r["zygote_mib"] == 0 and r["method"] not in ("fs_handshake", "uds_rtt")]
top = {}
for r in base:
    top[label(r)] = max(top.get(label(r), 0), r["total"])
rows = {}
for r in base:
    if r["total"] == top[label(r)]:
        rows.setdefault(label(r), {})[r["active"]] = r["procs_per_sec"]["median"]
with open(f"{out}/rates.dat", "w") as f:
    for k, v in rows.items():
        f.write('"%s" %s %s %s\n' % (k, v.get(1, 0), v.get(2, 0), v.get(8, 0)))
gnuplot(f"""
set terminal pngcairo noenhanced size 1100,600 font ",10"
set output "{out}/rates.png"
set title "processes created per second (median of repetitions)\\n{title}"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set xtics rotate by -35 scale 0
set ylabel "procs/sec"
set key top right
set grid ytics
plot "{out}/rates.dat" using 2:xtic(1) title "1 active", "" using 3 title "2 active", "" using 4 title "8 active"
""")

# 2. against zygote (or bench process) size, N=2
series = {"fs_exec static (default)": "fs_exec", "fs_fork (default)": "fs_fork",
          "fork_sized 4k": "fork 4 KiB pages", "fork_sized thp": "fork huge pages"}
pts = {}
for r in res:
    name = series.get(label(r))
    if r["active"] != 2:
        continue
    size = r["zygote_mib"]
    if size == 0 and label(r) == "fork":  # the 0 MiB point of both raw fork lines
        for n in ("fork 4 KiB pages", "fork huge pages"):
            pts.setdefault(n, {})[0] = r["procs_per_sec"]["median"]
    if name and (size > 0 or r["total"] == top.get(label(r), r["total"])):
        pts.setdefault(name, {})[size] = r["procs_per_sec"]["median"]
plots = []
for i, (name, p) in enumerate(pts.items()):
    with open(f"{out}/size{i}.dat", "w") as f:
        for size in sorted(p):
            f.write(f"{size} {p[size]}\n")
    plots.append(f'"{out}/size{i}.dat" using 1:2 with linespoints lw 2 title "{name}"')
gnuplot(f"""
set terminal pngcairo noenhanced size 900,500 font ",10"
set output "{out}/zygote.png"
set title "procs/sec against memory held by the zygote or the forking process (2 active)\\n{title}"
set xlabel "MiB held"
set ylabel "procs/sec"
set logscale y
set grid
set key bottom left
plot {", ".join(plots)}
""")
print(f"wrote {out}/rates.png and {out}/zygote.png")
