#!/usr/bin/env bash
# Demo: build, start a daemon with a fresh key in a private directory, run workers through
# forkctl and through the C API, print what they did, stop the daemon, clean up.
set -euo pipefail
cd "$(dirname "$0")/.."
tests/deps.sh
# a build directory of its own: build/ stays free for `meson setup build --prefix=...`
b=build-demo
[ -f $b/build.ninja ] || meson setup $b >/dev/null
ninja -C $b >/dev/null

dir=$(mktemp -d /tmp/forkserver-demo-XXXXXX)
sock=$dir/forkserverd.sock
ctl=($b/client/forkctl --socket "$sock" --key-file "$dir/key")
cleanup() { [ -n "${daemon:-}" ] && kill "$daemon" 2>/dev/null && wait "$daemon" || true; rm -rf "$dir"; }
trap cleanup EXIT

$b/client/forkctl keygen -o "$dir/key"
# --allow-root-workers: run as root, the daemon needs a plan for its workers (forkserverd(8))
$b/forkserver/forkserverd --socket "$sock" --key-file "$dir/key" --foreground \
        --allow-root-workers --preload $b/examples/libwordcount.so --ready-fd 4 4>"$dir/ready" &
daemon=$!
for _ in $(seq 100); do grep -q READY "$dir/ready" 2>/dev/null && break; sleep 0.05; done
echo "--- forkserverd is listening on $sock (pid $daemon)"

echo "--- forkctl ping"
"${ctl[@]}" ping
echo "--- forkctl run -- uname -sr"
"${ctl[@]}" run -- uname -sr
echo "--- forkctl run --env GREETING=hi -- sh -c 'echo \$GREETING from pid \$\$; exit 7'"
set +e
"${ctl[@]}" run --env GREETING=hi -- sh -c 'echo $GREETING from pid $$; exit 7'
echo "exit status: $?"
echo "--- forkctl run -- sh -c 'kill -KILL \$\$'"
"${ctl[@]}" run -- sh -c 'kill -KILL $$'
echo "exit status: $? (128 + 9)"
set -e
echo "--- the C API (examples/spawn-demo.c): three workers at once"
$b/examples/spawn-demo "$sock" "$dir/key"
echo "--- fork mode: a preloaded job library, fed files over a private channel"
$b/examples/wordcount-client "$sock" "$dir/key" README.md docs/PROTOCOL.md
echo "--- forkctl run --profile strict -- sh -c 'echo sandboxed'"
"${ctl[@]}" run --profile strict -- sh -c 'echo sandboxed'
echo "--- forkctl status"
"${ctl[@]}" status
echo "--- forkctl stop"
"${ctl[@]}" stop
wait "$daemon"; echo "forkserverd exited with $?"; daemon=
