#!/usr/bin/env python3
"""Draws the benchmark charts as SVG, with the standard library alone (no gnuplot, no
matplotlib), and writes the data behind each chart as CSV.

    bench/plot.py RESULTS.json OUTDIR [POOL.json]

RESULTS.json is what bench/fsbench (and bench/mp_compare.py after it) wrote; POOL.json is
bench/pool_compare.py's --json (default: pool.json beside RESULTS.json, when there is one).
Charts, in OUTDIR:

  procs.svg       processes created per second by method (forkserver, the raw ways, CPython's
                  multiprocessing) at each N, log axis, median with min-max over repetitions
  roundtrips.svg  latency of a round trip or handshake: p50, p10-p90 whiskers (N=1)
  pool.svg        forkserver.Pool and multiprocessing.Pool, tasks/s by pool and
                  maxtasksperchild, median with min-max over rounds       (needs POOL.json)
  zygote.svg      procs/sec against memory held by the zygote or the forking process
"""
import csv
import html
import json
import math
import os
import sys

# Okabe-Ito: tells apart with any colour vision
COLOURS = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442"]
FONT = 'font-family="DejaVu Sans, Verdana, sans-serif"'
ROUND_TRIPS = ("fs_handshake", "uds_rtt", "chan_rtt_1m", "pipe_rtt_1m")


def esc(s):
    return html.escape(str(s), quote=True)


def fmt(v):
    """A readable number: 3 significant figures, thousands separated."""
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def tick_label(v):
    return f"{v:,.0f}" if v >= 1 else f"{v:g}"


class LogAxis:
    """Maps a value onto [x0, x1] on a log scale spanning whole decades around lo..hi."""

    def __init__(self, lo, hi, x0, x1):
        lo = max(lo, 1e-3)
        self.d0 = math.floor(math.log10(lo))
        self.d1 = max(math.ceil(math.log10(hi)), self.d0 + 1)
        self.x0, self.x1 = x0, x1

    def __call__(self, v):
        v = max(v, 10 ** self.d0)
        f = (math.log10(v) - self.d0) / (self.d1 - self.d0)
        return self.x0 + f * (self.x1 - self.x0)

    def ticks(self):
        """(value, major) for 1, 2, 5 of each decade."""
        for d in range(self.d0, self.d1 + 1):
            for m in (1, 2, 5):
                v = m * 10 ** d
                if v <= 10 ** self.d1:
                    yield v, m == 1


def hbar_chart(path, title, notes, sections, series, xlabel):
    """A horizontal grouped bar chart on a log axis.

    sections: [(heading or "", [(label, sublabel, [bar or None for each series])])], where a
    bar is {"v": median, "lo": whisker low, "hi": whisker high} (lo, hi may be None).
    series: names, one colour each. notes: lines under the title."""
    nser = len(series)
    bar_h, gap, group_gap, head_h = (11, 2, 12, 20) if nser > 1 else (16, 0, 14, 20)
    left, plot_w, right, top = 250, 600, 80, 58 + 15 * len(notes)
    legend, lx, ly = [], left, top  # wrapped to the chart's width
    for i, name in enumerate(series if nser > 1 else []):
        w = 30 + 6.5 * len(name)
        if lx > left and lx + w > left + plot_w + right:
            lx, ly = left, ly + 17
        legend.append(f'<rect x="{lx}" y="{ly}" width="12" height="12" '
                      f'fill="{COLOURS[i % len(COLOURS)]}"/><text x="{lx + 16}" y="{ly + 10}" '
                      f'font-size="11">{esc(name)}</text>')
        lx += w
    top = ly
    vals = [b[k] for _, groups in sections for _, _, bars in groups for b in bars if b
            for k in ("v", "lo", "hi") if b.get(k)]
    ax = LogAxis(min(vals), max(vals), left, left + plot_w)
    bands, out, y = [], [], top + 24
    for head, groups in sections:
        if head:
            out.append(f'<text x="8" y="{y + 13}" font-size="12" font-weight="bold">'
                       f'{esc(head)}</text>')
            y += head_h
        for label, sub, bars in groups:
            gh = nser * (bar_h + gap) - gap
            if len(bars) > 1:
                bands.append(f'<rect x="{left}" y="{y - 3}" width="{plot_w}" '
                             f'height="{gh + 6}" fill="#f4f4f4"/>')
            mid = y + gh / 2
            if sub and gh < 26:  # room for two lines of label
                y += (26 - gh) / 2
                mid = y + gh / 2
            dy = -2 if sub else 4
            out.append(f'<text x="{left - 8}" y="{mid + dy}" font-size="12" '
                       f'text-anchor="end">{esc(label)}</text>')
            if sub:
                out.append(f'<text x="{left - 8}" y="{mid + 11}" font-size="10" fill="#555" '
                           f'text-anchor="end">{esc(sub)}</text>')
            for i, b in enumerate(bars):
                by = y + i * (bar_h + gap)
                if not b:
                    continue
                x = ax(b["v"])
                out.append(f'<rect x="{left}" y="{by}" width="{x - left:.1f}" height="{bar_h}" '
                           f'fill="{COLOURS[i % len(COLOURS)]}"><title>{esc(series[i])}: '
                           f'{esc(fmt(b["v"]))}</title></rect>')
                end = x
                if b.get("lo") is not None and b.get("hi") is not None:
                    lo, hi, cy = ax(b["lo"]), ax(b["hi"]), by + bar_h / 2
                    y0, y1 = by + 1, by + bar_h - 1
                    out.append(f'<path d="M{lo:.1f},{cy}H{hi:.1f}M{lo:.1f},{y0}V{y1}'
                               f'M{hi:.1f},{y0}V{y1}" stroke="#222" stroke-width="1.2" '
                               f'fill="none"/>')
                    end = max(end, hi)
                out.append(f'<text x="{end + 4:.1f}" y="{by + bar_h - 2}" font-size="9.5" '
                           f'fill="#333">{esc(fmt(b["v"]))}</text>')
            y += gh + group_gap + (max(0, 26 - gh) / 2 if sub else 0)
    bottom = y
    grid = []
    for v, major in ax.ticks():
        x = ax(v)
        grid.append(f'<line x1="{x:.1f}" y1="{top + 18}" x2="{x:.1f}" y2="{bottom}" '
                    f'stroke="{"#bbb" if major else "#e2e2e2"}" stroke-width="1"/>')
        if major or (ax.d1 - ax.d0) <= 3:
            grid.append(f'<text x="{x:.1f}" y="{bottom + 14}" font-size="{10 if major else 8.5}" '
                        f'text-anchor="middle" fill="{"#000" if major else "#666"}">'
                        f'{esc(tick_label(v))}</text>')
    width, height = left + plot_w + right, bottom + 44
    head = [f'<text x="8" y="20" font-size="15" font-weight="bold">{esc(title)}</text>']
    head += [f'<text x="8" y="{38 + 15 * i}" font-size="11" fill="#333">{esc(n)}</text>'
             for i, n in enumerate(notes)]
    foot = (f'<text x="{left + plot_w / 2}" y="{bottom + 32}" font-size="11" '
            f'text-anchor="middle">{esc(xlabel)}</text>')
    write_svg(path, width, height, head + bands + grid + legend + out + [foot])


def line_chart(path, title, notes, lines, xlabel, ylabel):
    """lines: [(name, [(x, y), ...])], linear x, log y."""
    left, plot_w, plot_h, top = 70, 560, 300, 40 + 15 * len(notes)
    ys = [p[1] for _, pts in lines for p in pts]
    xs = [p[0] for _, pts in lines for p in pts]
    ay = LogAxis(min(ys), max(ys), top + plot_h, top)  # upwards
    xmax = max(xs) or 1
    ax = lambda v: left + v / xmax * plot_w  # noqa: E731
    out = []
    for v, major in ay.ticks():
        y = ay(v)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" '
                   f'stroke="{"#bbb" if major else "#e2e2e2"}"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="{10 if major else 8.5}" '
                   f'text-anchor="end" fill="{"#000" if major else "#666"}">'
                   f'{esc(tick_label(v))}</text>')
    for v in sorted(set(xs)):
        out.append(f'<line x1="{ax(v):.1f}" y1="{top}" x2="{ax(v):.1f}" y2="{top + plot_h}" '
                   f'stroke="#e2e2e2"/><text x="{ax(v):.1f}" y="{top + plot_h + 15}" '
                   f'font-size="10" text-anchor="middle">{esc(tick_label(v))}</text>')
    for i, (name, pts) in enumerate(lines):
        c = COLOURS[i % len(COLOURS)]
        d = " ".join(f'{"M" if j == 0 else "L"}{ax(x):.1f},{ay(y):.1f}'
                     for j, (x, y) in enumerate(sorted(pts)))
        out.append(f'<path d="{d}" stroke="{c}" stroke-width="2.2" fill="none"/>')
        out += [f'<circle cx="{ax(x):.1f}" cy="{ay(y):.1f}" r="3.5" fill="{c}">'
                f'<title>{esc(name)}: {esc(fmt(y))} at {x}</title></circle>' for x, y in pts]
        out.append(f'<rect x="{left + plot_w + 14}" y="{top + 18 * i}" width="12" height="12" '
                   f'fill="{c}"/><text x="{left + plot_w + 30}" y="{top + 10 + 18 * i}" '
                   f'font-size="11">{esc(name)}</text>')
    out.append(f'<text x="{left + plot_w / 2}" y="{top + plot_h + 34}" font-size="11" '
               f'text-anchor="middle">{esc(xlabel)}</text>')
    out.append(f'<text x="16" y="{top + plot_h / 2}" font-size="11" text-anchor="middle" '
               f'transform="rotate(-90 16 {top + plot_h / 2})">{esc(ylabel)}</text>')
    head = [f'<text x="8" y="20" font-size="15" font-weight="bold">{esc(title)}</text>']
    head += [f'<text x="8" y="{38 + 15 * i}" font-size="11" fill="#333">{esc(n)}</text>'
             for i, n in enumerate(notes)]
    write_svg(path, left + plot_w + 230, top + plot_h + 50, head + out)


def write_svg(path, width, height, body):
    with open(path, "w") as f:
        f.write(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" '
                f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" {FONT}>\n'
                f'<rect width="100%" height="100%" fill="#fff"/>\n')
        f.write("\n".join(body))
        f.write("\n</svg>\n")


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def label(r):
    s = r["method"]
    if s.startswith("mp_"):
        return "multiprocessing " + s[3:], ""
    prog = r["program"].split("/")[-1]
    sub = ", ".join(x for x in (prog, r["profile"] and "profile " + r["profile"]) if x)
    return s, sub


def section(method):
    if method.startswith("mp_"):
        return "CPython multiprocessing (start + join of a Process)"
    if method.startswith("fs_"):
        return "forkserver"
    return "raw, from the bench process"


def procs_chart(doc, out, machine):
    """Chart 1: every process-creating method, the largest total it ran, each N."""
    res = [r for r in doc["results"] if r["zygote_mib"] == 0 and r["method"] not in ROUND_TRIPS]
    actives = sorted({r["active"] for r in res})
    top, order = {}, []
    for r in res:
        k = (r["method"], r["program"], r["profile"])
        if k not in top:
            order.append(k)
        top[k] = max(top.get(k, 0), r["total"])
    rows, sections = [], {}
    for k in order:
        bars, totals = [], set()
        for n in actives:
            r = next((r for r in res if (r["method"], r["program"], r["profile"]) == k
                      and r["active"] == n and r["total"] == top[k]), None)
            if not r:
                bars.append(None)
                continue
            p = r["procs_per_sec"]
            bars.append({"v": p["median"], "lo": p["min"], "hi": p["max"]})
            totals.add(r["total"])
            rows.append([*label(r), n, r["total"], p["median"], p["min"], p["max"],
                         r["latency_us"]["p50"], r["latency_us"]["p99"]])
        name, sub = label({"method": k[0], "program": k[1], "profile": k[2]})
        sub = ", ".join(x for x in (sub, "total " + "/".join(f"{t:,}" for t in sorted(totals)))
                        if x)
        sections.setdefault(section(k[0]), []).append((name, sub, bars))
    write_csv(f"{out}/procs.csv", ["method", "variant", "N", "total", "median_per_s",
                                   "min_per_s", "max_per_s", "p50_us", "p99_us"], rows)
    reps = doc.get("reps")
    notes = [f"bar: median over {reps or 'the'} repetitions; whisker: min to max; "
             "N: processes alive at once; total: processes per repetition",
             "each process is created, runs a no-op, exits and is reaped; "
             "higher is better; log scale", machine]
    hbar_chart(f"{out}/procs.svg", "Processes per second, by method", notes,
               list(sections.items()), [f"N={n}" for n in actives],
               "processes per second (log scale)")


def roundtrips_chart(doc, out, machine):
    """Chart 2: the latency of one round trip or handshake, at N=1 (they run one at a
    time whatever N), the largest total."""
    res = [r for r in doc["results"] if r["method"] in ROUND_TRIPS and r["active"] == 1]
    what = {"uds_rtt": "1 byte there and back, socketpair",
            "fs_handshake": "connect + mutual HMAC handshake",
            "chan_rtt_1m": "1 MiB through a worker's channel (memfd)",
            "pipe_rtt_1m": "1 MiB through two pipes"}
    groups, rows = [], []
    for m in ("uds_rtt", "fs_handshake", "pipe_rtt_1m", "chan_rtt_1m"):
        rs = [r for r in res if r["method"] == m]
        if not rs:
            continue
        r = max(rs, key=lambda r: r["total"])
        lat = r["latency_us"]
        lo, hi = lat.get("p10"), lat.get("p90")
        groups.append((m, what[m], [{"v": lat["p50"], "lo": lo, "hi": hi}]))
        rows.append([m, r["total"], lat["p50"], lo, hi, lat["p99"], lat.get("min"),
                     lat.get("max"), r["procs_per_sec"]["median"]])
    if not groups:
        return False
    write_csv(f"{out}/roundtrips.csv", ["method", "total", "p50_us", "p10_us", "p90_us",
                                        "p99_us", "min_us", "max_us", "median_per_s"], rows)
    whisk = ("whisker: p10 to p90" if all(g[2][0]["lo"] is not None for g in groups)
             else "no whiskers: this JSON has no p10/p90 (an older fsbench)")
    notes = [f"bar: p50 of every round trip of every repetition; {whisk}; "
             "one at a time; lower is better; log scale", machine]
    hbar_chart(f"{out}/roundtrips.svg", "Round trips and handshakes: latency of one", notes,
               [("", groups)], ["p50"], "microseconds per round trip (log scale)")
    return True


POOLS = {"forkserver-zygote": "forkserver.Pool, zygote",
         "forkserver-exec": "forkserver.Pool, exec",
         "mp-fork": "multiprocessing, fork", "mp-forkserver": "multiprocessing, forkserver",
         "mp-spawn": "multiprocessing, spawn"}


def pool_chart(pool, out):
    """Chart 3: tasks/s by pool and maxtasksperchild (chunksize=1 workloads)."""
    work = [(k, w) for k, w in pool.items() if w["unit"] == "tasks/s"]
    if not work:
        return False
    work.sort(key=lambda kw: -(kw[1].get("maxtasksperchild") or
                               (0 if kw[0].startswith("maxtasksperchild=") else 1e9)))
    for k, w in work:  # files from before --maxtasks: the name says it
        if "maxtasksperchild" not in w and k.startswith("maxtasksperchild="):
            w["maxtasksperchild"] = int(k.split("=")[1])
    pools = [p for p in POOLS if any(p in w["runs"] for _, w in work)]
    groups, rows = [], []
    for k, w in work:
        mtc = w.get("maxtasksperchild")
        name = f"maxtasksperchild={mtc}" if mtc else "long-lived workers"
        sub = ", ".join(x for x in (w.get("tasks") and f"{w['tasks']:,} tasks",
                                    "chunksize=1") if x)
        bars = []
        for p in pools:
            runs = w["runs"].get(p)
            if not runs:
                bars.append(None)
                continue
            bars.append({"v": w["median"][p], "lo": min(runs), "hi": max(runs)})
            rows.append([p, mtc if mtc else "", w.get("tasks", ""), round(w["median"][p], 2),
                         round(min(runs), 2), round(max(runs), 2), len(runs)])
        groups.append((name, sub, bars))
    write_csv(f"{out}/pool.csv", ["pool", "maxtasksperchild", "tasks", "median_tasks_per_s",
                                  "min_tasks_per_s", "max_tasks_per_s", "rounds"], rows)
    w0 = work[0][1]
    nrounds = len(next(iter(w0["runs"].values())))
    rounds = f"{nrounds} round{'s' if nrounds != 1 else ''}"
    notes = [f"bar: median of {rounds} (pools interleaved); whisker: min to max; "
             "pool start and end included; higher is better; log scale",
             f"task: x * x; {w0.get('processes', 2)} processes; "
             f"Python {w0.get('python', '3')}; maxtasksperchild=K: a new process every K tasks"]
    hbar_chart(f"{out}/pool.svg", "Pool: tasks per second by pool and maxtasksperchild",
               notes, [("", groups)], [POOLS[p] for p in pools], "tasks per second (log scale)")
    return True


def zygote_chart(doc, out, machine):
    """procs/sec against memory held (N=2), as before: fs_exec and fs_fork with a zygote
    of that size, raw fork from a bench process of that size."""
    res = doc["results"]
    fsm = {("fs_exec", "static", "default"): "fs_exec static",
           ("fs_fork", "", "default"): "fs_fork",
           ("fork_sized", "4k", ""): "raw fork, 4 KiB pages",
           ("fork_sized", "thp", ""): "raw fork, huge pages"}
    sized_total = {r["total"] for r in res if r["method"] == "fork_sized"}
    if not sized_total:
        return False
    total = max(sized_total)
    # the 0 MiB points come from the main series: at the same total when it ran one
    zero = {r["total"] for r in res if r["zygote_mib"] == 0 and r["active"] == 2}
    total0 = total if total in zero or not zero else max(zero)
    pts = {}
    for r in res:
        k = (r["method"], r["program"], r["profile"])
        if r["active"] != 2 or r["total"] != (total0 if r["zygote_mib"] == 0 else total):
            continue
        v = r["procs_per_sec"]["median"]
        if k in fsm:
            pts.setdefault(fsm[k], {})[r["zygote_mib"]] = v
        if k == ("fork", "", "") and r["zygote_mib"] == 0:
            for n in ("raw fork, 4 KiB pages", "raw fork, huge pages"):
                pts.setdefault(n, {})[0] = v
    lines = [(n, sorted(p.items())) for n, p in pts.items() if p]
    write_csv(f"{out}/zygote.csv", ["series", "mib_held", "median_per_s"],
              [[n, x, y] for n, p in lines for x, y in p])
    line_chart(f"{out}/zygote.svg", "Processes per second against memory held (N=2)",
               [f"median; total {total} per repetition"
                + (f" ({total0} at 0 MiB, from the main series)" if total0 != total else "")
                + "; held by the zygote (forkserver) or by the forking process (raw fork)",
                machine],
               lines, "MiB held", "processes per second (log scale)")
    return True


def main():
    if len(sys.argv) not in (3, 4) or sys.argv[1] in ("-h", "--help"):
        print(__doc__, file=sys.stderr)
        return 2
    results, out = sys.argv[1], sys.argv[2]
    pool = sys.argv[3] if len(sys.argv) == 4 else os.path.join(os.path.dirname(results),
                                                                "pool.json")
    os.makedirs(out, exist_ok=True)
    doc = json.load(open(results))
    m = doc["machine"]
    machine = (f"{m['cpu']}, {m['cores']} cores, {m['kernel']}"
               + (f", Python {m['python']}" if m.get("python") else ""))
    wrote = []
    procs_chart(doc, out, machine)
    wrote.append("procs")
    if roundtrips_chart(doc, out, machine):
        wrote.append("roundtrips")
    if os.path.exists(pool):
        if pool_chart(json.load(open(pool)), out):
            wrote.append("pool")
    elif len(sys.argv) == 4:
        print(f"plot.py: {pool}: no such file", file=sys.stderr)
        return 1
    if zygote_chart(doc, out, machine):
        wrote.append("zygote")
    print("wrote " + ", ".join(f"{out}/{w}.svg" for w in wrote) + " (and a .csv for each)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
