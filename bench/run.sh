#!/usr/bin/env bash
# Runs the whole benchmark in one go, from a release build of its own: fsbench, then CPython's
# multiprocessing on the same machine right after (into the same JSON), then forkserver.Pool
# against multiprocessing.Pool, then the charts (SVG, drawn by bench/plot.py with Python's
# standard library) and the CSV behind each. bench/run.sh --help lists the options.
set -euo pipefail
usage() {
        cat <<'USAGE'
usage: bench/run.sh [--quick] [--reps N] [--totals N,...] [--actives N,...] [--methods M,...]
                    [--sizes MIB,...] [--out DIR] [--build DIR] [--mp-args 'ARGS']
                    [--pool-args 'ARGS'] [--no-mp] [--no-pool] [--plots-only]

  --quick, --reps N   to fsbench, mp_compare.py and pool_compare.py
  --totals, --actives, --methods, --sizes
                      to fsbench and mp_compare.py, as before (mp_compare.py caps totals
                      at 256 and ignores --methods and --sizes)
  --out DIR           where it all goes (default: $OUT, else bench/results): results.json,
                      fsbench.txt, mp.txt, pool.json, pool.txt; the charts procs.svg,
                      roundtrips.svg, pool.svg, zygote.svg; a .csv beside each chart
  --build DIR         the build to use (default: build-bench), configured if need be with
                      meson setup --buildtype=release -Db_ndebug=true -Dtests=false
                      -Dman=disabled; one that is not a release build is refused. The
                      developer's build/ is not touched.
  --mp-args 'ARGS'    more options for mp_compare.py, after the shared ones (so they win)
  --pool-args 'ARGS'  more options for pool_compare.py, after --maxtasks 1,10
                      --maxtasks-tasks 40 and the shared ones (so they win)
  --no-mp, --no-pool  leave out multiprocessing's start methods, or the Pool comparison
  --plots-only        run nothing: redraw the charts from DIR/results.json and pool.json
Paths are relative to the repository root. Run it with nice on a shared machine.
USAGE
}
cd "$(dirname "$0")/.."
out=${OUT:-bench/results}
build="build-bench"
shared=() fsb=() mp_extra=() pool_extra=() mp=1 pool=1 plots_only=0
while [ $# -gt 0 ]; do
        case $1 in
        -h | --help) usage; exit 0 ;;
        --quick) shared+=("$1") ;;
        --reps) shared+=("$1" "${2:?--reps needs a value}"); shift ;;
        --reps=*) shared+=("$1") ;;
        --totals | --actives | --methods | --sizes) fsb+=("$1" "${2:?$1 needs a value}"); shift ;;
        --totals=* | --actives=* | --methods=* | --sizes=*) fsb+=("$1") ;;
        --out) out=${2:?--out needs a directory}; shift ;;
        --out=*) out=${1#*=} ;;
        --build) build=${2:?--build needs a directory}; shift ;;
        --build=*) build=${1#*=} ;;
        --mp-args) read -r -a mp_extra <<<"${2?}"; shift ;;
        --pool-args) read -r -a pool_extra <<<"${2?}"; shift ;;
        --no-mp) mp=0 ;;
        --no-pool) pool=0 ;;
        --plots-only) plots_only=1 ;;
        *) echo "bench/run.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
        esac
        shift
done
mkdir -p "$out"
if [ $plots_only -eq 1 ]; then
        exec python3 bench/plot.py "$out/results.json" "$out"
fi

tests/deps.sh
if [ ! -f "$build/build.ninja" ]; then
        echo "bench/run.sh: configuring a release build in $build"
        meson setup "$build" --buildtype=release -Db_ndebug=true -Dtests=false \
                -Dman=disabled >/dev/null
fi
# a debug or sanitizer build would measure the wrong thing: refuse one
meson introspect "$build" --buildoptions | python3 -c '
import json, sys
o = {x["name"]: x["value"] for x in json.load(sys.stdin)}
bad = [f"{k}={o.get(k)}" for k, want in (("buildtype", ["release"]),
       ("b_ndebug", ["true", "if-release"]), ("b_sanitize", ["none"])) if str(o.get(k)) not in want]
if bad:
    sys.exit("bench/run.sh: %s is not a release build (%s): leave out --build, or name "
             "another directory" % (sys.argv[1], ", ".join(bad)))' "$build"
ninja -C "$build" >/dev/null

"$build/bench/fsbench" "${shared[@]}" "${fsb[@]}" --json "$out/results.json" |
        tee "$out/fsbench.txt"
if [ $mp -eq 1 ]; then
        python3 bench/mp_compare.py "${shared[@]}" "${fsb[@]}" "${mp_extra[@]}" \
                --json "$out/results.json" | tee "$out/mp.txt"
fi
if [ $pool -eq 1 ]; then
        if [ -e "$build/forkserver/libforkserver-python.so" ]; then
                pool_args=(--maxtasks "1,10" --maxtasks-tasks 40 "${shared[@]}" "${pool_extra[@]}")
                BENCH_BUILD=$build bench/pool.sh "${pool_args[@]}" --json "$out/pool.json" |
                        tee "$out/pool.txt"
        else
                echo "bench/run.sh: no Python zygote in $build (python3-dev missing?):" \
                        "no Pool comparison" >&2
        fi
fi
python3 bench/plot.py "$out/results.json" "$out"
