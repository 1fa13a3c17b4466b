#!/usr/bin/env bash
# gpu-device-check.sh: forkserver's GPU path against a REAL NVIDIA driver, in under 8 minutes.
#
# Run from the forkserver repo root on a machine with an NVIDIA GPU and libcuda.so.1, as root:
#     bash gpu-device-check.sh            (copy it into the repo, or pass its path)
# Logs and summary go to $OUT (the device tool's folder) or /tmp/gpucheck-out.
#
# What it does (each step bounded; a failed step does not stop the others):
#   0. environment: nvidia-smi, driver, compute/persistence mode, /dev/nvidia*, cuda.h
#   1. dependencies: apt-get if reachable (tolerant, short timeouts); else .gpucheck/debs/*.deb
#      unpacked into /tmp/gpucheck/sysroot (never into /); see "Offline preparation" below
#   2. build with -Dgpu=enabled (warnings counted); -Dtests=false if Check is missing
#   3. the GPU suites against the FAKE driver, then test-gpu against the REAL one (test-gpu.c
#      takes the driver from FORKSERVER_LIBCUDA when set, and then leaves out the fake's own
#      tests)
#   4. gpuprobe (standalone, compiled here): real-driver semantics the fake cannot tell
#      (exporter-exit survival, fd pins memory, close-on-exec, fork after cuInit, context
#      needs, big-allocation times, memset asynchrony, compute mode)
#   5. a real-driver daemon: forkctl run --gpu (exec worker under the default seccomp
#      profile), /proc/PID/maps of the front and every zygote, the quota/fd hold test and
#      broker kill (holdfds: the client asks for its copies, FORKSERVER_SPAWN_GPU_FDS, and
#      must then be refused over the quota), a quota refusal that must not allocate first
#   6. bench/gpu.sh --real (real driver): scenario + time-to-buffer benchmark
#
# Offline preparation (on a machine with Debian 12 apt, if the device has no apt access and
# lacks the -dev packages): in the repo root
#     echo /.gpucheck/ >> .git/info/exclude; mkdir -p .gpucheck/debs; (cd .gpucheck/debs &&
#     apt-get download pkgconf pkgconf-bin libpkgconf3 libssl-dev libssl3 libseccomp-dev
#     libseccomp2 check libsubunit-dev libsubunit0)
# and name .gpucheck in the device run's carry. If the device has no cuda.h, copy
# /usr/local/cuda/include/cuda.h into .gpucheck/include/ the same way (never commit it).
set -uo pipefail
T0=$(date +%s)
REPO=$(pwd)
OUTD=${OUT:-/tmp/gpucheck-out}
mkdir -p "$OUTD"
LOG=$OUTD/gpucheck.log
W=/tmp/gpucheck
B=$W/build
rm -rf "$W"; mkdir -p "$W"
: >"$LOG"
SUM=()
res() { SUM+=("$(printf '%-4s %s' "$1" "$2")"); printf '[%s] %s\n' "$1" "$2" | tee -a "$LOG"; }
el() { echo $(( $(date +%s) - T0 )); }
left() { echo $(( 465 - $(el) )); }
step() { printf '\n===== %s (t=%ss)\n' "$1" "$(el)" | tee -a "$LOG"; }
[ -f meson.build ] && [ -f forkserver/broker/broker.c ] || { echo "run from the forkserver repo root"; exit 2; }
export PATH=$PATH:/usr/local/cuda/bin:/opt/torch/.venv/bin

step "0. environment"
{ uname -a; id; nproc; } >>"$LOG" 2>&1
if command -v nvidia-smi >/dev/null; then
        nvidia-smi -L 2>&1 | tee -a "$LOG"
        q=$(nvidia-smi --query-gpu=name,driver_version,compute_mode,persistence_mode,memory.total,memory.used --format=csv,noheader 2>&1 | head -1)
        echo "$q" | tee -a "$LOG"
        res INFO "GPU: $q"
        case "$q" in *Exclusive_Process*|*Prohibited*) res WARN "compute mode is not Default: the broker's retained primary context blocks workers' contexts";; esac
else
        res WARN "no nvidia-smi"
fi
ls -l /dev/nvidia* >>"$LOG" 2>&1
LIBCUDA=$(ldconfig -p 2>/dev/null | awk '/libcuda\.so\.1 /{print $NF; exit}')
for f in /usr/local/nvidia/lib64/libcuda.so.1 /usr/lib/x86_64-linux-gnu/libcuda.so.1 /usr/lib64/libcuda.so.1; do
        [ -z "$LIBCUDA" ] && [ -e "$f" ] && LIBCUDA=$f
done
[ -n "$LIBCUDA" ] && res INFO "driver library: $LIBCUDA -> $(readlink -f "$LIBCUDA")" || res WARN "libcuda.so.1 not in the ldconfig cache"
unset FORKSERVER_LIBCUDA
CUDA_INC=
for d in ${CUDA_INCLUDE:-} /usr/local/cuda/include /usr/local/cuda-*/include /usr/include "$REPO/.gpucheck/include"; do
        [ -f "$d/cuda.h" ] && { CUDA_INC=$d; break; }
done
[ -n "$CUDA_INC" ] && res INFO "cuda.h: $CUDA_INC ($(grep -m1 'define CUDA_VERSION' "$CUDA_INC/cuda.h"))" || res FAIL "no cuda.h (set CUDA_INCLUDE or carry .gpucheck/include)"

step "1. dependencies"
have_pc() { pkg-config --exists "$1" 2>/dev/null; }
missing=0
for t in meson ninja pkg-config gcc; do command -v $t >/dev/null || missing=1; done
for m in libcrypto libseccomp check; do have_pc $m || missing=1; done
if [ $missing = 1 ] && command -v apt-get >/dev/null && [ "$(left)" -gt 380 ]; then
        export DEBIAN_FRONTEND=noninteractive
        ao="-o Acquire::http::Timeout=5 -o Acquire::https::Timeout=5 -o Acquire::Retries=0 -o DPkg::Lock::Timeout=5"
        if timeout 45 apt-get $ao update -qq >>"$LOG" 2>&1 &&
           timeout 90 apt-get $ao install -y -qq --no-install-recommends meson ninja-build pkg-config gcc libssl-dev libseccomp-dev check >>"$LOG" 2>&1; then
                res OK "apt-get install"
        else
                res WARN "apt-get failed or unreachable (offline?): using what is installed"
        fi
fi
missing=0
for m in libcrypto libseccomp check; do have_pc $m || missing=1; done
if [ $missing = 1 ] && ls "$REPO"/.gpucheck/debs/*.deb >/dev/null 2>&1; then
        SR=$W/sysroot; mkdir -p "$SR"
        for f in "$REPO"/.gpucheck/debs/*.deb; do dpkg-deb -x "$f" "$SR" >>"$LOG" 2>&1; done
        for pc in "$SR"/usr/lib/x86_64-linux-gnu/pkgconfig/*.pc "$SR"/usr/share/pkgconfig/*.pc; do
                [ -f "$pc" ] && sed -i "s|=/usr|=$SR/usr|g" "$pc"
        done
        export PKG_CONFIG_PATH=$SR/usr/lib/x86_64-linux-gnu/pkgconfig:$SR/usr/share/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
        export LD_LIBRARY_PATH=$SR/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
        export LIBRARY_PATH=$SR/usr/lib/x86_64-linux-gnu${LIBRARY_PATH:+:$LIBRARY_PATH}
        command -v pkg-config >/dev/null || { [ -x "$SR/usr/bin/pkgconf" ] && export PKG_CONFIG=$SR/usr/bin/pkgconf &&
                mkdir -p "$W/bin" && ln -sf "$SR/usr/bin/pkgconf" "$W/bin/pkg-config" && export PATH=$W/bin:$PATH; }
        res INFO "unpacked $(ls "$REPO"/.gpucheck/debs/*.deb | wc -l) carried .deb files into $SR"
fi
MESON=meson; command -v meson >/dev/null || MESON="python3 -m mesonbuild.mesonmain"
TESTS=true
for m in libcrypto libseccomp; do have_pc $m || res FAIL "no $m development files (pkg-config $m)"; done
have_pc check || { TESTS=false; res WARN "no Check: building with -Dtests=false (no test-gpu, no gpuworker)"; }

step "2. build"
BUILD_OK=0
if [ -n "$CUDA_INC" ] && timeout 60 $MESON setup "$B" "$REPO" -Dgpu=enabled -Dgpu_cuda_include="$CUDA_INC" \
        -Dman=disabled -Dfuzzing=false -Dtests=$TESTS >"$OUTD/build.log" 2>&1 &&
   timeout 200 ninja -C "$B" >>"$OUTD/build.log" 2>&1; then
        BUILD_OK=1
        nw=$(grep -c 'warning:' "$OUTD/build.log")
        res $([ "$nw" = 0 ] && echo OK || echo WARN) "build with -Dgpu=enabled against $CUDA_INC: $nw compiler warnings"
        grep 'warning:' "$OUTD/build.log" | sort -u | head -20 | tee -a "$LOG"
        syms=$(strings -a "$B/forkserver/forkserverd" | grep -E '^cu[A-Z][A-Za-z0-9_]+$' | sort -u | tr '\n' ' ')
        echo "driver symbols the loader resolves: $syms" >>"$LOG"
        if [ -n "$LIBCUDA" ]; then
                miss=; for s in $syms; do nm -D "$(readlink -f "$LIBCUDA")" 2>/dev/null | grep -qw "$s" || miss="$miss $s"; done
                [ -z "$miss" ] && res OK "every symbol the loader resolves is exported by the real libcuda" || res FAIL "symbols missing from the real libcuda:$miss"
        fi
else
        res FAIL "build failed (tail of $OUTD/build.log below)"
        tail -30 "$OUTD/build.log" | tee -a "$LOG"
fi
FSD=$B/forkserver/forkserverd FCTL=$B/client/forkctl FAKE=$B/tests/fakecuda/libcuda.so.1 GW=$B/tests/gpuworker
BENCH_FAKE= DRV="real driver"
if [ -n "${GPUCHECK_FAKE:-}" ]; then # a dry run of this script on a machine without a GPU
        export FORKSERVER_LIBCUDA=$FAKE BENCH_FAKE=--fake GPUCHECK_QUOTA=$((64 << 20))
        DRV="FAKE driver (dry run)"
        res WARN "DRY RUN: steps 4-6 use the FAKE driver ($FAKE); nothing here says anything about a GPU"
fi

step "3. GPU suites against the fake driver (sanity of this build)"
if [ $BUILD_OK = 1 ] && [ $TESTS = true ]; then
        if timeout 120 $MESON test -C "$B" --no-rebuild --print-errorlogs gpu gpu-bench-fake >"$W/faketests.log" 2>&1; then
                res OK "meson test gpu gpu-bench-fake (fake driver)"
        else
                res FAIL "meson test gpu gpu-bench-fake (fake driver): see log"; tail -40 "$W/faketests.log" >>"$LOG"
        fi
        if [ -z "${GPUCHECK_FAKE:-}" ] && [ -n "$LIBCUDA" ] && [ "$(left)" -gt 300 ]; then
                if FORKSERVER_LIBCUDA=$(readlink -f "$LIBCUDA") timeout 120 $MESON test -C "$B" --no-rebuild \
                        --print-errorlogs gpu >"$W/realtests.log" 2>&1; then
                        res OK "meson test gpu with FORKSERVER_LIBCUDA=$LIBCUDA (real driver; the fake's own tests left out)"
                else
                        res FAIL "meson test gpu with the real driver: see log"; tail -60 "$W/realtests.log" >>"$LOG"
                fi
                grep -E 'Checks:|:F:|:E:|skipped' "$W/realtests.log" | head -20 >>"$LOG"
        fi
fi

step "4. gpuprobe: real-driver semantics"
mkdir -p "$W/src"
cat >"$W/src/gpuprobe.c" <<'PROBE_EOF'
/* gpuprobe: the real driver's behaviour on the points forkserver's GPU path depends on and the
 * fake driver cannot tell. The parent never loads the driver (as forkserverd); each check runs
 * in a fresh child. Lines: "PROBE <id> <OK|FAIL|WARN|INFO> text". Exit 1 if any FAIL. */
#include <cuda.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define S2(x) #x
#define S(x) S2(x)
/* p_NAME has cuda.h's prototype for NAME; the symbol looked up is its ABI name (NAME_v2...) */
#define FUNCS(X)                                                                                   \
        X(cuInit) X(cuDriverGetVersion) X(cuDeviceGet) X(cuDeviceGetCount) X(cuDeviceGetAttribute) \
        X(cuDeviceGetUuid) X(cuDevicePrimaryCtxRetain) X(cuDevicePrimaryCtxRelease)                \
        X(cuCtxSetCurrent) X(cuMemGetAllocationGranularity) X(cuMemCreate) X(cuMemRelease)         \
        X(cuMemExportToShareableHandle) X(cuMemImportFromShareableHandle) X(cuMemAddressReserve)   \
        X(cuMemAddressFree) X(cuMemMap) X(cuMemUnmap) X(cuMemSetAccess) X(cuMemsetD8)             \
        X(cuMemcpyHtoD) X(cuMemcpyDtoH) X(cuGetErrorName) X(cuCtxSynchronize) X(cuMemGetInfo)
#define DECL(f) static __typeof__(f) *p_##f;
FUNCS(DECL)
static int fails;
static const char *lib;

#define P(id, st, ...)                                                                             \
        do {                                                                                       \
                printf("PROBE %-14s %-4s ", id, st);                                               \
                printf(__VA_ARGS__);                                                               \
                printf("\n");                                                                      \
                fflush(stdout);                                                                    \
        } while (0)

static double now_us(void)
{
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static const char *en(CUresult r)
{
        static char b[32];
        const char *s = NULL;
        if (p_cuGetErrorName && p_cuGetErrorName(r, &s) == CUDA_SUCCESS && s)
                return s;
        snprintf(b, sizeof(b), "error %d", (int)r);
        return b;
}

static void *h;
static int load(void)
{
        if (!(h = dlopen(lib, RTLD_NOW | RTLD_LOCAL)))
                return -1;
#define LOAD(f) p_##f = (__typeof__(p_##f))dlsym(h, S(f));
        FUNCS(LOAD)
        return p_cuInit ? 0 : -1;
}

static CUdevice dev;
static CUcontext ctx;
static size_t gran;
static CUmemAllocationProp prop;

static int init_ctx(int want_ctx)
{
        CUresult r;
        if (load() < 0 || (r = p_cuInit(0)) != CUDA_SUCCESS || p_cuDeviceGet(&dev, 0))
                return -1;
        memset(&prop, 0, sizeof(prop));
        prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
        prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
        prop.location.id = dev;
        prop.requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
        if (want_ctx && (p_cuDevicePrimaryCtxRetain(&ctx, dev) || p_cuCtxSetCurrent(ctx)))
                return -1;
        if (p_cuMemGetAllocationGranularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM))
                return -1;
        return 0;
}

/* map h0 (size n) read-write at a fresh reservation; 0 or the failing CUresult */
static CUresult map(CUmemGenericAllocationHandle h0, size_t n, CUdeviceptr *va)
{
        CUmemAccessDesc a = {{CU_MEM_LOCATION_TYPE_DEVICE, dev}, CU_MEM_ACCESS_FLAGS_PROT_READWRITE};
        CUresult r;
        if ((r = p_cuMemAddressReserve(va, n, gran, 0, 0)))
                return r;
        if ((r = p_cuMemMap(*va, n, 0, h0, 0)) || (r = p_cuMemSetAccess(*va, n, &a, 1))) {
                (void)p_cuMemUnmap(*va, n);
                (void)p_cuMemAddressFree(*va, n);
        }
        return r;
}

static void unmap(CUdeviceptr va, size_t n)
{
        (void)p_cuMemUnmap(va, n);
        (void)p_cuMemAddressFree(va, n);
}

/* ---- children ---- */

static int c_info(void)
{
        double t0 = now_us(), t1, t2, t3;
        int v = 0, n = 0, vmm = -1, pfd = -1, fab = -1, cm = -1;
        size_t rec = 0;
        CUresult r;
        CUuuid u;

        if (load() < 0) {
                P("load", "FAIL", "dlopen(%s): %s", lib, dlerror());
                return 1;
        }
        t1 = now_us();
        r = p_cuInit(0);
        t2 = now_us();
        if (r) {
                P("cuInit", "FAIL", "%s", en(r));
                return 1;
        }
        p_cuDriverGetVersion(&v);
        p_cuDeviceGetCount(&n);
        p_cuDeviceGet(&dev, 0);
        p_cuDeviceGetAttribute(&vmm, CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED, dev);
        p_cuDeviceGetAttribute(&pfd, CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED, dev);
        p_cuDeviceGetAttribute(&fab, CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_FABRIC_SUPPORTED, dev);
        p_cuDeviceGetAttribute(&cm, CU_DEVICE_ATTRIBUTE_COMPUTE_MODE, dev);
        P("driver", v >= 12000 ? "OK" : "FAIL", "version %d, %d device(s); dlopen %.0f us, cuInit %.0f us",
          v, n, t1 - t0, t2 - t1);
        P("attributes", vmm == 1 && pfd == 1 ? "OK" : "FAIL", "VMM %d, POSIX fd %d, FABRIC %d", vmm, pfd, fab);
        P("compute-mode", cm == CU_COMPUTEMODE_DEFAULT ? "OK" : "WARN",
          "%d (0 default; 3 exclusive-process: the broker's retained primary context would lock every worker out)", cm);
        if (p_cuDeviceGetUuid && p_cuDeviceGetUuid(&u, dev) == CUDA_SUCCESS)
                P("uuid", "INFO", "%02x%02x%02x%02x-...", (unsigned char)u.bytes[0],
                  (unsigned char)u.bytes[1], (unsigned char)u.bytes[2], (unsigned char)u.bytes[3]);
        t2 = now_us();
        if (p_cuDevicePrimaryCtxRetain(&ctx, dev) || p_cuCtxSetCurrent(ctx)) {
                P("context", "FAIL", "primary context");
                return 1;
        }
        t3 = now_us();
        P("context", "OK", "primary context retain + set current: %.0f us", t3 - t2);
        memset(&prop, 0, sizeof(prop));
        prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
        prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
        prop.location.id = dev;
        prop.requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
        p_cuMemGetAllocationGranularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM);
        p_cuMemGetAllocationGranularity(&rec, &prop, CU_MEM_ALLOC_GRANULARITY_RECOMMENDED);
        P("granularity", gran ? "OK" : "FAIL", "minimum %zu, recommended %zu (POSIX-fd pinned device prop)", gran, rec);
        if (p_cuMemGetInfo) {
                size_t fr = 0, tot = 0;
                p_cuMemGetInfo(&fr, &tot);
                P("meminfo", "INFO", "free %zu MiB of %zu MiB (with one context: this one)", fr >> 20, tot >> 20);
        }
        p_cuDevicePrimaryCtxRelease(dev);
        return 0;
}

/* do VMM calls need a current context? (the broker sets one; the fake refuses without) */
static int c_noctx(void)
{
        CUmemGenericAllocationHandle a;
        CUresult r;
        int fd = -1;

        if (init_ctx(0) < 0)
                return 1;
        r = p_cuMemCreate(&a, gran, &prop, 0);
        P("vmm-no-context", "INFO", "cuMemCreate with no current context: %s", en(r));
        if (r == CUDA_SUCCESS) {
                r = p_cuMemExportToShareableHandle(&fd, a, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0);
                P("vmm-no-context", "INFO", "export with no current context: %s", en(r));
                if (fd >= 0)
                        close(fd);
                p_cuMemRelease(a);
        }
        return 0;
}

static int c_semantics(void)
{
        CUmemGenericAllocationHandle a, b2;
        CUmemAllocationProp np;
        CUdeviceptr va;
        CUresult r;
        int fd = -1, fd2 = -1, fl;
        char path[64], tgt[256] = "";
        double t0, t1;

        if (init_ctx(1) < 0) {
                P("semantics", "FAIL", "init");
                return 1;
        }
        t0 = now_us();
        r = p_cuMemCreate(&a, 2 * gran, &prop, 0);
        t1 = now_us();
        if (r) {
                P("create", "FAIL", "cuMemCreate(2 granules, POSIX fd): %s", en(r));
                return 1;
        }
        P("create", "OK", "cuMemCreate(%zu): %.0f us", 2 * gran, t1 - t0);
        t0 = now_us();
        r = p_cuMemExportToShareableHandle(&fd, a, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0);
        t1 = now_us();
        if (r || fd < 0) {
                P("export", "FAIL", "%s", en(r));
                return 1;
        }
        fl = fcntl(fd, F_GETFD);
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        if (readlink(path, tgt, sizeof(tgt) - 1) < 0)
                snprintf(tgt, sizeof(tgt), "(readlink: %s)", strerror(errno));
        P("export", "OK", "%.0f us; fd %d, close-on-exec %s, is %s", t1 - t0, fd,
          fl & FD_CLOEXEC ? "SET" : "not set (the broker sets it)", tgt);
        /* can another process of ours reopen it through /proc? (a bearer path) */
        {
                int re = open(path, O_RDWR | O_CLOEXEC);
                CUresult ri = CUDA_ERROR_INVALID_VALUE;

                if (re >= 0) {
                        ri = p_cuMemImportFromShareableHandle(&b2, (void *)(uintptr_t)re,
                                                              CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR);
                        if (!ri)
                                p_cuMemRelease(b2);
                        close(re);
                }
                P("reopen-proc", re < 0 || ri ? "OK" : "WARN",
                  "open(/proc/self/fd/N): %s%s%s", re < 0 ? strerror(errno) : "opened",
                  re >= 0 ? "; import of the reopened file: " : "", re >= 0 ? en(ri) : "");
        }
        r = p_cuMemExportToShareableHandle(&fd2, a, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0);
        P("export-twice", "INFO", "second export: %s, fd %d", en(r), fd2);
        if (fd2 >= 0)
                close(fd2);
        /* the fake refuses this export (as cuda.h says the driver does); the real driver? */
        np = prop;
        np.requestedHandleTypes = CU_MEM_HANDLE_TYPE_NONE;
        if (p_cuMemCreate(&b2, gran, &np, 0) == CUDA_SUCCESS) {
                fd2 = -1;
                r = p_cuMemExportToShareableHandle(&fd2, b2, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0);
                P("export-unasked", r ? "OK" : "WARN",
                  "export of memory created without POSIX fd: %s (the fake: CUDA_ERROR_INVALID_VALUE)", en(r));
                if (fd2 >= 0)
                        close(fd2);
                p_cuMemRelease(b2);
        }
        r = p_cuMemCreate(&b2, gran + 4096, &prop, 0);
        P("create-unaligned", r ? "OK" : "WARN", "cuMemCreate(granule + 4096): %s", en(r));
        if (!r)
                p_cuMemRelease(b2);
        r = p_cuMemAddressReserve(&va, gran + 4096, 0, 0, 0);
        P("reserve-pages", "INFO", "cuMemAddressReserve(granule + 4 KiB): %s (the fake refuses)", en(r));
        if (!r)
                p_cuMemAddressFree(va, gran + 4096);
        /* map only the first granule of a 2-granule allocation (the fake refuses) */
        if (!p_cuMemAddressReserve(&va, gran, gran, 0, 0)) {
                r = p_cuMemMap(va, gran, 0, a, 0);
                P("map-partial", "INFO", "cuMemMap(first granule of 2): %s (the fake refuses)", en(r));
                if (!r)
                        p_cuMemUnmap(va, gran);
                p_cuMemAddressFree(va, gran);
        }
        /* import our own export in this process */
        r = p_cuMemImportFromShareableHandle(&b2, (void *)(uintptr_t)fd, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR);
        P("import-self", r ? "FAIL" : "OK", "import in the exporting process: %s", en(r));
        if (!r)
                p_cuMemRelease(b2);
        {
                int pfd[2];
                if (pipe(pfd) == 0) {
                        r = p_cuMemImportFromShareableHandle(&b2, (void *)(uintptr_t)pfd[0],
                                                             CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR);
                        P("import-pipe", r ? "OK" : "FAIL", "import of a pipe: %s", en(r));
                        if (!r)
                                p_cuMemRelease(b2);
                        close(pfd[0]);
                        close(pfd[1]);
                }
        }
        close(fd);
        p_cuMemRelease(a);
        /* big allocations: what the front's 10 s bound and blocking wait meet */
        size_t sizes[] = {(size_t)1 << 30, (size_t)16 << 30, (size_t)64 << 30};
        for (int i = 0; i < 3; i++) {
                size_t n = (sizes[i] + gran - 1) / gran * gran;
                t0 = now_us();
                r = p_cuMemCreate(&a, n, &prop, 0);
                t1 = now_us();
                if (r) {
                        P("create-big", "INFO", "%zu GiB: %s", n >> 30, en(r));
                        continue;
                }
                double t2 = now_us();
                r = p_cuMemExportToShareableHandle(&fd, a, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0);
                double t3 = now_us();
                if (!r)
                        close(fd);
                double t4 = now_us();
                p_cuMemRelease(a);
                double t5 = now_us();
                P("create-big", "INFO", "%zu GiB: cuMemCreate %.1f ms, export %.0f us, release %.1f ms",
                  n >> 30, (t1 - t0) / 1e3, t3 - t2, (t5 - t4) / 1e3);
        }
        /* is cuMemsetD8 asynchronous to the host? (forkserver_gpu_fill/write synchronize after
         * it either way; the fake queues it until a synchronize, a DtoH copy or the unmap) */
        if (p_cuCtxSynchronize) {
                size_t n = (size_t)1 << 30;
                if (!p_cuMemCreate(&a, n, &prop, 0)) {
                        if (!map(a, n, &va)) {
                                (void)p_cuMemsetD8(va, 1, n);
                                p_cuCtxSynchronize();
                                t0 = now_us();
                                r = p_cuMemsetD8(va, 0x33, n);
                                t1 = now_us();
                                p_cuCtxSynchronize();
                                double t2 = now_us();
                                P("memset-async", "INFO",
                                  "cuMemsetD8(1 GiB) returned after %.0f us, done after %.0f us%s", t1 - t0,
                                  t2 - t0, t1 - t0 < (t2 - t0) / 2 ? ": asynchronous, as the fake models it "
                                  "(forkserver_gpu_fill synchronizes before it returns)" : "");
                                unmap(va, n);
                        }
                        p_cuMemRelease(a);
                }
        }
        p_cuDevicePrimaryCtxRelease(dev);
        return 0;
}

static size_t meminfo_child(void)
{
        int p[2];
        size_t v = 0;
        pid_t pid;

        if (pipe(p) < 0)
                return 0;
        if ((pid = fork()) == 0) {
                size_t fr = 0, tot = 0;
                close(p[0]);
                alarm(60);
                if (init_ctx(1) == 0 && p_cuMemGetInfo && p_cuMemGetInfo(&fr, &tot) == CUDA_SUCCESS)
                        (void)!write(p[1], &fr, sizeof(fr));
                _exit(0);
        }
        close(p[1]);
        if (read(p[0], &v, sizeof(v)) != sizeof(v))
                v = 0;
        close(p[0]);
        waitpid(pid, NULL, 0);
        return v;
}

static const char pattern[] = "forkserver gpuprobe";

/* exporter: create 64 MiB, fill, write the pattern, export, send the fd, release, exit */
static int c_exporter(int sock)
{
        size_t n = 64u << 20;
        CUmemGenericAllocationHandle a;
        CUdeviceptr va;
        int fd = -1;
        char c = 'x';
        struct iovec io = {&c, 1};
        union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr al; } u;
        struct msghdr m = {.msg_iov = &io, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf)};
        struct cmsghdr *cm;

        if (init_ctx(1) < 0 || p_cuMemCreate(&a, n, &prop, 0) || map(a, n, &va) ||
            p_cuMemsetD8(va, 0x5a, n) || p_cuMemcpyHtoD(va, pattern, sizeof(pattern)))
                return 2;
        unmap(va, n); /* synchronizes (note_sync) */
        if (p_cuMemExportToShareableHandle(&fd, a, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0))
                return 3;
        cm = CMSG_FIRSTHDR(&m);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cm), &fd, sizeof(int));
        if (sendmsg(sock, &m, 0) != 1)
                return 4;
        close(fd);
        p_cuMemRelease(a);
        p_cuDevicePrimaryCtxRelease(dev);
        return 0; /* exit: the exporter is gone */
}

static int c_importer(int fd)
{
        size_t n = 64u << 20;
        CUmemGenericAllocationHandle a;
        CUdeviceptr va;
        char back[sizeof(pattern)];
        unsigned char tail = 0;
        CUresult r;
        double t0, t1;

        if (init_ctx(1) < 0)
                return 2;
        t0 = now_us();
        if ((r = p_cuMemImportFromShareableHandle(&a, (void *)(uintptr_t)fd, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR))) {
                P("survive", "FAIL", "import after the exporter exited: %s", en(r));
                return 3;
        }
        if ((r = map(a, n, &va))) {
                P("survive", "FAIL", "map after the exporter exited: %s", en(r));
                return 4;
        }
        t1 = now_us();
        p_cuMemRelease(a);
        if (p_cuMemcpyDtoH(back, va, sizeof(back)) || p_cuMemcpyDtoH(&tail, va + n - 1, 1))
                return 5;
        P("survive", memcmp(back, pattern, sizeof(pattern)) == 0 && tail == 0x5a ? "OK" : "FAIL",
          "exporter exited, only a CUDA-free process held the fd: import + map %.0f us, contents %s",
          t1 - t0, memcmp(back, pattern, sizeof(pattern)) == 0 && tail == 0x5a ? "intact" : "WRONG");
        unmap(va, n);
        p_cuDevicePrimaryCtxRelease(dev);
        return 0;
}

static int c_fork_after_init(void)
{
        pid_t pid;
        int st, n = 0;

        if (init_ctx(1) < 0)
                return 1;
        if ((pid = fork()) == 0) {
                alarm(20);
                CUresult a = p_cuDeviceGetCount(&n), b = p_cuInit(0);
                _exit((a & 0x7f) | (b ? 0x80 : 0));
        }
        waitpid(pid, &st, 0);
        if (WIFSIGNALED(st))
                P("fork-hazard", "INFO", "a child forked after cuInit: killed by signal %d%s", WTERMSIG(st),
                  WTERMSIG(st) == SIGALRM ? " (it HUNG for 20 s)" : "");
        else
                P("fork-hazard", "INFO", "a child forked after cuInit: cuDeviceGetCount -> %d, cuInit %s "
                  "(the fake: 3 and 3)", WEXITSTATUS(st) & 0x7f, WEXITSTATUS(st) & 0x80 ? "fails" : "succeeds");
        p_cuDevicePrimaryCtxRelease(dev);
        return 0;
}

static int c_fork_after_dlopen(void)
{
        pid_t pid;
        int st;

        if (load() < 0)
                return 1;
        if ((pid = fork()) == 0) {
                alarm(20);
                _exit(p_cuInit(0) == CUDA_SUCCESS ? 0 : 1);
        }
        waitpid(pid, &st, 0);
        P("fork-dlopen", WIFEXITED(st) && WEXITSTATUS(st) == 0 ? "OK" : "WARN",
          "dlopen without cuInit, then fork: the child's cuInit %s",
          WIFEXITED(st) && WEXITSTATUS(st) == 0 ? "works" : "FAILS");
        return 0;
}

static int run(int (*fn)(void), const char *id)
{
        pid_t pid = fork();
        int st;

        if (pid == 0) {
                alarm(120);
                _exit(fn());
        }
        waitpid(pid, &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st)) {
                P(id, "FAIL", "child status %#x", st);
                fails++;
                return -1;
        }
        return 0;
}

int main(void)
{
        int sv[2], fd = -1, st;
        pid_t pid = -1;
        size_t f0, f1, f2;

        lib = getenv("FORKSERVER_LIBCUDA") && *getenv("FORKSERVER_LIBCUDA") ? getenv("FORKSERVER_LIBCUDA") : "libcuda.so.1";
        setvbuf(stdout, NULL, _IOLBF, 0);
        if (run(c_info, "info") < 0)
                return 1;
        run(c_noctx, "vmm-no-context");
        run(c_semantics, "semantics");
        /* survival of the exporter's exit; device memory pinned by an fd alone */
        f0 = meminfo_child();
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0 && (pid = fork()) == 0) {
                alarm(60);
                close(sv[0]);
                _exit(c_exporter(sv[1]));
        }
        close(sv[1]);
        {
                char c;
                struct iovec io = {&c, 1};
                union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr al; } u;
                struct msghdr m = {.msg_iov = &io, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf)};
                if (recvmsg(sv[0], &m, MSG_CMSG_CLOEXEC) == 1 && CMSG_FIRSTHDR(&m))
                        memcpy(&fd, CMSG_DATA(CMSG_FIRSTHDR(&m)), sizeof(int));
        }
        waitpid(pid, &st, 0);
        close(sv[0]);
        if (fd < 0 || !WIFEXITED(st) || WEXITSTATUS(st)) {
                P("survive", "FAIL", "exporter status %#x, fd %d", st, fd);
                fails++;
        } else {
                f1 = meminfo_child();
                if ((pid = fork()) == 0) {
                        alarm(60);
                        _exit(c_importer(fd));
                }
                waitpid(pid, &st, 0);
                if (!WIFEXITED(st) || WEXITSTATUS(st))
                        fails++;
                close(fd);
                usleep(200000);
                f2 = meminfo_child();
                if (f0 && f1 && f2)
                        P("fd-pins-memory", f2 > f1 && f2 - f1 >= (60u << 20) ? "WARN" : "INFO",
                          "device free: %zu MiB before, %zu MiB while only an fd was held (exporter gone), "
                          "%zu MiB after close%s", f0 >> 20, f1 >> 20, f2 >> 20,
                          f2 > f1 && f2 - f1 >= (60u << 20) ? ": an fd alone keeps the memory (quotas must "
                          "count fds the client holds)" : "");
        }
        run(c_fork_after_init, "fork-hazard");
        run(c_fork_after_dlopen, "fork-dlopen");
        return fails ? 1 : 0;
}
PROBE_EOF
if [ -n "$CUDA_INC" ] && gcc -std=gnu17 -O1 -isystem "$CUDA_INC" -o "$W/gpuprobe" "$W/src/gpuprobe.c" -ldl >>"$LOG" 2>&1; then
        timeout 240 "$W/gpuprobe" >"$OUTD/probe.log" 2>&1; prc=$?
        cat "$OUTD/probe.log" | tee -a "$LOG"
        nf=$(grep -c '^PROBE .* FAIL ' "$OUTD/probe.log"); nwn=$(grep -c '^PROBE .* WARN ' "$OUTD/probe.log")
        res $([ "$nf" = 0 ] && [ $prc = 0 ] && echo OK || echo FAIL) "gpuprobe: $nf FAIL, $nwn WARN (rc $prc; lines in probe.log)"
        while read -r _ id st rest; do SUM+=("$(printf '%-4s probe %s: %s' "$st" "$id" "$rest")"); done < <(grep -E '^PROBE (survive|fd-pins-memory|export |fork-hazard|vmm-no-context|memset-async|create-big|compute-mode|export-unasked|reopen-proc)' "$OUTD/probe.log")
else
        res FAIL "gpuprobe did not compile"
fi

step "5. daemon with the $DRV"
DPID=
stop_daemon() { [ -n "$DPID" ] && { kill "$DPID" 2>/dev/null; wait "$DPID" 2>/dev/null; DPID=; }; }
trap stop_daemon EXIT
if [ $BUILD_OK = 1 ] && [ "$(left)" -gt 150 ]; then
        D=$W/d; mkdir -p "$D"; "$FCTL" keygen -o "$D/key" >/dev/null 2>&1; mkfifo "$D/ready"
        QUOTA=${GPUCHECK_QUOTA:-$((1 << 30))}
        ROOTW=; [ "$(id -u)" = 0 ] && ROOTW=--allow-root-workers # root needs a plan for its workers
        "$FSD" --cuda --cuda-conn-quota $QUOTA --cuda-quota $QUOTA $ROOTW --foreground --socket "$D/s.sock" \
                --key-file "$D/key" --log-level info --ready-fd 3 3>"$D/ready" 2>"$OUTD/daemon.log" &
        DPID=$!
        t=$(date +%s%N)
        if read -r -t 90 line <"$D/ready" && [ "$line" = READY ]; then
                res OK "forkserverd --cuda started with the $DRV in $(( ($(date +%s%N) - t) / 1000000 )) ms (broker cuInit + primary context included)"
                FC=("$FCTL" --socket "$D/s.sock" --key-file "$D/key")
                "${FC[@]}" status >"$W/status.json" 2>&1
                grep -A8 '"gpu_broker"' "$W/status.json" | tee -a "$LOG"
                BPID=$(grep -A4 '"gpu_broker"' "$W/status.json" | awk -F'[:,]' '/"pid"/{gsub(/ /,"",$2); print $2}')
                # /proc/PID/maps: the front and every zygote (all children but the broker) map no libcuda and no /dev/nvidia*
                bad=
                for p in $DPID $(pgrep -P "$DPID"); do
                        [ "$p" = "$BPID" ] && continue
                        n=$(grep -sE 'libcuda|/dev/nvidia' /proc/$p/maps | wc -l)
                        echo "maps of $p ($(tr -d '\0' </proc/$p/comm 2>/dev/null)): $n libcuda or /dev/nvidia mappings" >>"$LOG"
                        [ "$n" != 0 ] && bad="$bad $p"
                done
                nb=$(grep -s 'libcuda' /proc/$BPID/maps | wc -l)
                [ -z "$bad" ] && [ "$nb" != 0 ] && res OK "front and $(pgrep -P "$DPID" | grep -vc "^$BPID$") zygote(s): no libcuda or /dev/nvidia mapping; broker $BPID: $nb libcuda mappings" ||
                        res FAIL "CUDA mapped in the front or a zygote:$bad (broker libcuda mappings: $nb)"
                if [ $TESTS = true ] && [ -x "$GW" ]; then
                        o=$(timeout 60 "${FC[@]}" run --gpu 0:$((QUOTA / 4)) -- "$GW" 0x5a 2>&1); rc=$?
                        echo "$o" >>"$LOG"
                        [ $rc = 0 ] && res OK "exec worker under the default seccomp profile mapped + filled a $((QUOTA >> 22)) MiB lease: $o" ||
                                res FAIL "exec worker with --gpu (default seccomp profile): rc $rc: $o"
                        o=$(timeout 60 "${FC[@]}" run --profile strict --gpu 0:2M -- "$GW" 0x5a 2>&1); rc=$?
                        res INFO "the same under the strict profile: rc $rc (expected to fail: strict does not allow the driver)"
                fi
                t=$(date +%s%N); o=$(timeout 60 "${FC[@]}" run --gpu 0:16G -- /bin/true 2>&1); rc=$?
                ms=$(( ($(date +%s%N) - t) / 1000000 ))
                case "$o" in *quota*) res $([ $ms -lt 1000 ] && echo OK || echo WARN) "a 16 GiB request over the $((QUOTA >> 20)) MiB quota refused in $ms ms (checked before the broker allocates): rc $rc: $o";;
                        *) res FAIL "a 16 GiB request over the $((QUOTA >> 20)) MiB quota: rc $rc in $ms ms, not a quota refusal: $o";; esac
                t=$(date +%s%N); o=$(timeout 60 "${FC[@]}" run --gpu 0:$((QUOTA / 2)) -- /bin/true 2>&1); rc=$?
                res INFO "a $((QUOTA >> 21)) MiB buffer within the quota (default --cuda-reserve): rc $rc in $(( ($(date +%s%N) - t) / 1000000 )) ms${o:+: $o}"
                cat >"$W/src/holdfds.c" <<'HOLD_EOF'
/* holdfds SOCKET KEY GPUWORKER SIZE N: against a forkserverd --cuda with quotas of SIZE, spawns
 * N exec-mode workers that each fill a SIZE buffer with 0x5a and exit, asking for the client's
 * copy of each buffer (FORKSERVER_SPAWN_GPU_FDS) and keeping it: only the first may be granted,
 * as the copy keeps it charged; prints what the books say and what the device says; then kills
 * the broker and reads the first buffer back (memory surviving the broker). Lines
 * "HOLD <OK|WARN|FAIL|INFO> text". */
#include <cuda.h>
#include <dlfcn.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client/forkserver.h"

extern char **environ;

struct look { const char *name; uint64_t v; };
static int cb(void *ud, const char *name, uint64_t v)
{
        struct look *l = ud;
        if (strcmp(name, l->name) == 0)
                l->v = v;
        return 0;
}
static uint64_t stat_of(struct forkserver *fs, const char *name)
{
        struct look l = {name, UINT64_MAX};
        forkserver_status(fs, cb, &l);
        return l.v;
}

static size_t dev_free(void)
{
        static CUresult (*init)(unsigned), (*get)(CUdevice *, int), (*retain)(CUcontext *, CUdevice),
                (*set)(CUcontext), (*info)(size_t *, size_t *);
        static int ok = -1;
        size_t fr = 0, tot = 0;
        CUcontext c;
        CUdevice d;

        if (ok < 0) {
                const char *p = getenv("FORKSERVER_LIBCUDA");
                void *h = dlopen(p && *p ? p : "libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
                ok = 0;
                if (h) {
                        *(void **)&init = dlsym(h, "cuInit");
                        *(void **)&get = dlsym(h, "cuDeviceGet");
                        *(void **)&retain = dlsym(h, "cuDevicePrimaryCtxRetain");
                        *(void **)&set = dlsym(h, "cuCtxSetCurrent");
                        *(void **)&info = dlsym(h, "cuMemGetInfo_v2");
                        ok = init && get && retain && set && info && !init(0) && !get(&d, 0) &&
                             !retain(&c, d) && !set(c);
                }
        }
        if (ok && info(&fr, &tot) == CUDA_SUCCESS)
                return fr;
        return 0;
}

int main(int argc, char **argv)
{
        struct forkserver_options o = {.key_fd = -1};
        struct forkserver_proc *w[64];
        struct forkserver *fs;
        const char *why;
        uint64_t size;
        int n, got = 0, st;

        if (argc != 6 || (n = atoi(argv[5])) < 1 || n > 64)
                return 2;
        size = strtoull(argv[4], NULL, 0);
        o.socket_path = argv[1];
        o.key_file = argv[2];
        if (forkserver_connect(&o, &fs, &why) < 0) {
                printf("HOLD FAIL connect: %s\n", why);
                return 1;
        }
        size_t f0 = dev_free();
        const char *av[] = {argv[3], "0x5a", NULL};
        struct forkserver_gpu_request g = {0, size};
        struct forkserver_fd_map out = {1, 2}; /* the worker's stdout to our stderr */
        struct forkserver_spawn_args a = {.path = argv[3], .argv = av,
                                          .envp = (const char *const *)environ, .fds = &out,
                                          .nfds = 1, .gpu = &g, .ngpu = 1,
                                          .flags = FORKSERVER_SPAWN_GPU_FDS};
        for (int i = 0; i < n; i++) {
                int r = forkserver_spawn(fs, &a, &w[i]);
                if (r < 0) {
                        printf("HOLD INFO spawn %d refused: %s\n", i + 1, forkserver_error(fs));
                        break;
                }
                forkserver_wait(fs, w[i], &st);
                if (!WIFEXITED(st) || WEXITSTATUS(st)) {
                        printf("HOLD FAIL worker %d (map + fill under the default profile): status %#x\n", i + 1, st);
                        forkserver_proc_free(fs, w[i]);
                        break;
                }
                got++;
        }
        for (int k = 0; k < 100 && stat_of(fs, "workers"); k++)
                usleep(20000);
        size_t f1 = dev_free();
        uint64_t quota = size; /* the script starts the daemon with --cuda-conn-quota SIZE */
        printf("HOLD %s %d of %d workers got a %llu-byte buffer under a %llu-byte quota; all exited; "
               "books: leases %llu, bytes %llu; device free %zu MiB -> %zu MiB (%+lld MiB) while "
               "the client holds the %d fds%s\n", got == 0 ? "FAIL" : got > 1 ? "WARN" : "OK", got, n,
               (unsigned long long)size, (unsigned long long)quota,
               (unsigned long long)stat_of(fs, "gpu_broker.leases"),
               (unsigned long long)stat_of(fs, "gpu_broker.bytes"), f0 >> 20, f1 >> 20,
               ((long long)f1 - (long long)f0) / (1 << 20), got,
               got > 1 ? ": the quota is not enforced against fds a client keeps" : "");
        printf("HOLD %s books after the workers exited: %llu bytes charged for the %d copies "
               "this client holds (want %llu)\n",
               stat_of(fs, "gpu_broker.bytes") == (uint64_t)got * size ? "OK" : "FAIL",
               (unsigned long long)stat_of(fs, "gpu_broker.bytes"), got,
               (unsigned long long)got * size);
        if (got == 0) {
                forkserver_close(fs);
                return 1;
        }
        /* the broker dies; the memory must live on through our fd */
        pid_t broker = (pid_t)stat_of(fs, "gpu_broker.pid");
        const struct forkserver_gpu_buf *b;
        struct forkserver_gpu_map m;
        unsigned char byte = 0;
        int r;

        if (broker > 0)
                kill(broker, SIGKILL);
        usleep(300000);
        forkserver_proc_gpu(w[0], &b);
        r = forkserver_gpu_map(&b[0], &m);
        if (r == 0)
                r = forkserver_gpu_read(&m, b[0].size - 1, &byte, 1);
        printf("HOLD %s after the broker (pid %d) was killed: map %s%s%s, last byte %#x (want 0x5a)\n",
               r == 0 && byte == 0x5a ? "OK" : "FAIL", (int)broker, r == 0 ? "ok" : strerror(-r),
               r == 0 ? "" : ": ", r == 0 ? "" : forkserver_gpu_error(), byte);
        if (r == 0)
                forkserver_gpu_unmap(&m);
        for (int i = 0; i < got; i++)
                forkserver_proc_free(fs, w[i]); /* closes the fds */
        usleep(300000);
        size_t f2 = dev_free();
        printf("HOLD INFO fds closed: device free %zu MiB (%+lld MiB against the start)\n", f2 >> 20,
               ((long long)f2 - (long long)f0) / (1 << 20));
        for (int k = 0; k < 150 && !stat_of(fs, "gpu_broker.up"); k++)
                usleep(100000);
        printf("HOLD %s broker back: up %llu, restarts %llu\n",
               stat_of(fs, "gpu_broker.up") == 1 ? "OK" : "FAIL",
               (unsigned long long)stat_of(fs, "gpu_broker.up"),
               (unsigned long long)stat_of(fs, "gpu_broker.restarts"));
        forkserver_close(fs);
        return r == 0 && byte == 0x5a ? 0 : 1;
}
HOLD_EOF
                if [ $TESTS = true ] && gcc -std=gnu17 -O1 -D_GNU_SOURCE -isystem "$CUDA_INC" -I"$REPO" -o "$W/holdfds" "$W/src/holdfds.c" \
                        "$B/client/libforkserver.a" "$B/common/libfs-common.a" $(pkg-config --libs libcrypto) -ldl >>"$LOG" 2>&1; then
                        timeout 120 "$W/holdfds" "$D/s.sock" "$D/key" "$GW" $QUOTA 3 >"$W/hold.log" 2>>"$LOG"
                        cat "$W/hold.log" | tee -a "$LOG"
                        while read -r _ st rest; do SUM+=("$(printf '%-4s holdfds: %s' "$st" "$rest")"); done <"$W/hold.log"
                else
                        res WARN "holdfds not built (needs tests=true)"
                fi
        else
                res FAIL "forkserverd --cuda did not start with the $DRV: $(tail -5 "$OUTD/daemon.log" | tr '\n' ' ')"
        fi
        stop_daemon
        grep -iE 'gpu|broker|cuda' "$OUTD/daemon.log" | tail -20 >>"$LOG"
else
        res WARN "daemon step skipped (build failed or out of time)"
fi

step "6. bench/gpu.sh with the $DRV"
if [ $BUILD_OK = 1 ] && [ "$(left)" -gt 60 ]; then
        reps=10; [ "$(left)" -lt 150 ] && reps=4
        if GPUBENCH=$B/bench/gpubench FORKSERVERD=$FSD FORKCTL=$FCTL FAKECUDA=$FAKE \
           timeout $(( $(left) - 10 )) bash "$REPO/bench/gpu.sh" ${BENCH_FAKE:---real} --reps $reps --size 64M >"$OUTD/bench.log" 2>&1; then
                res OK "bench/gpu.sh ($DRV, $reps reps, 64M)"
        else
                res FAIL "bench/gpu.sh ($DRV): rc $?"
        fi
        cat "$OUTD/bench.log" | tee -a "$LOG"
        while read -r l; do SUM+=("INFO bench: $l"); done < <(grep -E 'scenario|p50|ratio' "$OUTD/bench.log")
else
        res WARN "bench skipped (build failed or out of time)"
fi

step "summary"
{
        echo "forkserver GPU device check, $(date -u +%FT%TZ), $(el) s"
        printf '%s\n' "${SUM[@]}"
        echo "FAIL: $(printf '%s\n' "${SUM[@]}" | grep -c '^FAIL')  WARN: $(printf '%s\n' "${SUM[@]}" | grep -c '^WARN')"
} | tee "$OUTD/summary.txt"
