#include "common/cudaload.h"

#ifdef FS_HAVE_CUDA
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FS_STR2(x) #x
#define FS_STR(x) FS_STR2(x)

int fs_cuda_load(struct fs_cuda *c, const char **ret_why)
{
        const char *path = getenv("FORKSERVER_LIBCUDA");
        void *h;
        CUresult r;

        memset(c, 0, sizeof(*c));
        /* libcuda.so.1, the driver; never libcuda.so, which may be the toolkit's stub */
        if (!(h = dlopen(path && *path ? path : "libcuda.so.1", RTLD_NOW | RTLD_LOCAL))) {
                *ret_why = "cannot load the CUDA driver (libcuda.so.1; FORKSERVER_LIBCUDA)";
                return -ENOENT;
        }
#define FS_CUDA_LOAD(f)                                                                            \
        if (!(c->f = (__typeof__(c->f))dlsym(h, FS_STR(f)))) {                                     \
                *ret_why = "the CUDA driver lacks " FS_STR(f);                                     \
                return -ENOSYS;                                                                    \
        }
        FS_CUDA_FUNCS(FS_CUDA_LOAD)
#undef FS_CUDA_LOAD
        if ((r = c->cuInit(0)) != CUDA_SUCCESS) {
                c->result = r;
                snprintf(c->why, sizeof(c->why), "%s (%s)",
                         r == CUDA_ERROR_STUB_LIBRARY ? "the CUDA driver is a stub library"
                         : r == CUDA_ERROR_NO_DEVICE  ? "no CUDA device"
                         : r == CUDA_ERROR_NOT_INITIALIZED
                             ? "cuInit failed: not initialized (a forked child of a CUDA "
                               "process?)"
                             : "cuInit failed",
                         fs_cuda_strerror(c, r));
                *ret_why = c->why;
                return -ENODEV;
        }
        if (c->cuDriverGetVersion(&c->version) != CUDA_SUCCESS || c->version < 12000) {
                *ret_why = "the CUDA driver is older than 12.0";
                return -ENODEV;
        }
        return 0;
}

const char *fs_cuda_strerror(const struct fs_cuda *c, CUresult r)
{
        static _Thread_local char buf[32];
        const char *s = NULL;

        if (c->cuGetErrorName && c->cuGetErrorName(r, &s) == CUDA_SUCCESS && s)
                return s;
        snprintf(buf, sizeof(buf), "CUDA error %d", (int)r);
        return buf;
}

int fs_cuda_errno(CUresult r)
{
        switch (r) {
        case CUDA_SUCCESS:
                return 0;
        case CUDA_ERROR_OUT_OF_MEMORY:
                return -ENOMEM;
        case CUDA_ERROR_INVALID_VALUE:
        case CUDA_ERROR_INVALID_DEVICE:
                return -EINVAL;
        case CUDA_ERROR_NOT_SUPPORTED:
                return -EOPNOTSUPP;
        case CUDA_ERROR_DEVICE_UNAVAILABLE: /* an exclusive-process or prohibited device */
                return -EBUSY;
        case CUDA_ERROR_NOT_INITIALIZED:
        case CUDA_ERROR_NO_DEVICE:
                return -ENODEV;
        default:
                return -EIO;
        }
}

int fs_cuda_device(const struct fs_cuda *c, int ordinal, CUdevice *ret, uint8_t uuid[16],
                   const char **ret_why)
{
        int vmm = 0, posix = 0, n = 0;
        CUuuid u;

        if (c->cuDeviceGetCount(&n) != CUDA_SUCCESS || ordinal < 0 || ordinal >= n) {
                *ret_why = "no such CUDA device";
                return -ENODEV;
        }
        if (c->cuDeviceGet(ret, ordinal) != CUDA_SUCCESS ||
            c->cuDeviceGetAttribute(&vmm, CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED,
                                    *ret) != CUDA_SUCCESS ||
            c->cuDeviceGetAttribute(&posix,
                                    CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED,
                                    *ret) != CUDA_SUCCESS) {
                *ret_why = "cannot query the CUDA device";
                return -ENODEV;
        }
        if (!vmm || !posix) {
                *ret_why = !vmm ? "the CUDA device lacks virtual memory management"
                                : "the CUDA device cannot export memory as POSIX fds";
                return -ENODEV;
        }
        if (c->cuDeviceGetUuid(&u, *ret) != CUDA_SUCCESS) {
                *ret_why = "cannot read the CUDA device's UUID";
                return -ENODEV;
        }
        memcpy(uuid, u.bytes, 16);
        return 0;
}

int fs_cuda_device_by_uuid(const struct fs_cuda *c, const uint8_t uuid[16], CUdevice *ret)
{
        int n = 0;

        if (c->cuDeviceGetCount(&n) != CUDA_SUCCESS)
                return -ENODEV;
        for (int i = 0; i < n; i++) {
                CUuuid u;

                if (c->cuDeviceGet(ret, i) == CUDA_SUCCESS &&
                    c->cuDeviceGetUuid(&u, *ret) == CUDA_SUCCESS && memcmp(u.bytes, uuid, 16) == 0)
                        return 0;
        }
        return -ENODEV;
}

void fs_cuda_prop(CUmemAllocationProp *prop, CUdevice dev)
{
        memset(prop, 0, sizeof(*prop));
        prop->type = CU_MEM_ALLOCATION_TYPE_PINNED;
        prop->location.type = CU_MEM_LOCATION_TYPE_DEVICE;
        prop->location.id = dev;
        prop->requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
}
#endif
