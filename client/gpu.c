/* GPU buffers on the worker's (or client's) side: import an exported fd and map it. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client/forkserver.h"
#include "common/cudaload.h"
#include "common/proto.h"
#include "common/util.h"

FORKSERVER_EXPORT void forkserver_gpu_uuid_str(const uint8_t uuid[16],
                                               char out[FORKSERVER_GPU_UUID_STR])
{
        fs_gpu_uuid_str(uuid, out);
}

FORKSERVER_EXPORT int forkserver_gpu_from_env(struct forkserver_gpu_buf *out, size_t cap,
                                              size_t *ret_n)
{
        const char *e = getenv("FORKSERVER_GPU_FDS");
        char copy[FS_MAX_GPU * 80 + 32], *save;

        *ret_n = 0;
        if (!e || !*e)
                return 0;
        if (strlen(e) >= sizeof(copy))
                return -EINVAL;
        strcpy(copy, e);
        for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                char *u = strchr(t, ':'), *z = u ? strchr(u + 1, ':') : NULL;
                long fd;
                uint64_t size;
                int fl;

                if (!u || !z || *ret_n == cap)
                        return -EINVAL;
                *u = *z = '\0';
                if (fs_parse_long(t, 0, 1023, &fd) < 0 || fs_parse_size(z + 1, &size) < 0 ||
                    fs_gpu_uuid_parse(u + 1, out[*ret_n].uuid) < 0)
                        return -EINVAL;
                /* not for a program this one execs: it would hold the memory, uncharged */
                if ((fl = fcntl((int)fd, F_GETFD)) >= 0)
                        (void)fcntl((int)fd, F_SETFD, fl | FD_CLOEXEC);
                out[*ret_n].fd = (int)fd;
                out[*ret_n].size = size;
                out[*ret_n].device = (unsigned)*ret_n;
                (*ret_n)++;
        }
        return 0;
}

#ifdef FS_HAVE_CUDA
/* The driver's state, loaded once per process (pthread_once: any thread may be first). */
static struct fs_cuda cu;
static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static int load_result;
static pid_t loaded_in; /* CUDA does not survive fork(): a child must not use our state */
static _Thread_local char last_error[192];

static int set_error(int r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int set_error(int r, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(last_error, sizeof(last_error), fmt, ap);
        va_end(ap);
        return r;
}

/* A failed driver call: its name and the driver's name for the result. */
static int cuda_fail(const char *call, CUresult cr)
{
        return set_error(fs_cuda_errno(cr), "%s: %s", call, fs_cuda_strerror(&cu, cr));
}

static void load_once_fn(void)
{
        const char *why = "";

        if ((load_result = fs_cuda_load(&cu, &why)) < 0)
                set_error(load_result, "%s", why);
        else
                loaded_in = getpid();
}

static int load(void)
{
        /* initialized by a parent before fork(): unusable here */
        if (loaded_in && loaded_in != getpid())
                return set_error(-ENODEV, "CUDA was initialized before this process forked");
        (void)pthread_once(&load_once, load_once_fn);
        if (load_result < 0)
                return load_result; /* its reason stays in the first thread's last_error */
        if (loaded_in != getpid())
                return set_error(-ENODEV, "CUDA was initialized before this process forked");
        return 0;
}

/* Retains dev's primary context and makes it current on this thread above the caller's own
 * (cuCtxPushCurrent): pop_ctx restores what was current before. */
static int push_ctx(CUdevice dev)
{
        CUcontext ctx;
        CUresult cr;

        if ((cr = cu.cuDevicePrimaryCtxRetain(&ctx, dev)) != CUDA_SUCCESS)
                return cuda_fail("cuDevicePrimaryCtxRetain", cr);
        if ((cr = cu.cuCtxPushCurrent(ctx)) != CUDA_SUCCESS) {
                (void)cu.cuDevicePrimaryCtxRelease(dev);
                return cuda_fail("cuCtxPushCurrent", cr);
        }
        return 0;
}

/* Undoes push_ctx; release: also drop the reference push_ctx took (a map keeps its own). */
static void pop_ctx(CUdevice dev, bool release)
{
        CUcontext ctx;

        (void)cu.cuCtxPopCurrent(&ctx);
        if (release)
                (void)cu.cuDevicePrimaryCtxRelease(dev);
}

FORKSERVER_EXPORT const char *forkserver_gpu_error(void)
{
        return last_error;
}

FORKSERVER_EXPORT int forkserver_gpu_map(const struct forkserver_gpu_buf *b,
                                         struct forkserver_gpu_map *ret)
{
        CUmemGenericAllocationHandle h;
        CUmemAllocationProp prop;
        CUmemAccessDesc access;
        CUdeviceptr ptr = 0;
        const char *call;
        CUdevice dev;
        size_t gran;
        CUresult cr;
        int r, fl;

        memset(ret, 0, sizeof(*ret));
        if ((r = load()) < 0)
                return r;
        if ((r = fs_cuda_device_by_uuid(&cu, b->uuid, &dev)) < 0)
                return set_error(r, "no CUDA device with the buffer's UUID in this process");
        /* the map keeps this reference to the primary context until forkserver_gpu_unmap */
        if ((r = push_ctx(dev)) < 0)
                return r;
        fs_cuda_prop(&prop, dev);
        call = "cuMemGetAllocationGranularity";
        if ((cr = cu.cuMemGetAllocationGranularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM)))
                goto fail;
        call = "cuMemImportFromShareableHandle";
        if ((cr = cu.cuMemImportFromShareableHandle(&h, (void *)(intptr_t)b->fd,
                                                    CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR)))
                goto fail;
        /* imported: a program this process execs must not inherit the buffer, uncharged */
        if ((fl = fcntl(b->fd, F_GETFD)) >= 0)
                (void)fcntl(b->fd, F_SETFD, fl | FD_CLOEXEC);
        call = "cuMemAddressReserve";
        if ((cr = cu.cuMemAddressReserve(&ptr, b->size, gran, 0, 0)) == CUDA_SUCCESS) {
                call = "cuMemMap";
                cr = cu.cuMemMap(ptr, b->size, 0, h, 0);
        }
        if (cr) {
                (void)cu.cuMemRelease(h);
                goto fail;
        }
        (void)cu.cuMemRelease(h); /* the mapping keeps the memory */
        access = (CUmemAccessDesc){.location = {.type = CU_MEM_LOCATION_TYPE_DEVICE, .id = dev},
                                   .flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE};
        call = "cuMemSetAccess";
        if ((cr = cu.cuMemSetAccess(ptr, b->size, &access, 1))) {
                (void)cu.cuMemUnmap(ptr, b->size);
                goto fail;
        }
        pop_ctx(dev, false);
        *ret = (struct forkserver_gpu_map){.dptr = ptr, .size = b->size, .device_ = dev};
        return 0;
fail:
        r = cuda_fail(call, cr);
        if (ptr)
                (void)cu.cuMemAddressFree(ptr, b->size);
        pop_ctx(dev, true);
        return r;
}

FORKSERVER_EXPORT int forkserver_gpu_unmap(struct forkserver_gpu_map *m)
{
        CUresult a, b;
        int r;

        if (!m->size)
                return 0;
        if ((r = load()) < 0)
                return r;
        if ((r = push_ctx(m->device_)) < 0)
                return r;
        a = cu.cuMemUnmap(m->dptr, m->size);
        b = cu.cuMemAddressFree(m->dptr, m->size);
        pop_ctx(m->device_, true);
        (void)cu.cuDevicePrimaryCtxRelease(m->device_); /* the map's reference */
        m->size = 0;
        return a ? cuda_fail("cuMemUnmap", a) : b ? cuda_fail("cuMemAddressFree", b) : 0;
}

/* Runs one operation under the map's context and, for those the host does not wait for
 * (cuMemsetD8, a pageable cuMemcpyHtoD), waits for the device: the data is there, for this
 * process and any other, when the call returns. */
enum op { OP_WRITE, OP_READ, OP_FILL };

static int gpu_op(const struct forkserver_gpu_map *m, enum op op, uint64_t offset, void *host,
                  size_t n, uint8_t byte)
{
        const char *call;
        CUresult cr;
        int r;

        if (offset > m->size || n > m->size - offset)
                return set_error(-EINVAL, "outside the buffer");
        if ((r = load()) < 0 || (r = push_ctx(m->device_)) < 0)
                return r;
        switch (op) {
        case OP_WRITE:
                call = "cuMemcpyHtoD";
                cr = cu.cuMemcpyHtoD(m->dptr + offset, host, n);
                break;
        case OP_READ:
                call = "cuMemcpyDtoH";
                cr = cu.cuMemcpyDtoH(host, m->dptr + offset, n);
                break;
        default:
                call = "cuMemsetD8";
                cr = cu.cuMemsetD8(m->dptr + offset, byte, n);
                break;
        }
        if (cr == CUDA_SUCCESS && op != OP_READ) {
                call = "cuCtxSynchronize";
                cr = cu.cuCtxSynchronize();
        }
        pop_ctx(m->device_, true);
        return cr ? cuda_fail(call, cr) : 0;
}

FORKSERVER_EXPORT int forkserver_gpu_write(const struct forkserver_gpu_map *m, uint64_t offset,
                                           const void *src, size_t n)
{
        return gpu_op(m, OP_WRITE, offset, (void *)(uintptr_t)src, n, 0);
}

FORKSERVER_EXPORT int forkserver_gpu_read(const struct forkserver_gpu_map *m, uint64_t offset,
                                          void *dst, size_t n)
{
        return gpu_op(m, OP_READ, offset, dst, n, 0);
}

FORKSERVER_EXPORT int forkserver_gpu_fill(const struct forkserver_gpu_map *m, uint8_t byte)
{
        return gpu_op(m, OP_FILL, 0, NULL, m->size, byte);
}
#else
FORKSERVER_EXPORT const char *forkserver_gpu_error(void)
{
        return "built without CUDA support";
}

FORKSERVER_EXPORT int forkserver_gpu_map(const struct forkserver_gpu_buf *b,
                                         struct forkserver_gpu_map *ret)
{
        (void)b;
        memset(ret, 0, sizeof(*ret));
        return -EOPNOTSUPP;
}

FORKSERVER_EXPORT int forkserver_gpu_unmap(struct forkserver_gpu_map *m)
{
        return m->size ? -EOPNOTSUPP : 0;
}

FORKSERVER_EXPORT int forkserver_gpu_write(const struct forkserver_gpu_map *m, uint64_t offset,
                                           const void *src, size_t n)
{
        (void)m, (void)offset, (void)src, (void)n;
        return -EOPNOTSUPP;
}

FORKSERVER_EXPORT int forkserver_gpu_read(const struct forkserver_gpu_map *m, uint64_t offset,
                                          void *dst, size_t n)
{
        (void)m, (void)offset, (void)dst, (void)n;
        return -EOPNOTSUPP;
}

FORKSERVER_EXPORT int forkserver_gpu_fill(const struct forkserver_gpu_map *m, uint8_t byte)
{
        (void)m, (void)byte;
        return -EOPNOTSUPP;
}
#endif
