#!/usr/bin/env bash
# Idle connections against the daemon (bench/idlebench.c): its memory per authenticated idle
# connection and one more client's spawn rate beside them. Arguments: IDLE (10000), ROUNDS
# (3), SECONDS (2). The build is $BENCH_BUILD (default build).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BENCH_BUILD:-build}
[ -f "$build/build.ninja" ] || meson setup "$build" >/dev/null
ninja -C "$build" >/dev/null
export FORKCTL=${FORKCTL:-$build/client/forkctl}
. bench/daemon.sh
ulimit -n "$(ulimit -Hn)"
bench_daemon idle "$build/forkserver/forkserverd" --max-connections 65536
"$build/bench/idlebench" "$dir/s.sock" "$dir/key" "$bench_daemon_pid" "$@"
