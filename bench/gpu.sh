#!/usr/bin/env bash
# The GPU scenario and the time-to-buffer benchmark (bench/gpubench.c) against a daemon it
# starts with --cuda. The driver: $FORKSERVER_LIBCUDA when set (a real libcuda.so.1, say),
# else the fake of the tests (tests/fakecuda); --fake forces the fake, --real the system's
# libcuda.so.1.
#     FORKSERVER_LIBCUDA=/usr/lib/x86_64-linux-gnu/libcuda.so.1 bench/gpu.sh [options]
#     bench/gpu.sh --real [options]        bench/gpu.sh [--fake] [options]
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
mode=env
case "${1:-}" in
--fake) mode=fake; shift ;;
--real) mode=real; shift ;;
esac
[ $mode = env ] && [ -z "${FORKSERVER_LIBCUDA:-}" ] && mode=fake
case $mode in
fake)
        [ -e "$FAKECUDA" ] || { echo "gpu.sh: no fake driver (built without cuda.h?)" >&2; exit 77; }
        export FORKSERVER_LIBCUDA=$(realpath "$FAKECUDA")
        echo "driver: the fake (tests/fakecuda): device memory is host memory, so the timings"
        echo "        measure forkserver's path, not a GPU's"
        ;;
real)
        unset FORKSERVER_LIBCUDA
        echo "driver: the system's libcuda.so.1"
        ;;
*)
        export FORKSERVER_LIBCUDA
        echo "driver: $FORKSERVER_LIBCUDA (FORKSERVER_LIBCUDA)"
        ;;
esac
. bench/daemon.sh
bench_daemon gpu "$FORKSERVERD" --cuda
"$GPUBENCH" --socket "$dir/s.sock" --key-file "$dir/key" "$@"
