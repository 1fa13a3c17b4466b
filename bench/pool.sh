#!/usr/bin/env bash
# forkserver.Pool against multiprocessing.Pool (bench/pool_compare.py), with a forkserverd
# hosting a Python zygote that this script starts. Options go to pool_compare.py.
set -euo pipefail
cd "$(dirname "$0")/.."
tests/deps.sh
[ -f build/build.ninja ] || meson setup build >/dev/null
ninja -C build >/dev/null
[ -e build/forkserver/libforkserver-python.so ] ||
        { echo "pool.sh: no Python zygote (build without python3-dev?)" >&2; exit 1; }
dir=$(mktemp -d /tmp/fs-pool-XXXXXX)
pid=
cleanup() {
        [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
        rm -rf "$dir"
}
trap cleanup EXIT
build/client/forkctl keygen -o "$dir/key" 2>/dev/null
mkfifo "$dir/ready"
# The zygote preloads what pool_compare.py imports, as a user preloads their modules: each
# worker runs the main script (as multiprocessing's spawn and forkserver methods do), and
# preloaded imports cost it nothing.
PYTHONPATH=$PWD/client/python build/forkserver/forkserverd --foreground --socket "$dir/s.sock" \
        --key-file "$dir/key" --python-preload argparse,json,statistics,multiprocessing.pool \
        --log-level warning \
        --ready-fd 3 3>"$dir/ready" &
pid=$!
read -r -t 60 line <"$dir/ready" && [ "$line" = READY ] ||
        { echo "pool.sh: forkserverd did not start" >&2; exit 1; }
FORKSERVER_SOCKET=$dir/s.sock FORKSERVER_KEY_FILE=$dir/key /usr/bin/python3 bench/pool_compare.py "$@"
