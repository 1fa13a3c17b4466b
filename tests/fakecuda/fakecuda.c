/*
 * A fake CUDA driver (libcuda.so.1) for tests: the subset forkserver uses, with device
 * memory in sealed memfds, exports that are real fds, device addresses that are PROT_NONE
 * on the host (dereferencing one crashes, as on a discrete GPU), arguments checked as the
 * driver checks them, and the fork hazard: after cuInit, every call from a forked child
 * returns CUDA_ERROR_NOT_INITIALIZED. The legacy cuIpc* calls do not exist here.
 *
 * Knobs: FAKECUDA_DEVICES (1), FAKECUDA_MEM_BYTES (256 MiB a device), FAKECUDA_GRANULARITY
 * (2 MiB), FAKECUDA_NO_VMM, FAKECUDA_NO_POSIX_FD, FAKECUDA_DRIVER_VERSION (13000),
 * FAKECUDA_LEAK_CHECK (exit 99 if allocations, mappings or reservations remain at exit).
 */
#include <cuda.h>

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_DEV 8
#define MAX_MAP 256

struct alloc {
        int fd;
        size_t size;
        int dev;
        int refs; /* the handle, and each mapping */
        bool charged;
};

struct range {
        CUdeviceptr base;
        size_t size;
        struct alloc *a; /* mappings only */
        unsigned char *host;
        bool access;
};

static pid_t init_pid;
static int ndev = 1, current = -1, retained[MAX_DEV], driver_version = 13000;
static size_t mem_bytes = 256u << 20, granularity = 2u << 20, used[MAX_DEV];
static bool no_vmm, no_posix_fd;
static struct range maps[MAX_MAP], reserved[MAX_MAP];
static int live_allocs;

static long env_num(const char *name, long dflt)
{
        const char *v = getenv(name);

        return v && *v ? strtol(v, NULL, 0) : dflt;
}

/* The fork hazard, and calls before cuInit. */
#define CHECK()                                                                                    \
        do {                                                                                       \
                if (!init_pid || getpid() != init_pid)                                             \
                        return CUDA_ERROR_NOT_INITIALIZED;                                         \
        } while (0)

static void leak_check(void)
{
        int n = live_allocs;

        for (int i = 0; i < MAX_MAP; i++)
                n += !!maps[i].size + !!reserved[i].size;
        if (n && getpid() == init_pid) {
                fprintf(stderr, "fakecuda: %d allocations, mappings or reservations leaked\n", n);
                _exit(99);
        }
}

CUresult cuInit(unsigned int flags)
{
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
        no_vmm = getenv("FAKECUDA_NO_VMM") != NULL;
        no_posix_fd = getenv("FAKECUDA_NO_POSIX_FD") != NULL;
        driver_version = (int)env_num("FAKECUDA_DRIVER_VERSION", 13000);
        init_pid = getpid();
        if (getenv("FAKECUDA_LEAK_CHECK"))
                atexit(leak_check);
        return CUDA_SUCCESS;
}

CUresult cuDriverGetVersion(int *v)
{
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
        *pi = attrib == CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED ? !no_vmm
              : attrib == CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED
                      ? !no_posix_fd
                      : 0;
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

CUresult cuDevicePrimaryCtxRetain(CUcontext *pctx, CUdevice dev)
{
        CHECK();
        if (!pctx)
                return CUDA_ERROR_INVALID_VALUE;
        if (dev < 0 || dev >= ndev)
                return CUDA_ERROR_INVALID_DEVICE;
        retained[dev]++;
        *pctx = (CUcontext)(uintptr_t)(0x1000 + dev);
        return CUDA_SUCCESS;
}

CUresult cuDevicePrimaryCtxRelease(CUdevice dev)
{
        CHECK();
        if (dev < 0 || dev >= ndev)
                return CUDA_ERROR_INVALID_DEVICE;
        if (retained[dev] == 0)
                return CUDA_ERROR_INVALID_CONTEXT;
        if (--retained[dev] == 0 && current == dev)
                current = -1;
        return CUDA_SUCCESS;
}

CUresult cuCtxSetCurrent(CUcontext ctx)
{
        int dev = ctx ? (int)((uintptr_t)ctx - 0x1000) : -1;

        CHECK();
        if (ctx && (dev < 0 || dev >= ndev || !retained[dev]))
                return CUDA_ERROR_INVALID_CONTEXT;
        current = dev;
        return CUDA_SUCCESS;
}

static CUresult check_prop(const CUmemAllocationProp *prop)
{
        if (!prop || prop->type != CU_MEM_ALLOCATION_TYPE_PINNED ||
            prop->location.type != CU_MEM_LOCATION_TYPE_DEVICE || prop->location.id < 0 ||
            prop->location.id >= ndev)
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
        if (!g)
                return CUDA_ERROR_INVALID_VALUE;
        if ((r = check_prop(prop)) != CUDA_SUCCESS)
                return r;
        (void)option;
        *g = granularity;
        return CUDA_SUCCESS;
}

static void unref(struct alloc *a)
{
        if (--a->refs > 0)
                return;
        if (a->charged)
                used[a->dev] -= a->size;
        close(a->fd);
        free(a);
        live_allocs--;
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
        if (current < 0)
                return CUDA_ERROR_INVALID_CONTEXT;
        if (size == 0 || size % granularity)
                return CUDA_ERROR_INVALID_VALUE;
        if (used[prop->location.id] + size > mem_bytes)
                return CUDA_ERROR_OUT_OF_MEMORY;
        snprintf(name, sizeof(name), "fakecuda-dev%d", prop->location.id);
        if ((fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING)) < 0)
                return CUDA_ERROR_OUT_OF_MEMORY;
        if (ftruncate(fd, (off_t)size) < 0 ||
            fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0 ||
            !(a = calloc(1, sizeof(*a)))) {
                close(fd);
                return CUDA_ERROR_OUT_OF_MEMORY;
        }
        *a = (struct alloc){.fd = fd, .size = size, .dev = prop->location.id, .refs = 1,
                            .charged = true};
        used[a->dev] += size;
        live_allocs++;
        *handle = (CUmemGenericAllocationHandle)(uintptr_t)a;
        return CUDA_SUCCESS;
}

CUresult cuMemRelease(CUmemGenericAllocationHandle handle)
{
        CHECK();
        if (!handle)
                return CUDA_ERROR_INVALID_VALUE;
        unref((struct alloc *)(uintptr_t)handle);
        return CUDA_SUCCESS;
}

CUresult cuMemExportToShareableHandle(void *sh, CUmemGenericAllocationHandle handle,
                                      CUmemAllocationHandleType type, unsigned long long flags)
{
        struct alloc *a = (struct alloc *)(uintptr_t)handle;
        int fd;

        CHECK();
        if (!sh || !a || flags || type != CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR)
                return CUDA_ERROR_INVALID_VALUE;
        if (no_posix_fd)
                return CUDA_ERROR_NOT_SUPPORTED;
        if ((fd = dup(a->fd)) < 0) /* not close-on-exec: the caller must see to that */
                return CUDA_ERROR_OUT_OF_MEMORY;
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
        if ((copy = fcntl(fd, F_DUPFD_CLOEXEC, 0)) < 0 || !(a = calloc(1, sizeof(*a)))) {
                if (copy >= 0)
                        close(copy);
                return CUDA_ERROR_OUT_OF_MEMORY;
        }
        *a = (struct alloc){.fd = copy, .size = (size_t)st.st_size, .dev = dev, .refs = 1};
        live_allocs++;
        *handle = (CUmemGenericAllocationHandle)(uintptr_t)a;
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
                    n <= t[i].size - (p - t[i].base) && (!exact || (p == t[i].base &&
                                                                    n == t[i].size)))
                        return &t[i];
        return NULL;
}

CUresult cuMemAddressReserve(CUdeviceptr *ptr, size_t size, size_t alignment, CUdeviceptr addr,
                             unsigned long long flags)
{
        struct range *r;
        void *p;

        CHECK();
        if (!ptr || size == 0 || size % granularity || flags || (alignment & (alignment - 1)))
                return CUDA_ERROR_INVALID_VALUE;
        (void)addr; /* a hint */
        if (!(r = slot(reserved)))
                return CUDA_ERROR_OUT_OF_MEMORY;
        p = mmap(NULL, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED)
                return CUDA_ERROR_OUT_OF_MEMORY;
        *r = (struct range){.base = (CUdeviceptr)(uintptr_t)p, .size = size};
        *ptr = r->base;
        return CUDA_SUCCESS;
}

CUresult cuMemAddressFree(CUdeviceptr ptr, size_t size)
{
        struct range *r;

        CHECK();
        if (!(r = find(reserved, ptr, size, true)) || find(maps, ptr, 1, false))
                return CUDA_ERROR_INVALID_VALUE;
        munmap((void *)(uintptr_t)r->base, r->size);
        *r = (struct range){0};
        return CUDA_SUCCESS;
}

CUresult cuMemMap(CUdeviceptr ptr, size_t size, size_t offset, CUmemGenericAllocationHandle h,
                  unsigned long long flags)
{
        struct alloc *a = (struct alloc *)(uintptr_t)h;
        struct range *m;
        void *host;

        CHECK();
        if (!a || offset != 0 || flags || size != a->size || !find(reserved, ptr, size, false) ||
            find(maps, ptr, size, false) || !(m = slot(maps)))
                return CUDA_ERROR_INVALID_VALUE;
        host = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, a->fd, 0);
        if (host == MAP_FAILED)
                return CUDA_ERROR_OUT_OF_MEMORY;
        *m = (struct range){.base = ptr, .size = size, .a = a, .host = host};
        a->refs++;
        return CUDA_SUCCESS;
}

CUresult cuMemUnmap(CUdeviceptr ptr, size_t size)
{
        struct range *m;

        CHECK();
        if (!(m = find(maps, ptr, size, true)))
                return CUDA_ERROR_INVALID_VALUE;
        munmap(m->host, m->size);
        unref(m->a);
        *m = (struct range){0};
        return CUDA_SUCCESS;
}

CUresult cuMemSetAccess(CUdeviceptr ptr, size_t size, const CUmemAccessDesc *desc, size_t count)
{
        struct range *m;

        CHECK();
        if (!desc || count != 1 || !(m = find(maps, ptr, size, true)) ||
            desc->location.type != CU_MEM_LOCATION_TYPE_DEVICE ||
            desc->location.id != m->a->dev)
                return CUDA_ERROR_INVALID_VALUE;
        m->access = desc->flags == CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
        return CUDA_SUCCESS;
}

/* The host view of [p, p + n), mapped and accessible, or NULL. */
static unsigned char *host_at(CUdeviceptr p, size_t n)
{
        struct range *m = find(maps, p, n, false);

        return m && m->access ? m->host + (p - m->base) : NULL;
}

CUresult cuMemsetD8(CUdeviceptr dst, unsigned char uc, size_t n)
{
        unsigned char *h;

        CHECK();
        if (current < 0)
                return CUDA_ERROR_INVALID_CONTEXT;
        if (!(h = host_at(dst, n)))
                return CUDA_ERROR_INVALID_VALUE;
        memset(h, uc, n);
        return CUDA_SUCCESS;
}

CUresult cuMemcpyHtoD(CUdeviceptr dst, const void *src, size_t n)
{
        unsigned char *h;

        CHECK();
        if (current < 0)
                return CUDA_ERROR_INVALID_CONTEXT;
        if (!src || !(h = host_at(dst, n)))
                return CUDA_ERROR_INVALID_VALUE;
        memcpy(h, src, n);
        return CUDA_SUCCESS;
}

CUresult cuMemcpyDtoH(void *dst, CUdeviceptr src, size_t n)
{
        unsigned char *h;

        CHECK();
        if (current < 0)
                return CUDA_ERROR_INVALID_CONTEXT;
        if (!dst || !(h = host_at(src, n)))
                return CUDA_ERROR_INVALID_VALUE;
        memcpy(dst, h, n);
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
