#include "forkserver/broker/broker.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/cudaload.h"
#include "common/fdpass.h"
#include "common/proto.h"
#include "common/util.h"
#include "forkserver/sandbox/caps.h"

#define BROKER_SOCK_FD 3

#ifdef FS_HAVE_CUDA
#define MAX_LEASES 4096

struct broker {
        struct fs_cuda cu;
        int sock;
        unsigned ndev;
        struct {
                CUdevice dev;
                CUcontext ctx;
                size_t granularity;
                size_t reserve; /* kept free when the front names none: FSD_GPU_RESERVE_DEFAULT */
                uint8_t uuid[16];
        } dev[FSD_MAX_GPUS];
        struct {
                uint64_t id;
                CUmemGenericAllocationHandle h;
        } lease[MAX_LEASES];
        uint64_t next_lease;
        uint8_t buf[4096], out[1024];
};

static int reply_error(struct broker *b, uint32_t id, int err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int reply_error(struct broker *b, uint32_t id, int err, const char *fmt, ...)
{
        struct fs_msgw w;
        va_list ap;
        int n;

        va_start(ap, fmt);
        fs_imsg_begin_vfailed(&w, b->out, sizeof(b->out), id, err, fmt, ap);
        va_end(ap);
        if ((n = fs_msg_finish(&w)) < 0)
                return n;
        return fs_fdpass_send(b->sock, b->out, (size_t)n, NULL, 0, 0);
}

static int alloc_one(struct broker *b, uint32_t id, const struct fs_msg_gpu_alloc *a)
{
        const struct fs_gpu_buf *g = &a->gpu;
        CUmemGenericAllocationHandle h;
        CUmemAllocationProp prop;
        struct fs_msgw w;
        size_t size, slot = MAX_LEASES, reserve, fr = 0, total = 0;
        int fd = -1, n, r;
        CUresult cr;

        if (g->device >= b->ndev)
                return reply_error(b, id, EINVAL, "no GPU %u (this server has %u)", g->device,
                                   b->ndev);
        for (size_t i = 0; i < MAX_LEASES && slot == MAX_LEASES; i++)
                if (!b->lease[i].id)
                        slot = i;
        if (slot == MAX_LEASES)
                return reply_error(b, id, ENOSPC, "the GPU broker holds %d buffers already",
                                   MAX_LEASES);
        size_t gran = b->dev[g->device].granularity;

        if (g->size > SIZE_MAX - gran)
                return reply_error(b, id, EINVAL, "GPU buffer too large");
        size = (size_t)(g->size + gran - 1) / gran * gran;
        /* The front's quotas, against the size the device would really give: before any
         * allocation, not after. */
        if (size > a->room)
                return reply_error(b, id, EDQUOT,
                                   "%zu bytes (%llu asked, rounded up to the "
                                   "granularity of %zu) exceed the %llu bytes the quota leaves",
                                   size, (unsigned long long)g->size, gran,
                                   (unsigned long long)a->room);
        reserve = a->reserve == UINT64_MAX ? b->dev[g->device].reserve : (size_t)a->reserve;
        if ((cr = b->cu.cuCtxSetCurrent(b->dev[g->device].ctx)) != CUDA_SUCCESS ||
            (cr = b->cu.cuMemGetInfo(&fr, &total)) != CUDA_SUCCESS)
                return reply_error(b, id, -fs_cuda_errno(cr), "cuMemGetInfo on GPU %u: %s",
                                   g->device, fs_cuda_strerror(&b->cu, cr));
        /* Every worker that maps a buffer makes a context of its own (hundreds of MiB on real
         * hardware): leave room for them rather than allocate until OUT_OF_MEMORY. */
        if (size > fr || fr - size < reserve)
                return reply_error(b, id, ENOMEM,
                                   "GPU %u has %zu bytes free of %zu: %zu more "
                                   "would leave less than the %zu that --cuda-reserve keeps "
                                   "for workers' own contexts",
                                   g->device, fr, total, size, reserve);
        fs_cuda_prop(&prop, b->dev[g->device].dev);
        if ((cr = b->cu.cuMemCreate(&h, size, &prop, 0)) != CUDA_SUCCESS)
                return reply_error(b, id, -fs_cuda_errno(cr),
                                   "cuMemCreate of %zu bytes on GPU "
                                   "%u: %s",
                                   size, g->device, fs_cuda_strerror(&b->cu, cr));
        if ((cr = b->cu.cuMemExportToShareableHandle(
                 &fd, h, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0)) != CUDA_SUCCESS) {
                (void)b->cu.cuMemRelease(h);
                return reply_error(b, id, -fs_cuda_errno(cr), "cuMemExportToShareableHandle: %s",
                                   fs_cuda_strerror(&b->cu, cr));
        }
        /* the driver's fd may not be close-on-exec: ours are, from here on */
        (void)fcntl(fd, F_SETFD, FD_CLOEXEC);
        b->lease[slot].id = ++b->next_lease;
        b->lease[slot].h = h;
        fs_imsg_begin(&w, b->out, sizeof(b->out), FS_I_GPU_LEASE, id);
        fs_msg_put_u64(&w, FS_F_LEASE, b->lease[slot].id);
        fs_msg_put_gpu(&w, g->device, size);
        fs_msg_put_bytes(&w, FS_F_UUID, b->dev[g->device].uuid, 16);
        r = (n = fs_msg_finish(&w)) < 0 ? n : fs_fdpass_send(b->sock, b->out, (size_t)n, &fd, 1, 0);
        close(fd); /* the receivers hold it now; our handle keeps the memory */
        return r;
}

/* 0, or -EPROTO when the driver refuses the release: our handles and the driver's are out
 * of step (a handle released twice, say), and the front restarts a broker that ends. */
static int free_one(struct broker *b, uint64_t lease)
{
        for (size_t i = 0; i < MAX_LEASES; i++)
                if (b->lease[i].id == lease) {
                        CUresult cr = b->cu.cuMemRelease(b->lease[i].h);

                        b->lease[i].id = 0;
                        return cr == CUDA_SUCCESS ? 0 : -EPROTO;
                }
        return 0; /* of an earlier broker, or given back already */
}

static int setup(struct broker *b, const int *ordinals, size_t n, char *err, size_t errlen)
{
        const char *why = "";
        int count = 0, r;

        if ((r = fs_cuda_load(&b->cu, &why)) < 0) {
                snprintf(err, errlen, "%s", why);
                return r;
        }
        if (n == 0) { /* all devices */
                if (b->cu.cuDeviceGetCount(&count) != CUDA_SUCCESS || count <= 0) {
                        snprintf(err, errlen, "no CUDA device");
                        return -ENODEV;
                }
        }
        b->ndev = (unsigned)(n ? n : (size_t)count);
        if (b->ndev > FSD_MAX_GPUS)
                b->ndev = FSD_MAX_GPUS;
        for (unsigned i = 0; i < b->ndev; i++) {
                int ord = n ? ordinals[i] : (int)i, mode = 0;
                CUmemAllocationProp prop;
                size_t total = 0;
                CUresult cr;

                if ((r = fs_cuda_device(&b->cu, ord, &b->dev[i].dev, b->dev[i].uuid, &why)) < 0) {
                        snprintf(err, errlen, "CUDA device %d: %s", ord, why);
                        return r;
                }
                /* The broker keeps a primary context on every device it serves: in
                 * exclusive-process mode no worker could then make its own. */
                if ((cr = b->cu.cuDeviceGetAttribute(&mode, CU_DEVICE_ATTRIBUTE_COMPUTE_MODE,
                                                     b->dev[i].dev)) != CUDA_SUCCESS) {
                        snprintf(err, errlen, "CUDA device %d: compute mode: %s", ord,
                                 fs_cuda_strerror(&b->cu, cr));
                        return fs_cuda_errno(cr);
                }
                if (mode == CU_COMPUTEMODE_EXCLUSIVE_PROCESS || mode == CU_COMPUTEMODE_PROHIBITED) {
                        snprintf(err, errlen, "CUDA device %d is in %s compute mode: %s", ord,
                                 mode == CU_COMPUTEMODE_PROHIBITED ? "prohibited"
                                                                   : "exclusive-process",
                                 mode == CU_COMPUTEMODE_PROHIBITED
                                     ? "no context can be made on it"
                                     : "the broker's context would keep every worker off "
                                       "it; set the Default mode (nvidia-smi -c DEFAULT) or "
                                       "leave it out of --cuda-devices");
                        return -EBUSY;
                }
                fs_cuda_prop(&prop, b->dev[i].dev);
                if ((cr = b->cu.cuDevicePrimaryCtxRetain(&b->dev[i].ctx, b->dev[i].dev)) !=
                        CUDA_SUCCESS ||
                    (cr = b->cu.cuMemGetAllocationGranularity(&b->dev[i].granularity, &prop,
                                                              CU_MEM_ALLOC_GRANULARITY_MINIMUM)) !=
                        CUDA_SUCCESS ||
                    (cr = b->cu.cuDeviceTotalMem(&total, b->dev[i].dev)) != CUDA_SUCCESS) {
                        snprintf(err, errlen, "CUDA device %d: %s", ord,
                                 fs_cuda_strerror(&b->cu, cr));
                        return fs_cuda_errno(cr);
                }
                b->dev[i].reserve =
                    total / 8 < FSD_GPU_RESERVE_DEFAULT ? total / 8 : FSD_GPU_RESERVE_DEFAULT;
        }
        return 0;
}

static void release_all(struct broker *b)
{
        for (size_t i = 0; i < MAX_LEASES; i++)
                if (b->lease[i].id)
                        (void)free_one(b, b->lease[i].id);
        for (unsigned i = 0; i < b->ndev; i++)
                (void)b->cu.cuDevicePrimaryCtxRelease(b->dev[i].dev);
}

static __attribute__((noreturn)) void broker_main(const int *ordinals, size_t n, int sock,
                                                  pid_t front)
{
        static struct broker b;
        char err[256] = "";
        struct fs_msgw w;
        int r, m;

        /* the front may still hold what it keeps for its zygotes: we keep nothing */
        if (fsd_caps_limit(0) < 0 || prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != front)
                _exit(1);
        (void)prctl(PR_SET_NAME, "forkserverd-gpu");
        if (sock != BROKER_SOCK_FD) {
                if (dup3(sock, BROKER_SOCK_FD, O_CLOEXEC) < 0)
                        _exit(1);
                if (sock < BROKER_SOCK_FD)
                        close(sock);
        }
        /* nothing of the front's stays open here */
        if (close_range(BROKER_SOCK_FD + 1, ~0u, 0) < 0)
                _exit(1);
        b.sock = BROKER_SOCK_FD;
        r = setup(&b, ordinals, n, err, sizeof(err));
        if (r < 0) {
                fs_imsg_begin_failed(&w, b.out, sizeof(b.out), 0, r, "%s", err);
        } else {
                fs_imsg_begin(&w, b.out, sizeof(b.out), FS_I_READY, 0);
                fs_msg_put_stat(&w, "devices", b.ndev);
        }
        if ((m = fs_msg_finish(&w)) < 0 ||
            fs_fdpass_send(b.sock, b.out, (size_t)m, NULL, 0, 0) < 0 || r < 0)
                _exit(1);
        for (;;) {
                struct fs_msg_gpu_alloc g;
                struct fs_hdr h;
                struct fs_buf p;
                uint64_t lease;
                int fds[1];
                size_t nfds;

                m = fs_fdpass_recv(b.sock, b.buf, sizeof(b.buf), fds, 0, &nfds, 0);
                if (m == 0)
                        break; /* the front closed its end */
                if (m < 0 || fs_iproto_parse_hdr(b.buf, (size_t)m, FS_ICHAN_BROKER, FS_ISIDE_FRONT,
                                                 nfds, &h, &p) < 0)
                        _exit(1); /* the front speaks correctly or not at all */
                if (h.type == FS_I_GPU_ALLOC && fs_proto_parse_gpu_alloc(&p, &g, NULL) == 0)
                        r = alloc_one(&b, h.id, &g);
                else if (h.type == FS_I_GPU_FREE && fs_proto_parse_gpu_free(&p, &lease, NULL) == 0)
                        r = free_one(&b, lease);
                else
                        _exit(1);
                if (r == -EPIPE)
                        break;
                if (r == -EPROTO)
                        _exit(1); /* out of step with the driver: start afresh */
        }
        release_all(&b);
        exit(0); /* exit, not _exit: the driver may have its own clean-up */
}

void fsd_broker_main(void *arg, int sock, pid_t front)
{
        const struct fsd_broker_args *a = arg;

        broker_main(a->ordinals, a->n, sock, front);
}
#endif
