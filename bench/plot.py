#!/usr/bin/env python3
"""Plots procs/sec by method (N=2 and N=8, the largest total) from a results JSON, with gnuplot."""
import json
import subprocess
import sys

doc = json.load(open(sys.argv[1]))
out = sys.argv[2]
res = doc["results"]
total = {}
for r in res:
    total[r["method"]] = max(total.get(r["method"], 0), r["total"])


def label(r):
    s = r["method"]
    if r["program"]:
        s += " " + r["program"].split("/")[-1]
    if r["profile"]:
        s += " (" + r["profile"] + ")"
    return s


rows = {}
for r in res:
    if r["total"] != total[r["method"]] or r["method"] in ("fs_handshake", "uds_rtt"):
        continue
    rows.setdefault(label(r), {})[r["active"]] = r["procs_per_sec"]["median"]
dat = f"{out}/rates.dat"
with open(dat, "w") as f:
    f.write("method N1 N2 N8\n")
    for k, v in rows.items():
        f.write('"%s" %s %s %s\n' % (k, v.get(1, 0), v.get(2, 0), v.get(8, 0)))
script = f"""
set terminal pngcairo size 1100,600 font ",10"
set output "{out}/rates.png"
set title "processes created per second (median), {doc['machine']['cpu']}, {doc['machine']['cores']} cores"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set xtics rotate by -35 scale 0
set ylabel "procs/sec"
set key top right
set grid ytics
plot "{dat}" using 2:xtic(1) title "1 active", "" using 3 title "2 active", "" using 4 title "8 active"
"""
subprocess.run(["gnuplot"], input=script.encode(), check=True)
print(f"wrote {out}/rates.png")
