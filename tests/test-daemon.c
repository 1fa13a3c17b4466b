/* Integration: the real forkserverd on a temporary socket, driven by libforkserver. */
#include "daemon.h"

#include <sys/pidfd.h>

static struct daemon d;

static void stop_ok(void)
{
        int st = daemon_stop(&d);

        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "daemon exit status %#x", st);
}

START_TEST(stdio_and_exit_codes)
{
        const char *echo[] = {"/bin/echo", "hello", "world", NULL};
        const char *code[] = {"/bin/sh", "-c", "exit 42", NULL};
        const char *sig[] = {"/bin/sh", "-c", "kill -TERM $$", NULL};
        const char *env[] = {"/bin/sh", "-c", "echo \"$A|$B|$(pwd)\"", NULL};
        const char *envp[] = {"A=1", "B=two words", NULL};
        struct forkserver *fs;
        char out[256];
        int st;

        daemon_start(&d, NULL);
        fs = daemon_connect(&d);
        st = run_capture(fs, echo, out, sizeof(out));
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        ck_assert_str_eq(out, "hello world\n");
        st = run_capture(fs, code, out, sizeof(out));
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 42);
        st = run_capture(fs, sig, out, sizeof(out));
        ck_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM);

        /* explicit environment and cwd; the default cwd is / */
        struct forkserver_spawn_args a = {.path = env[0], .argv = env, .envp = envp, .cwd = "/tmp"};

        st = spawn_capture(fs, &a, 1, out, sizeof(out));
        ck_assert_str_eq(out, "1|two words|/tmp\n");
        forkserver_close(fs);
        stop_ok();
}
END_TEST

START_TEST(fds_exactly_as_asked)
{
        /* The worker lists its fds: 0-2 and the ones given, nothing of the daemon's. */
        const char *ls[] = {"/bin/bash", "-c", "ls /proc/self/fd | sort -n | tr '\\n' ' ' >&200",
                            NULL};
        const char *wr[] = {"/bin/sh", "-c", "echo to-five >&5; echo to-stdout", NULL};
        struct forkserver *fs;
        struct forkserver_proc *w;
        char out[256];
        int p[2], q[2], st;
        ssize_t n;

        daemon_start(&d, NULL);
        fs = daemon_connect(&d);
        struct forkserver_spawn_args a = {.path = ls[0], .argv = ls};
        st = spawn_capture(fs, &a, 200, out, sizeof(out));
        /* ls's own directory fd shows as 3 */
        ck_assert_str_eq(out, "0 1 2 3 200 ");
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);

        /* the same pipe at two numbers, and a swap-prone layout (1 -> 5, 5 -> 1) */
        ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
        ck_assert_int_eq(pipe2(q, O_CLOEXEC), 0);
        struct forkserver_fd_map map2[] = {{5, p[1]}, {1, q[1]}};
        struct forkserver_spawn_args b = {.path = wr[0], .argv = wr, .fds = map2, .nfds = 2};
        ck_assert_int_eq(forkserver_spawn(fs, &b, &w), 0);
        close(p[1]);
        close(q[1]);
        n = read(p[0], out, sizeof(out) - 1);
        out[n > 0 ? n : 0] = '\0';
        ck_assert_str_eq(out, "to-five\n");
        n = read(q[0], out, sizeof(out) - 1);
        out[n > 0 ? n : 0] = '\0';
        ck_assert_str_eq(out, "to-stdout\n");
        fs_close_many(p, 1);
        fs_close_many(q, 1);
        ck_assert_int_eq(forkserver_wait(fs, w, &st), 0);
        forkserver_close(fs);
        stop_ok();
}
END_TEST

START_TEST(kill_and_exec_failures)
{
        const char *sleeper[] = {"/bin/sleep", "100", NULL};
        const char *missing[] = {"/nonexistent/prog", NULL};
        char plain[160];
        const char *notexec[] = {plain, NULL};
        const char *badcwd[] = {"/bin/true", NULL};
        struct forkserver_spawn_args a = {.path = sleeper[0], .argv = sleeper};
        struct forkserver *fs;
        struct forkserver_proc *w;
        int st;

        daemon_start(&d, NULL);
        snprintf(plain, sizeof(plain), "%s/plain", d.dir);
        close(open(plain, O_WRONLY | O_CREAT | O_CLOEXEC, 0644)); /* no x bit at all */
        fs = daemon_connect(&d);
        ck_assert_int_eq(forkserver_spawn(fs, &a, &w), 0);
        ck_assert_int_eq(forkserver_poll(fs, w, &st), 0);
        ck_assert_int_eq(forkserver_kill(fs, w, SIGKILL), 0);
        ck_assert_int_eq(forkserver_wait(fs, w, &st), 0);
        ck_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
        ck_assert_int_eq(forkserver_kill(fs, w, SIGKILL), -ESRCH);
        forkserver_proc_free(fs, w);

        a = (struct forkserver_spawn_args){.path = missing[0], .argv = missing};
        ck_assert_int_eq(forkserver_spawn(fs, &a, &w), -ENOENT);
        ck_assert_ptr_nonnull(strstr(forkserver_error(fs), "exec /nonexistent/prog"));
        a = (struct forkserver_spawn_args){.path = notexec[0], .argv = notexec};
        ck_assert_int_eq(forkserver_spawn(fs, &a, &w), -EACCES);
        a = (struct forkserver_spawn_args){.path = badcwd[0], .argv = badcwd, .cwd = "/nope"};
        ck_assert_int_eq(forkserver_spawn(fs, &a, &w), -ENOENT);
        ck_assert_ptr_nonnull(strstr(forkserver_error(fs), "chdir /nope"));
        /* a refused request leaves the connection usable */
        ck_assert_int_eq(forkserver_ping(fs), 0);
        ck_assert_uint_eq(daemon_stat(fs, "spawn_failures"), 3);
        ck_assert_uint_eq(count_zombies(d.pid), 0); /* failed children were reaped */
        unlink(plain);
        forkserver_close(fs);
        stop_ok();
}
END_TEST

START_TEST(wrong_key_refused_next_served)
{
        struct forkserver_options o = {.socket_path = NULL, .key_fd = -1};
        struct forkserver *fs = NULL;
        char other[160];
        const char *why = "";

        daemon_start(&d, NULL);
        snprintf(other, sizeof(other), "%s/other", d.dir);
        make_key_file(other);
        o.socket_path = d.sock;
        o.key_file = other;
        ck_assert_int_eq(forkserver_connect(&o, &fs, &why), -EACCES);
        ck_assert_ptr_null(fs);
        ck_assert_ptr_nonnull(strstr(why, "refused our key"));
        unlink(other);
        fs = daemon_connect(&d);
        ck_assert_int_eq(forkserver_ping(fs), 0);
        ck_assert_uint_eq(daemon_stat(fs, "auth_failed"), 1);
        forkserver_close(fs);
        stop_ok();
}
END_TEST

START_TEST(connection_close_ends_workers)
{
        const char *sleeper[] = {"/bin/sleep", "100", NULL};
        const char *stubborn[] = {"/bin/sh", "-c", "trap '' TERM; exec sleep 100", NULL};
        struct forkserver_spawn_args a = {.path = sleeper[0], .argv = sleeper};
        struct forkserver_spawn_args b = {.path = stubborn[0], .argv = stubborn};
        struct forkserver_spawn_args c = {
            .path = sleeper[0], .argv = sleeper, .flags = FORKSERVER_SPAWN_DETACH};
        struct forkserver *fs;
        struct forkserver_proc *w1, *w2, *w3;
        int fd1, fd2, fd3;

        daemon_start(&d, NULL);
        fs = daemon_connect(&d);
        ck_assert_int_eq(forkserver_spawn(fs, &a, &w1), 0);
        ck_assert_int_eq(forkserver_spawn(fs, &b, &w2), 0);
        ck_assert_int_eq(forkserver_spawn(fs, &c, &w3), 0);
        fd1 = fcntl(forkserver_proc_pidfd(w1), F_DUPFD_CLOEXEC, 3);
        fd2 = fcntl(forkserver_proc_pidfd(w2), F_DUPFD_CLOEXEC, 3);
        fd3 = fcntl(forkserver_proc_pidfd(w3), F_DUPFD_CLOEXEC, 3);
        usleep(100000); /* let sh install its trap */
        forkserver_close(fs);
        struct pollfd p1 = {.fd = fd1, .events = POLLIN}, p2 = {.fd = fd2, .events = POLLIN},
                      p3 = {.fd = fd3, .events = POLLIN};
        ck_assert_int_eq(poll(&p1, 1, 3000), 1); /* TERM */
        ck_assert_int_eq(poll(&p2, 1, 5000), 1); /* KILL after the grace */
        ck_assert_int_eq(poll(&p3, 1, 300), 0);  /* detached: still running */
        ck_assert_int_eq(pidfd_send_signal(fd3, SIGKILL, NULL, 0), 0);
        ck_assert_int_eq(poll(&p3, 1, 3000), 1);
        close(fd1);
        close(fd2);
        close(fd3);
        stop_ok();
}
END_TEST

START_TEST(thousand_spawns_no_leak)
{
        const char *t[] = {"/bin/true", NULL};
        struct forkserver_spawn_args a = {.path = t[0], .argv = t};
        struct forkserver *fs;
        uint64_t fds0, fds1;
        uint32_t tickets[8];
        int done = 0, st;

        daemon_start(&d, NULL);
        fs = daemon_connect(&d);
        fds0 = daemon_stat(fs, "open_fds");
        /* pipelined, 8 in flight */
        while (done < 1000) {
                struct forkserver_proc *w;
                int k = 1000 - done < 8 ? 1000 - done : 8;

                for (int i = 0; i < k; i++)
                        ck_assert_int_eq(forkserver_spawn_submit(fs, &a, &tickets[i]), 0);
                for (int i = 0; i < k; i++) {
                        ck_assert_int_eq(forkserver_spawn_collect(fs, tickets[i], &w), 0);
                        ck_assert_int_eq(forkserver_wait(fs, w, &st), 0);
                        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
                        forkserver_proc_free(fs, w);
                }
                done += k;
        }
        ck_assert_uint_eq(daemon_stat(fs, "spawns"), 1000);
        ck_assert_uint_eq(daemon_stat(fs, "exits"), 1000);
        ck_assert_uint_eq(daemon_stat(fs, "workers"), 0);
        fds1 = daemon_stat(fs, "open_fds");
        ck_assert_uint_eq(fds1, fds0);
        ck_assert_int_eq(count_zombies(d.pid), 0);
        forkserver_close(fs);
        stop_ok();
}
END_TEST

/* Regression: wait_any once returned the newest exited worker, so an early exit could wait
 * behind every later one. */
START_TEST(wait_any_in_exit_order)
{
        const char *quick[] = {"/bin/true", NULL};
        const char *slow[] = {"/bin/sleep", "0.2", NULL};
        struct forkserver_spawn_args a = {.path = quick[0], .argv = quick};
        struct forkserver_spawn_args b = {.path = slow[0], .argv = slow};
        struct forkserver_proc *first, *second, *got;
        struct forkserver *fs;

        daemon_start(&d, NULL);
        fs = daemon_connect(&d);
        ck_assert_int_eq(forkserver_spawn(fs, &a, &first), 0);
        ck_assert_int_eq(forkserver_spawn(fs, &b, &second), 0);
        usleep(600000);
        ck_assert_int_eq(forkserver_ping(fs), 0); /* reads both exit events */
        ck_assert_int_eq(forkserver_wait_any(fs, 0, &got), 0);
        ck_assert_ptr_eq(got, first);
        ck_assert_int_eq(forkserver_wait_any(fs, 0, &got), 0);
        ck_assert_ptr_eq(got, second);
        ck_assert_int_eq(forkserver_wait_any(fs, 0, &got), -ECHILD);
        forkserver_close(fs);
        stop_ok();
}
END_TEST

START_TEST(max_workers_refused)
{
        const char *const extra[] = {"--max-workers", "2", NULL};
        const char *sleeper[] = {"/bin/sleep", "100", NULL};
        struct forkserver_spawn_args a = {.path = sleeper[0], .argv = sleeper};
        struct forkserver *fs;
        struct forkserver_proc *w[3];
        int st;

        daemon_start(&d, extra);
        fs = daemon_connect(&d);
        ck_assert_int_eq(forkserver_spawn(fs, &a, &w[0]), 0);
        ck_assert_int_eq(forkserver_spawn(fs, &a, &w[1]), 0);
        ck_assert_int_eq(forkserver_spawn(fs, &a, &w[2]), -EAGAIN);
        ck_assert_ptr_nonnull(strstr(forkserver_error(fs), "--max-workers 2"));
        ck_assert_int_eq(forkserver_kill(fs, w[0], SIGKILL), 0);
        ck_assert_int_eq(forkserver_wait(fs, w[0], &st), 0);
        ck_assert_int_eq(forkserver_spawn(fs, &a, &w[2]), 0); /* room again */
        forkserver_close(fs);
        stop_ok();
}
END_TEST

START_TEST(sigterm_ends_everything)
{
        const char *stubborn[] = {"/bin/sh", "-c", "trap '' TERM; exec sleep 100", NULL};
        const char *sleeper[] = {"/bin/sleep", "100", NULL};
        struct forkserver *fs;
        int pidfds[6], st;
        pid_t zyg;

        daemon_start(&d, NULL);
        fs = daemon_connect(&d);
        zyg = (pid_t)daemon_stat(fs, "zygote_pid");
        for (int i = 0; i < 6; i++) {
                struct forkserver_spawn_args a = {.path = i ? sleeper[0] : stubborn[0],
                                                  .argv = i ? sleeper : stubborn,
                                                  .flags = i == 5 ? FORKSERVER_SPAWN_DETACH : 0};
                struct forkserver_proc *w;

                ck_assert_int_eq(forkserver_spawn(fs, &a, &w), 0);
                pidfds[i] = fcntl(forkserver_proc_pidfd(w), F_DUPFD_CLOEXEC, 3);
        }
        usleep(100000);
        st = daemon_stop(&d);
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        for (int i = 0; i < 6; i++) {
                struct pollfd p = {.fd = pidfds[i], .events = POLLIN};

                ck_assert_int_eq(poll(&p, 1, 0), 1); /* already dead, detached ones too */
                close(pidfds[i]);
        }
        ck_assert_int_eq(kill(zyg, 0), -1); /* the zygote is gone */
        forkserver_close(fs);
}
END_TEST

START_TEST(handshake_deadline_and_pending_cap)
{
        const char *const extra[] = {"--handshake-timeout", "300", "--max-pending", "2", NULL};
        static uint8_t buf[FS_MAX_MSG];
        struct forkserver *fs;
        int a, b, c, n;

        daemon_start(&d, extra);
        a = raw_connect(d.sock);
        ck_assert_int_gt(raw_recv(a, buf, sizeof(buf), 2000), 0); /* HELLO */
        b = raw_connect(d.sock);
        ck_assert_int_gt(raw_recv(b, buf, sizeof(buf), 2000), 0);
        c = raw_connect(d.sock); /* over the cap: the oldest (a) is cut */
        ck_assert_int_gt(raw_recv(c, buf, sizeof(buf), 2000), 0);
        n = raw_recv(a, buf, sizeof(buf), 2000);
        ck_assert_int_gt(n, 0);
        ck_assert_uint_eq(msg_type(buf, n), FS_MSG_ERROR);
        ck_assert_int_eq(raw_recv(a, buf, sizeof(buf), 2000), 0); /* EOF */
        /* an honest client is served meanwhile */
        fs = daemon_connect(&d);
        ck_assert_int_eq(forkserver_ping(fs), 0);
        /* b and c time out */
        n = raw_recv(b, buf, sizeof(buf), 3000);
        ck_assert_int_gt(n, 0);
        ck_assert_uint_eq(msg_type(buf, n), FS_MSG_ERROR);
        ck_assert_int_eq(raw_recv(b, buf, sizeof(buf), 2000), 0);
        ck_assert_int_gt(raw_recv(c, buf, sizeof(buf), 3000), 0);
        ck_assert_uint_eq(daemon_stat(fs, "pending_handshakes"), 0);
        close(a);
        close(b);
        close(c);
        forkserver_close(fs);
        stop_ok();
}
END_TEST

START_TEST(hostile_messages)
{
        static uint8_t buf[FS_MAX_MSG + 16];
        struct forkserver *fs;
        struct fs_msgw w;
        int s, n, fd;

        daemon_start(&d, NULL);
        /* a request before AUTH */
        s = raw_connect(d.sock);
        ck_assert_int_gt(raw_recv(s, buf, sizeof(buf), 2000), 0);
        fs_msg_begin(&w, buf, sizeof(buf), FS_MSG_PING, 1);
        n = fs_msg_finish(&w);
        ck_assert_int_eq(fs_fdpass_send(s, buf, (size_t)n, NULL, 0, 0), 0);
        n = raw_recv(s, buf, sizeof(buf), 2000);
        ck_assert_uint_eq(msg_type(buf, n), FS_MSG_ERROR);
        ck_assert_int_eq(raw_recv(s, buf, sizeof(buf), 2000), 0);
        close(s);

        /* after AUTH: fds on a PING are refused, the connection stays usable */
        s = raw_connect(d.sock);
        raw_auth(s, d.key);
        fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        fs_msg_begin(&w, buf, sizeof(buf), FS_MSG_PING, 7);
        n = fs_msg_finish(&w);
        ck_assert_int_eq(fs_fdpass_send(s, buf, (size_t)n, &fd, 1, 0), 0);
        n = raw_recv(s, buf, sizeof(buf), 2000);
        ck_assert_uint_eq(msg_type(buf, n), FS_MSG_ERROR);
        fs_msg_begin(&w, buf, sizeof(buf), FS_MSG_PING, 8);
        n = fs_msg_finish(&w);
        ck_assert_int_eq(fs_fdpass_send(s, buf, (size_t)n, NULL, 0, 0), 0);
        n = raw_recv(s, buf, sizeof(buf), 2000);
        ck_assert_uint_eq(msg_type(buf, n), FS_MSG_OK);
        /* a server-only message type is refused with a reason */
        fs_msg_begin(&w, buf, sizeof(buf), FS_MSG_EXITED, 9);
        n = fs_msg_finish(&w);
        ck_assert_int_eq(fs_fdpass_send(s, buf, (size_t)n, NULL, 0, 0), 0);
        n = raw_recv(s, buf, sizeof(buf), 2000);
        ck_assert_uint_eq(msg_type(buf, n), FS_MSG_ERROR);
        /* oversized: refused and the connection cut */
        memset(buf, 0xab, sizeof(buf));
        ck_assert_int_eq(fs_fdpass_send(s, buf, sizeof(buf), &fd, 1, 0), 0);
        n = raw_recv(s, buf, sizeof(buf), 2000);
        ck_assert_uint_eq(msg_type(buf, n), FS_MSG_ERROR);
        ck_assert_int_eq(raw_recv(s, buf, sizeof(buf), 2000), 0);
        close(s);

        /* garbage after AUTH */
        s = raw_connect(d.sock);
        raw_auth(s, d.key);
        ck_assert_int_eq(fs_fdpass_send(s, "garbage!garbage!garbage!", 24, &fd, 1, 0), 0);
        n = raw_recv(s, buf, sizeof(buf), 2000);
        ck_assert_uint_eq(msg_type(buf, n), FS_MSG_ERROR);
        ck_assert_int_eq(raw_recv(s, buf, sizeof(buf), 2000), 0);
        close(s);
        close(fd);

        fs = daemon_connect(&d);
        ck_assert_int_eq(forkserver_ping(fs), 0);
        ck_assert_uint_ge(daemon_stat(fs, "bad_requests"), 4);
        forkserver_close(fs);
        stop_ok();
}
END_TEST

START_TEST(startup_refusals)
{
        struct daemon e = {0};
        int st, p[2];
        char fdarg[16];

        /* key fd never written to: start-up ends within seconds, not a hang */
        daemon_paths(&e);
        ck_assert_int_eq(pipe(p), 0); /* inherited by the daemon: no CLOEXEC */
        snprintf(fdarg, sizeof(fdarg), "%d", p[0]);
        const char *a1[] = {"--socket", e.sock, "--key-fd", fdarg, NULL};
        int64_t t0 = fs_now_ms();
        ck_assert_int_eq(daemon_spawn(&e, a1, &st), -1);
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1);
        ck_assert_int_lt(fs_now_ms() - t0, 8000);
        close(p[0]);
        close(p[1]);
        /* key fd not open */
        const char *a2[] = {"--socket", e.sock, "--key-fd", "77", NULL};
        ck_assert_int_eq(daemon_spawn(&e, a2, &st), -1);
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1);
        /* missing key file */
        const char *a3[] = {"--socket", e.sock, "--key-file", e.key, NULL};
        ck_assert_int_eq(daemon_spawn(&e, a3, &st), -1);
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1);
        /* a socket directory others can write to */
        make_key_file(e.key);
        ck_assert_int_eq(chmod(e.dir, 0777), 0);
        ck_assert_int_eq(daemon_spawn(&e, a3, &st), -1);
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1);
        ck_assert_int_eq(chmod(e.dir, 0700), 0);
        /* usage errors exit 2 */
        const char *a4[] = {"--max-workers", "0", NULL};
        ck_assert_int_eq(daemon_spawn(&e, a4, &st), -1);
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 2);
        /* a stale socket is replaced; a live server's is not */
        int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        strcpy(sa.sun_path, e.sock);
        ck_assert_int_eq(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
        close(s); /* stale: nobody listens */
        ck_assert_int_eq(daemon_spawn(&e, a3, &st), 0);
        d = e;                                           /* stopped by the test below */
        ck_assert_int_eq(daemon_spawn(&e, a3, &st), -1); /* live: refused */
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1);
        stop_ok();
}
END_TEST

START_TEST(key_over_fd)
{
        struct daemon e = {0};
        struct fs_key *k;
        char hex[FS_KEY_HEX_LEN + 1], fdarg[16];
        int p[2], st;

        daemon_paths(&e);
        ck_assert_int_eq(fs_key_generate(&k), 0);
        fs_key_hex(k, hex);
        fs_key_free(k);
        ck_assert_int_eq(pipe(p), 0);
        ck_assert_int_eq(write(p[1], hex, sizeof(hex)), (ssize_t)sizeof(hex));
        close(p[1]);
        snprintf(fdarg, sizeof(fdarg), "%d", p[0]);
        const char *args[] = {"--socket", e.sock, "--key-fd", fdarg, NULL};
        ck_assert_int_eq(daemon_spawn(&e, args, &st), 0);
        close(p[0]);
        /* the key reaches clients the same way */
        int q[2];
        struct forkserver *fs;
        struct forkserver_options o = {.socket_path = e.sock, .key_fd = -1};
        ck_assert_int_eq(pipe2(q, O_CLOEXEC), 0);
        ck_assert_int_eq(write(q[1], hex, sizeof(hex)), (ssize_t)sizeof(hex));
        close(q[1]);
        o.key_fd = q[0];
        ck_assert_int_eq(forkserver_connect(&o, &fs, NULL), 0);
        close(q[0]);
        ck_assert_int_eq(forkserver_ping(fs), 0);
        forkserver_close(fs);
        d = e;
        stop_ok();
}
END_TEST

START_TEST(forkctl_cli)
{
        const char *ctl = env_or_die("FORKCTL");
        char out[4096];
        int st;

        daemon_start(&d, NULL);
        const char *run[] = {ctl,   "--socket",        d.sock, "--key-file", d.key,
                             "run", "--env",           "X=42", "--",         "sh",
                             "-c",  "echo $X; exit 3", NULL};
        st = run_cmd(run, out, sizeof(out));
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 3);
        ck_assert_str_eq(out, "42\n");
        const char *sig[] = {ctl,  "--socket", d.sock, "--key-file",    d.key, "run",
                             "--", "sh",       "-c",   "kill -KILL $$", NULL};
        st = run_cmd(sig, out, sizeof(out));
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 128 + SIGKILL);
        const char *fdmap[] = {ctl,   "--socket", d.sock, "--key-file", d.key,
                               "run", "--fd",     "7=1",  "--cwd",      "/usr",
                               "--",  "sh",       "-c",   "pwd >&7",    NULL};
        st = run_cmd(fdmap, out, sizeof(out));
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        ck_assert_str_eq(out, "/usr\n");
        const char *nf[] = {
            ctl, "--socket", d.sock, "--key-file", d.key, "run", "--", "no-such-command-xyz", NULL};
        st = run_cmd(nf, out, sizeof(out));
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 127);
        const char *ping[] = {ctl, "--socket", d.sock, "--key-file", d.key, "ping", NULL};
        st = run_cmd(ping, out, sizeof(out));
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        ck_assert_ptr_nonnull(strstr(out, "pong"));
        const char *status[] = {ctl, "--socket", d.sock, "--key-file", d.key, "status", NULL};
        st = run_cmd(status, out, sizeof(out));
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        ck_assert_ptr_nonnull(strstr(out, "\"spawns\": 3"));
        ck_assert_int_eq(out[0], '{');
        const char *usage[] = {ctl, "frobnicate", NULL};
        st = run_cmd(usage, out, sizeof(out));
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 2);
        const char *stop[] = {ctl, "--socket", d.sock, "--key-file", d.key, "stop", NULL};
        st = run_cmd(stop, out, sizeof(out));
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        ck_assert_int_eq(waitpid(d.pid, &st, 0), d.pid);
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        d.pid = 0;
        ck_assert_int_eq(access(d.sock, F_OK), -1); /* removed */
        daemon_cleanup_dir(&d);
}
END_TEST

/* Writes text to a fresh pipe and returns its read end (text must fit in the pipe). */
static int pipe_with(const char *text)
{
        int p[2];

        ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
        ck_assert_int_eq(fs_write_all(p[1], text, strlen(text)), 0);
        close(p[1]);
        return p[0];
}

/* Runs python3 with stdin from text; returns its wait status (0: the checks held). */
static int python_check(const char *script, const char *text)
{
        const char *py[] = {"/usr/bin/python3", "-c", script, NULL};
        int in = pipe_with(text), st;
        pid_t pid = fork();

        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                dup2(in, 0);
                execv(py[0], (char *const *)py);
                _exit(127);
        }
        close(in);
        ck_assert_int_eq(waitpid(pid, &st, 0), pid);
        return st;
}

START_TEST(status_json_and_prometheus)
{
        const char *ctl = env_or_die("FORKCTL");
        const char *sleeper[] = {"/bin/sleep", "100", NULL};
        struct forkserver_spawn_args a = {.path = sleeper[0], .argv = sleeper};
        struct forkserver_spawn_args bad = {
            .path = sleeper[0], .argv = sleeper, .profile = "no-such-profile"};
        static char out[65536];
        struct forkserver_proc *w;
        struct forkserver *fs;
        char expect[128];
        int st;

        struct forkserver *more[40];

        daemon_start(&d, NULL);
        fs = daemon_connect(&d);
        ck_assert_int_eq(forkserver_spawn(fs, &a, &w), 0);
        ck_assert_int_eq(forkserver_spawn(fs, &bad, &w), -EINVAL);
        /* regression: 40 connections' entries once overflowed the client's stat limit */
        for (int i = 0; i < 40; i++)
                more[i] = daemon_connect(&d);
        ck_assert_uint_eq(daemon_stat(fs, "connections_listed"), 41);
        for (int i = 0; i < 40; i++)
                forkserver_close(more[i]);
        for (int i = 0; i < 500 && daemon_stat(fs, "connections") != 1; i++)
                usleep(10000);
        const char *status[] = {ctl, "--socket", d.sock, "--key-file", d.key, "status", NULL};
        st = run_cmd(status, out, sizeof(out));
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        /* valid JSON, nested by group; our connection holds the one live worker */
        st =
            python_check("import json, sys\n"
                         "d = json.load(sys.stdin)\n"
                         "assert d['workers'] == 1 and d['spawns'] == 1, d\n"
                         "assert d['spawn_failures'] == 1, d\n"
                         "assert d['spawn_failures_by_cause']['policy'] == 1, d\n"
                         "assert d['spawn_latency_us']['samples'] == 1, d\n"
                         "assert 0 < d['spawn_latency_us']['p50'] <= d['spawn_latency_us']['max']\n"
                         "c = d['connection']\n"
                         "assert sorted(v['workers'] for v in c.values()) == [0, 1], c\n"
                         "assert d['gpu_broker']['enabled'] == 0\n"
                         "assert d['uptime_ms'] >= 0 and d['pending_handshakes'] == 0\n",
                         out);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status JSON:\n%s", out);
        const char *prom[] = {ctl,   "--socket", d.sock,         "--key-file",
                              d.key, "status",   "--prometheus", NULL};
        st = run_cmd(prom, out, sizeof(out));
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        ck_assert_ptr_nonnull(strstr(out, "# TYPE forkserver_spawns_total counter\n"
                                          "forkserver_spawns_total 1\n"));
        ck_assert_ptr_nonnull(strstr(out, "forkserver_spawn_failures_by_cause_total"
                                          "{cause=\"policy\"} 1\n"));
        ck_assert_ptr_nonnull(strstr(out, "forkserver_spawn_latency_seconds{quantile=\"0.5\"} "));
        snprintf(expect, sizeof(expect), ",uid=\"%u\",pid=\"%d\"} 1\n", (unsigned)getuid(),
                 (int)getpid());
        ck_assert_msg(strstr(out, expect), "no %s in\n%s", expect, out);
        /* every sample line is NAME{LABELS} VALUE or NAME VALUE, after its TYPE */
        st = python_check(
            "import re, sys\n"
            "typed = set()\n"
            "for l in sys.stdin.read().splitlines():\n"
            "    if l.startswith('# TYPE '): typed.add(l.split()[2]); continue\n"
            "    if l.startswith('#'): continue\n"
            "    m = re.fullmatch(r'([a-z_]+)(\\{[a-z]+=\"[^\"]*\"(,[a-z]+=\"[^\"]*\")*\\})? "
            "[0-9.]+', l)\n"
            "    assert m and m.group(1) in typed, l\n",
            out);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "prometheus:\n%s", out);
        const char *extra[] = {ctl,   "--socket", d.sock,   "--key-file",
                               d.key, "status",   "--json", NULL};
        st = run_cmd(extra, out, sizeof(out));
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 2);
        forkserver_close(fs);
        stop_ok();
}
END_TEST

/* Starts forkserverd as systemd would: listen_fd as fd 3 (LISTEN_FDS=1, LISTEN_PID its pid),
 * NOTIFY_SOCKET, CREDENTIALS_DIRECTORY when creds; its ready fd is 4. Returns 0 when ready,
 * else -1 with the exit status in *st. */
static int spawn_activated(pid_t *pid, int listen_fd, const char *notify, const char *creds,
                           const char *const *args, int *st)
{
        const char *argv[16] = {
            env_or_die("FORKSERVERD"), "--foreground", "--ready-fd", "4", "--log-level", "warning",
            "--allow-root-workers"};
        char buf[16] = {0};
        size_t n = 7;
        int p[2];
        ssize_t got;

        for (size_t i = 0; args && args[i]; i++)
                argv[n++] = args[i];
        ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
        ck_assert_int_ge(*pid = fork(), 0);
        if (*pid == 0) {
                char me[16];

                dup2(p[1], 4);
                if (listen_fd >= 0)
                        dup2(listen_fd, 3);
                snprintf(me, sizeof(me), "%d", (int)getpid());
                setenv("LISTEN_PID", me, 1);
                setenv("LISTEN_FDS", listen_fd >= 0 ? "1" : "0", 1);
                setenv("NOTIFY_SOCKET", notify, 1);
                if (creds)
                        setenv("CREDENTIALS_DIRECTORY", creds, 1);
                execv(argv[0], (char *const *)argv);
                _exit(127);
        }
        close(p[1]);
        got = read(p[0], buf, sizeof(buf) - 1);
        close(p[0]);
        if (got == 6 && strcmp(buf, "READY\n") == 0)
                return 0;
        ck_assert_int_eq(waitpid(*pid, st, 0), *pid);
        return -1;
}

static int listening_socket(const char *path, int type)
{
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        int s = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);

        ck_assert_int_ge(s, 0);
        strcpy(sa.sun_path, path);
        ck_assert_int_eq(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
        ck_assert_int_eq(listen(s, 128), 0);
        return s;
}

static void notify_expect(int n, const char *what)
{
        char msg[512];
        struct pollfd pf = {.fd = n, .events = POLLIN};
        ssize_t k;

        ck_assert_int_eq(poll(&pf, 1, 5000), 1);
        ck_assert_int_gt(k = recv(n, msg, sizeof(msg) - 1, 0), 0);
        msg[k] = '\0';
        ck_assert_msg(strstr(msg, what), "notification '%s' lacks '%s'", msg, what);
}

START_TEST(systemd_activation_and_notify)
{
        const char *echo[] = {"/bin/echo", "activated", NULL};
        char notify[160], creds[160], cred[200], out[256], expect[256];
        struct sockaddr_un na = {.sun_family = AF_UNIX};
        struct forkserver *fs;
        int ls, n, st;
        pid_t pid;

        daemon_paths(&d);
        make_key_file(d.key);
        snprintf(notify, sizeof(notify), "%s/notify", d.dir);
        ck_assert_int_ge(n = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0), 0);
        strcpy(na.sun_path, notify);
        ck_assert_int_eq(bind(n, (struct sockaddr *)&na, sizeof(na)), 0);

        /* the socket comes from "systemd"; its path is the default key's directory */
        ls = listening_socket(d.sock, SOCK_SEQPACKET);
        ck_assert_int_eq(spawn_activated(&pid, ls, notify, NULL, NULL, &st), 0);
        d.pid = pid;
        snprintf(expect, sizeof(expect), "READY=1\nMAINPID=%d\nSTATUS=listening on %s", (int)pid,
                 d.sock);
        notify_expect(n, expect);
        fs = daemon_connect(&d);
        st = run_capture(fs, echo, out, sizeof(out));
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        ck_assert_str_eq(out, "activated\n");
        forkserver_close(fs);
        kill(pid, SIGTERM);
        notify_expect(n, "STOPPING=1");
        ck_assert_int_eq(waitpid(pid, &st, 0), pid);
        d.pid = 0;
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        ck_assert_int_eq(access(d.sock, F_OK), 0); /* systemd's socket stays */
        /* the same listening socket serves the next instance, as after a restart */
        ck_assert_int_eq(spawn_activated(&pid, ls, notify, NULL, NULL, &st), 0);
        notify_expect(n, "READY=1");
        kill(pid, SIGTERM);
        ck_assert_int_eq(waitpid(pid, &st, 0), pid);
        close(ls);
        unlink(d.sock);

        /* a socket of the wrong type, or one --socket does not name, stops start-up */
        ls = listening_socket(d.sock, SOCK_STREAM);
        ck_assert_int_eq(spawn_activated(&pid, ls, notify, NULL, NULL, &st), -1);
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1);
        close(ls);
        unlink(d.sock);
        ls = listening_socket(d.sock, SOCK_SEQPACKET);
        const char *other[] = {"--socket", "/tmp/elsewhere.sock", NULL};
        ck_assert_int_eq(spawn_activated(&pid, ls, notify, NULL, other, &st), -1);
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1);
        close(ls);
        unlink(d.sock);

        /* the key from $CREDENTIALS_DIRECTORY/forkserver.key, with the usual checks */
        snprintf(creds, sizeof(creds), "%s/creds", d.dir);
        snprintf(cred, sizeof(cred), "%s/forkserver.key", creds);
        ck_assert_int_eq(mkdir(creds, 0700), 0);
        ck_assert_int_eq(link(d.key, cred), 0);
        ck_assert_int_eq(unlink(d.key), 0);
        ls = listening_socket(d.sock, SOCK_SEQPACKET);
        ck_assert_int_eq(chmod(cred, 0640), 0);
        ck_assert_int_eq(spawn_activated(&pid, ls, notify, creds, NULL, &st), -1);
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1);
        ck_assert_int_eq(chmod(cred, 0400), 0);
        ck_assert_int_eq(spawn_activated(&pid, ls, notify, creds, NULL, &st), 0);
        d.pid = pid;
        struct forkserver_options o = {.socket_path = d.sock, .key_file = cred, .key_fd = -1};
        const char *why;
        ck_assert_msg(forkserver_connect(&o, &fs, &why) == 0, "%s", why);
        ck_assert_int_eq(forkserver_ping(fs), 0);
        forkserver_close(fs);
        kill(pid, SIGTERM);
        ck_assert_int_eq(waitpid(pid, &st, 0), pid);
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        d.pid = 0;
        close(ls);
        close(n);
        unlink(cred);
        rmdir(creds);
        unlink(notify);
        daemon_cleanup_dir(&d);
}
END_TEST

START_TEST(forkctl_private_daemon)
{
        const char *ctl = env_or_die("FORKCTL");
        char rt[] = "/tmp/fs-test-rt-XXXXXX", out[256];
        int st;

        /* No server named or reachable: forkctl starts a private one and stops it after. */
        ck_assert_ptr_nonnull(mkdtemp(rt));
        setenv("XDG_RUNTIME_DIR", rt, 1);
        unsetenv("FORKSERVER_SOCKET");
        unsetenv("FORKSERVER_KEY_FILE");
        const char *run[] = {ctl, "run", "--", "sh", "-c", "echo private; exit 5", NULL};
        st = run_cmd(run, out, sizeof(out));
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 5);
        ck_assert_str_eq(out, "private\n");
        ck_assert_int_eq(rmdir(rt), 0); /* nothing left behind */
}
END_TEST

START_TEST(secrets_not_exposed)
{
        char path[64], buf[8192], hex[FS_KEY_HEX_LEN + 1];
        struct forkserver *fs;
        pid_t zyg;
        int fd;
        ssize_t n;

        daemon_start(&d, NULL);
        fd = open(d.key, O_RDONLY | O_CLOEXEC);
        ck_assert_int_eq(read(fd, hex, FS_KEY_HEX_LEN), FS_KEY_HEX_LEN);
        hex[FS_KEY_HEX_LEN] = '\0';
        close(fd);
        fs = daemon_connect(&d);
        zyg = (pid_t)daemon_stat(fs, "zygote_pid");
        pid_t pids[] = {d.pid, zyg};
        for (int i = 0; i < 2; i++) {
                const char *files[] = {"cmdline", "environ"};

                for (int j = 0; j < 2; j++) {
                        snprintf(path, sizeof(path), "/proc/%d/%s", (int)pids[i], files[j]);
                        fd = open(path, O_RDONLY | O_CLOEXEC);
                        if (fd < 0)
                                continue; /* unreadable is fine too */
                        n = read(fd, buf, sizeof(buf) - 1);
                        close(fd);
                        buf[n > 0 ? n : 0] = '\0';
                        for (ssize_t k = 0; k < n; k++)
                                buf[k] = buf[k] ? buf[k] : ' ';
                        ck_assert_ptr_null(strstr(buf, hex));
                }
        }
        /* not dumpable: the proc files of the daemon belong to root, and a same-uid process
         * that is not root cannot read its memory */
        struct stat st;
        snprintf(path, sizeof(path), "/proc/%d/mem", (int)d.pid);
        ck_assert_int_eq(stat(path, &st), 0);
        ck_assert_uint_eq(st.st_uid, 0);
        if (geteuid() != 0) {
                ck_assert_int_eq(open(path, O_RDONLY | O_CLOEXEC), -1);
                ck_assert_int_eq(errno, EACCES);
        } else {
                /* The zygote, where every worker comes from, never held the key; the scan
                 * does find it in the front, which shows it can. */
                struct fs_key *k;

                ck_assert_int_eq(fs_key_load_file(d.key, &k, NULL), 0);
                ck_assert_int_eq(scan_memory(zyg, k->bytes, FS_KEY_LEN), 0);
                ck_assert_int_eq(scan_memory(zyg, (const uint8_t *)hex, FS_KEY_HEX_LEN), 0);
                ck_assert_int_ge(scan_memory(d.pid, k->bytes, FS_KEY_LEN), 1);
                ck_assert_int_eq(scan_memory(d.pid, (const uint8_t *)hex, FS_KEY_HEX_LEN), 0);
                fs_key_free(k);
        }
        forkserver_close(fs);
        stop_ok();
}
END_TEST

static Suite *suite(void)
{
        Suite *s = suite_create("daemon");
        TCase *tc = tcase_create("integration");

        /* Tests that signal through pidfds from the test process itself; tagged so that a
         * valgrind run (3.19 lacks pidfd_send_signal) can leave them out. */
        TCase *tp = tcase_create("pidfd-signal");

        tcase_set_tags(tp, "pidfd");
        tcase_set_timeout(tp, 120);
        tcase_add_test(tp, kill_and_exec_failures);
        tcase_add_test(tp, connection_close_ends_workers);
        tcase_add_test(tp, max_workers_refused);
        suite_add_tcase(s, tp);

        tcase_set_timeout(tc, 120);
        tcase_add_test(tc, stdio_and_exit_codes);
        tcase_add_test(tc, fds_exactly_as_asked);
        tcase_add_test(tc, wrong_key_refused_next_served);
        tcase_add_test(tc, thousand_spawns_no_leak);
        tcase_add_test(tc, wait_any_in_exit_order);
        tcase_add_test(tc, sigterm_ends_everything);
        tcase_add_test(tc, handshake_deadline_and_pending_cap);
        tcase_add_test(tc, hostile_messages);
        tcase_add_test(tc, startup_refusals);
        tcase_add_test(tc, key_over_fd);
        tcase_add_test(tc, forkctl_cli);
        tcase_add_test(tc, forkctl_private_daemon);
        tcase_add_test(tc, status_json_and_prometheus);
        tcase_add_test(tc, systemd_activation_and_notify);
        tcase_add_test(tc, secrets_not_exposed);
        suite_add_tcase(s, tc);
        return s;
}

int main(void)
{
        return run_suite(suite());
}
