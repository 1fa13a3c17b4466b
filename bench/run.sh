#!/usr/bin/env bash
# Runs the whole benchmark in one go: fsbench, then CPython's multiprocessing on the same
# machine right after, into one JSON file, then the plots. Usage: bench/run.sh [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
tests/deps.sh
command -v gnuplot >/dev/null || { sudo=(); [ "$(id -u)" -eq 0 ] || sudo=(sudo);
        "${sudo[@]}" apt-get install -y -qq gnuplot-nox >/dev/null; }
[ -f build/build.ninja ] || meson setup build --buildtype=release >/dev/null
ninja -C build >/dev/null
out=${OUT:-bench/results}
mkdir -p "$out"
build/bench/fsbench "$@" --json "$out/results.json" | tee "$out/fsbench.txt"
python3 bench/mp_compare.py "$@" --json "$out/results.json" | tee "$out/mp.txt"  # same options
python3 bench/plot.py "$out/results.json" "$out"
