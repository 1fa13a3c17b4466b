#!/usr/bin/env bash
# Every C source and header of the project is as .clang-format lays it out. Skips (77) where
# clang-format is not installed.
set -uo pipefail
root=${1:-$(dirname "$0")/..}
cd "$root" || exit 1
command -v clang-format >/dev/null || { echo "clang-format not installed: skipped"; exit 77; }
mapfile -t files < <(find bench client common examples forkserver tests -name '*.[ch]' \
        -not -path '*/build*' | sort)
bad=()
for f in "${files[@]}"; do
        clang-format --dry-run --Werror "$f" >/dev/null 2>&1 || bad+=("$f")
done
if [ ${#bad[@]} -gt 0 ]; then
        printf 'not formatted (clang-format -i FILE): %s\n' "${bad[@]}"
        exit 1
fi
echo "${#files[@]} files formatted as .clang-format says"
