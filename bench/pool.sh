#!/usr/bin/env bash
# forkserver.Pool against multiprocessing.Pool (bench/pool_compare.py), with a forkserverd
# hosting a Python zygote that this script starts. Options go to pool_compare.py. The build
# is $BENCH_BUILD (default build; bench/run.sh passes its release build).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BENCH_BUILD:-build}
tests/deps.sh
[ -f "$build/build.ninja" ] || meson setup "$build" >/dev/null
ninja -C "$build" >/dev/null
[ -e "$build/forkserver/libforkserver-python.so" ] ||
        { echo "pool.sh: no Python zygote (build without python3-dev?)" >&2; exit 1; }
export FORKCTL=${FORKCTL:-$build/client/forkctl}
. bench/daemon.sh
# The zygote preloads what pool_compare.py imports, as a user preloads their modules: each
# worker runs the main script (as multiprocessing's spawn and forkserver methods do), and
# preloaded imports cost it nothing.
bench_daemon pool env PYTHONPATH="$PWD/client/python" "$build/forkserver/forkserverd" \
        --python-preload argparse,json,statistics,multiprocessing.pool
FORKSERVER_SOCKET=$dir/s.sock FORKSERVER_KEY_FILE=$dir/key /usr/bin/python3 bench/pool_compare.py "$@"
