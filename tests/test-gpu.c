/*
 * GPU broker and buffers, against the fake driver (tests/fakecuda): leases and quotas, a
 * buffer written by one worker and read by another and by the client, broker crash and
 * restart, a missing or unusable driver, and CUDA kept out of every process that forks.
 */
#include "daemon.h"

#ifdef FS_HAVE_CUDA
#include <cuda.h>
#include <dlfcn.h>
#include <sys/pidfd.h>

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

/* libcuda mappings in pid, or -1 when its maps cannot be read: the daemon's processes are
 * not dumpable, so only root may (the tests that need it check as root only). */
static int maps_libcuda(pid_t pid)
{
        char path[64], line[512];
        int n = 0;
        FILE *f;

        snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
        if (!(f = fopen(path, "re"))) {
                ck_assert_int_ne(geteuid(), 0);
                return -1;
        }
        while (fgets(line, sizeof(line), f))
                n += strstr(line, "libcuda") != NULL;
        fclose(f);
        return n;
}

static const char *const leak_env[] = {"FAKECUDA_LEAK_CHECK=1", NULL};

/* A fork-mode worker with GPU buffers; returns its exit status, its stdout in out. */
static int run_gpu_entry(struct forkserver *fs, const char *entry, const char *arg,
                         const struct forkserver_gpu_request *g, size_t ng,
                         struct forkserver_proc **keep, char *out, size_t cap)
{
        struct forkserver_spawn_args a = {.entry = entry, .arg = arg, .arglen = strlen(arg),
                                          .gpu = g, .ngpu = ng, .envp = leak_env};

        return spawn_capture_keep(fs, &a, 1, out, cap, keep);
}

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
        /* the front and the zygotes never load the driver; the broker does (as root: the
         * daemon's maps are not readable by its own uid) */
        if (geteuid() == 0) {
                ck_assert_int_eq(maps_libcuda(d.pid), 0);
                ck_assert_int_eq(maps_libcuda((pid_t)daemon_stat(fs, "zygote_pid")), 0);
                ck_assert_int_gt(maps_libcuda((pid_t)daemon_stat(fs, "gpu_broker.pid")), 0);
        }

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
        struct forkserver_spawn_args a = {.entry = "libjobs:job_gpu_read", .arg = arg,
                                          .arglen = strlen(arg), .envp = leak_env};
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

        /* the books: the writer's lease went with it */
        ck_assert_uint_eq(daemon_stat(fs, "gpu_broker.leases"), 0);
        ck_assert_uint_eq(daemon_stat(fs, "gpu_broker.bytes"), 0);
        ck_assert_int_le(maps_libcuda(d.pid), 0);
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
        struct forkserver_spawn_args a = {.path = prog[0], .argv = prog, .gpu = two, .ngpu = 2,
                                          .envp = env};
        struct forkserver *fs;
        char out[512], line[160], uuid[FORKSERVER_GPU_UUID_STR];
        const struct forkserver_gpu_buf *b;
        struct forkserver_proc *w;
        int st;

        /* an exec'd worker finds the driver as any program does: here, the fake */
        snprintf(lib, sizeof(lib), "FORKSERVER_LIBCUDA=%s", env_or_die("FAKECUDA"));
        daemon_start(&d, gpu_args(NULL, NULL));
        fs = daemon_connect(&d);
        st = spawn_capture_keep(fs, &a, 1, out, sizeof(out), &w);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %#x: %s", st, out);
        /* fds just above the request's (1): 3 and 4, sizes rounded, the device's UUID */
        ck_assert_uint_eq(forkserver_proc_gpu(w, &b), 2);
        forkserver_gpu_uuid_str(b[0].uuid, uuid);
        snprintf(line, sizeof(line), "3 2097152 %s\n4 4194304 %s\n", uuid, uuid);
        ck_assert_str_eq(out, line);
        ck_assert_str_eq(uuid, "GPU-66616b65-6375-6461-2d67-707530300000"); /* "fakecuda-gpu00" */
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
        struct forkserver_gpu_request g2 = {0, 2 << 20}, big = {0, 64 << 20}, bad = {5, 1};
        struct forkserver_spawn_args a = {.path = sleeper[0], .argv = sleeper, .gpu = &g2,
                                          .ngpu = 1};
        struct forkserver_proc *w1, *w2, *w3;
        struct forkserver *fs, *other;
        int st;

        setenv("FAKECUDA_MEM_BYTES", "33554432", 1); /* 32 MiB */
        daemon_start(&d, gpu_args("--cuda-conn-quota", "4M"));
        unsetenv("FAKECUDA_MEM_BYTES");
        fs = daemon_connect(&d);
        uint64_t fds0 = daemon_stat(fs, "open_fds");

        ck_assert_int_eq(forkserver_spawn(fs, &a, &w1), 0);
        ck_assert_int_eq(forkserver_spawn(fs, &a, &w2), 0);
        ck_assert_uint_eq(daemon_stat(fs, "gpu_broker.bytes"), 4 << 20);
        /* the connection's quota: refused with the numbers, nothing leaked */
        ck_assert_int_eq(forkserver_spawn(fs, &a, &w3), -EDQUOT);
        ck_assert_msg(strstr(forkserver_error(fs), "--cuda-conn-quota"), "%s",
                      forkserver_error(fs));
        ck_assert_uint_eq(daemon_stat(fs, "gpu_broker.leases"), 2);
        /* another connection has its own */
        other = daemon_connect(&d);
        ck_assert_int_eq(forkserver_spawn(other, &a, &w3), 0);
        forkserver_close(other); /* its worker ends, its buffer is returned */
        /* beyond the device's memory: the driver's reason */
        a.gpu = &big;
        ck_assert_int_eq(forkserver_spawn(fs, &a, &w3), -ENOMEM);
        ck_assert_msg(strstr(forkserver_error(fs), "OUT_OF_MEMORY"), "%s", forkserver_error(fs));
        a.gpu = &bad;
        ck_assert_int_eq(forkserver_spawn(fs, &a, &w3), -EINVAL);
        ck_assert_msg(strstr(forkserver_error(fs), "no GPU 5"), "%s", forkserver_error(fs));
        /* a worker's exit frees its share */
        ck_assert_int_eq(forkserver_kill(fs, w1, SIGKILL), 0);
        ck_assert_int_eq(forkserver_wait(fs, w1, &st), 0);
        forkserver_proc_free(fs, w1);
        a.gpu = &g2;
        ck_assert_int_eq(forkserver_spawn(fs, &a, &w1), 0);
        ck_assert_uint_eq(daemon_stat(fs, "spawn_failures_by_cause.gpu"), 3);
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
        struct forkserver_spawn_args a = {.entry = "libjobs:job_exit", .arg = "0", .arglen = 1,
                                          .gpu = &g, .ngpu = 1};
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
        ck_assert_int_le(maps_libcuda(d.pid), 0); /* the restart forked; the front stays clean */
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

int main(void)
{
        Suite *s = suite_create("gpu");
        TCase *tc = tcase_create("fake-driver");

        if (!getenv("FAKECUDA")) {
                fprintf(stderr, "FAKECUDA is not set (run through meson test)\n");
                return 1;
        }
        setenv("FORKSERVER_LIBCUDA", getenv("FAKECUDA"), 1);
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, share_between_workers_and_client);
        tcase_add_test(tc, exec_mode_environment);
        tcase_add_test(tc, missing_or_unusable_driver);
        tcase_add_test(tc, fake_catches_fork_after_init);
        suite_add_tcase(s, tc);

        /* the test process signals through pidfds (valgrind 3.19 cannot) */
        TCase *tp = tcase_create("pidfd-signal");

        tcase_set_tags(tp, "pidfd");
        tcase_set_timeout(tp, 60);
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
