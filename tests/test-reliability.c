/*
 * Reliability: the real daemon under load, under faults and under hostile input. Each test
 * states what it proves; the figures it prints go to docs/SECURITY.md.
 */
#include "common/log.h"
#include "daemon.h"

#include <stdbool.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/resource.h>

static struct daemon d;

static void stop_ok(void)
{
        int st = daemon_stop(&d);

        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "daemon exit status %#x", st);
}

static long rss_kib(pid_t pid)
{
        char path[64], line[256];
        long kib = -1;
        FILE *f;

        snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
        ck_assert_ptr_nonnull(f = fopen(path, "re"));
        while (fgets(line, sizeof(line), f))
                if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
                        break;
        fclose(f);
        return kib;
}

static pid_t parent_of(pid_t pid)
{
        pid_t ppid;
        char state;

        return proc_stat(pid, &state, &ppid) < 0 ? -1 : ppid;
}

/* Polls the daemon until its books show no worker and only our connection. */
static void await_idle(struct forkserver *fs)
{
        for (int i = 0; i < 500; i++) {
                if (daemon_stat(fs, "workers") == 0 && daemon_stat(fs, "connections") == 1 &&
                    daemon_stat(fs, "pending_handshakes") == 0)
                        return;
                usleep(10000);
        }
        ck_abort_msg("daemon not idle: %llu workers, %llu connections",
                     (unsigned long long)daemon_stat(fs, "workers"),
                     (unsigned long long)daemon_stat(fs, "connections"));
}

static bool pidfd_dead_within(int pidfd, int ms)
{
        struct pollfd p = {.fd = pidfd, .events = POLLIN};

        return poll(&p, 1, ms) == 1;
}

/* A connection for a forked child of the test (no Check asserts there): NULL on failure. */
static struct forkserver *child_connect(void)
{
        struct forkserver_options o = {.socket_path = d.sock, .key_file = d.key, .key_fd = -1};
        struct forkserver *fs;
        const char *why;

        return forkserver_connect(&o, &fs, &why) < 0 ? NULL : fs;
}

/* ---- load ------------------------------------------------------------------------------ */

#define LOAD_CLIENTS 8
#define LOAD_SPAWNS 2000
#define LOAD_WINDOW 16

/*
 * One client of the load test, in its own process: LOAD_SPAWNS workers, LOAD_WINDOW in flight,
 * all writing their index as a line into one pipe. Exits 0 when every status and every line
 * arrived exactly once; otherwise a code that says what went wrong.
 */
static void load_client(bool fork_mode)
{
        static char lines[LOAD_SPAWNS * 8], seen[LOAD_SPAWNS];
        const char *worker = getenv("LOADWORKER");
        char num[LOAD_WINDOW][16];
        struct forkserver *fs = child_connect();
        size_t len = 0;
        int p[2];
        ssize_t n;

        if (!fs || pipe2(p, O_CLOEXEC) < 0)
                _exit(2);
        for (int done = 0; done < LOAD_SPAWNS;) {
                int k = LOAD_SPAWNS - done < LOAD_WINDOW ? LOAD_SPAWNS - done : LOAD_WINDOW;
                uint32_t ticket[LOAD_WINDOW];

                for (int i = 0; i < k; i++) {
                        struct forkserver_fd_map out = {1, p[1]};
                        const char *argv[] = {worker, num[i], NULL};
                        struct forkserver_spawn_args a = {.fds = &out, .nfds = 1};

                        snprintf(num[i], sizeof(num[i]), "%d", done + i);
                        if (fork_mode) {
                                a.entry = "libjobs:job_index";
                                a.arg = num[i];
                                a.arglen = strlen(num[i]);
                        } else {
                                a.path = worker;
                                a.argv = argv;
                        }
                        if (forkserver_spawn_submit(fs, &a, &ticket[i]) < 0)
                                _exit(3);
                }
                for (int i = 0; i < k; i++) {
                        struct forkserver_proc *w;
                        int st;

                        if (forkserver_spawn_collect(fs, ticket[i], &w) < 0)
                                _exit(4);
                        if (forkserver_wait(fs, w, &st) < 0)
                                _exit(5);
                        if (!WIFEXITED(st) || WEXITSTATUS(st) != (done + i) * 7 % 256)
                                _exit(6);
                        forkserver_proc_free(fs, w);
                }
                done += k;
        }
        forkserver_close(fs);
        close(p[1]);
        /* every worker has exited, so all lines are in the pipe (about 10 KB < its 64 KB) */
        while (len < sizeof(lines) && (n = read(p[0], lines + len, sizeof(lines) - len)) > 0)
                len += (size_t)n;
        close(p[0]);
        for (char *s = lines, *e; s < lines + len; s = e + 1) {
                long i = strtol(s, &e, 10);

                if (*e != '\n' || i < 0 || i >= LOAD_SPAWNS || seen[i]++)
                        _exit(7);
        }
        for (int i = 0; i < LOAD_SPAWNS; i++)
                if (!seen[i])
                        _exit(8);
        _exit(0);
}

static void load_test(bool fork_mode)
{
        const char *const extra[] = {"--preload", env_or_die("LIBJOBS"), NULL};
        const char *t[] = {env_or_die("LOADWORKER"), "0", NULL};
        struct forkserver_spawn_args warm = {.path = t[0], .argv = t};
        pid_t kids[LOAD_CLIENTS];
        struct forkserver *fs;
        uint64_t fds0, fds1;
        long rss0, rss1;
        int64_t t0, ms;

        daemon_start(&d, extra);
        fs = daemon_connect(&d);
        /* warm the allocator and the zygote's pages, then take the baseline */
        for (int i = 0; i < 200; i++) {
                struct forkserver_proc *w;
                int st;

                ck_assert_int_eq(forkserver_spawn(fs, &warm, &w), 0);
                ck_assert_int_eq(forkserver_wait(fs, w, &st), 0);
                forkserver_proc_free(fs, w);
        }
        fds0 = daemon_stat(fs, "open_fds");
        rss0 = rss_kib(d.pid);
        t0 = fs_now_ms();
        for (int i = 0; i < LOAD_CLIENTS; i++) {
                ck_assert_int_ge(kids[i] = fork(), 0);
                if (kids[i] == 0)
                        load_client(fork_mode);
        }
        for (int i = 0; i < LOAD_CLIENTS; i++) {
                int st;

                ck_assert_int_eq(waitpid(kids[i], &st, 0), kids[i]);
                ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "load client %d: status %#x",
                              i, st);
        }
        ms = fs_now_ms() - t0;
        await_idle(fs);
        /* the connections' sockets go to the closer, which may lag a moment under this load:
         * what is left after a second is a leak */
        for (int i = 0; (fds1 = daemon_stat(fs, "open_fds")) != fds0 && i < 100; i++)
                usleep(10 * 1000);
        rss1 = rss_kib(d.pid);
        ck_assert_uint_eq(daemon_stat(fs, "spawns"), 200 + LOAD_CLIENTS * LOAD_SPAWNS);
        ck_assert_uint_eq(daemon_stat(fs, "exits"), 200 + LOAD_CLIENTS * LOAD_SPAWNS);
        ck_assert_uint_eq(daemon_stat(fs, "spawn_failures"), 0);
        ck_assert_uint_eq(fds1, fds0);
        ck_assert_int_eq(count_zombies(d.pid), 0);
        printf("load %s: %d clients x %d spawns in %lld ms; daemon fds %llu -> %llu, "
               "RSS %ld -> %ld KiB\n",
               fork_mode ? "fork" : "exec", LOAD_CLIENTS, LOAD_SPAWNS, (long long)ms,
               (unsigned long long)fds0, (unsigned long long)fds1, rss0, rss1);
#if !defined(__SANITIZE_ADDRESS__)
        /* (ASan's quarantine holds freed memory on purpose) */
        ck_assert_msg(rss1 - rss0 <= 256, "daemon RSS grew from %ld to %ld KiB", rss0, rss1);
#endif
        forkserver_close(fs);
        stop_ok();
}

START_TEST(load_exec)
{
        load_test(false);
}
END_TEST

START_TEST(load_fork)
{
        load_test(true);
}
END_TEST

START_TEST(pipelined_500)
{
        const char *t[] = {env_or_die("LOADWORKER"), "3", NULL};
        struct forkserver_spawn_args a = {.path = t[0], .argv = t};
        static uint32_t ticket[500];
        struct forkserver *fs;

        daemon_start(&d, NULL);
        fs = daemon_connect(&d);
        /* all 500 requests go out before the first reply is read */
        for (int i = 0; i < 500; i++)
                ck_assert_int_eq(forkserver_spawn_submit(fs, &a, &ticket[i]), 0);
        for (int i = 0; i < 500; i++) {
                struct forkserver_proc *w;
                int st;

                ck_assert_msg(forkserver_spawn_collect(fs, ticket[i], &w) == 0, "spawn %d: %s", i,
                              forkserver_error(fs));
                ck_assert_int_eq(forkserver_wait(fs, w, &st), 0);
                ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 21);
                forkserver_proc_free(fs, w);
        }
        ck_assert_uint_eq(daemon_stat(fs, "spawns"), 500);
        await_idle(fs);
        ck_assert_int_eq(count_zombies(d.pid), 0);
        forkserver_close(fs);
        stop_ok();
}
END_TEST

/* ---- faults ---------------------------------------------------------------------------- */

START_TEST(clients_killed_at_every_stage)
{
        const char *sleeper[] = {"/bin/sleep", "100", NULL};
        struct forkserver_spawn_args a = {.path = sleeper[0], .argv = sleeper};
        static uint8_t buf[FS_MAX_MSG];
        struct forkserver *fs;
        int pidfds[5], p[2], st;
        uint64_t fds0;
        pid_t kid;

        daemon_start(&d, NULL);
        fs = daemon_connect(&d);
        fds0 = daemon_stat(fs, "open_fds");

        /* mid-handshake: HELLO read, then killed */
        ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
        ck_assert_int_ge(kid = fork(), 0);
        if (kid == 0) {
                int s = raw_connect(d.sock);

                if (raw_recv(s, buf, sizeof(buf), 2000) <= 0)
                        _exit(1);
                (void)!write(p[1], "h", 1);
                pause();
        }
        close(p[1]);
        ck_assert_int_eq(read(p[0], buf, 1), 1);
        close(p[0]);
        ck_assert_uint_eq(daemon_stat(fs, "pending_handshakes"), 1);
        kill(kid, SIGKILL);
        ck_assert_int_eq(waitpid(kid, &st, 0), kid);

        /* mid-request: a spawn sent, killed before its reply */
        ck_assert_int_ge(kid = fork(), 0);
        if (kid == 0) {
                struct forkserver *c = child_connect();
                uint32_t t;

                if (!c || forkserver_spawn_submit(c, &a, &t) < 0)
                        _exit(1);
                raise(SIGKILL);
        }
        ck_assert_int_eq(waitpid(kid, &st, 0), kid);
        ck_assert(WIFSIGNALED(st));

        /* owning live workers: they end with the connection */
        ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
        ck_assert_int_ge(kid = fork(), 0);
        if (kid == 0) {
                struct forkserver *c = child_connect();

                if (!c)
                        _exit(1);
                for (int i = 0; i < 5; i++) {
                        struct forkserver_proc *w;
                        pid_t pid;

                        if (forkserver_spawn(c, &a, &w) < 0)
                                _exit(1);
                        pid = forkserver_proc_pid(w);
                        (void)!write(p[1], &pid, sizeof(pid));
                }
                pause();
        }
        close(p[1]);
        for (int i = 0; i < 5; i++) {
                pid_t pid;

                ck_assert_int_eq(read(p[0], &pid, sizeof(pid)), (ssize_t)sizeof(pid));
                ck_assert_int_ge(pidfds[i] = pidfd_open(pid, 0), 0); /* alive: pid is valid */
        }
        close(p[0]);
        kill(kid, SIGKILL);
        ck_assert_int_eq(waitpid(kid, &st, 0), kid);
        for (int i = 0; i < 5; i++) {
                ck_assert_msg(pidfd_dead_within(pidfds[i], 5000), "worker %d outlived its client",
                              i);
                close(pidfds[i]);
        }

        await_idle(fs);
        ck_assert_uint_eq(daemon_stat(fs, "spawns"), 6);
        ck_assert_uint_eq(daemon_stat(fs, "exits"), 6);
        ck_assert_uint_eq(daemon_stat(fs, "open_fds"), fds0);
        ck_assert_int_eq(count_zombies(d.pid), 0);
        forkserver_close(fs);
        stop_ok();
}
END_TEST

START_TEST(signals_and_grandchildren)
{
        /* the worker starts a grandchild, prints its pid and exits 3 */
        const char *parent[] = {"/bin/sh", "-c", "sleep 100 >/dev/null & echo $!; exit 3", NULL};
        const char *sleeper[] = {"/bin/sleep", "100", NULL};
        struct forkserver_spawn_args a = {.path = sleeper[0], .argv = sleeper};
        struct forkserver_proc *w;
        struct forkserver *fs;
        char out[64];
        int st, gfd;
        pid_t g;

        daemon_start(&d, NULL);
        fs = daemon_connect(&d);
        /* killed by a signal from outside: reported as such */
        ck_assert_int_eq(forkserver_spawn(fs, &a, &w), 0);
        ck_assert_int_eq(kill(forkserver_proc_pid(w), SIGKILL), 0);
        ck_assert_int_eq(forkserver_wait(fs, w, &st), 0);
        ck_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
        forkserver_proc_free(fs, w);

        /* grandchildren outlive the worker but are never the daemon's */
        st = run_capture(fs, parent, out, sizeof(out));
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 3);
        g = (pid_t)atoi(out);
        ck_assert_int_gt(g, 0);
        ck_assert_int_ge(gfd = pidfd_open(g, 0), 0);
        ck_assert_int_ne(parent_of(g), d.pid);
        ck_assert_int_ne(parent_of(g), -1);
        ck_assert_int_eq(pidfd_send_signal(gfd, SIGKILL, NULL, 0), 0);
        ck_assert(pidfd_dead_within(gfd, 5000));
        close(gfd);
        usleep(50000);
        ck_assert_int_eq(count_zombies(d.pid), 0);
        await_idle(fs);
        forkserver_close(fs);
        stop_ok();
}
END_TEST

START_TEST(sigterm_with_100_workers)
{
        const char *sleeper[] = {"/bin/sleep", "100", NULL};
        const char *stubborn[] = {"/bin/sh", "-c", "trap '' TERM; exec sleep 100", NULL};
        struct forkserver *fs;
        int pidfds[100], st;
        int64_t t0;

        daemon_start(&d, NULL);
        fs = daemon_connect(&d);
        for (int i = 0; i < 100; i++) {
                struct forkserver_spawn_args a = {.path = sleeper[0], .argv = sleeper};
                struct forkserver_proc *w;

                if (i % 10 == 1) /* some ignore SIGTERM: the grace period ends with SIGKILL */
                        a = (struct forkserver_spawn_args){.path = stubborn[0], .argv = stubborn};
                if (i % 10 == 2)
                        a.flags = FORKSERVER_SPAWN_DETACH;
                ck_assert_int_eq(forkserver_spawn(fs, &a, &w), 0);
                pidfds[i] = fcntl(forkserver_proc_pidfd(w), F_DUPFD_CLOEXEC, 3);
        }
        ck_assert_uint_eq(daemon_stat(fs, "workers"), 100);
        usleep(200000); /* let the shells set their traps */
        t0 = fs_now_ms();
        st = daemon_stop(&d); /* asserts the socket is gone */
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        printf("SIGTERM with 100 workers: exit 0 after %lld ms\n", (long long)(fs_now_ms() - t0));
        for (int i = 0; i < 100; i++) {
                ck_assert_msg(pidfd_dead_within(pidfds[i], 0), "worker %d survived", i);
                close(pidfds[i]);
        }
        forkserver_close(fs);
}
END_TEST

START_TEST(sigkill_daemon)
{
        const char *sleeper[] = {"/bin/sleep", "100", NULL};
        const char *args[] = {"--socket", NULL, "--key-file", NULL, NULL};
        struct forkserver *fs;
        pid_t zyg[4];
        int pidfds[4], zfds[4], st;
        size_t nz;

        /* orphans come to us, so that this test can reap all it made */
        ck_assert_int_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
        daemon_start(&d, NULL);
        fs = daemon_connect(&d);
        nz = zygotes_of(d.pid, zyg, 4);
        ck_assert_uint_eq(nz, daemon_stat(fs, "zygotes"));
        for (size_t i = 0; i < nz; i++)
                ck_assert_int_ge(zfds[i] = pidfd_open(zyg[i], 0), 0);
        for (int i = 0; i < 4; i++) {
                struct forkserver_spawn_args a = {.path = sleeper[0],
                                                  .argv = sleeper,
                                                  .flags = i == 3 ? FORKSERVER_SPAWN_DETACH : 0};
                struct forkserver_proc *w;

                ck_assert_int_eq(forkserver_spawn(fs, &a, &w), 0);
                pidfds[i] = fcntl(forkserver_proc_pidfd(w), F_DUPFD_CLOEXEC, 3);
        }
        ck_assert_int_eq(kill(d.pid, SIGKILL), 0);
        ck_assert_int_eq(waitpid(d.pid, &st, 0), d.pid);
        forkserver_close(fs);
        /* parent-death signal: attached workers and the zygotes end; a detached one lives */
        for (int i = 0; i < 3; i++)
                ck_assert_msg(pidfd_dead_within(pidfds[i], 5000), "worker %d survived", i);
        for (size_t i = 0; i < nz; i++)
                ck_assert_msg(pidfd_dead_within(zfds[i], 5000), "zygote %zu survived", i);
        ck_assert(!pidfd_dead_within(pidfds[3], 100));
        ck_assert_int_eq(pidfd_send_signal(pidfds[3], SIGKILL, NULL, 0), 0);
        ck_assert(pidfd_dead_within(pidfds[3], 5000));
        for (int i = 0; i < 4; i++)
                close(pidfds[i]);
        for (size_t i = 0; i < nz; i++)
                close(zfds[i]);
        while (waitpid(-1, &st, WNOHANG) > 0)
                ;

        /* the stale socket is replaced by a new daemon on the same path */
        args[1] = d.sock;
        args[3] = d.key;
        ck_assert_int_eq(access(d.sock, F_OK), 0);
        ck_assert_int_eq(daemon_spawn(&d, args, NULL), 0);
        fs = daemon_connect(&d);
        ck_assert_int_eq(forkserver_ping(fs), 0);
        forkserver_close(fs);
        stop_ok();
}
END_TEST

static void first_line(const char *path, char *out, size_t cap)
{
        FILE *f = fopen(path, "re");

        ck_assert_ptr_nonnull(f);
        ck_assert_ptr_nonnull(fgets(out, (int)cap, f));
        fclose(f);
}

static int try_spawn(struct forkserver *fs, const struct forkserver_spawn_args *a,
                     struct forkserver_proc **w, char *why, size_t cap)
{
        int r = forkserver_spawn(fs, a, w);

        snprintf(why, cap, "%s", r < 0 ? forkserver_error(fs) : "");
        return r;
}

/* RLIMIT_NOFILE of pid becomes *set (its soft value soft, when set is NULL), the old one in
 * *old; from a process of d.run_as when set: root may lack CAP_SYS_RESOURCE in a container. */
static void nofile(pid_t pid, const struct rlimit *set, rlim_t soft, struct rlimit *old)
{
        struct rlimit got = {0, 0};
        int p[2], st;
        pid_t kid;

        ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
        ck_assert_int_ge(kid = fork(), 0);
        if (kid == 0) {
                struct rlimit rl;

                if (d.run_as && (setresgid(d.run_as, d.run_as, d.run_as) < 0 ||
                                 setresuid(d.run_as, d.run_as, d.run_as) < 0))
                        _exit(1);
                if (prlimit(pid, RLIMIT_NOFILE, NULL, &rl) < 0)
                        _exit(2);
                if (write(p[1], &rl, sizeof(rl)) != sizeof(rl))
                        _exit(3);
                if (set)
                        rl = *set;
                else
                        rl.rlim_cur = soft;
                _exit(prlimit(pid, RLIMIT_NOFILE, &rl, NULL) < 0 ? 4 : 0);
        }
        close(p[1]);
        ck_assert_int_eq(read(p[0], &got, sizeof(got)), sizeof(got));
        close(p[0]);
        ck_assert_int_eq(waitpid(kid, &st, 0), kid);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "prlimit: status %#x", st);
        if (old)
                *old = got;
}

static void set_nofile(pid_t pid, rlim_t soft, struct rlimit *old)
{
        nofile(pid, NULL, soft, old);
}

/* Regression: a front out of fds lost the pidfd of a worker it had just made (a zombie for
 * good, and the zygote taken for broken) and cut clients whose requests carried fds. As root
 * the daemon runs as nobody: a front without capabilities may have no more fds in flight
 * than its RLIMIT_NOFILE, counted over every process of its uid, and root's are legion. */
START_TEST(out_of_fds)
{
        const char *const as_root[] = {"--allow-uid", "0", NULL};
        char mine[160], hex[FS_KEY_HEX_LEN + 1];
        const char *sleeper[] = {"/bin/sleep", "100", NULL};
        struct forkserver_spawn_args a = {.path = sleeper[0], .argv = sleeper};
        struct forkserver_options o = {.socket_path = NULL, .key_file = NULL, .key_fd = -1};
        struct forkserver_proc *w[16], *extra;
        struct forkserver *fs, *other;
        struct rlimit old;
        char why[512], out[64];
        const char *cwhy;
        size_t nw = 0, nz;
        int p[2], st, r;

        if (geteuid() == 0)
                d.run_as = 65534;
        daemon_start(&d, d.run_as ? as_root : NULL);
        o.socket_path = d.sock;
        o.key_file = d.key;
        o.server_uid = d.run_as; /* its socket and directory are that uid's */
        if (d.run_as) {          /* a key file must belong to its reader: we get our own copy */
                int kf;

                snprintf(mine, sizeof(mine), "%s/client-key", d.dir);
                first_line(d.key, hex, sizeof(hex));
                ck_assert_int_ge(kf = open(mine, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600), 0);
                ck_assert_int_eq(fs_write_all(kf, hex, strlen(hex)), 0);
                close(kf);
                o.key_file = mine;
        }
        ck_assert_msg(forkserver_connect(&o, &fs, &cwhy) == 0, "connect: %s", cwhy);

        /* the front: room for about one more fd */
        set_nofile(d.pid, daemon_stat(fs, "open_fds") + 1, &old);
        while ((r = try_spawn(fs, &a, &w[nw], why, sizeof(why))) == 0)
                ck_assert_uint_lt(++nw, 16);
        ck_assert_int_eq(r, -EMFILE);
        ck_assert_msg(strstr(why, "out of file descriptors"), "%s", why);
        /* a request carrying fds */
        ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
        struct forkserver_fd_map map = {1, p[1]};
        struct forkserver_spawn_args b = {
            .path = sleeper[0], .argv = sleeper, .fds = &map, .nfds = 1};
        ck_assert_int_eq(try_spawn(fs, &b, &extra, why, sizeof(why)), -EMFILE);
        ck_assert_msg(strstr(why, "fds sent with the request were dropped"), "%s", why);
        /* a new client is told why */
        ck_assert_int_lt(forkserver_connect(&o, &other, &cwhy), 0);
        ck_assert_msg(strstr(cwhy, "out of file descriptors"), "%s", cwhy);
        /* the connection lives, its workers too */
        ck_assert_int_eq(forkserver_ping(fs), 0);
        ck_assert_uint_eq(daemon_stat(fs, "workers"), nw);
        ck_assert_uint_ge(daemon_stat(fs, "spawn_failures_by_cause.out_of_fds"), 2);
        ck_assert_int_eq(count_zombies(d.pid), 0);
        /* resources return: service returns */
        nofile(d.pid, &old, 0, NULL);
        ck_assert_int_eq(try_spawn(fs, &a, &w[nw++], why, sizeof(why)), 0);
        ck_assert_msg(forkserver_connect(&o, &other, &cwhy) == 0, "connect: %s", cwhy);
        forkserver_close(other);

        /* the zygotes: none can take an fd at all */
        /* the front's children that are not workers */
        pid_t kids[32], zpids[4];
        size_t k = 0;

        nz = children_of(d.pid, false, kids, 32);

        for (size_t i = 0; i < nz; i++) {
                bool worker = false;

                for (size_t j = 0; j < nw; j++)
                        worker |= forkserver_proc_pid(w[j]) == kids[i];
                if (!worker && k < 4 && is_zygote(kids[i]))
                        zpids[k++] = kids[i];
        }
        ck_assert_uint_eq(k, daemon_stat(fs, "zygotes"));
        struct rlimit zold[4];

        for (size_t i = 0; i < k; i++)
                set_nofile(zpids[i], 1, &zold[i]);
        ck_assert_int_eq(try_spawn(fs, &b, &extra, why, sizeof(why)), -EMFILE);
        ck_assert_msg(strstr(why, "zygote out of file descriptors"), "%s", why);
        ck_assert_int_eq(try_spawn(fs, &a, &extra, why, sizeof(why)), -EMFILE);
        for (size_t i = 0; i < k; i++)
                nofile(zpids[i], &zold[i], 0, NULL);
        close(p[1]);
        struct forkserver_spawn_args c = {.path = "/bin/echo",
                                          .argv = (const char *const[]){"/bin/echo", "back", NULL}};
        st = run_capture(fs, c.argv, out, sizeof(out));
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        ck_assert_str_eq(out, "back\n");
        close(p[0]);

        for (size_t i = 0; i < nw; i++) {
                ck_assert_int_eq(forkserver_kill(fs, w[i], SIGKILL), 0);
                ck_assert_int_eq(forkserver_wait(fs, w[i], &st), 0);
                forkserver_proc_free(fs, w[i]);
        }
        await_idle(fs);
        ck_assert_int_eq(count_zombies(d.pid), 0);
        forkserver_close(fs);
        if (d.run_as)
                unlink(mine);
        stop_ok();
        d.run_as = 0;
}
END_TEST

/* Sets the soft RLIMIT_NPROC of pids (d.run_as's processes) from a process of their uid: root
 * may lack CAP_SYS_RESOURCE in a container. */
static void set_nproc(const pid_t *pids, size_t n, rlim_t soft)
{
        pid_t kid = fork();
        int st;

        ck_assert_int_ge(kid, 0);
        if (kid == 0) {
                if (d.run_as && (setresgid(d.run_as, d.run_as, d.run_as) < 0 ||
                                 setresuid(d.run_as, d.run_as, d.run_as) < 0))
                        _exit(1);
                for (size_t i = 0; i < n; i++) {
                        struct rlimit rl;

                        if (prlimit(pids[i], RLIMIT_NPROC, NULL, &rl) < 0)
                                _exit(2);
                        rl.rlim_cur = soft < rl.rlim_max ? soft : rl.rlim_max;
                        if (prlimit(pids[i], RLIMIT_NPROC, &rl, NULL) < 0)
                                _exit(3);
                }
                _exit(0);
        }
        ck_assert_int_eq(waitpid(kid, &st, 0), kid);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "prlimit: status %#x", st);
}

/* RLIMIT_NPROC binds only a uid without CAP_SYS_RESOURCE: as root, the daemon runs as nobody. */
START_TEST(out_of_processes)
{
        const char *const as_root[] = {"--allow-uid", "0", NULL};
        const char *sleeper[] = {"/bin/sleep", "100", NULL};
        struct forkserver_spawn_args a = {.path = sleeper[0], .argv = sleeper};
        struct forkserver_proc *w;
        struct forkserver *fs;
        pid_t zyg[4];
        char why[512];
        size_t nz;
        int st;

        if (geteuid() == 0)
                d.run_as = 65534;
        daemon_start(&d, d.run_as ? as_root : NULL);
        /* a key file must belong to its reader: we get our own copy */
        char mine[160], hex[FS_KEY_HEX_LEN + 1];
        struct forkserver_options o = {
            .socket_path = d.sock, .key_file = mine, .key_fd = -1, .server_uid = d.run_as};
        const char *cwhy;
        int kf;

        snprintf(mine, sizeof(mine), "%s/client-key", d.dir);
        first_line(d.key, hex, sizeof(hex));
        ck_assert_int_ge(kf = open(mine, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600), 0);
        ck_assert_int_eq(fs_write_all(kf, hex, strlen(hex)), 0);
        close(kf);
        ck_assert_msg(forkserver_connect(&o, &fs, &cwhy) == 0, "connect: %s", cwhy);
        unlink(mine);
        nz = zygotes_of(d.pid, zyg, 4);
        set_nproc(zyg, nz, 1); /* this uid already runs more than one process */
        ck_assert_int_eq(try_spawn(fs, &a, &w, why, sizeof(why)), -EAGAIN);
        ck_assert_msg(strstr(why, "out of processes"), "%s", why);
        ck_assert_uint_eq(daemon_stat(fs, "spawn_failures_by_cause.out_of_processes"), 1);
        set_nproc(zyg, nz, RLIM_INFINITY);
        ck_assert_int_eq(try_spawn(fs, &a, &w, why, sizeof(why)), 0);
        ck_assert_int_eq(forkserver_kill(fs, w, SIGKILL), 0);
        ck_assert_int_eq(forkserver_wait(fs, w, &st), 0);
        forkserver_proc_free(fs, w);
        forkserver_close(fs);
        stop_ok();
        d.run_as = 0;
}
END_TEST

/* ---- hostile input --------------------------------------------------------------------- */

START_TEST(thousand_idle_connections)
{
        const char *const extra[] = {"--handshake-timeout", "1000", NULL};
        static uint8_t buf[FS_MAX_MSG];
        static int conns[1000];
        struct forkserver *fs;
        struct rlimit rl;
        int cut = 0;

        ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
        ck_assert_uint_ge(rl.rlim_max, 1100);
        rl.rlim_cur = rl.rlim_max < 4096 ? rl.rlim_max : 4096;
        ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
        daemon_start(&d, extra);
        for (int i = 0; i < 1000; i++) {
                conns[i] = raw_connect(d.sock);
                if (i % 100 == 99) { /* an honest client is served meanwhile */
                        fs = daemon_connect(&d);
                        ck_assert_int_eq(forkserver_ping(fs), 0);
                        ck_assert_uint_le(daemon_stat(fs, "pending_handshakes"), 64);
                        forkserver_close(fs);
                }
        }
        /* every one is cut: by the pending cap or at the deadline, with a reason, then EOF */
        for (int i = 0; i < 1000; i++) {
                int n;

                while ((n = raw_recv(conns[i], buf, sizeof(buf), 5000)) > 0 &&
                       msg_type(buf, n) == FS_MSG_HELLO)
                        ;
                ck_assert_int_gt(n, 0);
                ck_assert_uint_eq(msg_type(buf, n), FS_MSG_ERROR);
                ck_assert_int_eq(raw_recv(conns[i], buf, sizeof(buf), 5000), 0);
                close(conns[i]);
                cut++;
        }
        fs = daemon_connect(&d);
        ck_assert_uint_eq(daemon_stat(fs, "pending_handshakes"), 0);
        ck_assert_int_eq(cut, 1000);
        forkserver_close(fs);
        stop_ok();
}
END_TEST

static void send_raw(int s, const void *buf, size_t len, const int *fds, size_t nfds)
{
        ck_assert_int_eq(fs_fdpass_send(s, buf, len, fds, nfds, 0), 0);
}

/* Sends buf with n copies of fd: more than fs_fdpass_send allows. */
static void send_surplus(int s, const void *buf, size_t len, int fd, size_t n)
{
        union {
                struct cmsghdr align;
                char b[CMSG_SPACE(sizeof(int) * 128)];
        } ctl;
        struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
        struct msghdr mh = {.msg_iov = &iov,
                            .msg_iovlen = 1,
                            .msg_control = ctl.b,
                            .msg_controllen = CMSG_SPACE(sizeof(int) * n)};
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);

        ck_assert_uint_le(n, 128);
        memset(&ctl, 0, sizeof(ctl));
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * n);
        for (size_t i = 0; i < n; i++)
                memcpy(CMSG_DATA(c) + i * sizeof(int), &fd, sizeof(int));
        ck_assert_int_eq(sendmsg(s, &mh, MSG_NOSIGNAL), (ssize_t)len);
}

/* Expects ERROR with a reason (and, when cut, EOF next). */
static void expect_refusal(int s, bool cut, const char *what)
{
        static uint8_t buf[FS_MAX_MSG];
        struct fs_msg_error e;
        struct fs_hdr h;
        struct fs_buf p;
        int n = raw_recv(s, buf, sizeof(buf), 3000);

        ck_assert_msg(n > 0, "%s: no answer (%d)", what, n);
        ck_assert_int_eq(fs_proto_parse_hdr(buf, (size_t)n, &h, &p), 0);
        ck_assert_msg(h.type == FS_MSG_ERROR, "%s: answered %u", what, h.type);
        ck_assert_int_eq(fs_proto_parse_error(&p, &e, NULL), 0);
        ck_assert_msg(e.reason && *e.reason, "%s: refusal without a reason", what);
        if (cut)
                ck_assert_msg(raw_recv(s, buf, sizeof(buf), 3000) == 0, "%s: not cut", what);
}

START_TEST(hostile_datagrams)
{
        static uint8_t buf[FS_MAX_MSG], hello[FS_MAX_MSG];
        struct forkserver *fs;
        struct fs_msgw w;
        int s, n, fd, many[FS_MAX_MSG_FDS];
        uint64_t fds0;

        daemon_start(&d, NULL);
        fs = daemon_connect(&d);
        fds0 = daemon_stat(fs, "open_fds");
        fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        for (int i = 0; i < FS_MAX_MSG_FDS; i++)
                many[i] = fd;

        /* before AUTH: garbage, and a message with fds */
        s = raw_connect(d.sock);
        ck_assert_int_gt(raw_recv(s, buf, sizeof(buf), 2000), 0);
        send_raw(s, "\x00\x01garbage", 9, NULL, 0);
        expect_refusal(s, true, "garbage before AUTH");
        close(s);
        s = raw_connect(d.sock);
        ck_assert_int_gt(n = raw_recv(s, hello, sizeof(hello), 2000), 0);
        send_raw(s, hello, (size_t)n, &fd, 1); /* its own HELLO back, with an fd */
        expect_refusal(s, true, "fds before AUTH");
        close(s);

        /* after AUTH: each refused with a reason; the cut ones end the connection */
        struct {
                const char *what;
                bool cut;
        } cases[] = {
            {"truncated header", true},
            {"payload shorter than its length", true},
            {"wrong version", true},
            {"unknown type", true},
            {"fds where none allowed", false},
            {"more fds than FD fields", false},
            {"second HELLO", false},
            {"AUTH again", false},
            {"surplus fds beyond the cap", true},
            {"a reserved type (once the daemon's own GPU_ALLOC)", false},
            {"the daemon's own protocol: a zygote's SPAWN", true},
        };
        for (size_t i = 0; i < FS_ARRAY_SIZE(cases); i++) {
                s = raw_connect(d.sock);
                raw_auth(s, d.key);
                fs_msg_begin(&w, buf, sizeof(buf), FS_MSG_PING, 5);
                n = fs_msg_finish(&w);
                switch (i) {
                case 0:
                        send_raw(s, buf, 10, NULL, 0);
                        break;
                case 1:
                        fs_msg_begin(&w, buf, sizeof(buf), FS_MSG_STATUS, 5);
                        fs_msg_put_str(&w, FS_F_REASON, "padding padding");
                        n = fs_msg_finish(&w);
                        send_raw(s, buf, (size_t)n - 4, NULL, 0);
                        break;
                case 2:
                        buf[4] ^= 0x7f; /* version */
                        send_raw(s, buf, (size_t)n, NULL, 0);
                        break;
                case 3:
                        fs_msg_begin(&w, buf, sizeof(buf), 999, 5);
                        send_raw(s, buf, (size_t)fs_msg_finish(&w), NULL, 0);
                        break;
                case 4:
                        send_raw(s, buf, (size_t)n, many, 3);
                        break;
                case 5: /* one FD field, two fds */
                        fs_msg_begin(&w, buf, sizeof(buf), FS_MSG_SPAWN, 5);
                        fs_msg_put_str(&w, FS_F_PATH, "/bin/true");
                        fs_msg_put_str(&w, FS_F_ARG, "/bin/true");
                        fs_msg_put_u32(&w, FS_F_FD, 1);
                        send_raw(s, buf, (size_t)fs_msg_finish(&w), many, 2);
                        break;
                case 6: /* the server's own message type, as a second HELLO */
                        fs_msg_begin(&w, buf, sizeof(buf), FS_MSG_HELLO, 5);
                        send_raw(s, buf, (size_t)fs_msg_finish(&w), NULL, 0);
                        break;
                case 7:
                        fs_msg_begin(&w, buf, sizeof(buf), FS_MSG_AUTH, 5);
                        send_raw(s, buf, (size_t)fs_msg_finish(&w), NULL, 0);
                        break;
                case 8:
                        send_surplus(s, buf, (size_t)n, fd, 100);
                        break;
                case 9:
                        fs_msg_begin(&w, buf, sizeof(buf), 15, 5);
                        fs_msg_put_gpu(&w, 0, 1 << 20);
                        send_raw(s, buf, (size_t)fs_msg_finish(&w), NULL, 0);
                        break;
                case 10:
                        fs_imsg_begin(&w, buf, sizeof(buf), FS_I_SPAWN, 5);
                        fs_msg_put_str(&w, FS_F_PATH, "/bin/true");
                        fs_msg_put_str(&w, FS_F_ARG, "/bin/true");
                        fs_msg_put_cred(&w, 0, 0, NULL, 0);
                        send_raw(s, buf, (size_t)fs_msg_finish(&w), NULL, 0);
                        break;
                }
                expect_refusal(s, cases[i].cut, cases[i].what);
                if (!cases[i].cut) { /* still usable */
                        fs_msg_begin(&w, buf, sizeof(buf), FS_MSG_PING, 77);
                        n = fs_msg_finish(&w);
                        ck_assert_msg(fs_fdpass_send(s, buf, (size_t)n, NULL, 0, 0) == 0,
                                      "case %s: connection cut", cases[i].what);
                        n = raw_recv(s, buf, sizeof(buf), 2000);
                        ck_assert_msg(n > 0 && msg_type(buf, n) == FS_MSG_OK, "case %s",
                                      cases[i].what);
                }
                close(s);
        }
        close(fd);
        ck_assert_int_eq(forkserver_ping(fs), 0);
        await_idle(fs);
        ck_assert_uint_eq(daemon_stat(fs, "open_fds"), fds0); /* every fd sent was closed */
        forkserver_close(fs);
        stop_ok();
}
END_TEST

START_TEST(ten_thousand_wrong_keys)
{
        struct forkserver_options o = {.socket_path = NULL, .key_fd = -1};
        char logp[] = "/tmp/fs-test-log-XXXXXX", other[160], line[512];
        char keyhex[FS_KEY_HEX_LEN + 1], otherhex[FS_KEY_HEX_LEN + 1];
        struct forkserver_key *wrong;
        struct forkserver *fs;
        int lines = 0, summaries = 0, refusals = 0, lf;
        int64_t t0, ms;
        FILE *f;

        ck_assert_int_ge(lf = mkstemp(logp), 0);
        close(lf);
        d.log_path = logp;
        daemon_start(&d, NULL);
        snprintf(other, sizeof(other), "%s/other", d.dir);
        make_key_file(other);
        first_line(d.key, keyhex, sizeof(keyhex));
        first_line(other, otherhex, sizeof(otherhex));
        ck_assert_int_eq(forkserver_key_load_file(other, &wrong, NULL), 0);
        unlink(other);
        o.socket_path = d.sock;
        o.key = wrong;
        t0 = fs_now_ms();
        for (int i = 0; i < 10000; i++) {
                const char *why;

                fs = NULL;
                ck_assert_int_eq(forkserver_connect(&o, &fs, &why), -EACCES);
                if (i % 1000 == 999) { /* honest clients are served meanwhile */
                        fs = daemon_connect(&d);
                        ck_assert_int_eq(forkserver_ping(fs), 0);
                        forkserver_close(fs);
                }
        }
        ms = fs_now_ms() - t0;
        forkserver_key_free(wrong);
        fs = daemon_connect(&d);
        ck_assert_uint_eq(daemon_stat(fs, "auth_failed"), 10000);
        ck_assert_uint_eq(daemon_stat(fs, "auth_ok"), 11);
        forkserver_close(fs);
        stop_ok();
        d.log_path = NULL;

        /* the log: rate-limited, and no key, whole or in part, in it */
        keyhex[16] = otherhex[16] = '\0';
        ck_assert_ptr_nonnull(f = fopen(logp, "re"));
        while (fgets(line, sizeof(line), f)) {
                const char *sup = strstr(line, "warning: ");

                lines++;
                refusals += strstr(line, "handshake refused: wrong key") != NULL;
                if (sup && strstr(sup, "similar messages suppressed")) {
                        summaries++;
                        refusals += atoi(sup + strlen("warning: "));
                }
                ck_assert_ptr_null(strstr(line, keyhex));
                ck_assert_ptr_null(strstr(line, otherhex));
        }
        fclose(f);
        unlink(logp);
        printf("10000 wrong keys in %lld ms: %d log lines, %d of them counting suppressed ones\n",
               (long long)ms, lines, summaries);
        /* each refusal is a line or counted in one */
        ck_assert_int_eq(refusals, 10000);
        /* at most a burst and a summary per second */
        ck_assert_int_le(lines, (int)(ms / 1000 + 2) * (FS_LOG_BURST + 1));
}
END_TEST

START_TEST(replayed_auth_refused)
{
        static uint8_t buf[FS_MAX_MSG], auth[FS_MAX_MSG];
        struct fs_auth_client c;
        struct fs_creds self;
        struct fs_key *k;
        struct forkserver *fs;
        int s, n, alen;

        daemon_start(&d, NULL);
        ck_assert_int_eq(fs_key_load_file(d.key, &k, NULL), 0);
        /* an honest handshake, recorded */
        s = raw_connect(d.sock);
        ck_assert_int_gt(n = raw_recv(s, buf, sizeof(buf), 2000), 0);
        fs_creds_self(&self);
        ck_assert_int_gt(
            alen = fs_auth_client_hello(&c, k, &self, buf, (size_t)n, auth, sizeof(auth), NULL), 0);
        send_raw(s, auth, (size_t)alen, NULL, 0);
        ck_assert_int_gt(n = raw_recv(s, buf, sizeof(buf), 2000), 0);
        ck_assert_int_eq(fs_auth_client_finish(&c, k, buf, (size_t)n, NULL), 0);
        close(s);
        fs_key_free(k);
        /* the same AUTH on a new connection (a new server nonce): refused */
        s = raw_connect(d.sock);
        ck_assert_int_gt(raw_recv(s, buf, sizeof(buf), 2000), 0);
        send_raw(s, auth, (size_t)alen, NULL, 0);
        ck_assert_int_gt(n = raw_recv(s, buf, sizeof(buf), 2000), 0);
        ck_assert_uint_ne(msg_type(buf, n), FS_MSG_AUTH_OK);
        ck_assert_int_eq(raw_recv(s, buf, sizeof(buf), 2000), 0);
        close(s);
        fs = daemon_connect(&d);
        ck_assert_uint_eq(daemon_stat(fs, "auth_failed"), 1);
        forkserver_close(fs);
        stop_ok();
}
END_TEST

static Suite *suite(void)
{
        Suite *s = suite_create("reliability");
        TCase *load = tcase_create("load");
        TCase *faults = tcase_create("faults");
        TCase *limits = tcase_create("limits");
        TCase *hostile = tcase_create("hostile");

        /* long, and with valgrind they would measure only valgrind */
        tcase_set_tags(load, "load");
        tcase_set_timeout(load, 240);
        tcase_add_test(load, load_exec);
        tcase_add_test(load, load_fork);
        tcase_add_test(load, pipelined_500);
        tcase_add_test(load, ten_thousand_wrong_keys);
        suite_add_tcase(s, load);

        /* the test process signals through pidfds (valgrind 3.19 cannot) */
        tcase_set_tags(faults, "pidfd");
        tcase_set_timeout(faults, 60);
        tcase_add_test(faults, clients_killed_at_every_stage);
        tcase_add_test(faults, signals_and_grandchildren);
        tcase_add_test(faults, sigterm_with_100_workers);
        tcase_add_test(faults, sigkill_daemon);
        suite_add_tcase(s, faults);

        /* resource limits set on the daemon (valgrind keeps its own fd limit) */
        tcase_set_tags(limits, "rlimit pidfd");
        tcase_set_timeout(limits, 60);
        tcase_add_test(limits, out_of_fds);
        tcase_add_test(limits, out_of_processes);
        suite_add_tcase(s, limits);

        tcase_set_timeout(hostile, 120);
        tcase_add_test(hostile, thousand_idle_connections);
        tcase_add_test(hostile, hostile_datagrams);
        tcase_add_test(hostile, replayed_auth_refused);
        suite_add_tcase(s, hostile);
        return s;
}

int main(void)
{
        return run_suite(suite());
}
