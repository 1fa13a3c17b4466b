/* GPU buffers on the worker's (or client's) side: import an exported fd and map it. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client/forkserver.h"
#include "common/cudaload.h"
#include "common/proto.h"
#include "common/util.h"



FORKSERVER_EXPORT void forkserver_gpu_uuid_str(const uint8_t uuid[16], char out[FORKSERVER_GPU_UUID_STR])
{
        fs_gpu_uuid_str(uuid, out);
}

FORKSERVER_EXPORT int forkserver_gpu_from_env(struct forkserver_gpu_buf *out, size_t cap, size_t *ret_n)
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

                if (!u || !z || *ret_n == cap)
                        return -EINVAL;
                *u = *z = '\0';
                if (fs_parse_long(t, 0, 1023, &fd) < 0 || fs_parse_size(z + 1, &size) < 0 ||
                    fs_gpu_uuid_parse(u + 1, out[*ret_n].uuid) < 0)
                        return -EINVAL;
                out[*ret_n].fd = (int)fd;
                out[*ret_n].size = size;
                out[*ret_n].device = (unsigned)*ret_n;
                (*ret_n)++;
        }
        return 0;
}

#ifdef FS_HAVE_CUDA
static struct fs_cuda cu;
static pid_t loaded_in; /* CUDA does not survive fork(): a child must not use our state */

static int load(void)
{
        const char *why;
        int r;

        if (loaded_in == getpid())
                return 0;
        if (loaded_in)
                return -ENODEV; /* initialized by a parent before fork(): unusable here */
        if ((r = fs_cuda_load(&cu, &why)) < 0)
                return r;
        loaded_in = getpid();
        return 0;
}

static int set_device(int dev, CUcontext *ctx)
{
        CUresult r = cu.cuDevicePrimaryCtxRetain(ctx, dev);

        if (r == CUDA_SUCCESS && (r = cu.cuCtxSetCurrent(*ctx)) != CUDA_SUCCESS)
                (void)cu.cuDevicePrimaryCtxRelease(dev);
        return fs_cuda_errno(r);
}

FORKSERVER_EXPORT int forkserver_gpu_map(const struct forkserver_gpu_buf *b, struct forkserver_gpu_map *ret)
{
        CUmemGenericAllocationHandle h;
        CUmemAllocationProp prop;
        CUmemAccessDesc access;
        CUdeviceptr ptr = 0;
        CUcontext ctx;
        CUdevice dev;
        size_t gran;
        CUresult cr;
        int r;

        memset(ret, 0, sizeof(*ret));
        if ((r = load()) < 0 || (r = fs_cuda_device_by_uuid(&cu, b->uuid, &dev)) < 0)
                return r;
        if ((r = set_device(dev, &ctx)) < 0)
                return r;
        fs_cuda_prop(&prop, dev);
        if ((cr = cu.cuMemGetAllocationGranularity(&gran, &prop,
                                                   CU_MEM_ALLOC_GRANULARITY_MINIMUM)) ||
            (cr = cu.cuMemImportFromShareableHandle(&h, (void *)(intptr_t)b->fd,
                                                    CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR)))
                goto fail;
        if ((cr = cu.cuMemAddressReserve(&ptr, b->size, gran, 0, 0)) ||
            (cr = cu.cuMemMap(ptr, b->size, 0, h, 0))) {
                (void)cu.cuMemRelease(h);
                goto fail;
        }
        (void)cu.cuMemRelease(h); /* the mapping keeps the memory */
        access = (CUmemAccessDesc){.location = {.type = CU_MEM_LOCATION_TYPE_DEVICE, .id = dev},
                                   .flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE};
        if ((cr = cu.cuMemSetAccess(ptr, b->size, &access, 1))) {
                (void)cu.cuMemUnmap(ptr, b->size);
                goto fail;
        }
        *ret = (struct forkserver_gpu_map){.dptr = ptr, .size = b->size, .device_ = dev};
        return 0;
fail:
        if (ptr)
                (void)cu.cuMemAddressFree(ptr, b->size);
        (void)cu.cuDevicePrimaryCtxRelease(dev);
        return fs_cuda_errno(cr);
}

FORKSERVER_EXPORT int forkserver_gpu_unmap(struct forkserver_gpu_map *m)
{
        CUresult a, b;

        if (!m->size)
                return 0;
        if (loaded_in != getpid())
                return -ENODEV;
        a = cu.cuMemUnmap(m->dptr, m->size);
        b = cu.cuMemAddressFree(m->dptr, m->size);
        (void)cu.cuDevicePrimaryCtxRelease(m->device_);
        m->size = 0;
        return fs_cuda_errno(a ? a : b);
}

static int with_ctx(const struct forkserver_gpu_map *m)
{
        CUcontext ctx;
        int r;

        if (loaded_in != getpid())
                return -ENODEV;
        if ((r = set_device(m->device_, &ctx)) < 0)
                return r;
        (void)cu.cuDevicePrimaryCtxRelease(m->device_); /* the map holds its own reference */
        return 0;
}

FORKSERVER_EXPORT int forkserver_gpu_write(const struct forkserver_gpu_map *m, uint64_t offset,
                                const void *src, size_t n)
{
        int r;

        if (offset > m->size || n > m->size - offset)
                return -EINVAL;
        if ((r = with_ctx(m)) < 0)
                return r;
        return fs_cuda_errno(cu.cuMemcpyHtoD(m->dptr + offset, src, n));
}

FORKSERVER_EXPORT int forkserver_gpu_read(const struct forkserver_gpu_map *m, uint64_t offset, void *dst,
                               size_t n)
{
        int r;

        if (offset > m->size || n > m->size - offset)
                return -EINVAL;
        if ((r = with_ctx(m)) < 0)
                return r;
        return fs_cuda_errno(cu.cuMemcpyDtoH(dst, m->dptr + offset, n));
}

FORKSERVER_EXPORT int forkserver_gpu_fill(const struct forkserver_gpu_map *m, uint8_t byte)
{
        int r;

        if ((r = with_ctx(m)) < 0)
                return r;
        return fs_cuda_errno(cu.cuMemsetD8(m->dptr, byte, m->size));
}
#else
FORKSERVER_EXPORT int forkserver_gpu_map(const struct forkserver_gpu_buf *b, struct forkserver_gpu_map *ret)
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

FORKSERVER_EXPORT int forkserver_gpu_read(const struct forkserver_gpu_map *m, uint64_t offset, void *dst,
                               size_t n)
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
