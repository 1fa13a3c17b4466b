/*
 * gpubench: the GPU path end to end, against a real driver or the fake one.
 *
 *   gpubench [--socket PATH] [--key-file PATH] [--size SIZE] [--reps N]
 *
 * 1. Scenario: a worker gets a buffer from the broker, fills it (cuMemsetD8) and writes a
 *    pattern (cuMemcpyHtoD); the client maps the same buffer and reads both back
 *    (cuMemcpyDtoH). Any mismatch exits 1.
 * 2. Benchmark: time from the spawn request to a new worker holding a usable, mapped and
 *    written buffer, (a) from the broker's fd, (b) with the worker running cuInit and
 *    cuMemCreate itself. Both are exec-mode workers running this program, measured side by
 *    side, alternating; medians, p90 and their ratio are printed.
 *
 * The forkserverd it talks to must run with --cuda. bench/gpu.sh starts one.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client/forkserver.h"
#include "common/cudaload.h"
#include "common/util.h"

extern char **environ;

static const char pattern[] = "forkserver gpu scenario";

/* Worker, broker path: map the buffer of $FORKSERVER_GPU_FDS, fill, write, say "ready". */
static int worker_fd(void)
{
        struct forkserver_gpu_buf b;
        struct forkserver_gpu_map m;
        size_t n;

        if (forkserver_gpu_from_env(&b, 1, &n) < 0 || n != 1 || forkserver_gpu_map(&b, &m) < 0 ||
            forkserver_gpu_fill(&m, 0xab) < 0 ||
            forkserver_gpu_write(&m, 0, pattern, sizeof(pattern)) < 0)
                return 2;
        if (write(1, "ready", 5) != 5)
                return 3;
        return forkserver_gpu_unmap(&m) < 0 ? 4 : 0;
}

#ifdef FS_HAVE_CUDA
/* Worker, own path: cuInit, primary context, cuMemCreate, reserve, map, access, fill. */
static int worker_self(uint64_t size)
{
        CUmemGenericAllocationHandle h;
        CUmemAllocationProp prop;
        CUmemAccessDesc access;
        struct fs_cuda cu;
        CUdeviceptr ptr;
        CUcontext ctx;
        CUdevice dev;
        const char *why;
        size_t gran;

        if (fs_cuda_load(&cu, &why) < 0 || cu.cuDeviceGet(&dev, 0) ||
            cu.cuDevicePrimaryCtxRetain(&ctx, dev) || cu.cuCtxSetCurrent(ctx))
                return 2;
        fs_cuda_prop(&prop, dev);
        prop.requestedHandleTypes = CU_MEM_HANDLE_TYPE_NONE;
        if (cu.cuMemGetAllocationGranularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM))
                return 3;
        size = (size + gran - 1) / gran * gran;
        access = (CUmemAccessDesc){.location = {.type = CU_MEM_LOCATION_TYPE_DEVICE, .id = dev},
                                   .flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE};
        if (cu.cuMemCreate(&h, size, &prop, 0) || cu.cuMemAddressReserve(&ptr, size, gran, 0, 0) ||
            cu.cuMemMap(ptr, size, 0, h, 0) || cu.cuMemSetAccess(ptr, size, &access, 1) ||
            cu.cuMemsetD8(ptr, 0xab, size) || cu.cuMemcpyHtoD(ptr, pattern, sizeof(pattern)) ||
            cu.cuCtxSynchronize()) /* as forkserver_gpu_fill and _write do: a fair race */
                return 4;
        if (write(1, "ready", 5) != 5)
                return 5;
        return cu.cuMemUnmap(ptr, size) || cu.cuMemRelease(h) || cu.cuMemAddressFree(ptr, size) ||
                       cu.cuDevicePrimaryCtxRelease(dev)
                   ? 6
                   : 0;
}
#endif

static int cmp_i64(const void *a, const void *b)
{
        int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

        return (x > y) - (x < y);
}

/* Spawns this program as a worker in mode, times it to "ready"; returns µs or -1. */
static int64_t timed_worker(struct forkserver *fs, const char *self, const char *mode,
                            const char *size, const struct forkserver_gpu_request *g,
                            unsigned flags, struct forkserver_proc **ret)
{
        const char *argv[] = {self, mode, size, NULL};
        struct forkserver_fd_map out = {1, -1};
        struct forkserver_spawn_args a = {.path = self,
                                          .argv = argv,
                                          .envp = (const char *const *)environ,
                                          .fds = &out,
                                          .nfds = 1,
                                          .gpu = g,
                                          .ngpu = g ? 1 : 0,
                                          .flags = flags};
        char buf[8];
        int p[2], st;
        int64_t t0, t;

        if (pipe2(p, O_CLOEXEC) < 0)
                return -1;
        out.fd = p[1];
        t0 = fs_now_us();
        if (forkserver_spawn(fs, &a, ret) < 0) {
                fprintf(stderr, "gpubench: spawn: %s\n", forkserver_error(fs));
                close(p[0]);
                close(p[1]);
                return -1;
        }
        close(p[1]);
        t = read(p[0], buf, 5) == 5 ? fs_now_us() - t0 : -1;
        close(p[0]);
        if (forkserver_wait(fs, *ret, &st) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
                fprintf(stderr, "gpubench: worker (%s) failed: status %#x\n", mode, st);
                t = -1;
        }
        return t;
}

int main(int argc, char **argv)
{
        static const struct option opts[] = {{"socket", required_argument, NULL, 's'},
                                             {"key-file", required_argument, NULL, 'k'},
                                             {"size", required_argument, NULL, 'z'},
                                             {"reps", required_argument, NULL, 'r'},
                                             {0}};
        struct forkserver_options o = {.key_fd = -1};
        const char *size_s = "64M", *why;
        char self[4096];
        long reps = 20;
        uint64_t size;
        struct forkserver *fs;
        int c;

        if (argc >= 2 && strcmp(argv[1], "worker-fd") == 0)
                return worker_fd();
#ifdef FS_HAVE_CUDA
        if (argc >= 3 && strcmp(argv[1], "worker-self") == 0 && fs_parse_size(argv[2], &size) == 0)
                return worker_self(size);
#else
        fprintf(stderr, "gpubench: built without cuda.h\n");
        return 77;
#endif
        while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
                switch (c) {
                case 's':
                        o.socket_path = optarg;
                        break;
                case 'k':
                        o.key_file = optarg;
                        break;
                case 'z':
                        size_s = optarg;
                        break;
                case 'r':
                        if (fs_parse_long(optarg, 1, 100000, &reps) < 0)
                                return 2;
                        break;
                default:
                        fprintf(stderr, "usage: gpubench [--socket PATH] [--key-file PATH] "
                                        "[--size SIZE] [--reps N]\n");
                        return 2;
                }
        }
        if (fs_parse_size(size_s, &size) < 0 || !size) {
                fprintf(stderr, "gpubench: bad --size\n");
                return 2;
        }
        ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

        if (n <= 0)
                return 1;
        self[n] = '\0';
        if (forkserver_connect(&o, &fs, &why) < 0) {
                fprintf(stderr, "gpubench: %s\n", why);
                return 1;
        }

        /* 1. the scenario: a worker writes, the client reads the same device memory */
        struct forkserver_gpu_request g = {0, size};
        const struct forkserver_gpu_buf *b;
        struct forkserver_gpu_map m;
        struct forkserver_proc *w;
        char back[sizeof(pattern)];
        uint8_t tail = 0;

        /* our own copy of its buffer (kept charged to us until we exit) */
        if (timed_worker(fs, self, "worker-fd", size_s, &g, FORKSERVER_SPAWN_GPU_FDS, &w) < 0 ||
            forkserver_proc_gpu(w, &b) != 1) {
                forkserver_close(fs);
                return 1;
        }
        /* the worker is gone; its buffer lives on through our fd */
        int r = forkserver_gpu_map(&b[0], &m);

        if (r == 0)
                r = forkserver_gpu_read(&m, 0, back, sizeof(back));
        if (r == 0)
                r = forkserver_gpu_read(&m, b[0].size - 1, &tail, 1);
        (void)forkserver_gpu_unmap(&m);
        if (r < 0 || memcmp(back, pattern, sizeof(pattern)) != 0 || tail != 0xab) {
                fprintf(stderr, "gpubench: scenario FAILED (%s%s%s)\n",
                        r < 0 ? strerror(-r) : "wrong contents", r < 0 ? ": " : "",
                        r < 0 ? forkserver_gpu_error() : "");
                forkserver_close(fs);
                return 1;
        }
        unsigned long long bytes = (unsigned long long)b[0].size;

        forkserver_proc_free(fs, w); /* b pointed into it */
        printf("scenario: a worker wrote %llu bytes of device memory (memset + copy); the "
               "client read them back: OK\n",
               bytes);

        /* 2. time to a usable buffer in a new worker, the two ways, alternating */
        int64_t *tb = calloc((size_t)reps, sizeof(*tb)), *ts = calloc((size_t)reps, sizeof(*ts));

        for (long i = 0; i < reps && tb && ts; i++) {
                if ((tb[i] = timed_worker(fs, self, "worker-fd", size_s, &g, 0, &w)) < 0)
                        return 1;
                forkserver_proc_free(fs, w);
                if ((ts[i] = timed_worker(fs, self, "worker-self", size_s, NULL, 0, &w)) < 0)
                        return 1;
                forkserver_proc_free(fs, w);
        }
        qsort(tb, (size_t)reps, sizeof(*tb), cmp_i64);
        qsort(ts, (size_t)reps, sizeof(*ts), cmp_i64);
        printf("time to a usable %s buffer in a new worker, %ld runs each, alternating:\n", size_s,
               reps);
        printf("  broker fd (import + map):          p50 %8.0f us  p90 %8.0f us\n",
               (double)tb[reps / 2], (double)tb[reps * 9 / 10]);
        printf("  worker's own cuInit + cuMemCreate: p50 %8.0f us  p90 %8.0f us\n",
               (double)ts[reps / 2], (double)ts[reps * 9 / 10]);
        printf("  ratio (broker / own), p50: %.2f\n", (double)tb[reps / 2] / (double)ts[reps / 2]);
        free(tb);
        free(ts);
        forkserver_close(fs);
        return 0;
}
