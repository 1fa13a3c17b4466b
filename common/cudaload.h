/*
 * The CUDA driver API, loaded at run time with dlopen (never linked): used by the gpu-broker
 * and by workers, never by forkserverd or its zygotes, which fork. See docs/GPU.md.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FS_GPU_UUID_LEN 16

#ifdef FS_HAVE_CUDA
#include <cuda.h>

/* Every function used, by its name in cuda.h; the struct members (and the symbols looked up)
 * get the ABI names that cuda.h maps them to (cuMemsetD8 → cuMemsetD8_v2). The legacy
 * cuIpc* calls are deliberately absent: their handles are bearer secrets. */
// clang-format off
#define FS_CUDA_FUNCS(X)                                                                           \
        X(cuInit) X(cuDriverGetVersion) X(cuDeviceGetCount) X(cuDeviceGet)                         \
        X(cuDeviceGetAttribute) X(cuDeviceGetUuid) X(cuDevicePrimaryCtxRetain)                     \
        X(cuDevicePrimaryCtxRelease) X(cuCtxSetCurrent) X(cuCtxPushCurrent) X(cuCtxPopCurrent)     \
        X(cuCtxSynchronize) X(cuDeviceTotalMem) X(cuMemGetInfo) X(cuMemGetAllocationGranularity)   \
        X(cuMemCreate) X(cuMemRelease) X(cuMemExportToShareableHandle)                             \
        X(cuMemImportFromShareableHandle) X(cuMemAddressReserve) X(cuMemAddressFree) X(cuMemMap)   \
        X(cuMemUnmap) X(cuMemSetAccess) X(cuMemsetD8) X(cuMemcpyHtoD) X(cuMemcpyDtoH)              \
        X(cuGetErrorName)
// clang-format on

struct fs_cuda {
#define FS_CUDA_MEMBER(f) __typeof__(f) *f;
        FS_CUDA_FUNCS(FS_CUDA_MEMBER)
#undef FS_CUDA_MEMBER
        int version;
        CUresult result; /* of the call fs_cuda_load failed in (cuInit's, say), else 0 */
        char why[128];   /* what *why points to when it names a CUresult */
};

/*
 * Opens $FORKSERVER_LIBCUDA or libcuda.so.1, resolves every function and calls cuInit. 0, or
 * -ENOENT (no driver library), -ENOSYS (a symbol is missing), -ENODEV (no usable GPU, a stub
 * library, a driver older than 12.0) with *why saying which (c->why, naming the CUresult,
 * which c->result keeps, when a driver call failed). Never dlclose'd.
 */
int fs_cuda_load(struct fs_cuda *c, const char **ret_why);
/* The driver's name for r ("CUDA_ERROR_OUT_OF_MEMORY"), or "CUDA error N". */
const char *fs_cuda_strerror(const struct fs_cuda *c, CUresult r);
/* A CUresult as a negative errno. */
int fs_cuda_errno(CUresult r);
/* Checks ordinal supports VMM and POSIX-fd export; fills uuid. 0 or -ENODEV with *why. */
int fs_cuda_device(const struct fs_cuda *c, int ordinal, CUdevice *ret, uint8_t uuid[16],
                   const char **ret_why);
/* The device whose UUID is uuid. */
int fs_cuda_device_by_uuid(const struct fs_cuda *c, const uint8_t uuid[16], CUdevice *ret);
/* The allocation properties for shareable (POSIX fd) device memory on dev. */
void fs_cuda_prop(CUmemAllocationProp *prop, CUdevice dev);
#endif
