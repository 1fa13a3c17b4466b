/*
 * The gpu-broker: the one process that initializes CUDA. forkserverd forks it before its
 * event loop (and again, with a back-off, if it dies); it never forks itself, so CUDA never
 * meets fork(). It retains the primary context of each device it serves and answers, in
 * order: GPU_ALLOC {GPU: device index, size; ROOM: the most bytes the front's quotas leave;
 * RESERVE: device bytes to keep free} → GPU_LEASE {LEASE, GPU: index, size rounded up
 * to the allocation granularity, UUID} + the buffer's POSIX fd (cuMemCreate with
 * CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, cuMemExportToShareableHandle);
 * GPU_FREE {LEASE} → releases its handle (no reply); FAILED for an allocation it refused. Its
 * first message is READY {STAT "devices"}, or FAILED {REASON} when it cannot serve (no usable
 * driver, a device in exclusive-process or prohibited compute mode). See docs/GPU.md.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define FSD_MAX_GPUS 16
/* Device memory the broker leaves free for workers' own contexts unless --cuda-reserve says
 * otherwise: 512 MiB, or an eighth of a smaller device. */
#define FSD_GPU_RESERVE_DEFAULT ((size_t)512 << 20)

/* What a broker is made with: the CUDA device ordinals to serve (none: all). */
struct fsd_broker_args {
        const int *ordinals;
        size_t n;
};

#ifdef FS_HAVE_CUDA
/* The broker's process, from its first instruction (arg: struct fsd_broker_args). Never
 * returns. */
__attribute__((noreturn)) void fsd_broker_main(void *arg, int sock, pid_t front);
#endif
