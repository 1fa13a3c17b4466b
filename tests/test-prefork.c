/*
 * Integration: pre-forked fork-mode workers (--prefork). A request served by an idle child
 * gives the client exactly what a fork on the spot gives (its fds, argument, environment,
 * channel; nothing else open); idle children are the daemon's, not workers, are counted in
 * status, are replaced when killed, and end with the daemon, reaped.
 */
#include "daemon.h"

#include <sys/pidfd.h>
#include <time.h>

#define EXITS(st, code) (WIFEXITED(st) && WEXITSTATUS(st) == (code))

static struct daemon d;

static int64_t now_ms(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool named(pid_t pid, const char *name)
{
        char path[64], comm[32] = "";
        bool yes = false;
        FILE *f;

        snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
        if ((f = fopen(path, "re"))) {
                yes = fgets(comm, sizeof(comm), f) && strncmp(comm, name, strlen(name)) == 0;
                fclose(f);
        }
        return yes;
}

/* The front's idle pre-forked children (not zombies). */
static size_t idle_of(pid_t front, pid_t *out, size_t cap)
{
        pid_t kids[256];
        size_t n = children_of(front, false, kids, 256), k = 0;

        for (size_t i = 0; i < n && k < cap; i++) {
                char state;
                pid_t pp;

                if (named(kids[i], "forkserverd-idl") && proc_stat(kids[i], &state, &pp) == 0 &&
                    state != 'Z')
                        out[k++] = kids[i];
        }
        return k;
}

/* Waits until the daemon counts want idle children and that many are there. */
static size_t wait_idle(struct forkserver *fs, size_t want, pid_t *out, size_t cap)
{
        int64_t t0 = now_ms();
        size_t n;

        while ((n = idle_of(d.pid, out, cap)) != want || daemon_stat(fs, "prefork.idle") != want) {
                ck_assert_msg(now_ms() - t0 < 5000, "%zu idle children (status: %llu), not %zu", n,
                              (unsigned long long)daemon_stat(fs, "prefork.idle"), want);
                usleep(10 * 1000);
        }
        return n;
}

static bool in(pid_t pid, const pid_t *set, size_t n)
{
        for (size_t i = 0; i < n; i++)
                if (set[i] == pid)
                        return true;
        return false;
}

/* What job_report says of a request with an fd, an argument and an environment, and what the
 * channel echo service says of its fds and environment; *ret_pid: the worker's pid. */
static void report(struct forkserver *fs, char *out, size_t cap, pid_t *ret_pid)
{
        const char *ev[] = {"X=only-mine", "Y=2", NULL};
        struct forkserver_spawn_args a = {
            .entry = "libjobs:job_report", .arg = "A-17", .arglen = 4, .envp = ev};
        struct forkserver_proc *w;
        int st;

        st = spawn_capture_keep(fs, &a, 1, out, cap, &w);
        ck_assert_msg(EXITS(st, 0), "job_report: status %#x", st);
        *ret_pid = forkserver_proc_pid(w);
        forkserver_proc_free(fs, w);
}

static void channel_report(struct forkserver *fs, char *out, size_t cap, pid_t *ret_pid)
{
        struct forkserver_spawn_args a = {.entry = "libjobs:job_echo",
                                          .flags = FORKSERVER_SPAWN_CHANNEL};
        struct forkserver_proc *w;
        char buf[64];
        int ch, n, st, fds[4];
        size_t nfds;

        ck_assert_msg(forkserver_spawn(fs, &a, &w) == 0, "%s", forkserver_error(fs));
        ch = forkserver_proc_channel(w);
        ck_assert_int_eq(forkserver_channel_send(ch, "fds", 3, NULL, 0), 0);
        ck_assert_int_ge(n = forkserver_channel_recv(ch, buf, sizeof(buf) - 1, fds, 4, &nfds), 0);
        buf[n] = '\0';
        snprintf(out, cap, "fds=%s", buf);
        ck_assert_int_eq(forkserver_channel_send(ch, "env", 3, NULL, 0), 0);
        ck_assert_int_ge(n = forkserver_channel_recv(ch, buf, sizeof(buf) - 1, fds, 4, &nfds), 0);
        buf[n] = '\0';
        snprintf(out + strlen(out), cap - strlen(out), " env=%s", buf);
        ck_assert_int_eq(forkserver_channel_send(ch, "bye", 3, NULL, 0), 0);
        ck_assert_int_eq(forkserver_wait(fs, w, &st), 0);
        ck_assert(EXITS(st, 7));
        *ret_pid = forkserver_proc_pid(w);
        forkserver_proc_free(fs, w);
}

/*
 * The same requests against a daemon that forks on each request and one with a pool: the
 * same answers, and the pool's were served by children that were idle before.
 */
START_TEST(prefork_worker_gets_exactly_its_request)
{
        const char *zero[] = {"--preload", env_or_die("LIBJOBS"), "--prefork", "0", NULL};
        const char *two[] = {"--preload", env_or_die("LIBJOBS"), "--prefork", "2", NULL};
        char want[256], got[256], want_ch[128], got_ch[128];
        pid_t idle[8], pid;
        size_t n;

        daemon_start(&d, zero);
        struct forkserver *fs = daemon_connect(&d);

        ck_assert_uint_eq(daemon_stat(fs, "prefork.idle"), 0);
        ck_assert_uint_eq(idle_of(d.pid, idle, 8), 0);
        report(fs, want, sizeof(want), &pid);
        channel_report(fs, want_ch, sizeof(want_ch), &pid);
        forkserver_close(fs);
        ck_assert_int_eq(daemon_stop(&d), 0);
        ck_assert_str_eq(want, "arg=A-17 channel=-1 nfds=1 open=3 X=only-mine\n");

        daemon_start(&d, two);
        fs = daemon_connect(&d);
        ck_assert_uint_eq(daemon_stat(fs, "prefork.idle"), 0); /* none before fork mode is used */
        report(fs, got, sizeof(got), &pid); /* forked on the spot; one idle child after it */
        ck_assert_str_eq(got, want);
        for (int round = 0; round < 3; round++) {
                n = wait_idle(fs, 1, idle, 8);
                report(fs, got, sizeof(got), &pid);
                ck_assert_msg(in(pid, idle, n), "round %d: not served by an idle child", round);
                ck_assert_str_eq(got, want);
                n = wait_idle(fs, 1, idle, 8);
                channel_report(fs, got_ch, sizeof(got_ch), &pid);
                ck_assert_msg(in(pid, idle, n), "round %d: channel not served by an idle child",
                              round);
                ck_assert_str_eq(got_ch, want_ch);
        }
        ck_assert_uint_eq(daemon_stat(fs, "workers"), 0);
        forkserver_close(fs);
        ck_assert_int_eq(daemon_stop(&d), 0);
}
END_TEST

/* The pool grows to --prefork under concurrent requests; every idle child ends with the
 * daemon and is reaped by it (no zombie left for init, which here may never reap it). */
START_TEST(idle_children_end_with_the_daemon)
{
        const char *extra[] = {"--preload", env_or_die("LIBJOBS"), "--prefork", "3", NULL};
        struct forkserver_spawn_args a = {.entry = "libjobs:job_sleep"};
        struct forkserver_proc *w[4];
        pid_t idle[8];
        size_t n;
        int st;

        daemon_start(&d, extra);
        struct forkserver *fs = daemon_connect(&d);

        /* four at once (pipelined): those that find the pool empty grow it, up to three */
        int64_t t0 = now_ms();

        while (daemon_stat(fs, "prefork.idle") < 3) {
                uint32_t ticket[4];

                ck_assert_msg(now_ms() - t0 < 10000, "the pool did not grow to 3");
                for (int i = 0; i < 4; i++)
                        ck_assert_int_eq(forkserver_spawn_submit(fs, &a, &ticket[i]), 0);
                for (int i = 0; i < 4; i++)
                        ck_assert_int_eq(forkserver_spawn_collect(fs, ticket[i], &w[i]), 0);
                for (int i = 0; i < 4; i++) {
                        ck_assert_int_eq(forkserver_kill(fs, w[i], SIGKILL), 0);
                        ck_assert_int_eq(forkserver_wait(fs, w[i], &st), 0);
                        forkserver_proc_free(fs, w[i]);
                }
                usleep(50 * 1000); /* refilled meanwhile */
        }
        n = wait_idle(fs, 3, idle, 8);
        ck_assert_uint_eq(daemon_stat(fs, "workers"), 0);
        forkserver_close(fs);
        ck_assert_int_eq(daemon_stop(&d), 0);
        for (size_t i = 0; i < n; i++) {
                char state = '?';
                pid_t pp = 0;

                ck_assert_msg(proc_stat(idle[i], &state, &pp) < 0,
                              "idle child %d left behind (state %c, parent %d)", (int)idle[i],
                              state, (int)pp);
        }
}
END_TEST

/* An idle child killed is reaped by the front and replaced; the pool then serves again. */
START_TEST(killed_idle_child_replaced)
{
        const char *extra[] = {"--preload", env_or_die("LIBJOBS"), "--prefork", "1", NULL};
        pid_t idle[8], pid, before;
        char out[256];
        int64_t t0;

        daemon_start(&d, extra);
        struct forkserver *fs = daemon_connect(&d);

        ck_assert_uint_eq(daemon_stat(fs, "prefork.max"), 1);
        report(fs, out, sizeof(out), &pid);
        wait_idle(fs, 1, idle, 8);
        before = idle[0];
        ck_assert_int_eq(kill(before, SIGKILL), 0);
        t0 = now_ms();
        while (wait_idle(fs, 1, idle, 8), idle[0] == before) {
                ck_assert_msg(now_ms() - t0 < 5000, "the killed idle child was not replaced");
                usleep(10 * 1000);
        }
        for (;;) { /* reaped by the front, not left a zombie */
                char state;
                pid_t pp;

                if (proc_stat(before, &state, &pp) < 0)
                        break;
                ck_assert_msg(now_ms() - t0 < 5000, "killed idle child %d not reaped (%c)",
                              (int)before, state);
                usleep(10 * 1000);
        }
        ck_assert_int_eq(count_zombies(d.pid), 0);
        report(fs, out, sizeof(out), &pid);
        ck_assert_int_eq(pid, idle[0]);
        ck_assert_str_eq(out, "arg=A-17 channel=-1 nfds=1 open=3 X=only-mine\n");
        ck_assert_uint_eq(daemon_stat(fs, "workers"), 0);
        forkserver_close(fs);
        ck_assert_int_eq(daemon_stop(&d), 0);
}
END_TEST

/* A pre-forked child serving one client holds nothing of the request another client made
 * before it was forked (the zygote wiped it): the worker scans its own memory for it. */
START_TEST(no_residue_of_earlier_requests)
{
        const char *extra[] = {"--preload", env_or_die("LIBJOBS"), "--prefork", "1", NULL};
        const char secret[] = "zq8-forkserver-prefork-secret-3Qv";
        char env[4096], arg[2048], xored[sizeof(secret)], out[64];
        const char *ev[] = {env, NULL};
        pid_t idle[8], pid;
        int st;

        memset(env, 'e', sizeof(env));
        memcpy(env, "PAD=", 4);
        memcpy(env + sizeof(env) - sizeof(secret), secret, sizeof(secret));
        memset(arg, 'a', sizeof(arg));
        memcpy(arg + sizeof(arg) - sizeof(secret) + 1, secret, sizeof(secret) - 1);
        for (size_t i = 0; i < sizeof(secret) - 1; i++)
                xored[i] = (char)(secret[i] ^ 0x5a);
        daemon_start(&d, extra);
        struct forkserver *a = daemon_connect(&d), *b = daemon_connect(&d);
        struct forkserver_spawn_args sa = {
            .entry = "libjobs:job_noop", .envp = ev, .arg = arg, .arglen = sizeof(arg)};
        struct forkserver_spawn_args sb = {
            .entry = "libjobs:job_scan", .arg = xored, .arglen = sizeof(secret) - 1};
        struct forkserver_proc *w;

        for (int round = 0; round < 3; round++) {
                ck_assert_int_eq(forkserver_spawn(a, &sa, &w), 0);
                ck_assert_int_eq(forkserver_wait(a, w, &st), 0);
                forkserver_proc_free(a, w);
                /* the idle child now there was forked after that request */
                size_t n = wait_idle(b, 1, idle, 8);

                st = spawn_capture_keep(b, &sb, 1, out, sizeof(out), &w);
                pid = forkserver_proc_pid(w);
                forkserver_proc_free(b, w);
                ck_assert_msg(EXITS(st, 0), "scan failed (status %#x)", st);
                ck_assert_msg(in(pid, idle, n), "round %d: not served by an idle child", round);
                ck_assert_msg(strcmp(out, "0\n") == 0,
                              "round %d: another client's secret found %s time(s)", round, out);
        }
        forkserver_close(a);
        forkserver_close(b);
        ck_assert_int_eq(daemon_stop(&d), 0);
}
END_TEST

/* An idle child has the parent-death signal set; serving a detached request, it clears it:
 * the worker outlives a daemon that is killed (one not detached does not). */
START_TEST(detached_prefork_worker_outlives_a_killed_daemon)
{
        const char *extra[] = {"--preload", env_or_die("LIBJOBS"), "--prefork", "1", NULL};
        struct forkserver_spawn_args a = {.entry = "libjobs:job_sleep",
                                          .flags = FORKSERVER_SPAWN_DETACH};
        struct forkserver_proc *w;
        pid_t idle[8], pid;
        char out[256];
        int pidfd, st;

        daemon_start(&d, extra);
        struct forkserver *fs = daemon_connect(&d);

        report(fs, out, sizeof(out), &pid);
        size_t n = wait_idle(fs, 1, idle, 8);

        ck_assert_int_eq(forkserver_spawn(fs, &a, &w), 0);
        ck_assert_msg(in(forkserver_proc_pid(w), idle, n), "not served by an idle child");
        pidfd = fcntl(forkserver_proc_pidfd(w), F_DUPFD_CLOEXEC, 3);
        ck_assert_int_ge(pidfd, 0);
        ck_assert_int_eq(kill(d.pid, SIGKILL), 0);
        ck_assert_int_eq(waitpid(d.pid, &st, 0), d.pid);
        d.pid = 0;
        struct pollfd pf = {.fd = pidfd, .events = POLLIN};

        ck_assert_msg(poll(&pf, 1, 500) == 0, "the detached worker died with the daemon");
        ck_assert_int_eq(pidfd_send_signal(pidfd, SIGKILL, NULL, 0), 0);
        ck_assert_int_eq(poll(&pf, 1, 3000), 1);
        close(pidfd);
        forkserver_proc_free(fs, w);
        forkserver_close(fs);
        daemon_cleanup_dir(&d);
}
END_TEST

static Suite *suite(void)
{
        Suite *s = suite_create("prefork");
        TCase *tc = tcase_create("integration");

        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, prefork_worker_gets_exactly_its_request);
        tcase_add_test(tc, killed_idle_child_replaced);
        tcase_add_test(tc, no_residue_of_earlier_requests);
        suite_add_tcase(s, tc);
        TCase *tp = tcase_create("pidfd-signal");

        tcase_set_timeout(tp, 60);
        tcase_set_tags(tp, "pidfd"); /* forkserver_kill: valgrind 3.19 lacks pidfd_send_signal */
        tcase_add_test(tp, idle_children_end_with_the_daemon);
        tcase_add_test(tp, detached_prefork_worker_outlives_a_killed_daemon);
        suite_add_tcase(s, tp);
        return s;
}

int main(void)
{
        return run_suite(suite());
}
