#!/usr/bin/env bash
# Installs the Debian packages the build and the tests need, if any is missing.
set -euo pipefail
pkgs=(meson ninja-build pkg-config gcc libssl-dev libseccomp-dev check clang libclang-rt-14-dev
      valgrind python3 python3-dev procps scdoc clang-format
      # the Python integrations' tests (about a minute to install; each skips without its own)
      python3-cloudpickle python3-joblib python3-distributed python3-sklearn python3-yaml
      python3-venv
      # a one-node Slurm for the Slurm recipe's test (about 15 s to install)
      slurmctld slurmd slurm-client munge)
# CPython's own tests (test._test_multiprocessing, test.test_concurrent_futures), which
# tests/python/cpython_pools.py runs on forkserver's pools: the package of /usr/bin/python3
pyver=$(/usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null ||
        echo 3.11)
pkgs+=("libpython${pyver}-testsuite")
missing=()
for p in "${pkgs[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing: ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then sudo=(); elif command -v sudo >/dev/null; then sudo=(sudo); else
        echo "missing packages and no sudo: apt-get install ${missing[*]}" >&2; exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
