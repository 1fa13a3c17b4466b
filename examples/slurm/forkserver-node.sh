#!/usr/bin/env bash
# One forkserverd on this node, for one Slurm job: run as the one task per node of the
# job script's `srun --overlap` step (forkserver-job.sh), or alone on any machine.
#
#   forkserver-node.sh DIR [FORKSERVERD OPTION]...
#
# Makes DIR (mode 0700; it must not exist yet, so nobody else can have made it), a fresh key
# DIR/key (this node's alone: it never crosses the network), and starts forkserverd on
# DIR/fs.sock with the key on an fd opened here, on this node, inside the step. Prints
# "READY HOSTNAME" on stdout once the daemon listens, then waits; SIGTERM (srun forwards it
# when the job script stops the step) stops the daemon and removes DIR. Clients on the node
# use FORKSERVER_SOCKET=DIR/fs.sock and FORKSERVER_KEY_FILE=DIR/key.
# $FORKSERVERD and $FORKCTL name the binaries (default: forkserverd and forkctl in $PATH).
set -euo pipefail
dir=${1:?usage: forkserver-node.sh DIR [FORKSERVERD OPTION]...}
shift
fsd=${FORKSERVERD:-forkserverd}
ctl=${FORKCTL:-forkctl}
umask 077
mkdir -m 0700 "$dir"
daemon=
cleanup() {
        if [ -n "$daemon" ]; then
                kill -TERM "$daemon" 2>/dev/null || true
                wait "$daemon" 2>/dev/null || true
        fi
        rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 0' TERM INT HUP
"$ctl" keygen -o "$dir/key" >/dev/null
mkfifo "$dir/ready"
# Run as root (a test, a root-run job), the daemon needs a plan for its workers (forkserverd(8)):
# they stay root, without capabilities. A user's job has no say: the option does nothing there.
[ "$(id -u)" -ne 0 ] || set -- --allow-root-workers "$@"
# fd 4 (readiness) is opened first: should anything after it fail, the reader sees EOF at
# once. stdout is srun's readiness stream: the daemon's goes to stderr.
"$fsd" --foreground --socket "$dir/fs.sock" --key-fd 3 --ready-fd 4 "$@" \
        4>"$dir/ready" 3<"$dir/key" >&2 &
daemon=$!
line=
read -r -t 30 line <"$dir/ready" || true
rm -f "$dir/ready"
if [ "$line" != READY ]; then
        echo "forkserver-node: forkserverd did not start on $(hostname)" >&2
        exit 1
fi
echo "READY $(hostname)"
wait "$daemon"
