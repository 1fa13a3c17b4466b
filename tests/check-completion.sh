#!/usr/bin/env bash
# The bash completions offer every option the --help texts name: for forkserverd all of
# them, for forkctl each command's own (forkctl CMD --help) after CMD and the global ones
# before it; and a few completions a user relies on.
# Usage: tests/check-completion.sh FORKSERVERD FORKCTL COMPLETIONDIR
set -uo pipefail
fsd=$1 ctl=$2 dir=$3
failed=0
. "$dir/forkserverd" && . "$dir/forkctl" || exit 1

# complete FUNCTION WORD... : the candidates for the last word, one a line
complete_() {
        local fn=$1; shift
        COMP_WORDS=("$@") COMP_CWORD=$(($# - 1)) COMPREPLY=()
        "$fn"
        printf '%s\n' "${COMPREPLY[@]}"
}
# the options a help text names (another program's, "forkserverd --cuda", are not ours)
options() { sed -E 's/(forkserverd|forkctl) --[a-z-]+//g' | grep -o -- '--[a-z][a-z-]*[a-z]' | sort -u; }
# the options a help text lists in its table: lines that start with one
listed() { grep -E '^ +(-[a-z], )?--[a-z]' | options; }
expect_all() { # what, wanted (lines), offered (lines)
        local missing
        missing=$(comm -23 <(sort -u <<<"$2") <(sort -u <<<"$3"))
        if [ -n "$missing" ]; then
                echo "$1: not offered: $(tr '\n' ' ' <<<"$missing")"
                failed=$((failed + 1))
        fi
}

expect_all "forkserverd" "$("$fsd" --help | options)" "$(complete_ _forkserverd forkserverd --)"
expect_all "forkctl (global)" "--socket
--key-file
--key-fd
--help
--version" "$(complete_ _forkctl forkctl --)"
all=$(complete_ _forkctl forkctl --)
for cmd in keygen run ping status stop; do
        offered=$(complete_ _forkctl forkctl --socket /x "$cmd" --)
        expect_all "forkctl $cmd" "$("$ctl" "$cmd" --help | listed)" "$offered"
        all+=$'\n'$offered
done
expect_all "forkctl (every option of forkctl --help somewhere)" "$("$ctl" --help | options)" "$all"
expect_all "forkctl r<TAB>" "run" "$(complete_ _forkctl forkctl r)"
expect_all "forkctl run --cwd /us<TAB>" "/usr" "$(complete_ _forkctl forkctl run --cwd /us)"
expect_all "forkctl run -- ech<TAB>" "echo" "$(complete_ _forkctl forkctl run --clear-env -- ech)"
expect_all "forkserverd --log-level <TAB>" "debug" "$(complete_ _forkserverd forkserverd --log-level '')"
if [ -n "$(complete_ _forkctl forkctl run -- ls --)" ] && [ -n "$(complete_ _forkctl forkctl run -- ls --pro | grep -x -- --profile)" ]; then
        echo "forkctl run -- PROG: PROG's arguments were completed as forkctl's options"
        failed=$((failed + 1))
fi
[ $failed -eq 0 ] && echo "completions agree with --help" || echo "$failed disagreements"
[ $failed -eq 0 ]
