#!/usr/bin/env bash
#SBATCH --job-name=forkserver
# A Slurm job with one forkserverd per node: submit it with the job's own command,
#
#   sbatch -N 2 forkserver-job.sh python3 driver.py
#   sbatch -N 2 forkserver-job.sh srun --overlap python3 per-node.py
#
# It starts forkserver-node.sh on every node of the allocation (one task per node, in a
# step that shares its CPUs and memory with the job's other steps: --overlap), so the daemons
# and their workers live in the job (its cgroups, limits and accounting) and end with it, and
# each daemon gets the key by an fd opened on its node, inside the step; waits until every
# node's daemon listens; runs the command with FORKSERVER_SOCKET and FORKSERVER_KEY_FILE set
# (the same paths on every node, each node's own daemon and key); then stops the daemons and
# exits with the command's status. The command's own steps start beside the daemons' step.
#
# forkserver-node.sh is looked up in $PATH unless $FORKSERVER_NODE_SCRIPT names it (sbatch
# runs a copy of this script, away from its directory). Each node's private directory is
# ${FORKSERVER_JOB_DIR:-${TMPDIR:-/tmp}/forkserver-$SLURM_JOB_ID}: a socket directory must be
# the daemon's own (mode 0700) under directories that are not writable by others unless
# sticky, as /tmp is; $TMPDIR itself would be refused.
set -euo pipefail
: "${SLURM_JOB_ID:?forkserver-job.sh: not in a Slurm job (submit it with sbatch)}"
[ $# -gt 0 ] || { echo "usage: sbatch [OPTION]... forkserver-job.sh COMMAND [ARG]..." >&2; exit 2; }
node=${FORKSERVER_NODE_SCRIPT:-forkserver-node.sh}
dir=${FORKSERVER_JOB_DIR:-${TMPDIR:-/tmp}/forkserver-$SLURM_JOB_ID}
nodes=${SLURM_JOB_NUM_NODES:-1}
export FORKSERVER_SOCKET=$dir/fs.sock FORKSERVER_KEY_FILE=$dir/key

# The daemons' readiness comes back as one "READY HOST" line per node on the step's stdout,
# through a fifo that only this script reads.
fifo=$(mktemp -d "${TMPDIR:-/tmp}/forkserver-job-$SLURM_JOB_ID.XXXXXX")
mkfifo "$fifo/ready"
srun --overlap --nodes="$nodes" --ntasks="$nodes" --ntasks-per-node=1 --kill-on-bad-exit=1 \
        "$node" "$dir" >"$fifo/ready" &
step=$!
stop() {
        # forkctl stop on each node: each daemon ends its workers and exits, and its
        # forkserver-node.sh removes the node's directory; the step then ends by itself.
        # (Signalling srun instead would end the step with SIGKILL after KillWait.)
        if kill -0 "$step" 2>/dev/null; then
                srun --overlap --nodes="$nodes" --ntasks="$nodes" --ntasks-per-node=1 \
                        "${FORKCTL:-forkctl}" stop >/dev/null 2>&1 || true
        fi
        for _ in $(seq 100); do
                kill -0 "$step" 2>/dev/null || break
                sleep 0.1
        done
        kill -TERM "$step" 2>/dev/null || true
        wait "$step" 2>/dev/null || true
        exec 5<&- || true
        rm -rf "$fifo"
}
trap stop EXIT
exec 5<"$fifo/ready"
for ((i = 0; i < nodes; i++)); do
        if ! read -r -t 120 line <&5 || [ "${line%% *}" != READY ]; then
                echo "forkserver-job: $i of $nodes daemons started" >&2
                exit 1
        fi
done
echo "forkserver-job: a forkserverd on each of $nodes node(s), socket $FORKSERVER_SOCKET" >&2
status=0
"$@" || status=$?
exit "$status"
