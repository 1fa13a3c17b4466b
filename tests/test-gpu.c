/*
 * GPU broker and buffers: leases and quotas, books that follow the memory (a client's copy of
 * a buffer's fd keeps it charged), a buffer written by one worker and read by another and by
 * the client, broker crash and restart, a missing or unusable driver, compute mode, the
 * reserve kept for workers' contexts, and CUDA kept out of every process that forks.
 *
 * The driver is $FORKSERVER_LIBCUDA when set (a real libcuda.so.1, say), else the fake
 * (tests/fakecuda, $FAKECUDA); tests that turn the fake's knobs or test the fake itself run
 * only against it, and the /proc/PID/maps checks need root (the daemon's processes are not
 * dumpable): each says "skipped" when it does not run.
 */
#include "daemon.h"

#ifdef FS_HAVE_CUDA
#include <cuda.h>
#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/pidfd.h>
#include <time.h>

static struct daemon d;

static void stop_ok(void)
{
        int st = daemon_stop(&d);

        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "daemon exit status %#x", st);
}

static const char *const *gpu_args(const char *extra1, const char *extra2)
{
        static const char *args[8];
        size_t n = 0;

        args[n++] = "--preload";
        args[n++] = env_or_die("LIBJOBS");
        args[n++] = "--cuda";
        if (extra1)
                args[n++] = extra1;
        if (extra2)
                args[n++] = extra2;
        args[n] = NULL;
        return args;
}

/* Mappings of the driver (libcuda) or of its device files (/dev/nvidia*) in pid; the
 * daemon's processes are not dumpable, so only root may read them (the tests that call this
 * run as root only). */
static int maps_cuda(pid_t pid)
{
        char path[64], line[512];
        int n = 0;
        FILE *f;

        snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
        f = fopen(path, "re");
        if (!f && errno == ENOENT)
                return 0; /* it has gone meanwhile (a worker, a dying helper) */
        ck_assert_msg(f, "cannot read %s", path);
        while (fgets(line, sizeof(line), f))
                n += strstr(line, "libcuda") || strstr(line, "/dev/nvidia");
        fclose(f);
        return n;
}

/* The front and every child of it but the broker (zygotes, the template, the closer) map
 * nothing of CUDA; the broker does. Returns how many zygotes were looked at. */
static size_t assert_cuda_only_in_broker(struct forkserver *fs)
{
        pid_t kids[64], zyg[8], broker = (pid_t)daemon_stat(fs, "gpu_broker.pid");
        size_t n = children_of(d.pid, false, kids, 64), nz = zygotes_of(d.pid, zyg, 8);

        ck_assert_uint_ge(nz, 1);
        ck_assert_int_eq(maps_cuda(d.pid), 0);
        for (size_t i = 0; i < n; i++)
                if (kids[i] != broker)
                        ck_assert_msg(maps_cuda(kids[i]) == 0,
                                      "pid %d (a child of the front) "
                                      "maps CUDA",
                                      (int)kids[i]);
        ck_assert_int_gt(maps_cuda(broker), 0);
        return nz;
}

static int64_t now_ms(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *const leak_env[] = {"FAKECUDA_LEAK_CHECK=1", NULL};

/* A fork-mode worker with GPU buffers; returns its exit status, its stdout in out. */
static int run_gpu_entry(struct forkserver *fs, const char *entry, const char *arg,
                         const struct forkserver_gpu_request *g, size_t ng,
                         struct forkserver_proc **keep, char *out, size_t cap)
{
        struct forkserver_spawn_args a = {.entry = entry,
                                          .arg = arg,
                                          .arglen = strlen(arg),
                                          .gpu = g,
                                          .ngpu = ng,
                                          .envp = leak_env,
                                          .flags = FORKSERVER_SPAWN_GPU_FDS};

        return spawn_capture_keep(fs, &a, 1, out, cap, keep);
}

/*
 * A broker that answers slowly (cuMemCreate takes 2 s in the fake) holds up only the spawn
 * that waits for it: another client's pings are answered meanwhile, and the spawn completes.
 */
START_TEST(slow_broker_blocks_nobody_else)
{
        struct forkserver_gpu_request one = {0, 1 << 20};
        struct forkserver_spawn_args a = {
            .entry = "libjobs:job_noop", .gpu = &one, .ngpu = 1, .envp = leak_env};
        struct forkserver_proc *w;
        int64_t worst = 0, t0;
        uint32_t ticket;
        int st;

        setenv("FAKECUDA_DELAY_MS", "cuMemCreate:2000", 1);
        daemon_start(&d, gpu_args(NULL, NULL));
        unsetenv("FAKECUDA_DELAY_MS");
        struct forkserver *fs = daemon_connect(&d), *other = daemon_connect(&d);

        t0 = now_ms();
        ck_assert_int_eq(forkserver_spawn_submit(fs, &a, &ticket), 0);
        for (int i = 0; i < 50; i++) {
                int64_t p0 = now_ms();

                ck_assert_int_eq(forkserver_ping(other), 0);
                if (now_ms() - p0 > worst)
                        worst = now_ms() - p0;
                usleep(20 * 1000);
        }
        ck_assert_int_eq(forkserver_spawn_collect(fs, ticket, &w), 0);
        fprintf(stderr, "a broker 2 s slow: 50 pings, worst %lld ms; the spawn after %lld ms\n",
                (long long)worst, (long long)(now_ms() - t0));
        ck_assert_int_ge(now_ms() - t0, 2000);
        ck_assert_int_lt(worst, 1000);
        ck_assert_int_eq(forkserver_wait(fs, w, &st), 0);
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        forkserver_proc_free(fs, w);
        forkserver_close(other);
        forkserver_close(fs);
        stop_ok();
}
END_TEST

START_TEST(share_between_workers_and_client)
{
        struct forkserver_gpu_request one = {0, 1 << 20};
        const struct forkserver_gpu_buf *b;
        struct forkserver_proc *writer, *reader;
        char out[256], arg[160], uuid[FORKSERVER_GPU_UUID_STR], back[16] = {0};
        struct forkserver *fs;
        int st;

        daemon_start(&d, gpu_args(NULL, NULL));
        fs = daemon_connect(&d);
        /* one worker writes through its mapping ... */
        st = run_gpu_entry(fs, "libjobs:job_gpu_write", "hello-gpu", &one, 1, &writer, out,
                           sizeof(out));
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "writer status %#x", st);
        ck_assert_uint_eq(forkserver_proc_gpu(writer, &b), 1);
        ck_assert_uint_eq(b[0].size, 2 << 20); /* rounded up to the granularity */
        /* ... a second one, given the client's copy of the fd, reads it back ... */
        forkserver_gpu_uuid_str(b[0].uuid, uuid);
        snprintf(arg, sizeof(arg), "5:%s:%llu:9", uuid, (unsigned long long)b[0].size);
        struct forkserver_fd_map maps[2] = {{1, -1}, {5, b[0].fd}};
        struct forkserver_spawn_args a = {
            .entry = "libjobs:job_gpu_read", .arg = arg, .arglen = strlen(arg), .envp = leak_env};
        int p[2];

        ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
        maps[0].fd = p[1];
        a.fds = maps;
        a.nfds = 2;
        ck_assert_int_eq(forkserver_spawn(fs, &a, &reader), 0);
        close(p[1]);
        read_all_close(p[0], out, sizeof(out));
        ck_assert_int_eq(forkserver_wait(fs, reader, &st), 0);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "reader status %#x", st);
        ck_assert_str_eq(out, "hello-gpu");
        forkserver_proc_free(fs, reader);
        /* ... and so does the client (this process initializes CUDA: it forks no more) */
        struct forkserver_gpu_map m;

        ck_assert_int_eq(forkserver_gpu_map(&b[0], &m), 0);
        ck_assert_int_eq(forkserver_gpu_read(&m, 0, back, 9), 0);
        ck_assert_str_eq(back, "hello-gpu");
        ck_assert_int_eq(forkserver_gpu_unmap(&m), 0);
        forkserver_proc_free(fs, writer);

        /* the books: the writer is gone, but this process holds a copy of its buffer's fd
         * (FORKSERVER_SPAWN_GPU_FDS): the memory lives, and stays charged */
        ck_assert_uint_eq(daemon_stat(fs, "gpu_broker.leases"), 1);
        ck_assert_uint_eq(daemon_stat(fs, "gpu_broker.bytes"), 2 << 20);
        forkserver_close(fs);
        stop_ok();
}
END_TEST

START_TEST(exec_mode_environment)
{
        const char *prog[] = {env_or_die("GPUWORKER"), "0x5a", NULL};
        struct forkserver_gpu_request two[2] = {{0, 1}, {0, 3 << 20}};
        char lib[300];
        /* LeakSanitizer cannot run under the default seccomp profile (sanitizer builds) */
        const char *env[] = {"FAKECUDA_LEAK_CHECK=1", "ASAN_OPTIONS=detect_leaks=0", lib, NULL};
        struct forkserver_spawn_args a = {.path = prog[0],
                                          .argv = prog,
                                          .gpu = two,
                                          .ngpu = 2,
                                          .envp = env,
                                          .flags = FORKSERVER_SPAWN_GPU_FDS};
        struct forkserver *fs;
        char out[512], line[160], uuid[FORKSERVER_GPU_UUID_STR];
        const struct forkserver_gpu_buf *b;
        struct forkserver_proc *w;
        int st;

        /* an exec'd worker finds the driver as any program does: here, the fake */
        snprintf(lib, sizeof(lib), "FORKSERVER_LIBCUDA=%s", env_or_die("FORKSERVER_LIBCUDA"));
        daemon_start(&d, gpu_args(NULL, NULL));
        fs = daemon_connect(&d);
        st = spawn_capture_keep(fs, &a, 1, out, sizeof(out), &w);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %#x: %s", st, out);
        /* fds just above the request's (1): 3 and 4, sizes rounded, the device's UUID */
        ck_assert_uint_eq(forkserver_proc_gpu(w, &b), 2);
        forkserver_gpu_uuid_str(b[0].uuid, uuid);
        snprintf(line, sizeof(line), "3 2097152 %s\n4 4194304 %s\n", uuid, uuid);
        ck_assert_str_eq(out, line);
        if (!getenv("TEST_REAL_DRIVER"))
                ck_assert_str_eq(uuid, "GPU-66616b65-6375-6461-2d67-707530300000"); /* fake */
        /* what the worker wrote is in the client's buffers */
        struct forkserver_gpu_map m;
        uint8_t byte = 0;

        ck_assert_int_eq(forkserver_gpu_map(&b[1], &m), 0);
        ck_assert_int_eq(forkserver_gpu_read(&m, (3 << 20) + 7, &byte, 1), 0);
        ck_assert_uint_eq(byte, 0x5a);
        ck_assert_int_eq(forkserver_gpu_unmap(&m), 0);
        forkserver_proc_free(fs, w);
        forkserver_close(fs);
        stop_ok();
}
END_TEST

START_TEST(quotas_and_device_memory)
{
        const char *sleeper[] = {"/bin/sleep", "100", NULL};
        struct forkserver_gpu_request g2 = {0, 2 << 20}, one = {0, 1}, big = {0, 64 << 20},
                                      bad = {5, 1};
        struct forkserver_spawn_args a = {
            .path = sleeper[0], .argv = sleeper, .gpu = &g2, .ngpu = 1};
        struct forkserver_proc *w1, *w2, *w3;
        struct forkserver *fs, *other;
        int64_t t0;
        int st;

        /* 32 MiB, and a quota that is not a multiple of the 2 MiB granularity; every
         * cuMemCreate takes 500 ms, so that a refusal that allocated first shows */
        setenv("FAKECUDA_MEM_BYTES", "33554432", 1);
        setenv("FAKECUDA_DELAY_MS", "cuMemCreate:500", 1);
        daemon_start(&d, gpu_args("--cuda-conn-quota", "5M"));
        unsetenv("FAKECUDA_MEM_BYTES");
        unsetenv("FAKECUDA_DELAY_MS");
        fs = daemon_connect(&d);
        uint64_t fds0 = daemon_stat(fs, "open_fds");

        ck_assert_int_eq(forkserver_spawn(fs, &a, &w1), 0);
        ck_assert_int_eq(forkserver_spawn(fs, &a, &w2), 0);
        ck_assert_uint_eq(daemon_stat(fs, "gpu_broker.bytes"), 4 << 20);
        /* the connection's quota: refused with the numbers, before anything is allocated */
        t0 = now_ms();
        ck_assert_int_eq(forkserver_spawn(fs, &a, &w3), -EDQUOT);
        ck_assert_msg(strstr(forkserver_error(fs), "--cuda-conn-quota"), "%s",
                      forkserver_error(fs));
        /* 1 byte fits in the 1 MiB left, but not once rounded up: the broker refuses it
         * before cuMemCreate */
        a.gpu = &one;
        ck_assert_int_eq(forkserver_spawn(fs, &a, &w3), -EDQUOT);
        ck_assert_msg(strstr(forkserver_error(fs), "rounded up"), "%s", forkserver_error(fs));
        ck_assert_int_lt(now_ms() - t0, 450);
        ck_assert_uint_eq(daemon_stat(fs, "gpu_broker.leases"), 2);
        /* another connection has its own */
        a.gpu = &g2;
        other = daemon_connect(&d);
        ck_assert_int_eq(forkserver_spawn(other, &a, &w3), 0);
        forkserver_close(other); /* its worker ends, its buffer is returned */
        /* beyond the quota and the device: the quota, first */
        a.gpu = &big;
        ck_assert_int_eq(forkserver_spawn(fs, &a, &w3), -EDQUOT);
        a.gpu = &bad;
        ck_assert_int_eq(forkserver_spawn(fs, &a, &w3), -EINVAL);
        ck_assert_msg(strstr(forkserver_error(fs), "no GPU 5"), "%s", forkserver_error(fs));
        /* a worker's exit frees its share (the client took no copy) */
        ck_assert_int_eq(forkserver_kill(fs, w1, SIGKILL), 0);
        ck_assert_int_eq(forkserver_wait(fs, w1, &st), 0);
        forkserver_proc_free(fs, w1);
        a.gpu = &g2;
        ck_assert_int_eq(forkserver_spawn(fs, &a, &w1), 0);
        ck_assert_uint_eq(daemon_stat(fs, "spawn_failures_by_cause.gpu"), 4);
        /* every worker gone: no lease, no byte, no fd left in the daemon */
        struct forkserver_proc *ws[2] = {w1, w2};

        for (int i = 0; i < 2; i++) {
                ck_assert_int_eq(forkserver_kill(fs, ws[i], SIGKILL), 0);
                ck_assert_int_eq(forkserver_wait(fs, ws[i], &st), 0);
                forkserver_proc_free(fs, ws[i]);
        }
        for (int i = 0; i < 500 && daemon_stat(fs, "workers"); i++)
                usleep(10000);
        ck_assert_uint_eq(daemon_stat(fs, "gpu_broker.leases"), 0);
        ck_assert_uint_eq(daemon_stat(fs, "gpu_broker.bytes"), 0);
        ck_assert_uint_eq(daemon_stat(fs, "open_fds"), fds0);
        forkserver_close(fs);
        stop_ok();
}
END_TEST

/* One fork-mode worker that exits at once, with buffers of size; its status. */
static int spawn_exit(struct forkserver *fs, uint64_t size, unsigned flags,
                      struct forkserver_proc **keep)
{
        struct forkserver_gpu_request g = {0, size};
        struct forkserver_spawn_args a = {.entry = "libjobs:job_exit",
                                          .arg = "0",
                                          .arglen = 1,
                                          .gpu = &g,
                                          .ngpu = 1,
                                          .flags = flags};
        struct forkserver_proc *w;
        int r, st;

        if ((r = forkserver_spawn(fs, &a, &w)) < 0)
                return r;
        ck_assert_int_eq(forkserver_wait(fs, w, &st), 0);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %#x", st);
        if (keep)
                *keep = w;
        else
                forkserver_proc_free(fs, w);
        return 0;
}

static void wait_no_workers(struct forkserver *fs)
{
        for (int i = 0; i < 500 && daemon_stat(fs, "workers"); i++)
                usleep(10000);
}

/*
 * The case that held 96 MiB under a 16 MiB quota while the books said 0: a client that keeps
 * its copies of the buffers' fds keeps them charged after the workers exit, until its
 * connection is closed and its process gone; a client that took no copy frees the quota
 * with each worker.
 */
START_TEST(quota_counts_the_clients_copies)
{
        const uint64_t eight = 8 << 20;
        struct forkserver *fs;
        int p[2], st;
        char c = 0;
        pid_t pid;

        daemon_start(&d, gpu_args("--cuda-quota", "16M"));
        /* a client process of its own, which exits when told */
        ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
        pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                struct forkserver_options o = {
                    .socket_path = d.sock, .key_file = d.key, .key_fd = -1};
                struct forkserver_proc *w1, *w2, *w3;
                struct forkserver *cfs;
                const char *why;
                int code = 0;

                close(p[1]);
                if (forkserver_connect(&o, &cfs, &why) < 0)
                        _exit(2);
                if (spawn_exit(cfs, eight, FORKSERVER_SPAWN_GPU_FDS, &w1) < 0 ||
                    spawn_exit(cfs, eight, FORKSERVER_SPAWN_GPU_FDS, &w2) < 0)
                        _exit(3);
                /* both workers are gone; the fds are here: 16 MiB held, the third refused */
                if (forkserver_proc_gpu(w1, &(const struct forkserver_gpu_buf *){NULL}) != 1)
                        code = 4;
                else if (spawn_exit(cfs, eight, FORKSERVER_SPAWN_GPU_FDS, &w3) != -EDQUOT ||
                         !strstr(forkserver_error(cfs), "copies"))
                        code = 5;
                else if (spawn_exit(cfs, eight, 0, NULL) != -EDQUOT)
                        code = 6;
                if (write(STDOUT_FILENO, "", 0) < 0 || read(p[0], &c, 1) < 0)
                        code = 7;
                forkserver_close(cfs); /* the process lives on a moment: still charged */
                usleep(200000);
                _exit(code);
        }
        close(p[0]);
        fs = daemon_connect(&d);
        for (int i = 0; i < 500 && daemon_stat(fs, "gpu_broker.bytes") < 2 * eight; i++)
                usleep(10000);
        wait_no_workers(fs);
        ck_assert_uint_eq(daemon_stat(fs, "gpu_broker.bytes"), 2 * eight);
        ck_assert_uint_eq(daemon_stat(fs, "gpu_broker.leases"), 2);
        ck_assert_int_eq(spawn_exit(fs, eight, 0, NULL), -EDQUOT);
        ck_assert_int_eq(write(p[1], "x", 1), 1);
        close(p[1]);
        ck_assert_int_eq(waitpid(pid, &st, 0), pid);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "client status %#x", st);
        /* its connection closed and its process gone: uncharged */
        for (int i = 0; i < 500 && daemon_stat(fs, "gpu_broker.bytes"); i++)
                usleep(10000);
        ck_assert_uint_eq(daemon_stat(fs, "gpu_broker.bytes"), 0);
        ck_assert_uint_eq(daemon_stat(fs, "gpu_broker.leases"), 0);
        /* without copies, each worker's exit gives its share back */
        for (int i = 0; i < 4; i++) {
                ck_assert_int_eq(spawn_exit(fs, eight, 0, NULL), 0);
                wait_no_workers(fs);
                ck_assert_uint_eq(daemon_stat(fs, "gpu_broker.bytes"), 0);
        }
        /* every release was one the driver took (the broker ends on one it refuses) */
        ck_assert_uint_eq(daemon_stat(fs, "gpu_broker.restarts"), 0);
        ck_assert_uint_eq(daemon_stat(fs, "gpu_broker.up"), 1);
        forkserver_close(fs);
        stop_ok();
}
END_TEST

/* The fake keeps device memory while an exported fd holds it, as the driver does; so does
 * the broker's view of the device: a worker that hands its buffer's fd on to a process of its
 * own leaves the memory taken after it exits, though the books (which cannot see that fd)
 * say 0 (see docs/GPU.md); the device's own figures (--cuda-reserve, cuMemGetInfo) still
 * refuse what does not fit. */
START_TEST(exported_memory_outlives_its_worker)
{
        struct forkserver_gpu_request g = {0, 32 << 20};
        struct forkserver_fd_map io = {0, -1};
        struct forkserver_spawn_args a = {.entry = "libjobs:job_gpu_pass_on",
                                          .arg = "",
                                          .gpu = &g,
                                          .ngpu = 1,
                                          .fds = &io,
                                          .nfds = 1};
        struct forkserver_proc *w;
        struct forkserver *fs;
        int in[2], st, r = -1;

        setenv("FAKECUDA_MEM_BYTES", "67108864", 1); /* 64 MiB, 16 of them the context's */
        setenv("FAKECUDA_CTX_BYTES", "16777216", 1);
        daemon_start(&d, gpu_args("--cuda-reserve", "0"));
        unsetenv("FAKECUDA_MEM_BYTES");
        unsetenv("FAKECUDA_CTX_BYTES");
        fs = daemon_connect(&d);
        ck_assert_int_eq(pipe2(in, O_CLOEXEC), 0);
        io.fd = in[0];
        ck_assert_int_eq(forkserver_spawn(fs, &a, &w), 0);
        close(in[0]);
        ck_assert_int_eq(forkserver_wait(fs, w, &st), 0);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %#x", st);
        forkserver_proc_free(fs, w);
        wait_no_workers(fs);
        ck_assert_uint_eq(daemon_stat(fs, "gpu_broker.bytes"), 0);
        /* the broker released its handle; the worker's child holds the memory */
        ck_assert_int_eq(spawn_exit(fs, 32 << 20, 0, NULL), -ENOMEM);
        ck_assert_msg(strstr(forkserver_error(fs), "free"), "%s", forkserver_error(fs));
        close(in[1]); /* the holder exits: the device has the memory back */
        for (int i = 0; i < 200 && r < 0; i++) {
                usleep(10000);
                r = spawn_exit(fs, 32 << 20, 0, NULL);
        }
        ck_assert_msg(r == 0, "%s", forkserver_error(fs));
        forkserver_close(fs);
        stop_ok();
}
END_TEST

/* --cuda-reserve keeps room on the device for the workers' own contexts. */
START_TEST(reserve_for_contexts)
{
        struct forkserver_proc *w;
        struct forkserver *fs;

        setenv("FAKECUDA_MEM_BYTES", "67108864", 1);
        setenv("FAKECUDA_CTX_BYTES", "16777216", 1);
        daemon_start(&d, gpu_args("--cuda-reserve", "16M"));
        unsetenv("FAKECUDA_MEM_BYTES");
        unsetenv("FAKECUDA_CTX_BYTES");
        fs = daemon_connect(&d);
        /* 48 MiB free: 40 would leave 8 */
        ck_assert_int_eq(spawn_exit(fs, 40 << 20, 0, NULL), -ENOMEM);
        ck_assert_msg(strstr(forkserver_error(fs), "--cuda-reserve"), "%s", forkserver_error(fs));
        ck_assert_int_eq(spawn_exit(fs, 32 << 20, FORKSERVER_SPAWN_GPU_FDS, &w), 0);
        ck_assert_int_eq(spawn_exit(fs, 2 << 20, 0, NULL), -ENOMEM);
        forkserver_proc_free(fs, w);
        forkserver_close(fs);
        stop_ok();
}
END_TEST

/* Exclusive-process (and prohibited) compute mode: the broker's context would lock every
 * worker out; --cuda refuses to start, --cuda=auto starts without GPUs. */
START_TEST(exclusive_compute_mode_refused)
{
        const char *const autoargs[] = {"--cuda=auto", NULL};
        struct forkserver *fs;
        struct daemon e = {0};
        char log[4096] = "";
        int st, fd;

        setenv("FAKECUDA_COMPUTE_MODE", "3", 1);
        daemon_paths(&e);
        make_key_file(e.key);
        snprintf(log, sizeof(log), "%s.log", e.dir);
        e.log_path = log;
        const char *a1[] = {"--socket", e.sock, "--key-file", e.key, "--cuda", NULL};
        ck_assert_int_eq(daemon_spawn(&e, a1, &st), -1);
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1);
        daemon_cleanup_dir(&e);
        ck_assert_int_ge(fd = open(log, O_RDONLY | O_CLOEXEC), 0);
        char text[4096];
        ssize_t n = read(fd, text, sizeof(text) - 1);

        close(fd);
        unlink(log);
        text[n > 0 ? n : 0] = '\0';
        ck_assert_msg(strstr(text, "exclusive-process compute mode"), "%s", text);
        daemon_start(&d, autoargs);
        unsetenv("FAKECUDA_COMPUTE_MODE");
        fs = daemon_connect(&d);
        ck_assert_uint_eq(daemon_stat(fs, "gpu_broker.enabled"), 0);
        forkserver_close(fs);
        stop_ok();
}
END_TEST

/* What a worker wrote is on the device when forkserver_gpu_write returns, not only once it
 * unmaps: the client reads it while the worker still holds its mapping. */
START_TEST(write_is_done_when_it_returns)
{
        struct forkserver_gpu_request g = {0, 1 << 20};
        struct forkserver_fd_map io[2] = {{0, -1}, {1, -1}};
        struct forkserver_spawn_args a = {.entry = "libjobs:job_gpu_write_hold",
                                          .arg = "synced",
                                          .arglen = 6,
                                          .gpu = &g,
                                          .ngpu = 1,
                                          .fds = io,
                                          .nfds = 2,
                                          .envp = leak_env,
                                          .flags = FORKSERVER_SPAWN_GPU_FDS};
        const struct forkserver_gpu_buf *b;
        struct forkserver_gpu_map m;
        struct forkserver_proc *w;
        struct forkserver *fs;
        char ok[4] = "", back[8] = "";
        int in[2], out[2], st;

        daemon_start(&d, gpu_args(NULL, NULL));
        fs = daemon_connect(&d);
        ck_assert_int_eq(pipe2(in, O_CLOEXEC), 0);
        ck_assert_int_eq(pipe2(out, O_CLOEXEC), 0);
        io[0].fd = in[0];
        io[1].fd = out[1];
        ck_assert_int_eq(forkserver_spawn(fs, &a, &w), 0);
        close(in[0]);
        close(out[1]);
        ck_assert_int_eq(read(out[0], ok, 3), 3);
        ck_assert_str_eq(ok, "ok\n");
        ck_assert_uint_eq(forkserver_proc_gpu(w, &b), 1);
        ck_assert_int_eq(forkserver_gpu_map(&b[0], &m), 0);
        ck_assert_int_eq(forkserver_gpu_read(&m, 0, back, 6), 0);
        ck_assert_str_eq(back, "synced");
        ck_assert_int_eq(forkserver_gpu_unmap(&m), 0);
        close(in[1]);
        close(out[0]);
        ck_assert_int_eq(forkserver_wait(fs, w, &st), 0);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "worker status %#x", st);
        forkserver_proc_free(fs, w);
        forkserver_close(fs);
        stop_ok();
}
END_TEST

/* Root only: the front and all its children but the broker map no libcuda and no
 * /dev/nvidia*, before and after a broker restart. */
START_TEST(cuda_only_in_the_broker)
{
        struct forkserver_gpu_request g = {0, 1};
        struct forkserver_spawn_args a = {
            .entry = "libjobs:job_exit", .arg = "0", .arglen = 1, .gpu = &g, .ngpu = 1};
        struct forkserver_proc *w;
        struct forkserver *fs;
        pid_t broker;
        int r = -1, st;

        daemon_start(&d, gpu_args(NULL, NULL));
        fs = daemon_connect(&d);
        assert_cuda_only_in_broker(fs);
        broker = (pid_t)daemon_stat(fs, "gpu_broker.pid");
        ck_assert_int_eq(kill(broker, SIGKILL), 0);
        for (int i = 0; i < 100 && r < 0; i++) {
                usleep(50000);
                r = forkserver_spawn(fs, &a, &w);
        }
        ck_assert_msg(r == 0, "broker not back: %s", forkserver_error(fs));
        ck_assert_int_eq(forkserver_wait(fs, w, &st), 0);
        forkserver_proc_free(fs, w);
        wait_no_workers(fs);
        assert_cuda_only_in_broker(fs); /* the restart forked; the front stays clean */
        forkserver_close(fs);
        stop_ok();
}
END_TEST

START_TEST(broker_crash_and_restart)
{
        const char *echo[] = {"/bin/echo", "plain", NULL};
        struct forkserver_gpu_request g = {0, 1};
        char out[256];
        struct forkserver *fs;
        pid_t broker;
        int pfd, st, r = -1;

        daemon_start(&d, gpu_args(NULL, NULL));
        fs = daemon_connect(&d);
        broker = (pid_t)daemon_stat(fs, "gpu_broker.pid");
        ck_assert_int_ge(pfd = pidfd_open(broker, 0), 0);
        ck_assert_int_eq(pidfd_send_signal(pfd, SIGKILL, NULL, 0), 0);
        struct pollfd pf = {.fd = pfd, .events = POLLIN};

        ck_assert_int_eq(poll(&pf, 1, 5000), 1);
        close(pfd);
        /* GPU requests fail with a reason while it is down; the rest is served */
        st = run_capture(fs, echo, out, sizeof(out));
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        ck_assert_uint_eq(daemon_stat(fs, "gpu_broker.up"), 0);
        struct forkserver_spawn_args a = {
            .entry = "libjobs:job_exit", .arg = "0", .arglen = 1, .gpu = &g, .ngpu = 1};
        struct forkserver_proc *w;

        ck_assert_int_lt(forkserver_spawn(fs, &a, &w), 0);
        ck_assert_msg(strstr(forkserver_error(fs), "restart"), "%s", forkserver_error(fs));
        /* back within the back-off (100 ms first) */
        for (int i = 0; i < 100 && r < 0; i++) {
                usleep(50000);
                r = forkserver_spawn(fs, &a, &w);
        }
        ck_assert_msg(r == 0, "broker not back: %s", forkserver_error(fs));
        ck_assert_int_eq(forkserver_wait(fs, w, &st), 0);
        forkserver_proc_free(fs, w);
        ck_assert_uint_eq(daemon_stat(fs, "gpu_broker.restarts"), 1);
        ck_assert_int_ne((pid_t)daemon_stat(fs, "gpu_broker.pid"), broker);
        forkserver_close(fs);
        stop_ok();
}
END_TEST

START_TEST(missing_or_unusable_driver)
{
        const char *const args[] = {"--cuda", NULL};
        const char *const autoargs[] = {"--cuda=auto", NULL};
        struct forkserver_gpu_request g = {0, 1};
        const char *t[] = {"/bin/true", NULL};
        struct forkserver_spawn_args a = {.path = t[0], .argv = t, .gpu = &g, .ngpu = 1};
        struct forkserver_proc *w;
        struct forkserver *fs;
        struct daemon e = {0};
        int st;

        /* no driver: --cuda stops start-up, --cuda=auto starts without GPUs and says so */
        setenv("FORKSERVER_LIBCUDA", "/nonexistent/libcuda.so.1", 1);
        daemon_paths(&e);
        make_key_file(e.key);
        const char *a1[] = {"--socket", e.sock, "--key-file", e.key, "--cuda", NULL};
        ck_assert_int_eq(daemon_spawn(&e, a1, &st), -1);
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1);
        daemon_cleanup_dir(&e);
        daemon_start(&d, autoargs);
        fs = daemon_connect(&d);
        ck_assert_uint_eq(daemon_stat(fs, "gpu_broker.enabled"), 0);
        ck_assert_int_eq(forkserver_spawn(fs, &a, &w), -ENODEV);
        ck_assert_msg(strstr(forkserver_error(fs), "--cuda"), "%s", forkserver_error(fs));
        forkserver_close(fs);
        stop_ok();
        /* a device without the virtual memory management the leases need */
        ck_assert_int_eq(setenv("FORKSERVER_LIBCUDA", env_or_die("FAKECUDA"), 1), 0);
        setenv("FAKECUDA_NO_VMM", "1", 1);
        daemon_paths(&e);
        make_key_file(e.key);
        ck_assert_int_eq(daemon_spawn(&e, a1, &st), -1);
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1);
        daemon_cleanup_dir(&e);
        unsetenv("FAKECUDA_NO_VMM");
        (void)args;
}
END_TEST

/* The fake catches what the design forbids: CUDA used in a fork of an initialized process. */
START_TEST(fake_catches_fork_after_init)
{
        void *h = dlopen(env_or_die("FAKECUDA"), RTLD_NOW | RTLD_LOCAL);
        CUresult (*init)(unsigned) = NULL, (*count)(int *) = NULL;
        int n = 0, st;
        pid_t pid;

        ck_assert_ptr_nonnull(h);
        *(void **)&init = dlsym(h, "cuInit");
        *(void **)&count = dlsym(h, "cuDeviceGetCount");
        ck_assert(init && count);
        ck_assert_ptr_null(dlsym(h, "cuIpcGetMemHandle")); /* no bearer handles at all */
        ck_assert_int_eq(count(&n), CUDA_ERROR_NOT_INITIALIZED);
        ck_assert_int_eq(init(0), CUDA_SUCCESS);
        ck_assert_int_eq(count(&n), CUDA_SUCCESS);
        ck_assert_int_eq(n, 1);
        pid = fork();
        if (pid == 0)
                _exit(count(&n) == CUDA_ERROR_NOT_INITIALIZED && init(0) == 3 ? 0 : 1);
        ck_assert_int_eq(waitpid(pid, &st, 0), pid);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "a forked child could use CUDA");
}
END_TEST

/* The fake's own strictness, called directly: what the real driver refuses or does
 * differently, and that forkserver must therefore get right. */
// clang-format off
#define FAKE_FUNCS(X)                                                                              \
        X(cuInit) X(cuDeviceGet) X(cuDevicePrimaryCtxRetain) X(cuDevicePrimaryCtxRelease)          \
        X(cuCtxSetCurrent) X(cuCtxPushCurrent) X(cuCtxPopCurrent) X(cuCtxSynchronize)              \
        X(cuMemGetInfo) X(cuMemCreate) X(cuMemRelease) X(cuMemExportToShareableHandle)             \
        X(cuMemAddressReserve) X(cuMemAddressFree) X(cuMemMap) X(cuMemUnmap) X(cuMemSetAccess)     \
        X(cuMemsetD8) X(cuMemImportFromShareableHandle) X(cuCtxGetCurrent)
#define STR2(x) #x
#define STR(x) STR2(x)
static struct {
#define MEMBER(f) __typeof__(f) *f;
        FAKE_FUNCS(MEMBER)
#undef MEMBER
} fk;
// clang-format on

static void fake_open(void)
{
        void *h = dlopen(env_or_die("FAKECUDA"), RTLD_NOW | RTLD_LOCAL);

        ck_assert_ptr_nonnull(h);
#define LOAD(f) ck_assert_ptr_nonnull(*(void **)&fk.f = dlsym(h, STR(f)));
        FAKE_FUNCS(LOAD)
#undef LOAD
}

static void *no_context_here(void *arg)
{
        size_t fr, tot;

        (void)arg;
        return (void *)(intptr_t)fk.cuMemGetInfo(&fr, &tot);
}

START_TEST(fake_is_strict)
{
        CUmemAllocationProp prop = {.type = CU_MEM_ALLOCATION_TYPE_PINNED,
                                    .location = {.type = CU_MEM_LOCATION_TYPE_DEVICE, .id = 0}};
        CUmemGenericAllocationHandle h, h2;
        size_t fr0, fr, tot;
        CUcontext ctx, popped;
        CUdevice dev;
        CUdeviceptr p;
        pthread_t t;
        void *res;
        int fd;

        setenv("FAKECUDA_DELAY_MS", "cuMemGetInfo:200", 1);
        fake_open();
        ck_assert_int_eq(fk.cuInit(0), CUDA_SUCCESS);
        ck_assert_int_eq(fk.cuDeviceGet(&dev, 0), CUDA_SUCCESS);
        ck_assert_int_eq(fk.cuDevicePrimaryCtxRetain(&ctx, dev), CUDA_SUCCESS);
        /* no current context until one is set or pushed, and one per thread */
        ck_assert_int_eq(fk.cuMemGetInfo(&fr, &tot), CUDA_ERROR_INVALID_CONTEXT);
        ck_assert_int_eq(fk.cuCtxPushCurrent(ctx), CUDA_SUCCESS);
        int64_t t0 = now_ms();

        ck_assert_int_eq(fk.cuMemGetInfo(&fr0, &tot), CUDA_SUCCESS);
        ck_assert_int_ge(now_ms() - t0, 190); /* the latency knob */
        unsetenv("FAKECUDA_DELAY_MS");
        ck_assert_uint_eq(tot - fr0, 16 << 20); /* the context's cost */
        ck_assert_int_eq(pthread_create(&t, NULL, no_context_here, NULL), 0);
        ck_assert_int_eq(pthread_join(t, &res), 0);
        ck_assert_int_eq((int)(intptr_t)res, CUDA_ERROR_INVALID_CONTEXT);
        /* memory made without the POSIX-fd handle type cannot be exported as one */
        ck_assert_int_eq(fk.cuMemCreate(&h, 2 << 20, &prop, 0), CUDA_SUCCESS);
        ck_assert_int_eq(
            fk.cuMemExportToShareableHandle(&fd, h, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0),
            CUDA_ERROR_INVALID_VALUE);
        /* released once; the second time refused */
        ck_assert_int_eq(fk.cuMemRelease(h), CUDA_SUCCESS);
        ck_assert_int_eq(fk.cuMemRelease(h), CUDA_ERROR_INVALID_VALUE);
        /* reserved fields must be zero */
        prop.requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
        prop.allocFlags.reserved[2] = 1;
        ck_assert_int_eq(fk.cuMemCreate(&h, 2 << 20, &prop, 0), CUDA_ERROR_INVALID_VALUE);
        prop.allocFlags.reserved[2] = 0;
        /* the reservation's alignment is honoured */
        for (int i = 0; i < 4; i++) {
                ck_assert_int_eq(fk.cuMemAddressReserve(&p, 2 << 20, 32 << 20, 0, 0), CUDA_SUCCESS);
                ck_assert_uint_eq(p % (32 << 20), 0);
                ck_assert_int_eq(fk.cuMemAddressFree(p, 2 << 20), CUDA_SUCCESS);
        }
        /* exported memory outlives its handle while the fd lives, and counts meanwhile */
        ck_assert_int_eq(fk.cuMemCreate(&h, 4 << 20, &prop, 0), CUDA_SUCCESS);
        ck_assert_int_eq(
            fk.cuMemExportToShareableHandle(&fd, h, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0),
            CUDA_SUCCESS);
        ck_assert_int_eq(fk.cuMemRelease(h), CUDA_SUCCESS);
        ck_assert_int_eq(fk.cuMemGetInfo(&fr, &tot), CUDA_SUCCESS);
        ck_assert_uint_eq(fr0 - fr, 4 << 20);
        /* memset is asynchronous: the memory has it only after synchronizing */
        CUmemAccessDesc acc = {.location = {.type = CU_MEM_LOCATION_TYPE_DEVICE, .id = 0},
                               .flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE};
        unsigned char *host = mmap(NULL, 4 << 20, PROT_READ, MAP_SHARED, fd, 0);

        ck_assert_ptr_ne(host, MAP_FAILED);
        ck_assert_int_eq(fk.cuMemImportFromShareableHandle(
                             &h2, (void *)(intptr_t)fd, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR),
                         CUDA_SUCCESS);
        ck_assert_int_eq(fk.cuMemAddressReserve(&p, 4 << 20, 0, 0, 0), CUDA_SUCCESS);
        ck_assert_int_eq(fk.cuMemMap(p, 4 << 20, 0, h2, 0), CUDA_SUCCESS);
        ck_assert_int_eq(fk.cuMemRelease(h2), CUDA_SUCCESS);
        ck_assert_int_eq(fk.cuMemSetAccess(p, 4 << 20, &acc, 1), CUDA_SUCCESS);
        ck_assert_int_eq(fk.cuMemsetD8(p, 0x5a, 4 << 20), CUDA_SUCCESS);
        ck_assert_uint_eq(host[100], 0);
        ck_assert_int_eq(fk.cuCtxSynchronize(), CUDA_SUCCESS);
        ck_assert_uint_eq(host[100], 0x5a);
        ck_assert_int_eq(fk.cuMemUnmap(p, 4 << 20), CUDA_SUCCESS);
        ck_assert_int_eq(fk.cuMemAddressFree(p, 4 << 20), CUDA_SUCCESS);
        munmap(host, 4 << 20);
        ck_assert_int_eq(fk.cuMemGetInfo(&fr, &tot), CUDA_SUCCESS);
        ck_assert_uint_eq(fr0 - fr, 4 << 20); /* the fd still holds it */
        close(fd);
        ck_assert_int_eq(fk.cuMemGetInfo(&fr, &tot), CUDA_SUCCESS);
        ck_assert_uint_eq(fr, fr0); /* the last holder gone: uncharged */
        /* push and pop restore what was current */
        ck_assert_int_eq(fk.cuCtxPopCurrent(&popped), CUDA_SUCCESS);
        ck_assert_ptr_eq(popped, ctx);
        ck_assert_int_eq(fk.cuMemGetInfo(&fr, &tot), CUDA_ERROR_INVALID_CONTEXT);
        ck_assert_int_eq(fk.cuDevicePrimaryCtxRelease(dev), CUDA_SUCCESS);
}
END_TEST

/* The fake in exclusive-process mode: a second process gets no context on the device. */
START_TEST(fake_exclusive_process)
{
        CUcontext ctx;
        CUdevice dev;
        int st, p[2];
        char c;
        pid_t pid;

        setenv("FAKECUDA_COMPUTE_MODE", "3", 1);
        char inst[32];

        snprintf(inst, sizeof(inst), "test-gpu-%d", (int)getpid()); /* ours alone */
        setenv("FAKECUDA_INSTANCE", inst, 1);
        ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
        pid = fork();
        if (pid == 0) {
                fake_open();
                if (fk.cuInit(0) || fk.cuDeviceGet(&dev, 0))
                        _exit(1);
                CUresult rr = fk.cuDevicePrimaryCtxRetain(&ctx, dev);
                if (rr)
                        _exit(10 + (int)rr);
                if (write(p[1], "x", 1) != 1)
                        _exit(2);
                for (;;)
                        pause(); /* holding the device until killed */
        }
        close(p[1]);
        if (read(p[0], &c, 1) != 1) {
                waitpid(pid, &st, 0);
                ck_abort_msg("the child failed: %#x", st);
        }
        fake_open();
        ck_assert_int_eq(fk.cuInit(0), CUDA_SUCCESS);
        ck_assert_int_eq(fk.cuDeviceGet(&dev, 0), CUDA_SUCCESS);
        ck_assert_int_eq(fk.cuDevicePrimaryCtxRetain(&ctx, dev), CUDA_ERROR_DEVICE_UNAVAILABLE);
        kill(pid, SIGKILL);
        ck_assert_int_eq(waitpid(pid, &st, 0), pid);
        for (int i = 0; i < 100 && fk.cuDevicePrimaryCtxRetain(&ctx, dev); i++)
                usleep(10000);
        ck_assert_int_eq(fk.cuDevicePrimaryCtxRelease(dev), CUDA_SUCCESS);
        close(p[0]);
        unsetenv("FAKECUDA_COMPUTE_MODE");
}
END_TEST

/* The library leaves the caller's current context as it was (it pushes and pops its own),
 * and names the driver's error when a call fails. */
START_TEST(caller_context_kept)
{
        struct forkserver_gpu_request g = {0, 1 << 20};
        const struct forkserver_gpu_buf *b;
        struct forkserver_gpu_buf bogus;
        struct forkserver_gpu_map m;
        struct forkserver_proc *w;
        struct forkserver *fs;
        CUcontext mine, cur = NULL;
        CUdevice one;
        char back[4] = "";
        int p[2];

        setenv("FAKECUDA_DEVICES", "2", 1);
        daemon_start(&d, gpu_args(NULL, NULL));
        fs = daemon_connect(&d);
        ck_assert_int_eq(spawn_exit(fs, g.size, FORKSERVER_SPAWN_GPU_FDS, &w), 0);
        ck_assert_uint_eq(forkserver_proc_gpu(w, &b), 1);
        /* this process makes device 1's context its own current one */
        fake_open();
        ck_assert_int_eq(fk.cuInit(0), CUDA_SUCCESS);
        ck_assert_int_eq(fk.cuDeviceGet(&one, 1), CUDA_SUCCESS);
        ck_assert_int_eq(fk.cuDevicePrimaryCtxRetain(&mine, one), CUDA_SUCCESS);
        ck_assert_int_eq(fk.cuCtxSetCurrent(mine), CUDA_SUCCESS);
        /* the buffer is on device 0 */
        ck_assert_int_eq(forkserver_gpu_map(&b[0], &m), 0);
        ck_assert_int_eq(forkserver_gpu_fill(&m, 'x'), 0);
        ck_assert_int_eq(forkserver_gpu_read(&m, 0, back, 3), 0);
        ck_assert_str_eq(back, "xxx");
        ck_assert_int_eq(forkserver_gpu_unmap(&m), 0);
        ck_assert_int_eq(fk.cuCtxGetCurrent(&cur), CUDA_SUCCESS);
        ck_assert_ptr_eq(cur, mine);
        /* a driver error, named */
        ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
        bogus = b[0];
        bogus.fd = p[0];
        ck_assert_int_eq(forkserver_gpu_map(&bogus, &m), -EINVAL);
        ck_assert_str_eq(forkserver_gpu_error(),
                         "cuMemImportFromShareableHandle: CUDA_ERROR_INVALID_VALUE");
        ck_assert_int_eq(fk.cuCtxGetCurrent(&cur), CUDA_SUCCESS);
        ck_assert_ptr_eq(cur, mine);
        close(p[0]);
        close(p[1]);
        ck_assert_int_eq(fk.cuDevicePrimaryCtxRelease(one), CUDA_SUCCESS);
        unsetenv("FAKECUDA_DEVICES");
        forkserver_proc_free(fs, w);
        forkserver_close(fs);
        stop_ok();
}
END_TEST

int main(void)
{
        Suite *s = suite_create("gpu");
        TCase *tc = tcase_create("driver");
        TCase *tf = tcase_create("fake-driver");
        const char *lib = getenv("FORKSERVER_LIBCUDA"), *fake = getenv("FAKECUDA");
        char a[PATH_MAX], b[PATH_MAX];
        bool is_fake;

        /* FORKSERVER_LIBCUDA names the driver to test (a real one, say); else the fake */
        if (lib && *lib) {
                is_fake = fake && realpath(lib, a) && realpath(fake, b) && strcmp(a, b) == 0;
        } else if (fake) {
                setenv("FORKSERVER_LIBCUDA", fake, 1);
                is_fake = true;
        } else {
                fprintf(stderr, "neither FORKSERVER_LIBCUDA nor FAKECUDA is set (run through "
                                "meson test)\n");
                return 1;
        }
        if (!is_fake) {
                setenv("TEST_REAL_DRIVER", "1", 1);
                printf("driver: %s (FORKSERVER_LIBCUDA); the fake's own tests and those that "
                       "turn its knobs: skipped\n",
                       getenv("FORKSERVER_LIBCUDA"));
        }
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, share_between_workers_and_client);
        tcase_add_test(tc, exec_mode_environment);
        tcase_add_test(tc, quota_counts_the_clients_copies);
        tcase_add_test(tc, write_is_done_when_it_returns);
        suite_add_tcase(s, tc);
        if (is_fake) {
                tcase_set_timeout(tf, 60);
                tcase_add_test(tf, missing_or_unusable_driver);
                tcase_add_test(tf, fake_catches_fork_after_init);
                tcase_add_test(tf, fake_is_strict);
                tcase_add_test(tf, fake_exclusive_process);
                tcase_add_test(tf, exported_memory_outlives_its_worker);
                tcase_add_test(tf, reserve_for_contexts);
                tcase_add_test(tf, exclusive_compute_mode_refused);
                tcase_add_test(tf, caller_context_kept);
                tcase_add_test(tf, slow_broker_blocks_nobody_else);
                suite_add_tcase(s, tf);
        }
        /* the daemon's processes are not dumpable: only root reads their maps */
        if (geteuid() == 0) {
                TCase *tr = tcase_create("root");

                tcase_set_timeout(tr, 60);
                tcase_add_test(tr, cuda_only_in_the_broker);
                suite_add_tcase(s, tr);
        } else {
                printf("cuda_only_in_the_broker: reading the daemon's /proc/PID/maps needs "
                       "root: skipped\n");
        }

        /* the test process signals through pidfds (valgrind 3.19 cannot) */
        TCase *tp = tcase_create("pidfd-signal");

        tcase_set_tags(tp, "pidfd");
        tcase_set_timeout(tp, 60);
        if (is_fake)
                tcase_add_test(tp, quotas_and_device_memory);
        tcase_add_test(tp, broker_crash_and_restart);
        suite_add_tcase(s, tp);
        return run_suite(s);
}
#else
int main(void)
{
        printf("GPU tests skipped: built without cuda.h (-Dgpu, -Dgpu_cuda_include)\n");
        return 77;
}
#endif
