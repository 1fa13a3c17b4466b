#!/usr/bin/env bash
# The GPU scenario and the time-to-buffer benchmark (bench/gpubench.c) against a daemon it
# starts with --cuda. On a machine with an NVIDIA GPU:   bench/gpu.sh [gpubench options]
# Anywhere, against the fake driver of the tests:        bench/gpu.sh --fake [options]
# gpubench options: --size SIZE (default 64M), --reps N (default 20).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${GPUBENCH:-}" ]; then
        tests/deps.sh
        [ -f build/build.ninja ] || meson setup build >/dev/null
        ninja -C build >/dev/null
        GPUBENCH=build/bench/gpubench FORKSERVERD=build/forkserver/forkserverd
        FORKCTL=build/client/forkctl FAKECUDA=build/tests/fakecuda/libcuda.so.1
fi
if [ "${1:-}" = --fake ]; then
        shift
        [ -e "$FAKECUDA" ] || { echo "gpu.sh: no fake driver (built without cuda.h?)" >&2; exit 77; }
        export FORKSERVER_LIBCUDA=$(realpath "$FAKECUDA")
        echo "driver: the fake (tests/fakecuda): device memory is host memory, so the timings"
        echo "        measure forkserver's path, not a GPU's"
fi
. bench/daemon.sh
bench_daemon gpu "$FORKSERVERD" --cuda
"$GPUBENCH" --socket "$dir/s.sock" --key-file "$dir/key" "$@"
