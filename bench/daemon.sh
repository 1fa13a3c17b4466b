# Sourced by the benchmark scripts: bench_daemon NAME COMMAND... starts COMMAND (a forkserverd
# command line, which may start with env VAR=...) on a temporary socket with a fresh key, waits
# for READY, and leaves $dir/s.sock and $dir/key for the caller. The daemon and the directory
# go at exit. FORKCTL, when set, is the forkctl that makes the key.
bench_daemon() {
        local name=$1 line
        shift
        dir=$(mktemp -d "/tmp/fs-$name-XXXXXX")
        bench_daemon_pid=
        trap 'bench_daemon_stop' EXIT
        "${FORKCTL:-build/client/forkctl}" keygen -o "$dir/key" 2>/dev/null
        mkfifo "$dir/ready"
        # --allow-root-workers: a daemon started as root needs a plan for its workers
        "$@" --foreground --socket "$dir/s.sock" --key-file "$dir/key" --log-level warning \
                --allow-root-workers --ready-fd 3 3>"$dir/ready" &
        bench_daemon_pid=$!
        if ! read -r -t 60 line <"$dir/ready" || [ "$line" != READY ]; then
                echo "bench/$name.sh: forkserverd did not start (see above)" >&2
                exit 1
        fi
}

bench_daemon_stop() {
        [ -n "$bench_daemon_pid" ] && kill "$bench_daemon_pid" 2>/dev/null &&
                wait "$bench_daemon_pid" 2>/dev/null || true
        rm -rf "$dir"
}
