#!/usr/bin/env bash
# The whole test suite: builds with -Werror and runs every suite (the formatting of every C
# file against .clang-format among them: tests/check-format.sh); checks what `meson install`
# and `meson dist` give; again under
# AddressSanitizer + UndefinedBehaviorSanitizer; the suites' client side under valgrind;
# each libFuzzer target for FUZZ_SECONDS (default 60). Ends with "N passed, N failed, N skipped".
set -uo pipefail
cd "$(dirname "$0")/.."
tests/deps.sh || exit 1
fuzz_seconds=${FUZZ_SECONDS:-60}
logs=()
status=0

setup() { # dir, meson options...
        local dir=$1; shift
        if [ ! -f "$dir/build.ninja" ]; then
                meson setup "$dir" -Dwerror=true "$@" >"$dir.setup.log" 2>&1 ||
                        { cat "$dir.setup.log"; return 1; }
        fi
        ninja -C "$dir" >"$dir.ninja.log" 2>&1 || { tail -50 "$dir.ninja.log"; return 1; }
}

suite() { # dir, logbase, meson test options...
        local dir=$1 base=$2; shift 2
        echo "== $base: $dir"
        rm -f "$dir/meson-logs/$base"*.json
        meson test -C "$dir" --logbase "$base" --print-errorlogs "$@" 2>&1 |
                grep -E '^ *[0-9]+/[0-9]+ |^(Ok|Fail|Skipped|Timeout):' || true
        # with --wrapper, meson appends the wrapper's name to the log's name
        logs+=("$(ls "$dir/meson-logs/$base"*.json 2>/dev/null | head -1 || echo "$dir/meson-logs/$base.json")")
}

export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0

if setup build; then
        suite build testlog
        echo "== install: build"
        tests/install-check.sh build build/meson-logs/install.json
        logs+=(build/meson-logs/install.json)
        # valgrind 3.19 (Debian 12) lacks the pidfd syscalls the daemon is built on, so it
        # checks the client library and the harness; ASan/LSan below check the daemon. It
        # also keeps its own fd limit, so tests of fd exhaustion ("rlimit") are left out,
        # and the long load tests ("load") would only measure valgrind.
        CK_EXCLUDE_TAGS="pidfd rlimit load" suite build client --suite unit --suite integration \
                --wrapper "valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite" \
                --timeout-multiplier 4
else
        status=1
fi

if setup build-asan -Db_sanitize=address,undefined -Db_lundef=false; then
        # CPython's pool tests time their futures in seconds: under a sanitized daemon they
        # measure the sanitizer, and the plain build runs them. Load tests get 3 x the time.
        FORKSERVER_TEST_SLOWDOWN=3 suite build-asan testlog --no-suite cpython
else
        status=1
fi

if CC=clang setup build-fuzz -Dfuzzing=true -Dtests=false \
        -Db_sanitize=address,undefined -Db_lundef=false; then
        fuzzlog=build-fuzz/meson-logs/fuzz.json
        mkdir -p build-fuzz/meson-logs && : >"$fuzzlog"
        for t in proto handshake key profile; do
                echo "== fuzz-$t for ${fuzz_seconds}s"
                work=$(mktemp -d)
                cp tests/fuzz/corpus/$t/* "$work/"
                if build-fuzz/tests/fuzz/fuzz-$t -max_total_time="$fuzz_seconds" -max_len=4096 \
                        -artifact_prefix=tests/fuzz/crash-$t- -print_final_stats=1 "$work" \
                        >"build-fuzz/fuzz-$t.log" 2>&1; then
                        result=OK
                else
                        result=FAIL
                        tail -30 "build-fuzz/fuzz-$t.log"
                fi
                grep -E "stat::number_of_executed_units" "build-fuzz/fuzz-$t.log" || true
                rm -rf "$work"
                printf '{"name": "fuzz-%s", "result": "%s", "stdout": ""}\n' "$t" "$result" >>"$fuzzlog"
        done
        logs+=("$fuzzlog")
else
        status=1
fi

python3 tests/tally.py "${logs[@]}" || status=1
exit $status
