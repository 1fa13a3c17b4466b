/*
 * A fake CUDA driver (libcuda.so.1) for tests: the subset forkserver uses, as strict as the
 * real driver where forkserver could get it wrong. Device memory is a sealed memfd; exports
 * are real fds (SCM_RIGHTS is exercised for real); device addresses are PROT_NONE on the
 * host (dereferencing one crashes, as on a discrete GPU); arguments are checked as the driver
 * checks them; and the fork hazard: after cuInit, every call from a forked child returns
 * CUDA_ERROR_NOT_INITIALIZED. The legacy cuIpc* calls do not exist here. Strict about:
 *
 * - export: only memory made with CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR in its
 *   requestedHandleTypes; nonzero reserved fields (allocFlags.reserved, win32HandleMetaData,
 *   flags) are refused; cuMemAddressReserve honours its alignment and cuMemMap wants an
 *   address aligned to the granularity;
 * - lifetime: memory lives, and stays charged to the device in the process that made it,
 *   while any exported fd (in any process: each export is an open file description holding
 *   a shared flock, which SCM_RIGHTS copies and mappings keep) or a mapping holds it, not
 *   only until cuMemRelease; a handle released twice is refused;
 * - contexts: a current-context stack per thread (cuCtxSetCurrent/PushCurrent/PopCurrent);
 *   each retained primary context costs FAKECUDA_CTX_BYTES of the device; compute mode
 *   (FAKECUDA_COMPUTE_MODE: 0 default, 2 prohibited, 3 exclusive-process, in which a second
 *   process that retains a context on the device gets CUDA_ERROR_DEVICE_UNAVAILABLE);
 * - asynchrony: cuMemsetD8 and cuMemcpyHtoD are queued (the source is staged at the call)
 *   and reach the memory only at cuCtxSynchronize, at a cuMemcpyDtoH of the same context
 *   (stream order) or at the unmap of the range; what a process never synchronized is lost
 *   when it exits.
 *
 * The device's books are per process: one sees its own contexts and allocations, and the
 * allocations it made that others still hold; not the contexts or allocations of others.
 *
 * Knobs: FAKECUDA_DEVICES (1), FAKECUDA_MEM_BYTES (256 MiB a device), FAKECUDA_GRANULARITY
 * (2 MiB), FAKECUDA_CTX_BYTES (16 MiB), FAKECUDA_COMPUTE_MODE (0), FAKECUDA_NO_VMM,
 * FAKECUDA_NO_POSIX_FD, FAKECUDA_DRIVER_VERSION (13000), FAKECUDA_INSTANCE (what tells one
 * machine's fake devices from another's for the exclusive mode; default: the uid),
 * FAKECUDA_DELAY_MS=NAME:MS,... (each call NAME, as cuda.h names it, sleeps MS first, e.g.
 * cuMemCreate:200,cuInit:50), FAKECUDA_LEAK_CHECK (exit 99 if allocations, mappings or
 * reservations remain at exit).
 */
#include <cuda.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_DEV 8
#define MAX_MAP 256
#define MAX_ALLOC 1024
#define MAX_STACK 16
#define MAX_DELAYS 32

struct alloc {
        uint64_t handle; /* never reused: a stale or twice-released handle finds nothing */
        int fd;          /* the memory: this process's open file description of the memfd */
        size_t size;
        int dev;
        bool handle_live; /* cuMemCreate's or cuMemImport's handle, until cuMemRelease */
        int maps;         /* mappings in this process */
        bool created;     /* made here: charged to this process's view of the device */
        bool posix_fd;    /* exportable (requestedHandleTypes) */
        bool exported;    /* an fd left: the memory lives while any copy or mapping of it */
};

struct range {
        CUdeviceptr base;
        size_t size;
        struct alloc *a; /* mappings only */
        unsigned char *host;
        bool access;
        void *raw; /* reservations: what mmap gave (aligned inside), and its size */
        size_t rawsize;
};

/* A memset or host-to-device copy the device has not done yet. */
struct op {
        struct op *next;
        int dev; /* of the context it was issued in */
        CUdeviceptr dst;
        size_t n;
        unsigned char byte;
        unsigned char *data; /* NULL: a memset */
};

static pid_t init_pid;
static int ndev = 1, retained[MAX_DEV], excl_fd[MAX_DEV], driver_version = 13000, compute_mode;
static size_t mem_bytes = 256u << 20, granularity = 2u << 20, ctx_bytes = 16u << 20;
static bool no_vmm, no_posix_fd;
static struct range maps[MAX_MAP], reserved[MAX_MAP];
static struct alloc *allocs[MAX_ALLOC];
static uint64_t next_handle;
static struct op *pending, **pending_tail = &pending;
static _Thread_local int ctx_stack[MAX_STACK], depth;
static int misuses; /* handles released twice (or never made): FAKECUDA_LEAK_CHECK fails */

static long env_num(const char *name, long dflt)
{
        const char *v = getenv(name);

        return v && *v ? strtol(v, NULL, 0) : dflt;
}

/* FAKECUDA_DELAY_MS */
static struct {
        char name[48];
        long ms;
} delays[MAX_DELAYS];
static int ndelays;
static pthread_once_t delays_once = PTHREAD_ONCE_INIT;

static void parse_delays(void)
{
        const char *v = getenv("FAKECUDA_DELAY_MS");
        char copy[1024], *save = NULL;

        if (!v || strlen(v) >= sizeof(copy))
                return;
        strcpy(copy, v);
        for (char *t = strtok_r(copy, ",", &save); t && ndelays < MAX_DELAYS;
             t = strtok_r(NULL, ",", &save)) {
                char *c = strchr(t, ':');

                if (!c || (size_t)(c - t) >= sizeof(delays[0].name))
                        continue;
                memcpy(delays[ndelays].name, t, (size_t)(c - t));
                delays[ndelays].name[c - t] = '\0';
                delays[ndelays++].ms = strtol(c + 1, NULL, 10);
        }
}

/* fn is the ABI name (cuMemsetD8_v2); the knob may name either. */
static void delay(const char *fn)
{
        size_t n = strlen(fn);
        const char *v = strstr(fn, "_v");

        if (v && v[2] >= '0' && v[2] <= '9' && !strchr(v + 2, '_'))
                n = (size_t)(v - fn);
        (void)pthread_once(&delays_once, parse_delays);
        for (int i = 0; i < ndelays; i++)
                if (strcmp(delays[i].name, fn) == 0 ||
                    (strlen(delays[i].name) == n && strncmp(delays[i].name, fn, n) == 0)) {
                        struct timespec ts = {delays[i].ms / 1000, delays[i].ms % 1000 * 1000000};

                        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                                ;
                        return;
                }
}

/* The fork hazard, and calls before cuInit; the latency knob. */
#define CHECK()                                                                                    \
        do {                                                                                       \
                delay(__func__);                                                                   \
                if (!init_pid || getpid() != init_pid)                                             \
                        return CUDA_ERROR_NOT_INITIALIZED;                                         \
        } while (0)

/* This thread's current context (a device index), or -1; valid only while retained. */
static int current(void)
{
        int dev = depth ? ctx_stack[depth - 1] : -1;

        return dev >= 0 && retained[dev] ? dev : -1;
}

#define NEED_CTX()                                                                                 \
        do {                                                                                       \
                if (current() < 0)                                                                 \
                        return CUDA_ERROR_INVALID_CONTEXT;                                         \
        } while (0)

/* Whether an exported fd of a (or a mapping made from one) is still open anywhere: each
 * export holds a shared flock on its own description; an exclusive one fails while any does. */
static bool export_alive(const struct alloc *a)
{
        char path[64];
        bool alive;
        int fd;

        if (!a->exported)
                return false;
        snprintf(path, sizeof(path), "/proc/self/fd/%d", a->fd);
        if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
                return true; /* cannot tell: keep it */
        alive = flock(fd, LOCK_EX | LOCK_NB) < 0;
        close(fd);
        return alive;
}

static bool alloc_held(const struct alloc *a)
{
        return a->handle_live || a->maps > 0;
}

/* Frees what nothing holds any more: the handle released, no mapping here and, for memory
 * made here, no exported fd or mapping anywhere. */
static void sweep(void)
{
        for (int i = 0; i < MAX_ALLOC; i++) {
                struct alloc *a = allocs[i];

                if (!a || alloc_held(a) || (a->created && export_alive(a)))
                        continue;
                close(a->fd);
                free(a);
                allocs[i] = NULL;
        }
}

static size_t used(int dev)
{
        size_t n = retained[dev] ? ctx_bytes : 0;

        sweep();
        for (int i = 0; i < MAX_ALLOC; i++)
                if (allocs[i] && allocs[i]->created && allocs[i]->dev == dev)
                        n += allocs[i]->size;
        return n;
}

static struct alloc *by_handle(CUmemGenericAllocationHandle h)
{
        for (int i = 0; i < MAX_ALLOC; i++)
                if (h && allocs[i] && allocs[i]->handle == h && allocs[i]->handle_live)
                        return allocs[i];
        return NULL;
}

static struct alloc *new_alloc(int fd, size_t size, int dev, bool created)
{
        for (int i = 0; i < MAX_ALLOC; i++)
                if (!allocs[i]) {
                        struct alloc *a = calloc(1, sizeof(*a));

                        if (!a)
                                return NULL;
                        *a = (struct alloc){.handle = ++next_handle,
                                            .fd = fd,
                                            .size = size,
                                            .dev = dev,
                                            .handle_live = true,
                                            .created = created};
                        return allocs[i] = a;
                }
        return NULL;
}

static void leak_check(void)
{
        int n = 0;

        if (getpid() != init_pid)
                return;
        for (int i = 0; i < MAX_ALLOC; i++)
                n += allocs[i] && alloc_held(allocs[i]);
        for (int i = 0; i < MAX_MAP; i++)
                n += !!maps[i].size + !!reserved[i].size;
        if (n || misuses) {
                fprintf(stderr,
                        "fakecuda: %d allocations, mappings or reservations leaked, %d "
                        "handles released twice or never made\n",
                        n, misuses);
                _exit(99);
        }
}

CUresult cuInit(unsigned int flags)
{
        delay(__func__);
        if (init_pid && getpid() != init_pid)
                return CUDA_ERROR_NOT_INITIALIZED;
        if (flags != 0)
                return CUDA_ERROR_INVALID_VALUE;
        if (init_pid)
                return CUDA_SUCCESS;
        ndev = (int)env_num("FAKECUDA_DEVICES", 1);
        if (ndev <= 0)
                return CUDA_ERROR_NO_DEVICE;
        if (ndev > MAX_DEV)
                ndev = MAX_DEV;
        mem_bytes = (size_t)env_num("FAKECUDA_MEM_BYTES", 256l << 20);
        granularity = (size_t)env_num("FAKECUDA_GRANULARITY", 2l << 20);
        ctx_bytes = (size_t)env_num("FAKECUDA_CTX_BYTES", 16l << 20);
        compute_mode = (int)env_num("FAKECUDA_COMPUTE_MODE", CU_COMPUTEMODE_DEFAULT);
        no_vmm = getenv("FAKECUDA_NO_VMM") != NULL;
        no_posix_fd = getenv("FAKECUDA_NO_POSIX_FD") != NULL;
        driver_version = (int)env_num("FAKECUDA_DRIVER_VERSION", 13000);
        for (int i = 0; i < MAX_DEV; i++)
                excl_fd[i] = -1;
        init_pid = getpid();
        if (getenv("FAKECUDA_LEAK_CHECK"))
                atexit(leak_check);
        return CUDA_SUCCESS;
}

CUresult cuDriverGetVersion(int *v)
{
        delay(__func__);
        if (!v)
                return CUDA_ERROR_INVALID_VALUE;
        *v = init_pid ? driver_version : (int)env_num("FAKECUDA_DRIVER_VERSION", 13000);
        return CUDA_SUCCESS;
}

CUresult cuDeviceGetCount(int *n)
{
        CHECK();
        if (!n)
                return CUDA_ERROR_INVALID_VALUE;
        *n = ndev;
        return CUDA_SUCCESS;
}

CUresult cuDeviceGet(CUdevice *d, int ordinal)
{
        CHECK();
        if (!d)
                return CUDA_ERROR_INVALID_VALUE;
        if (ordinal < 0 || ordinal >= ndev)
                return CUDA_ERROR_INVALID_DEVICE;
        *d = ordinal;
        return CUDA_SUCCESS;
}

CUresult cuDeviceGetAttribute(int *pi, CUdevice_attribute attrib, CUdevice dev)
{
        CHECK();
        if (!pi)
                return CUDA_ERROR_INVALID_VALUE;
        if (dev < 0 || dev >= ndev)
                return CUDA_ERROR_INVALID_DEVICE;
        switch (attrib) {
        case CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED:
                *pi = !no_vmm;
                break;
        case CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED:
                *pi = !no_posix_fd;
                break;
        case CU_DEVICE_ATTRIBUTE_COMPUTE_MODE:
                *pi = compute_mode;
                break;
        default:
                *pi = 0;
        }
        return CUDA_SUCCESS;
}

CUresult cuDeviceGetUuid(CUuuid *uuid, CUdevice dev)
{
        CHECK();
        if (!uuid)
                return CUDA_ERROR_INVALID_VALUE;
        if (dev < 0 || dev >= ndev)
                return CUDA_ERROR_INVALID_DEVICE;
        memset(uuid->bytes, 0, sizeof(uuid->bytes));
        memcpy(uuid->bytes, "fakecuda-gpu", 12);
        uuid->bytes[12] = (char)('0' + dev / 10);
        uuid->bytes[13] = (char)('0' + dev % 10);
        return CUDA_SUCCESS;
}

CUresult cuDeviceTotalMem(size_t *bytes, CUdevice dev)
{
        CHECK();
        if (!bytes)
                return CUDA_ERROR_INVALID_VALUE;
        if (dev < 0 || dev >= ndev)
                return CUDA_ERROR_INVALID_DEVICE;
        *bytes = mem_bytes;
        return CUDA_SUCCESS;
}

/* Exclusive-process mode: the first process with a context on the device holds an abstract
 * socket name for it; another one's context is refused. */
static CUresult claim_exclusive(int dev)
{
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        const char *inst = getenv("FAKECUDA_INSTANCE");
        int fd, n;

        if (compute_mode == CU_COMPUTEMODE_PROHIBITED)
                return CUDA_ERROR_DEVICE_UNAVAILABLE;
        if (compute_mode != CU_COMPUTEMODE_EXCLUSIVE_PROCESS || excl_fd[dev] >= 0)
                return CUDA_SUCCESS;
        n = snprintf(sa.sun_path + 1, sizeof(sa.sun_path) - 1, "fakecuda-%s-%u-dev%d",
                     inst ? inst : "", (unsigned)getuid(), dev);
        if ((fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0)
                return CUDA_ERROR_OUT_OF_MEMORY;
        if (bind(fd, (struct sockaddr *)&sa,
                 (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n)) < 0) {
                close(fd);
                return CUDA_ERROR_DEVICE_UNAVAILABLE;
        }
        excl_fd[dev] = fd;
        return CUDA_SUCCESS;
}

CUresult cuDevicePrimaryCtxRetain(CUcontext *pctx, CUdevice dev)
{
        CUresult r;

        CHECK();
        if (!pctx)
                return CUDA_ERROR_INVALID_VALUE;
        if (dev < 0 || dev >= ndev)
                return CUDA_ERROR_INVALID_DEVICE;
        if (!retained[dev]) {
                if ((r = claim_exclusive(dev)) != CUDA_SUCCESS)
                        return r;
                if (used(dev) + ctx_bytes > mem_bytes)
                        return CUDA_ERROR_OUT_OF_MEMORY;
        }
        retained[dev]++;
        *pctx = (CUcontext)(uintptr_t)(0x1000 + dev);
        return CUDA_SUCCESS;
}

static void drop_pending(int dev);

CUresult cuDevicePrimaryCtxRelease(CUdevice dev)
{
        CHECK();
        if (dev < 0 || dev >= ndev)
                return CUDA_ERROR_INVALID_DEVICE;
        if (retained[dev] == 0)
                return CUDA_ERROR_INVALID_CONTEXT;
        if (--retained[dev] == 0) {
                drop_pending(dev); /* the context is destroyed with its unfinished work */
                if (excl_fd[dev] >= 0) {
                        close(excl_fd[dev]);
                        excl_fd[dev] = -1;
                }
        }
        return CUDA_SUCCESS;
}

static int ctx_dev(CUcontext ctx)
{
        int dev = (int)((uintptr_t)ctx - 0x1000);

        return dev >= 0 && dev < ndev && retained[dev] ? dev : -1;
}

CUresult cuCtxSetCurrent(CUcontext ctx)
{
        int dev = ctx ? ctx_dev(ctx) : -1;

        CHECK();
        if (ctx && dev < 0)
                return CUDA_ERROR_INVALID_CONTEXT;
        if (!ctx) {
                if (depth)
                        depth--;
        } else if (depth) {
                ctx_stack[depth - 1] = dev;
        } else {
                ctx_stack[depth++] = dev;
        }
        return CUDA_SUCCESS;
}

CUresult cuCtxPushCurrent(CUcontext ctx)
{
        int dev = ctx_dev(ctx);

        CHECK();
        if (dev < 0)
                return CUDA_ERROR_INVALID_CONTEXT;
        if (depth == MAX_STACK)
                return CUDA_ERROR_OUT_OF_MEMORY;
        ctx_stack[depth++] = dev;
        return CUDA_SUCCESS;
}

CUresult cuCtxPopCurrent(CUcontext *pctx)
{
        CHECK();
        if (!depth)
                return CUDA_ERROR_INVALID_CONTEXT;
        depth--;
        if (pctx)
                *pctx = (CUcontext)(uintptr_t)(0x1000 + ctx_stack[depth]);
        return CUDA_SUCCESS;
}

CUresult cuCtxGetCurrent(CUcontext *pctx)
{
        int dev = current();

        CHECK();
        if (!pctx)
                return CUDA_ERROR_INVALID_VALUE;
        *pctx = dev < 0 ? NULL : (CUcontext)(uintptr_t)(0x1000 + dev);
        return CUDA_SUCCESS;
}

static CUresult check_prop(const CUmemAllocationProp *prop)
{
        static const unsigned char zero[sizeof(prop->allocFlags.reserved)];

        if (!prop || prop->type != CU_MEM_ALLOCATION_TYPE_PINNED ||
            prop->location.type != CU_MEM_LOCATION_TYPE_DEVICE || prop->location.id < 0 ||
            prop->location.id >= ndev)
                return CUDA_ERROR_INVALID_VALUE;
        /* what must be zero is: Windows' metadata, the reserved bytes, flags we lack */
        if (prop->win32HandleMetaData || prop->allocFlags.compressionType ||
            prop->allocFlags.usage || memcmp(prop->allocFlags.reserved, zero, sizeof(zero)) != 0 ||
            (prop->requestedHandleTypes & ~CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR))
                return CUDA_ERROR_INVALID_VALUE;
        if (no_vmm)
                return CUDA_ERROR_NOT_SUPPORTED;
        if ((prop->requestedHandleTypes & CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR) && no_posix_fd)
                return CUDA_ERROR_NOT_SUPPORTED;
        return CUDA_SUCCESS;
}

CUresult cuMemGetAllocationGranularity(size_t *g, const CUmemAllocationProp *prop,
                                       CUmemAllocationGranularity_flags option)
{
        CUresult r;

        CHECK();
        if (!g || (option != CU_MEM_ALLOC_GRANULARITY_MINIMUM &&
                   option != CU_MEM_ALLOC_GRANULARITY_RECOMMENDED))
                return CUDA_ERROR_INVALID_VALUE;
        if ((r = check_prop(prop)) != CUDA_SUCCESS)
                return r;
        *g = granularity;
        return CUDA_SUCCESS;
}

CUresult cuMemGetInfo(size_t *fr, size_t *total)
{
        size_t u;
        int dev = current();

        CHECK();
        NEED_CTX();
        if (!fr || !total)
                return CUDA_ERROR_INVALID_VALUE;
        u = used(dev);
        *fr = u >= mem_bytes ? 0 : mem_bytes - u;
        *total = mem_bytes;
        return CUDA_SUCCESS;
}

CUresult cuMemCreate(CUmemGenericAllocationHandle *handle, size_t size,
                     const CUmemAllocationProp *prop, unsigned long long flags)
{
        struct alloc *a;
        char name[32];
        CUresult r;
        int fd;

        CHECK();
        if (!handle || flags)
                return CUDA_ERROR_INVALID_VALUE;
        if ((r = check_prop(prop)) != CUDA_SUCCESS)
                return r;
        NEED_CTX();
        if (size == 0 || size % granularity)
                return CUDA_ERROR_INVALID_VALUE;
        if (used(prop->location.id) + size > mem_bytes)
                return CUDA_ERROR_OUT_OF_MEMORY;
        snprintf(name, sizeof(name), "fakecuda-dev%d", prop->location.id);
        if ((fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING)) < 0)
                return CUDA_ERROR_OUT_OF_MEMORY;
        if (ftruncate(fd, (off_t)size) < 0 ||
            fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0 ||
            !(a = new_alloc(fd, size, prop->location.id, true))) {
                close(fd);
                return CUDA_ERROR_OUT_OF_MEMORY;
        }
        a->posix_fd = (prop->requestedHandleTypes & CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR) != 0;
        *handle = (CUmemGenericAllocationHandle)a->handle;
        return CUDA_SUCCESS;
}

CUresult cuMemRelease(CUmemGenericAllocationHandle handle)
{
        struct alloc *a;

        CHECK();
        if (!(a = by_handle(handle))) {
                misuses++;
                return CUDA_ERROR_INVALID_VALUE; /* never made, or released already */
        }
        a->handle_live = false;
        sweep();
        return CUDA_SUCCESS;
}

CUresult cuMemExportToShareableHandle(void *sh, CUmemGenericAllocationHandle handle,
                                      CUmemAllocationHandleType type, unsigned long long flags)
{
        struct alloc *a = by_handle(handle);
        char path[64];
        int fd;

        CHECK();
        if (!sh || !a || flags || type != CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR)
                return CUDA_ERROR_INVALID_VALUE;
        if (no_posix_fd)
                return CUDA_ERROR_NOT_SUPPORTED;
        if (!a->posix_fd)
                return CUDA_ERROR_INVALID_VALUE; /* not made to be exported as an fd */
        /* a description of its own, with a shared lock that lives as long as it does */
        snprintf(path, sizeof(path), "/proc/self/fd/%d", a->fd);
        if ((fd = open(path, O_RDWR)) < 0) /* not close-on-exec: the caller must see to that */
                return CUDA_ERROR_OUT_OF_MEMORY;
        if (flock(fd, LOCK_SH) < 0) {
                close(fd);
                return CUDA_ERROR_OUT_OF_MEMORY;
        }
        a->exported = true;
        *(int *)sh = fd;
        return CUDA_SUCCESS;
}

CUresult cuMemImportFromShareableHandle(CUmemGenericAllocationHandle *handle, void *os,
                                        CUmemAllocationHandleType type)
{
        int fd = (int)(intptr_t)os, dev, copy;
        char path[64], target[128];
        struct alloc *a;
        struct stat st;
        ssize_t n;

        CHECK();
        if (!handle || type != CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR)
                return CUDA_ERROR_INVALID_VALUE;
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        if ((n = readlink(path, target, sizeof(target) - 1)) < 0)
                return CUDA_ERROR_INVALID_VALUE;
        target[n] = '\0';
        if (sscanf(target, "/memfd:fakecuda-dev%d", &dev) != 1 || dev < 0 || dev >= ndev ||
            fstat(fd, &st) < 0)
                return CUDA_ERROR_INVALID_VALUE;
        /* the same description: it holds the exporter's lock, and so does our mapping */
        if ((copy = fcntl(fd, F_DUPFD_CLOEXEC, 0)) < 0)
                return CUDA_ERROR_OUT_OF_MEMORY;
        if (!(a = new_alloc(copy, (size_t)st.st_size, dev, false))) {
                close(copy);
                return CUDA_ERROR_OUT_OF_MEMORY;
        }
        a->posix_fd = true;
        *handle = (CUmemGenericAllocationHandle)a->handle;
        return CUDA_SUCCESS;
}

static struct range *slot(struct range *t)
{
        for (int i = 0; i < MAX_MAP; i++)
                if (!t[i].size)
                        return &t[i];
        return NULL;
}

static struct range *find(struct range *t, CUdeviceptr p, size_t n, bool exact)
{
        for (int i = 0; i < MAX_MAP; i++)
                if (t[i].size && p >= t[i].base && p - t[i].base <= t[i].size &&
                    n <= t[i].size - (p - t[i].base) &&
                    (!exact || (p == t[i].base && n == t[i].size)))
                        return &t[i];
        return NULL;
}

CUresult cuMemAddressReserve(CUdeviceptr *ptr, size_t size, size_t alignment, CUdeviceptr addr,
                             unsigned long long flags)
{
        struct range *r;
        uintptr_t base;
        size_t align = alignment ? alignment : granularity, raw;
        void *p;

        CHECK();
        if (!ptr || size == 0 || size % granularity || flags || (align & (align - 1)) ||
            align % granularity || size > SIZE_MAX - align)
                return CUDA_ERROR_INVALID_VALUE;
        (void)addr; /* a hint */
        if (!(r = slot(reserved)))
                return CUDA_ERROR_OUT_OF_MEMORY;
        /* honour the alignment: over-reserve, keep an aligned range inside */
        raw = size + align;
        p = mmap(NULL, raw, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED)
                return CUDA_ERROR_OUT_OF_MEMORY;
        base = ((uintptr_t)p + align - 1) / align * align;
        *r = (struct range){.base = (CUdeviceptr)base, .size = size, .raw = p, .rawsize = raw};
        *ptr = r->base;
        return CUDA_SUCCESS;
}

CUresult cuMemAddressFree(CUdeviceptr ptr, size_t size)
{
        struct range *r;

        CHECK();
        if (!(r = find(reserved, ptr, size, true)) || find(maps, ptr, 1, false))
                return CUDA_ERROR_INVALID_VALUE;
        munmap(r->raw, r->rawsize);
        *r = (struct range){0};
        return CUDA_SUCCESS;
}

CUresult cuMemMap(CUdeviceptr ptr, size_t size, size_t offset, CUmemGenericAllocationHandle h,
                  unsigned long long flags)
{
        struct alloc *a = by_handle(h);
        struct range *m;
        void *host;

        CHECK();
        if (!a || offset != 0 || flags || size != a->size || ptr % granularity ||
            !find(reserved, ptr, size, false) || find(maps, ptr, size, false) || !(m = slot(maps)))
                return CUDA_ERROR_INVALID_VALUE;
        host = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, a->fd, 0);
        if (host == MAP_FAILED)
                return CUDA_ERROR_OUT_OF_MEMORY;
        *m = (struct range){.base = ptr, .size = size, .a = a, .host = host};
        a->maps++;
        return CUDA_SUCCESS;
}

/* The host view of [p, p + n), mapped and accessible, or NULL. */
static unsigned char *host_at(CUdeviceptr p, size_t n)
{
        struct range *m = find(maps, p, n, false);

        return m && m->access ? m->host + (p - m->base) : NULL;
}

/* The device does queued work: of the context dev (-1: any), within [lo, hi). */
static void run_pending(int dev, CUdeviceptr lo, CUdeviceptr hi)
{
        struct op **pp = &pending;

        while (*pp) {
                struct op *o = *pp;
                unsigned char *h;

                if ((dev >= 0 && o->dev != dev) || o->dst + o->n <= lo || o->dst >= hi) {
                        pp = &o->next;
                        continue;
                }
                if ((h = host_at(o->dst, o->n))) {
                        if (o->data)
                                memcpy(h, o->data, o->n);
                        else
                                memset(h, o->byte, o->n);
                }
                *pp = o->next;
                free(o->data);
                free(o);
        }
        pending_tail = &pending;
        while (*pending_tail)
                pending_tail = &(*pending_tail)->next;
}

static void drop_pending(int dev)
{
        struct op **pp = &pending;

        while (*pp) {
                struct op *o = *pp;

                if (o->dev != dev) {
                        pp = &o->next;
                        continue;
                }
                *pp = o->next;
                free(o->data);
                free(o);
        }
        pending_tail = &pending;
        while (*pending_tail)
                pending_tail = &(*pending_tail)->next;
}

CUresult cuMemUnmap(CUdeviceptr ptr, size_t size)
{
        struct range *m;

        CHECK();
        if (!(m = find(maps, ptr, size, true)))
                return CUDA_ERROR_INVALID_VALUE;
        run_pending(-1, ptr, ptr + size); /* unmapping waits for the work on the range */
        munmap(m->host, m->size);
        m->a->maps--;
        *m = (struct range){0};
        sweep();
        return CUDA_SUCCESS;
}

CUresult cuMemSetAccess(CUdeviceptr ptr, size_t size, const CUmemAccessDesc *desc, size_t count)
{
        struct range *m;

        CHECK();
        if (!desc || count != 1 || !(m = find(maps, ptr, size, true)) ||
            desc->location.type != CU_MEM_LOCATION_TYPE_DEVICE || desc->location.id != m->a->dev ||
            (desc->flags != CU_MEM_ACCESS_FLAGS_PROT_READWRITE &&
             desc->flags != CU_MEM_ACCESS_FLAGS_PROT_READ &&
             desc->flags != CU_MEM_ACCESS_FLAGS_PROT_NONE))
                return CUDA_ERROR_INVALID_VALUE;
        m->access = desc->flags == CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
        return CUDA_SUCCESS;
}

static CUresult enqueue(CUdeviceptr dst, size_t n, const void *src, unsigned char byte)
{
        struct op *o = calloc(1, sizeof(*o));

        if (!o || (src && !(o->data = malloc(n ? n : 1)))) {
                free(o);
                return CUDA_ERROR_OUT_OF_MEMORY;
        }
        if (src)
                memcpy(o->data, src, n); /* staged now: the caller may reuse its buffer */
        o->dev = current();
        o->dst = dst;
        o->n = n;
        o->byte = byte;
        *pending_tail = o;
        pending_tail = &o->next;
        return CUDA_SUCCESS;
}

CUresult cuMemsetD8(CUdeviceptr dst, unsigned char uc, size_t n)
{
        CHECK();
        NEED_CTX();
        if (!host_at(dst, n))
                return CUDA_ERROR_INVALID_VALUE;
        return enqueue(dst, n, NULL, uc);
}

CUresult cuMemcpyHtoD(CUdeviceptr dst, const void *src, size_t n)
{
        CHECK();
        NEED_CTX();
        if (!src || !host_at(dst, n))
                return CUDA_ERROR_INVALID_VALUE;
        return enqueue(dst, n, src, 0);
}

CUresult cuMemcpyDtoH(void *dst, CUdeviceptr src, size_t n)
{
        unsigned char *h;

        CHECK();
        NEED_CTX();
        if (!dst || !(h = host_at(src, n)))
                return CUDA_ERROR_INVALID_VALUE;
        run_pending(current(), 0, UINTPTR_MAX); /* the null stream: after what came before */
        memcpy(dst, h, n);
        return CUDA_SUCCESS;
}

CUresult cuCtxSynchronize(void)
{
        CHECK();
        NEED_CTX();
        run_pending(current(), 0, UINTPTR_MAX);
        return CUDA_SUCCESS;
}

CUresult cuGetErrorName(CUresult r, const char **s)
{
        static const struct {
                CUresult r;
                const char *name;
        } names[] = {
            {CUDA_SUCCESS, "CUDA_SUCCESS"},
            {CUDA_ERROR_INVALID_VALUE, "CUDA_ERROR_INVALID_VALUE"},
            {CUDA_ERROR_OUT_OF_MEMORY, "CUDA_ERROR_OUT_OF_MEMORY"},
            {CUDA_ERROR_NOT_INITIALIZED, "CUDA_ERROR_NOT_INITIALIZED"},
            {CUDA_ERROR_NO_DEVICE, "CUDA_ERROR_NO_DEVICE"},
            {CUDA_ERROR_INVALID_DEVICE, "CUDA_ERROR_INVALID_DEVICE"},
            {CUDA_ERROR_INVALID_CONTEXT, "CUDA_ERROR_INVALID_CONTEXT"},
            {CUDA_ERROR_NOT_SUPPORTED, "CUDA_ERROR_NOT_SUPPORTED"},
            {CUDA_ERROR_DEVICE_UNAVAILABLE, "CUDA_ERROR_DEVICE_UNAVAILABLE"},
        };

        if (!s)
                return CUDA_ERROR_INVALID_VALUE;
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
                if (names[i].r == r) {
                        *s = names[i].name;
                        return CUDA_SUCCESS;
                }
        *s = NULL;
        return CUDA_ERROR_INVALID_VALUE;
}
