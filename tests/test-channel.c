/* Integration: private channels (SCM_RIGHTS both ways) and fork-mode (preloaded) workers. */
#include "daemon.h"

#include <sys/mman.h>

static struct daemon d;

static const char *const *preload_args(void)
{
        static const char *args[3];

        args[0] = "--preload";
        args[1] = env_or_die("LIBJOBS");
        args[2] = NULL;
        return args;
}

/* Sends text (+fds) and returns the reply's text; the reply's fds go to rfds. */
static void ask(int ch, const char *text, const int *fds, size_t nfds, char *out, size_t cap,
                int *rfds, size_t *rn)
{
        int spare[FORKSERVER_CHANNEL_MAX_FDS];
        size_t n0;
        int n;

        ck_assert_int_eq(forkserver_channel_send(ch, text, strlen(text), fds, nfds), 0);
        n = forkserver_channel_recv(ch, out, cap - 1, rfds ? rfds : spare,
                                    FORKSERVER_CHANNEL_MAX_FDS, rn ? rn : &n0);
        ck_assert_int_ge(n, 0);
        out[n] = '\0';
        if (!rfds)
                fs_close_many(spare, n0);
}

static struct forkserver_proc *spawn_echo(struct forkserver *fs, bool fork_mode)
{
        const char *argv[] = {env_or_die("CHANWORKER"), NULL};
        /* In the sanitizer build LeakSanitizer would stop the world with ptrace at exit,
         * which the default profile denies; the setting is inert elsewhere. */
        const char *envp[] = {"ASAN_OPTIONS=detect_leaks=0", NULL};
        struct forkserver_spawn_args a = {.flags = FORKSERVER_SPAWN_CHANNEL, .envp = envp};
        struct forkserver_proc *w;

        if (fork_mode)
                a.entry = "libjobs:job_echo";
        else
                a.path = argv[0], a.argv = argv;
        ck_assert_msg(forkserver_spawn(fs, &a, &w) == 0, "%s", forkserver_error(fs));
        ck_assert_int_ge(forkserver_proc_channel(w), 0);
        return w;
}

static void roundtrips(struct forkserver *fs, struct forkserver_proc *w, bool fork_mode)
{
        int ch = forkserver_proc_channel(w), mfd, p[2], many[FORKSERVER_CHANNEL_MAX_FDS];
        int rfds[FORKSERVER_CHANNEL_MAX_FDS], st;
        char out[256], data[64];
        size_t rn;

        /* client → worker → client: a memfd whose contents come back transformed */
        mfd = memfd_create("in", MFD_CLOEXEC);
        ck_assert_int_eq(write(mfd, "hello channel", 13), 13);
        ask(ch, "mem", &mfd, 1, out, sizeof(out), rfds, &rn);
        close(mfd);
        ck_assert_str_eq(out, "mem");
        ck_assert_uint_eq(rn, 1);
        ck_assert_int_eq(fcntl(rfds[0], F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
        ck_assert_int_eq(pread(rfds[0], data, sizeof(data), 0), 13);
        ck_assert_mem_eq(data, "HELLO CHANNEL", 13);
        close(rfds[0]);

        /* a pipe's write end, used by the worker */
        ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
        ask(ch, "pipe", &p[1], 1, out, sizeof(out), NULL, NULL);
        close(p[1]);
        ck_assert_str_eq(out, "ok");
        ck_assert_int_eq(read(p[0], data, sizeof(data)), 12);
        ck_assert_mem_eq(data, "from worker\n", 12);
        close(p[0]);

        /* the most fds one message may carry */
        for (int i = 0; i < FORKSERVER_CHANNEL_MAX_FDS; i++)
                many[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
        ask(ch, "count", many, FORKSERVER_CHANNEL_MAX_FDS, out, sizeof(out), NULL, NULL);
        ck_assert_str_eq(out, "64");

        /* more than that is refused by the sender, and by a receiver that gets them anyway */
        ck_assert_int_eq(forkserver_channel_send(ch, "x", 1, many, 65), -EMSGSIZE);
        char before[32];
        ask(ch, "fds", NULL, 0, before, sizeof(before), NULL, NULL);
        {
                union {
                        struct cmsghdr align;
                        char buf[CMSG_SPACE(sizeof(int) * 100)];
                } ctl;
                int hundred[100];
                uint8_t hdr[FS_HDR_LEN + 5];
                struct fs_msgw mw;

                for (int i = 0; i < 100; i++)
                        hundred[i] = many[i % FORKSERVER_CHANNEL_MAX_FDS];
                fs_msg_begin(&mw, hdr, sizeof(hdr), FS_MSG_DATA, 0);
                fs_buf_put_bytes(&mw.b, "count", 5);
                ck_assert_int_eq(fs_msg_finish(&mw), (int)sizeof(hdr));
                struct iovec iov = {hdr, sizeof(hdr)};
                struct msghdr mh = {.msg_iov = &iov,
                                    .msg_iovlen = 1,
                                    .msg_control = ctl.buf,
                                    .msg_controllen = sizeof(ctl.buf)};
                struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
                c->cmsg_level = SOL_SOCKET;
                c->cmsg_type = SCM_RIGHTS;
                c->cmsg_len = CMSG_LEN(sizeof(hundred));
                memcpy(CMSG_DATA(c), hundred, sizeof(hundred));
                ck_assert_int_eq(sendmsg(ch, &mh, 0), (ssize_t)sizeof(hdr));
                int k = forkserver_channel_recv(ch, out, sizeof(out) - 1, rfds, 64, &rn);
                ck_assert_int_gt(k, 0);
                out[k] = '\0';
                ck_assert_str_eq(out, "refused: 74"); /* EBADMSG */
        }
        ask(ch, "fds", NULL, 0, out, sizeof(out), NULL, NULL);
        ck_assert_str_eq(out, before); /* none of the 100 stayed open in the worker */
        fs_close_many(many, FORKSERVER_CHANNEL_MAX_FDS);

        /* exec mode finds its channel in the environment */
        ask(ch, "env", NULL, 0, out, sizeof(out), NULL, NULL);
        ck_assert_str_eq(out, fork_mode ? "-" : "3");

        /* EOF when the worker is gone */
        ck_assert_int_eq(forkserver_channel_send(ch, "bye", 3, NULL, 0), 0);
        ck_assert_int_eq(forkserver_channel_recv(ch, out, sizeof(out), rfds, 4, &rn), -EPIPE);
        ck_assert_int_eq(forkserver_wait(fs, w, &st), 0);
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 7);
}

START_TEST(exec_mode_channel)
{
        struct forkserver *fs;
        struct forkserver_proc *w;
        uint64_t fds0;

        daemon_start(&d, NULL);
        fs = daemon_connect(&d);
        fds0 = daemon_stat(fs, "open_fds");
        w = spawn_echo(fs, false);
        roundtrips(fs, w, false);
        forkserver_proc_free(fs, w);
        ck_assert_uint_eq(daemon_stat(fs, "open_fds"), fds0); /* the daemon kept no end */
        forkserver_close(fs);
        ck_assert_int_eq(daemon_stop(&d), 0);
}
END_TEST

START_TEST(fork_mode_channel)
{
        struct forkserver *fs;
        struct forkserver_proc *w;

        daemon_start(&d, preload_args());
        fs = daemon_connect(&d);
        w = spawn_echo(fs, true);
        roundtrips(fs, w, true);
        forkserver_proc_free(fs, w);
        forkserver_close(fs);
        ck_assert_int_eq(daemon_stop(&d), 0);
}
END_TEST

START_TEST(channel_eof_on_kill)
{
        struct forkserver *fs;
        struct forkserver_proc *w;
        char out[16];
        int fds[4], st;
        size_t n;

        daemon_start(&d, preload_args());
        fs = daemon_connect(&d);
        w = spawn_echo(fs, true);
        ck_assert_int_eq(forkserver_kill(fs, w, SIGKILL), 0);
        ck_assert_int_eq(
            forkserver_channel_recv(forkserver_proc_channel(w), out, sizeof(out), fds, 4, &n),
            -EPIPE);
        ck_assert_int_eq(forkserver_wait(fs, w, &st), 0);
        ck_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
        forkserver_close(fs);
        ck_assert_int_eq(daemon_stop(&d), 0);
}
END_TEST

static int run_entry(struct forkserver *fs, const char *entry, const char *arg, char *out,
                     size_t cap)
{
        struct forkserver_spawn_args a = {
            .entry = entry, .arg = arg, .arglen = arg ? strlen(arg) : 0};

        return spawn_capture(fs, &a, 1, out, cap);
}

START_TEST(fork_mode_workers)
{
        struct forkserver *fs;
        struct forkserver_proc *w;
        char out[256];
        int st;

        daemon_start(&d, preload_args());
        fs = daemon_connect(&d);
        st = run_entry(fs, "libjobs:job_exit", "42", out, sizeof(out));
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 42);
        st = run_entry(fs, "libjobs:job_signal", "15", out, sizeof(out));
        ck_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM);
        /* exactly fds 0-2, the request's environment and argument */
        const char *envp[] = {"X=given", NULL};
        struct forkserver_spawn_args a = {
            .entry = "libjobs:job_report", .arg = "abc", .arglen = 3, .envp = envp};
        st = spawn_capture(fs, &a, 1, out, sizeof(out));
        ck_assert_str_eq(out, "arg=abc channel=-1 nfds=1 open=3 X=given\n");
        /* a stream the entry left open is flushed when it returns */
        char dir[] = "/tmp/fs-flush-XXXXXX", file[64];
        ck_assert_ptr_nonnull(mkdtemp(dir));
        snprintf(file, sizeof(file), "%s/left-open", dir);
        st = run_entry(fs, "libjobs:job_fopen", file, out, sizeof(out));
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        read_all_close(open(file, O_RDONLY | O_CLOEXEC), out, sizeof(out));
        ck_assert_str_eq(out, "left in the buffer\n");
        unlink(file);
        rmdir(dir);
        /* the stack a main thread would have */
        st = run_entry(fs, "libjobs:job_stack", NULL, out, sizeof(out));
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "job_stack: status %#x", st);
        /* sched_getcpu() without the rseq area the zygote dropped */
        st = run_entry(fs, "libjobs:job_cpu", NULL, out, sizeof(out));
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "job_cpu: status %#x", st);

        /* a set-up failure is an error for the request, not an exit of a worker */
        struct forkserver_spawn_args bad = {.entry = "libjobs:job_exit", .cwd = "/nonexistent"};
        ck_assert_int_eq(forkserver_spawn(fs, &bad, &w), -ENOENT);
        ck_assert_ptr_nonnull(strstr(forkserver_error(fs), "chdir"));
        ck_assert_int_eq(forkserver_ping(fs), 0);
        ck_assert_int_eq(forkserver_wait_any(fs, 0, &w), -ECHILD); /* no stray exit event */
        usleep(100000);
        ck_assert_int_eq(count_zombies(d.pid), 0); /* and the child was reaped */
        ck_assert_uint_eq(daemon_stat(fs, "spawn_failures"), 1);

        /* only symbols of preloaded libraries */
        struct forkserver_spawn_args b = {.entry = "libjobs:no_such_symbol"};
        ck_assert_int_eq(forkserver_spawn(fs, &b, &w), -ENOENT);
        ck_assert_ptr_nonnull(strstr(forkserver_error(fs), "no_such_symbol"));
        b.entry = "libc:exit";
        ck_assert_int_eq(forkserver_spawn(fs, &b, &w), -EPERM);
        ck_assert_ptr_nonnull(strstr(forkserver_error(fs), "not a preloaded library"));
        b.entry = "../x:y";
        ck_assert_int_eq(forkserver_spawn(fs, &b, &w), -EINVAL);

        /* and from the shell */
        const char *run[] = {
            env_or_die("FORKCTL"), "--socket", d.sock, "--key-file", d.key, "run", "--entry",
            "libjobs:job_report",  "--",       "one",  "two",        NULL};
        st = run_cmd(run, out, sizeof(out));
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        ck_assert_ptr_nonnull(strstr(out, "arg=one"));
        const char *ex[] = {
            env_or_die("FORKCTL"), "--socket", d.sock, "--key-file", d.key, "run", "--entry",
            "libjobs:job_exit",    "--",       "9",    NULL};
        st = run_cmd(ex, out, sizeof(out));
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 9);
        forkserver_close(fs);
        ck_assert_int_eq(daemon_stop(&d), 0);
}
END_TEST

/* Starts the daemon with args and returns its exit status and stderr. */
static int failed_start(const char **args, char *err, size_t cap)
{
        args[0] = env_or_die("FORKSERVERD");
        return exec_capture(args, 2, err, cap);
}

START_TEST(preload_failures)
{
        char err[2048], bogus[160];
        int st;

        daemon_paths(&d);
        make_key_file(d.key);
        const char *missing[] = {"forkserverd", "--foreground", "--allow-root-workers",
                                 "--socket",    d.sock,         "--key-file",
                                 d.key,         "--preload",    "/nonexistent/libnope.so",
                                 NULL};
        st = failed_start(missing, err, sizeof(err));
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1);
        ck_assert_ptr_nonnull(strstr(err, "/nonexistent/libnope.so"));

        const char *thread[] = {"forkserverd", "--foreground", "--allow-root-workers",
                                "--socket",    d.sock,         "--key-file",
                                d.key,         "--preload",    env_or_die("LIBTHREAD"),
                                NULL};
        st = failed_start(thread, err, sizeof(err));
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1);
        ck_assert_msg(strstr(err, "libthread.so") && strstr(err, "started a thread"), "%s", err);

        snprintf(bogus, sizeof(bogus), "%s/libbogus.so", d.dir);
        int fd = open(bogus, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        ck_assert_int_eq(write(fd, "not an ELF file", 15), 15);
        close(fd);
        const char *notelf[] = {"forkserverd", "--foreground", "--allow-root-workers",
                                "--socket",    d.sock,         "--key-file",
                                d.key,         "--preload",    bogus,
                                NULL};
        st = failed_start(notelf, err, sizeof(err));
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1);
        ck_assert_ptr_nonnull(strstr(err, "libbogus.so"));
        ck_assert_int_eq(access(d.sock, F_OK), -1); /* nothing left listening */
        unlink(bogus);
        daemon_cleanup_dir(&d);
}
END_TEST

START_TEST(fork_mode_holds_no_key)
{
        struct forkserver_spawn_args a = {.entry = "libjobs:job_sleep"};
        struct forkserver *fs;
        struct forkserver_proc *w;
        struct fs_key *k;
        int st;

        if (geteuid() != 0)
                return; /* reading a worker's memory needs root; checked in the root CI run */
        daemon_start(&d, preload_args());
        fs = daemon_connect(&d);
        ck_assert_int_eq(forkserver_spawn(fs, &a, &w), 0);
        ck_assert_int_eq(fs_key_load_file(d.key, &k, NULL), 0);
        ck_assert_int_eq(scan_memory(forkserver_proc_pid(w), k->bytes, FS_KEY_LEN), 0);
        ck_assert_int_ge(scan_memory(d.pid, k->bytes, FS_KEY_LEN), 1); /* the scan can find it */
        fs_key_free(k);
        ck_assert_int_eq(forkserver_kill(fs, w, SIGKILL), 0);
        ck_assert_int_eq(forkserver_wait(fs, w, &st), 0);
        forkserver_close(fs);
        ck_assert_int_eq(daemon_stop(&d), 0);
}
END_TEST

int main(void)
{
        Suite *s = suite_create("channel");
        TCase *tc = tcase_create("integration");

        /* signal workers through pidfds: valgrind 3.19 cannot, so its run leaves them out */
        TCase *tp = tcase_create("pidfd-signal");

        tcase_set_tags(tp, "pidfd");
        tcase_set_timeout(tp, 120);
        tcase_add_test(tp, channel_eof_on_kill);
        tcase_add_test(tp, fork_mode_holds_no_key);
        suite_add_tcase(s, tp);

        tcase_set_timeout(tc, 120);
        tcase_add_test(tc, exec_mode_channel);
        tcase_add_test(tc, fork_mode_channel);
        tcase_add_test(tc, fork_mode_workers);
        tcase_add_test(tc, preload_failures);
        suite_add_tcase(s, tc);
        return run_suite(s);
}
