#!/usr/bin/env bash
# Installs a build into a scratch root and checks what an administrator gets: every file in
# its place, a C program built against the installed pkg-config file (shared and static),
# and a `meson dist` tarball that configures and builds on its own.
# Usage: tests/install-check.sh BUILDDIR JSONLOG
set -uo pipefail
build=$1 log=$2
work=$(mktemp -d /tmp/fs-install-XXXXXX)
trap 'rm -rf "$work"' EXIT
: >"$log"

result() { # name, OK|FAIL
        printf '{"name": "install: %s", "result": "%s", "stdout": ""}\n' "$1" "$2" >>"$log"
        echo "$2 $1"
}

root=$work/root
if meson install -C "$build" --destdir "$root" --no-rebuild >"$work/install.log" 2>&1; then
        result "meson install" OK
else
        tail -20 "$work/install.log"; result "meson install" FAIL
fi

prefix=$(meson introspect "$build" --buildoptions |
         python3 -c 'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"]=="prefix"))')
base=$root$prefix
missing=0
for f in sbin/forkserverd bin/forkctl include/forkserver.h \
         share/man/man8/forkserverd.8 share/man/man1/forkctl.1 share/man/man3/forkserver.3 \
         lib/systemd/system/forkserverd.socket lib/systemd/system/forkserverd.service \
         lib/systemd/user/forkserverd.socket lib/systemd/user/forkserverd.service \
         lib/sysusers.d/forkserver.conf \
         share/bash-completion/completions/forkctl share/bash-completion/completions/forkserverd; do
        [ -e "$base/$f" ] || { echo "missing: $prefix/$f"; missing=1; }
done
for g in libforkserver.so.0 libforkserver.a forkserver.pc pool.py dask.py joblib.py \
         libforkserver-python.so; do
        [ -n "$(find "$base" -name "$g" -print -quit)" ] || { echo "missing: $g"; missing=1; }
done
grep -q "ExecStart=$prefix/sbin/forkserverd --foreground" "$base/lib/systemd/system/forkserverd.service" ||
        { echo "service: ExecStart does not name the installed daemon"; missing=1; }
for u in lib/systemd/system/forkserverd.service lib/systemd/user/forkserverd.service; do
        grep -qx "Restart=on-failure" "$base/$u" && grep -qx "Also=forkserverd.socket" "$base/$u" ||
                { echo "$u: no Restart=on-failure or Also=forkserverd.socket"; missing=1; }
done
[ $missing -eq 0 ] && result "installed files" OK || result "installed files" FAIL

# The units as systemd reads them, with their paths pointing into the scratch root (verify
# checks that ExecStart names an executable). It warns but still exits 0 on an unknown key
# or a bad value, so any output fails.
if command -v systemd-analyze >/dev/null; then
        mkdir -p "$work/units/system" "$work/units/user" && mkdir -m 700 "$work/rt"
        for scope in system user; do
                for u in "$base/lib/systemd/$scope"/*; do
                        sed "s|$prefix/|$base/|g" "$u" >"$work/units/$scope/${u##*/}"
                done
        done
        out=$(systemd-analyze verify --man=no "$work/units/system/forkserverd.service" \
                      "$work/units/system/forkserverd.socket" 2>&1 &&
              XDG_RUNTIME_DIR=$work/rt systemd-analyze --user verify --man=no \
                      "$work/units/user/forkserverd.service" "$work/units/user/forkserverd.socket" 2>&1)
        if [ $? -eq 0 ] && [ -z "$out" ]; then
                result "systemd-analyze verify" OK
        else
                echo "$out"; result "systemd-analyze verify" FAIL
        fi
else
        printf '{"name": "install: systemd-analyze verify", "result": "SKIP", "stdout": ""}\n' >>"$log"
        echo "SKIP systemd-analyze verify (not installed)"
fi

pcdir=$(dirname "$(find "$base" -name forkserver.pc -print -quit)")
cat >"$work/hello.c" <<'C'
#include <errno.h>
#include <stdio.h>
#include <forkserver.h>

int main(void)
{
        struct forkserver_key *k;

        /* links, loads, and behaves: a missing key file is ENOENT */
        if (forkserver_key_load_file("/nonexistent/key", &k, NULL) != -ENOENT)
                return 1;
        puts("ok");
        return 0;
}
C
export PKG_CONFIG_PATH=$pcdir PKG_CONFIG_SYSROOT_DIR=$root
libdir=$(dirname "$pcdir") # inside the scratch root
if cc -Wall -Werror "$work/hello.c" -o "$work/hello" $(pkg-config --cflags --libs forkserver) \
        >"$work/cc.log" 2>&1 && [ "$(LD_LIBRARY_PATH=$libdir "$work/hello")" = ok ]; then
        result "pkg-config program (shared)" OK
else
        cat "$work/cc.log"; result "pkg-config program (shared)" FAIL
fi
if cc -Wall -Werror "$work/hello.c" -o "$work/hello-static" $(pkg-config --cflags forkserver) \
        "$libdir/libforkserver.a" $(pkg-config --static --libs-only-l forkserver | sed 's/-lforkserver//') \
        >"$work/cc.log" 2>&1 && [ "$("$work/hello-static")" = ok ] &&
        ! ldd "$work/hello-static" | grep -q libforkserver; then
        result "pkg-config program (static library)" OK
else
        cat "$work/cc.log"; result "pkg-config program (static library)" FAIL
fi

unset PKG_CONFIG_PATH PKG_CONFIG_SYSROOT_DIR

# a release tarball from the committed tree, built on its own
if (cd "$build" && meson dist --no-tests --formats xztar --allow-dirty) >"$work/dist.log" 2>&1 &&
        tarball=$(ls "$build"/meson-dist/*.tar.xz | head -1) &&
        tar -C "$work" -xf "$tarball" &&
        src=$(ls -d "$work"/forkserver-*/ | head -1) &&
        meson setup "$work/distbuild" "$src" -Dtests=false >"$work/dist.log" 2>&1 &&
        ninja -C "$work/distbuild" >>"$work/dist.log" 2>&1; then
        result "meson dist tarball builds" OK
else
        tail -20 "$work/dist.log"; result "meson dist tarball builds" FAIL
fi
rm -rf "$build/meson-dist"
