/*
 * Integration: nothing a peer passes makes the front wait. A TCP socket with SO_LINGER and
 * data its peer never reads takes its linger time to close; passed to the daemon (before
 * authenticating, inside a refused request, queued in a connection that then goes away),
 * its close must not stop the daemon from serving others or from acting on SIGTERM.
 */
#include "daemon.h"

#include <netinet/in.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>

#define LINGER_S 8

static struct daemon d;

static int64_t now_ms(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A connected TCP socket whose close waits LINGER_S seconds: its send queue is full and its
 * peer (never accepted, never read) takes nothing more. *ret_listener keeps that peer. */
static int lingering_socket(int *ret_listener)
{
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof(sa);
        int small = 4096, l, fd;
        struct linger lg = {1, LINGER_S};
        static char junk[65536];
        size_t total = 0;

        ck_assert_int_ge(l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), 0);
        ck_assert_int_eq(setsockopt(l, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)), 0);
        ck_assert_int_eq(bind(l, (struct sockaddr *)&sa, sizeof(sa)), 0);
        ck_assert_int_eq(getsockname(l, (struct sockaddr *)&sa, &len), 0);
        ck_assert_int_eq(listen(l, 4), 0);
        ck_assert_int_ge(fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0), 0);
        ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
                ck_assert_int_eq(errno, EINPROGRESS);
        struct pollfd pf = {.fd = fd, .events = POLLOUT};
        ck_assert_int_eq(poll(&pf, 1, 2000), 1);
        for (int idle = 0; idle < 3;) { /* until the kernel takes no more, for a while */
                ssize_t n = send(fd, junk, sizeof(junk), MSG_NOSIGNAL);

                if (n > 0) {
                        total += (size_t)n;
                        idle = 0;
                } else {
                        ck_assert_int_eq(errno, EAGAIN);
                        idle++;
                        usleep(20000);
                }
        }
        ck_assert_uint_gt(total, 0);
        ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
        *ret_listener = l;
        return fd;
}

/* Sends len bytes with fd on sock, then drops our copy: the message holds the socket now,
 * so our close is not the one that waits. */
static void pass(int sock, const void *buf, size_t len, int fd)
{
        ck_assert_int_eq(fs_fdpass_send(sock, buf, len, &fd, 1, 0), 0);
        close(fd);
}

/* An honest client served, and how long it took. */
static int64_t honest_ping_ms(void)
{
        int64_t t0 = now_ms();
        struct forkserver *fs = daemon_connect(&d);

        ck_assert_int_eq(forkserver_ping(fs), 0);
        forkserver_close(fs);
        return now_ms() - t0;
}

START_TEST(passed_fds_closed_off_the_loop)
{
        static const uint8_t garbage[] = "not a handshake";
        int listeners[4], raw[3];
        int64_t t;
        uint64_t fds0;

        daemon_start(&d, NULL);
        struct forkserver *fs = daemon_connect(&d);

        fds0 = daemon_stat(fs, "open_fds");
        forkserver_close(fs);

        /* 1. with the first datagram, before any authentication */
        raw[0] = raw_connect(d.sock);
        pass(raw[0], garbage, sizeof(garbage), lingering_socket(&listeners[0]));
        /* 2. in a refused request on an authenticated connection (fds on a PING) */
        raw[1] = raw_connect(d.sock);
        raw_auth(raw[1], d.key);
        {
                uint8_t ping[64];
                struct fs_msgw w;
                int n;

                fs_msg_begin(&w, ping, sizeof(ping), FS_MSG_PING, 7);
                ck_assert_int_gt(n = fs_msg_finish(&w), 0);
                pass(raw[1], ping, (size_t)n, lingering_socket(&listeners[1]));
        }
        /* 3. queued, unread, behind a datagram that makes the daemon drop the connection */
        int lg = lingering_socket(&listeners[2]);

        for (int tries = 0;; tries++) {
                ck_assert_int_lt(tries, 20);
                raw[2] = raw_connect(d.sock);
                ck_assert_int_eq(fs_fdpass_send(raw[2], garbage, sizeof(garbage), NULL, 0, 0), 0);
                int r = fs_fdpass_send(raw[2], garbage, sizeof(garbage), &lg, 1, 0);

                close(raw[2]);
                if (r == 0)
                        break;
                ck_assert_int_eq(r, -EPIPE); /* the daemon was quicker: again */
        }
        close(lg);
        listeners[3] = -1;

        usleep(200 * 1000); /* the daemon has had them all by now */
        for (int i = 0; i < 5; i++) {
                t = honest_ping_ms();
                ck_assert_msg(t < 1000, "an honest ping took %lld ms", (long long)t);
        }
        close(raw[0]);
        close(raw[1]);
        usleep(100 * 1000);
        fs = daemon_connect(&d);
        ck_assert_uint_ge(daemon_stat(fs, "closer.handed"), 3);
        ck_assert_uint_eq(daemon_stat(fs, "closer.closed_by_front"), 0);
        /* everything it was given, and every connection, is gone from the front */
        ck_assert_uint_eq(daemon_stat(fs, "open_fds"), fds0);
        forkserver_close(fs);

        /* SIGTERM acted on while the closer still waits out the linger */
        t = now_ms();
        ck_assert_int_eq(daemon_stop(&d), 0);
        t = now_ms() - t;
        ck_assert_msg(t < 3000, "SIGTERM took %lld ms", (long long)t);
        for (int i = 0; i < 3; i++)
                close(listeners[i]);
}
END_TEST

/*
 * The same socket given to a worker in a SPAWN that the zygote refuses before it forks (no
 * such entry): the zygote's close must not be the last either, or it stops that zygote, and
 * every spawn it serves, for the linger time.
 */
START_TEST(refused_spawn_fds_closed_off_the_zygote)
{
        const char *extra[] = {"--preload", env_or_die("LIBJOBS"), NULL};
        const char *t[] = {"/bin/true", NULL};
        struct forkserver_spawn_args ok = {.path = t[0], .argv = t};
        int listener, sock = -1, st;
        struct forkserver_proc *w;
        uint32_t ticket;
        int64_t t0;

        daemon_start(&d, extra);
        struct forkserver *fs = daemon_connect(&d);

        for (int i = 0; i < 2; i++) { /* fork mode (no such entry), exec mode (bad rlimit) */
                struct forkserver_fd_map map[1];
                struct forkserver_rlimit rl = {
                    .resource = RLIMIT_NOFILE, .soft = 1ull << 40, .hard = 1ull << 40};
                struct forkserver_spawn_args bad = {.fds = map, .nfds = 1};

                if (i == 0) {
                        bad.entry = "libjobs:no_such_entry";
                } else {
                        bad.path = t[0];
                        bad.argv = t;
                        bad.rlimits = &rl;
                        bad.nrlimits = 1;
                }
                sock = lingering_socket(&listener);
                map[0] = (struct forkserver_fd_map){3, sock};
                ck_assert_int_eq(forkserver_spawn_submit(fs, &bad, &ticket), 0);
                close(sock); /* the request in flight holds it */
                t0 = now_ms();
                /* its refusal, then the next spawn, each at once */
                ck_assert_int_lt(forkserver_spawn_collect(fs, ticket, &w), 0);
                ck_assert_int_eq(forkserver_spawn(fs, &ok, &w), 0);
                ck_assert_int_eq(forkserver_wait(fs, w, &st), 0);
                forkserver_proc_free(fs, w);
                t0 = now_ms() - t0;
                ck_assert_msg(t0 < 1000, "the next spawn took %lld ms", (long long)t0);
                close(listener);
        }
        forkserver_close(fs);
        t0 = now_ms();
        ck_assert_int_eq(daemon_stop(&d), 0);
        t0 = now_ms() - t0;
        ck_assert_msg(t0 < 3000, "SIGTERM took %lld ms", (long long)t0);
}
END_TEST

/* Connects as fast as it can and never speaks: hold connections held, the oldest dropped. */
static __attribute__((noreturn)) void churn(const char *path, int hold, int64_t until)
{
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        static int ring[1024];
        int head = 0, n = 0;

        memcpy(sa.sun_path, path, strnlen(path, sizeof(sa.sun_path) - 1));
        while (now_ms() < until) {
                int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

                if (fd < 0)
                        _exit(1);
                if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno != EAGAIN &&
                    errno != EINPROGRESS) {
                        close(fd);
                        continue;
                }
                if (n == hold) { /* full: the oldest goes */
                        close(ring[head]);
                        ring[head] = fd;
                        head = (head + 1) % hold;
                } else {
                        ring[n++] = fd;
                }
        }
        _exit(0);
}

/*
 * Four processes of the client's own uid churn unauthenticated connections as fast as they
 * can: each of 100 honest spawns (connect, authenticate, run /bin/true, wait) is served, each
 * within 1 s. Once with the default pending cap, once with the largest (where pending
 * handshakes used to count against the connection cap and lock everyone out).
 */
static void flood(const char *max_pending, int hold)
{
        const char *const extra[] = {"--max-pending", max_pending, NULL};
        const char *t[] = {"/bin/true", NULL};
        struct forkserver_spawn_args a = {.path = t[0], .argv = t};
        int64_t worst = 0, until;
        pid_t att[4];

        daemon_start(&d, extra);
        until = now_ms() + 60000;
        for (int i = 0; i < 4; i++) {
                ck_assert_int_ge(att[i] = fork(), 0);
                if (att[i] == 0)
                        churn(d.sock, hold, until);
        }
        usleep(500 * 1000); /* the flood is on */
        for (int i = 0; i < 100; i++) {
                int64_t t0 = now_ms();
                struct forkserver *fs = daemon_connect(&d);
                struct forkserver_proc *w;
                int st;

                ck_assert_msg(forkserver_spawn(fs, &a, &w) == 0, "%s", forkserver_error(fs));
                ck_assert_int_eq(forkserver_wait(fs, w, &st), 0);
                ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
                forkserver_proc_free(fs, w);
                forkserver_close(fs);
                if (now_ms() - t0 > worst)
                        worst = now_ms() - t0;
        }
        for (int i = 0; i < 4; i++) {
                kill(att[i], SIGKILL);
                ck_assert_int_eq(waitpid(att[i], NULL, 0), att[i]);
        }
        fprintf(stderr,
                "--max-pending %s, 4 x %d connections held: 100 honest spawns, worst "
                "%lld ms\n",
                max_pending, hold, (long long)worst);
        ck_assert_msg(worst < 1000 * slowdown(), "an honest spawn took %lld ms", (long long)worst);
        ck_assert_int_eq(daemon_stop(&d), 0);
}

START_TEST(honest_clients_served_through_a_flood)
{
        flood("64", 32);
        flood("4096", 1000);
}
END_TEST

/* The front's child of that name (forkserverd-tpl, forkserverd-cls), or 0. */
static pid_t child_named(pid_t front, const char *name)
{
        pid_t kids[256];
        size_t n = children_of(front, false, kids, 256);

        for (size_t i = 0; i < n; i++) {
                char path[64], comm[32] = "";
                FILE *f;

                snprintf(path, sizeof(path), "/proc/%d/comm", (int)kids[i]);
                if (!(f = fopen(path, "re")))
                        continue;
                bool yes = fgets(comm, sizeof(comm), f) && strncmp(comm, name, strlen(name)) == 0;

                fclose(f);
                if (yes)
                        return kids[i];
        }
        return 0;
}

/*
 * A dead zygote is replaced while the daemon serves everyone else, and the new one comes from
 * the template: it holds nothing of the requests earlier clients made (checked in its memory
 * as root, where its non-dumpable memory can be read), and neither does the template, which
 * never saw the key either, nor the front once the request went on.
 */
START_TEST(dead_zygotes_replaced_from_the_template)
{
        const char *extra[] = {"--preload", env_or_die("LIBJOBS"), NULL};
        const char secret[] = "zq8-forkserver-restart-secret-4Pw";
        const char *sleeper[] = {"/bin/sleep", "60", NULL};
        char env[sizeof(secret) + 8];
        const char *ev[] = {env, NULL};
        pid_t zyg[4], tpl;
        size_t nz;
        int st;

        snprintf(env, sizeof(env), "S=%s", secret);
        daemon_start(&d, extra);
        struct forkserver *fs = daemon_connect(&d);
        struct forkserver_spawn_args a = {.path = sleeper[0], .argv = sleeper, .envp = ev};
        struct forkserver_spawn_args f = {
            .entry = "libjobs:job_noop", .arg = secret, .arglen = sizeof(secret) - 1, .envp = ev};
        struct forkserver_proc *w, *keep;

        ck_assert_int_eq(forkserver_spawn(fs, &a, &keep), 0); /* it outlives the zygotes */
        ck_assert_int_eq(forkserver_spawn(fs, &f, &w), 0);
        ck_assert_int_eq(forkserver_wait(fs, w, &st), 0);
        forkserver_proc_free(fs, w);
        ck_assert_int_ne(tpl = child_named(d.pid, "forkserverd-tpl"), 0);

        nz = zygotes_of(d.pid, zyg, 4);
        ck_assert_uint_eq(nz, daemon_stat(fs, "zygotes"));
        for (size_t i = 0; i < nz; i++)
                ck_assert_int_eq(kill(zyg[i], SIGKILL), 0);
        int64_t t0 = now_ms();

        /* the daemon answers meanwhile, and spawns again once a zygote is back */
        ck_assert_int_eq(forkserver_ping(fs), 0);
        for (;;) {
                const char *t[] = {"/bin/true", NULL};
                struct forkserver_spawn_args b = {.path = t[0], .argv = t};
                int r = forkserver_spawn(fs, &b, &w);

                if (r == 0) {
                        ck_assert_int_eq(forkserver_wait(fs, w, &st), 0);
                        forkserver_proc_free(fs, w);
                        break;
                }
                ck_assert_msg(r == -EAGAIN || r == -EPIPE || r == -EIO, "spawn: %d %s", r,
                              forkserver_error(fs));
                ck_assert_msg(now_ms() - t0 < 5000, "no zygote after 5 s");
                usleep(20 * 1000);
        }
        while (daemon_stat(fs, "zygote_restarts") < nz) {
                ck_assert_msg(now_ms() - t0 < 5000, "zygotes not all back after 5 s");
                usleep(20 * 1000);
        }
        ck_assert_int_eq(forkserver_poll(fs, keep, &st), 0); /* still running */
        nz = zygotes_of(d.pid, zyg, 4);
        ck_assert_uint_eq(nz, daemon_stat(fs, "zygotes"));
        /* and they work: fork mode too */
        ck_assert_int_eq(forkserver_spawn(fs, &f, &w), 0);
        ck_assert_int_eq(forkserver_wait(fs, w, &st), 0);
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        forkserver_proc_free(fs, w);
        if (geteuid() == 0) {
                struct fs_key *k;

                ck_assert_int_eq(fs_key_load_file(d.key, &k, NULL), 0);
                for (size_t i = 0; i < nz; i++)
                        ck_assert_msg(
                            scan_memory(zyg[i], (const uint8_t *)secret, sizeof(secret) - 1) == 0,
                            "a restarted zygote holds an earlier request");
                ck_assert_int_eq(scan_memory(tpl, (const uint8_t *)secret, sizeof(secret) - 1), 0);
                ck_assert_int_eq(scan_memory(tpl, k->bytes, FS_KEY_LEN), 0);
                /* nor does the front, which wipes each request once it went to a zygote;
                 * the same scan finds it in the worker that got it, which shows it can */
                ck_assert_int_eq(scan_memory(d.pid, (const uint8_t *)secret, sizeof(secret) - 1),
                                 0);
                ck_assert_int_ge(scan_memory(forkserver_proc_pid(keep), (const uint8_t *)secret,
                                             sizeof(secret) - 1),
                                 1);
                fs_key_free(k);
        } else {
                fprintf(stderr, "not root: the memory of zygotes and template not scanned\n");
        }
        ck_assert_int_eq(forkserver_kill(fs, keep, SIGKILL), 0);
        ck_assert_int_eq(forkserver_wait(fs, keep, &st), 0);
        forkserver_proc_free(fs, keep);
        forkserver_close(fs);
        ck_assert_int_eq(daemon_stop(&d), 0);
}
END_TEST

/* Stops every zygote of the daemon (SIGSTOP); how many. */
static size_t stop_zygotes(pid_t *zyg, size_t cap)
{
        size_t nz = zygotes_of(d.pid, zyg, cap);

        ck_assert_uint_gt(nz, 0);
        for (size_t i = 0; i < nz; i++)
                ck_assert_int_eq(kill(zyg[i], SIGSTOP), 0);
        return nz;
}

/*
 * A stopped zygote stops nobody else: pings are answered meanwhile, the spawn it holds is
 * answered with ETIMEDOUT once its deadline passed, the zygote is killed and a new one made,
 * and spawns work again.
 */
START_TEST(stopped_zygote_killed_and_replaced)
{
        const char *t[] = {"/bin/true", NULL};
        struct forkserver_spawn_args a = {.path = t[0], .argv = t};
        struct forkserver_proc *w;
        pid_t zyg[4];
        uint32_t ticket;
        int64_t worst = 0, t0;
        int st, r;

        daemon_start(&d, NULL);
        struct forkserver *fs = daemon_connect(&d), *other = daemon_connect(&d);
        size_t nz = stop_zygotes(zyg, 4);

        ck_assert_int_eq(forkserver_spawn_submit(fs, &a, &ticket), 0);
        t0 = now_ms();
        for (int i = 0; i < 100; i++) {
                int64_t p0 = now_ms();

                ck_assert_int_eq(forkserver_ping(other), 0);
                if (now_ms() - p0 > worst)
                        worst = now_ms() - p0;
                usleep(10 * 1000);
        }
        r = forkserver_spawn_collect(fs, ticket, &w);
        ck_assert_msg(r == -ETIMEDOUT, "spawn at a stopped zygote: %d %s", r, forkserver_error(fs));
        ck_assert_int_lt(now_ms() - t0, 10000);
        ck_assert_uint_eq(daemon_stat(other, "zygote_kills"), 1);
        fprintf(stderr,
                "a zygote stopped: 100 pings, worst %lld ms; its spawn failed after "
                "%lld ms\n",
                (long long)worst, (long long)(now_ms() - t0));
        ck_assert_int_lt(worst, 1000);
        for (size_t i = 0; i < nz; i++) /* those that held no request go on */
                (void)kill(zyg[i], SIGCONT);
        /* killed, then made again from the template: spawns work */
        for (t0 = now_ms(); (r = forkserver_spawn(fs, &a, &w)) != 0; usleep(20 * 1000)) {
                ck_assert_msg(r == -EAGAIN || r == -EIO || r == -ETIMEDOUT, "spawn: %d %s", r,
                              forkserver_error(fs));
                ck_assert_msg(now_ms() - t0 < 5000, "no zygote 5 s after the kill");
        }
        ck_assert_int_eq(forkserver_wait(fs, w, &st), 0);
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        forkserver_proc_free(fs, w);
        for (t0 = now_ms(); daemon_stat(other, "zygote_restarts") < 1; usleep(20 * 1000))
                ck_assert_msg(now_ms() - t0 < 5000, "the killed zygote not back after 5 s");
        ck_assert_uint_eq(zygotes_of(d.pid, zyg, 4), nz);
        forkserver_close(other);
        forkserver_close(fs);
        ck_assert_int_eq(daemon_stop(&d), 0);
}
END_TEST

/* SIGTERM is acted on at once while every zygote is stopped with a request in it: the socket
 * goes within 1 s, and the daemon is gone within 3 (the request's deadline is cut to 1 s). */
START_TEST(sigterm_while_zygotes_are_stopped)
{
        const char *t[] = {"/bin/true", NULL};
        struct forkserver_spawn_args a = {.path = t[0], .argv = t};
        struct stat sb;
        pid_t zyg[4];
        uint32_t ticket;
        int64_t t0, gone = -1;
        int status;

        daemon_start(&d, NULL);
        struct forkserver *fs = daemon_connect(&d);

        (void)stop_zygotes(zyg, 4);
        ck_assert_int_eq(forkserver_spawn_submit(fs, &a, &ticket), 0);
        ck_assert_int_eq(forkserver_ping(fs), 0); /* the request is at the zygote */
        t0 = now_ms();
        ck_assert_int_eq(kill(d.pid, SIGTERM), 0);
        while (waitpid(d.pid, &status, WNOHANG) == 0) {
                if (gone < 0 && lstat(d.sock, &sb) < 0)
                        gone = now_ms() - t0;
                ck_assert_msg(now_ms() - t0 < 3000 * slowdown(), "still running 3 s after SIGTERM");
                usleep(5 * 1000);
        }
        if (gone < 0)
                gone = now_ms() - t0;
        fprintf(stderr,
                "SIGTERM, zygotes stopped: socket gone after %lld ms, daemon after "
                "%lld ms\n",
                (long long)gone, (long long)(now_ms() - t0));
        ck_assert_int_lt(gone, 1000);
        ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        d.pid = 0;
        forkserver_close(fs);
        daemon_cleanup_dir(&d);
}
END_TEST

/*
 * A zygote that is slow but answers is not killed for the length of its queue: with every
 * zygote let run 1 ms in each 350, two dozen pipelined spawns take longer than the 5 s
 * deadline all together, and each still gets its worker.
 */
START_TEST(slow_zygote_that_answers_is_kept)
{
        enum { N = 24 };
        const char *t[] = {"/bin/true", NULL};
        struct forkserver_spawn_args a = {.path = t[0], .argv = t};
        uint32_t ticket[N];
        pid_t zyg[4];
        int64_t t0;
        int st;

        daemon_start(&d, NULL);
        struct forkserver *fs = daemon_connect(&d);
        size_t nz = stop_zygotes(zyg, 4);

        for (int i = 0; i < N; i++)
                ck_assert_int_eq(forkserver_spawn_submit(fs, &a, &ticket[i]), 0);
        t0 = now_ms();
        while (daemon_stat(fs, "spawns") + daemon_stat(fs, "spawn_failures") < N &&
               now_ms() - t0 < 30000) {
                for (size_t i = 0; i < nz; i++)
                        (void)kill(zyg[i], SIGCONT);
                usleep(1000);
                for (size_t i = 0; i < nz; i++)
                        (void)kill(zyg[i], SIGSTOP);
                usleep(350 * 1000);
        }
        for (size_t i = 0; i < nz; i++)
                (void)kill(zyg[i], SIGCONT);
        fprintf(stderr, "a zygote run 1 ms in 350: %d spawns answered after %lld ms\n", N,
                (long long)(now_ms() - t0));
        for (int i = 0; i < N; i++) {
                struct forkserver_proc *w;
                int r = forkserver_spawn_collect(fs, ticket[i], &w);

                ck_assert_msg(r == 0, "spawn %d: %d %s", i, r, forkserver_error(fs));
                ck_assert_int_eq(forkserver_wait(fs, w, &st), 0);
                forkserver_proc_free(fs, w);
        }
        ck_assert_uint_eq(daemon_stat(fs, "zygote_kills"), 0);
        forkserver_close(fs);
        ck_assert_int_eq(daemon_stop(&d), 0);
}
END_TEST

/*
 * One client's burst of pipelined spawns does not starve another's: the zygote's ring takes 32
 * at most, a connection has one request waiting beyond that at most (it is not read
 * meanwhile), so the other client's spawn waits behind a few of the burst, not all of it.
 */
START_TEST(burst_shares_the_zygote_round_robin)
{
        enum { BURST = 200 };
        const char *t[] = {"/bin/true", NULL};
        struct forkserver_spawn_args a = {.path = t[0], .argv = t};
        static uint32_t ticket[BURST];
        struct forkserver_proc *w;
        int64_t t0, took;
        int st;

        pid_t zyg[4];
        uint32_t mine;

        daemon_start(&d, NULL);
        struct forkserver *burst = daemon_connect(&d), *other = daemon_connect(&d);
        /* the zygotes paused while the burst arrives: what the front reads of it piles up */
        size_t nz = stop_zygotes(zyg, 4);

        for (int i = 0; i < BURST; i++)
                ck_assert_int_eq(forkserver_spawn_submit(burst, &a, &ticket[i]), 0);
        usleep(200 * 1000);
        t0 = now_ms();
        ck_assert_int_eq(forkserver_spawn_submit(other, &a, &mine), 0);
        usleep(100 * 1000);
        for (size_t i = 0; i < nz; i++)
                ck_assert_int_eq(kill(zyg[i], SIGCONT), 0);
        ck_assert_int_eq(forkserver_spawn_collect(other, mine, &w), 0);
        took = now_ms() - t0;
        ck_assert_int_eq(forkserver_wait(other, w, &st), 0);
        forkserver_proc_free(other, w);
        uint64_t done_before = daemon_stat(other, "spawns");

        for (int i = 0; i < BURST; i++) {
                ck_assert_int_eq(forkserver_spawn_collect(burst, ticket[i], &w), 0);
                ck_assert_int_eq(forkserver_wait(burst, w, &st), 0);
                forkserver_proc_free(burst, w);
        }
        fprintf(stderr,
                "a burst of %d spawns: another client's spawn took %lld ms, with %llu "
                "spawns done by then\n",
                BURST, (long long)took, (unsigned long long)done_before);
        ck_assert_int_lt(took, 1100 * slowdown());
        /* served before most of the burst: its request did not queue behind all of it */
        ck_assert_uint_lt(done_before, BURST / 2);
        forkserver_close(other);
        forkserver_close(burst);
        ck_assert_int_eq(daemon_stop(&d), 0);
}
END_TEST

/*
 * A zygote killed while it makes a worker (stuck in the exec-mode vfork: here a tracer holds
 * the new child before its exec, as a slow filesystem could) leaves a child nobody reported:
 * the front finds it among its own children, ends it and reaps it, and counts it. As root
 * (ptrace of the non-dumpable zygote).
 */
START_TEST(stray_of_a_killed_zygote_is_ended)
{
        const char *extra[] = {"--allow-profile", "default,none", NULL};
        const char *sl[] = {"/bin/sleep", "60", NULL};
        struct forkserver_spawn_args a = {.path = sl[0], .argv = sl, .profile = "none"};
        struct forkserver_proc *w;
        unsigned long msg = 0;
        uint32_t ticket;
        int64_t t0;
        pid_t zpid, child;
        int st, r;

        if (geteuid() != 0) {
                fprintf(stderr, "not root: no ptrace of the zygote, stray test skipped\n");
                return;
        }
        daemon_start(&d, extra);
        struct forkserver *fs = daemon_connect(&d);

        zpid = (pid_t)daemon_stat(fs, "zygote_pid"); /* the plain one: it serves "none" */
        ck_assert_int_eq(ptrace(PTRACE_SEIZE, zpid, 0,
                                PTRACE_O_TRACECLONE | PTRACE_O_TRACEVFORK | PTRACE_O_TRACEFORK),
                         0);
        ck_assert_int_eq(forkserver_spawn_submit(fs, &a, &ticket), 0);
        /* the clone event; the child starts stopped, the zygote then waits for its exec */
        ck_assert_int_eq(waitpid(zpid, &st, __WALL), zpid);
        ck_assert(WIFSTOPPED(st) && (st >> 8 == (SIGTRAP | (PTRACE_EVENT_CLONE << 8)) ||
                                     st >> 8 == (SIGTRAP | (PTRACE_EVENT_VFORK << 8)) ||
                                     st >> 8 == (SIGTRAP | (PTRACE_EVENT_FORK << 8))));
        ck_assert_int_eq(ptrace(PTRACE_GETEVENTMSG, zpid, 0, &msg), 0);
        child = (pid_t)msg;
        ck_assert_int_eq(waitpid(child, &st, __WALL), child);
        ck_assert(WIFSTOPPED(st));
        ck_assert_int_eq(ptrace(PTRACE_CONT, zpid, 0, 0), 0);
        t0 = now_ms();
        r = forkserver_spawn_collect(fs, ticket, &w);
        ck_assert_msg(r == -ETIMEDOUT, "spawn: %d %s", r, forkserver_error(fs));
        /* the zygote's death is ours to see first, as its tracer; then the child goes on */
        ck_assert_int_eq(waitpid(zpid, &st, __WALL), zpid);
        ck_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
        ck_assert_int_eq(ptrace(PTRACE_DETACH, child, 0, 0), 0);
        while (kill(child, 0) == 0) {
                ck_assert_msg(now_ms() - t0 < 10000 * slowdown(), "the stray lives on");
                usleep(20 * 1000);
        }
        ck_assert_uint_eq(daemon_stat(fs, "zygote_strays_ended"), 1);
        ck_assert_uint_eq(daemon_stat(fs, "workers"), 0);
        ck_assert_int_eq(count_zombies(d.pid), 0);
        forkserver_close(fs);
        ck_assert_int_eq(daemon_stop(&d), 0);
}
END_TEST

static Suite *suite(void)
{
        Suite *s = suite_create("front");
        TCase *tc = tcase_create("integration");

        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, passed_fds_closed_off_the_loop);
        TCase *tp = tcase_create("pidfd-signal");

        tcase_set_timeout(tp, 60);
        tcase_set_tags(tp, "pidfd"); /* forkserver_kill: valgrind 3.19 lacks pidfd_send_signal */
        tcase_add_test(tp, dead_zygotes_replaced_from_the_template);
        tcase_add_test(tc, stopped_zygote_killed_and_replaced);
        tcase_add_test(tc, sigterm_while_zygotes_are_stopped);
        tcase_add_test(tc, burst_shares_the_zygote_round_robin);
        tcase_add_test(tc, stray_of_a_killed_zygote_is_ended);
        tcase_add_test(tc, slow_zygote_that_answers_is_kept);
        suite_add_tcase(s, tp);
        tcase_add_test(tc, refused_spawn_fds_closed_off_the_zygote);
        suite_add_tcase(s, tc);
        TCase *load = tcase_create("load");

        tcase_set_timeout(load, 120);
        tcase_set_tags(load, "load"); /* measures the daemon: not under valgrind */
        tcase_add_test(load, honest_clients_served_through_a_flood);
        suite_add_tcase(s, load);
        return s;
}

int main(void)
{
        return run_suite(suite());
}
