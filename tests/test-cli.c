/* forkctl and forkserverd as a user meets them: --version, per-command --help, --clear-env,
 * exit statuses, a missing socket, the private daemon; and the set-up step a failed spawn
 * reports through libforkserver. Against the real daemon (tests/daemon.h). */
#include <check.h>

#include "daemon.h"

static struct daemon d;

/* Runs argv with stdout into out and stderr into err; returns the wait status. */
static int run2(const char *const *argv, char *out, size_t outcap, char *err, size_t errcap)
{
        int po[2], pe[2], st;
        pid_t pid;

        ck_assert_int_eq(pipe2(po, O_CLOEXEC), 0);
        ck_assert_int_eq(pipe2(pe, O_CLOEXEC), 0);
        ck_assert_int_ge(pid = fork(), 0);
        if (pid == 0) {
                dup2(po[1], 1);
                dup2(pe[1], 2);
                execv(argv[0], (char *const *)argv);
                _exit(127);
        }
        close(po[1]);
        close(pe[1]);
        read_all_close(po[0], out, outcap); /* small outputs: no deadlock on stderr */
        read_all_close(pe[0], err, errcap);
        ck_assert_int_eq(waitpid(pid, &st, 0), pid);
        return st;
}

static int exit_code(int st)
{
        ck_assert_msg(WIFEXITED(st), "killed by signal %d", WTERMSIG(st));
        return WEXITSTATUS(st);
}

/* forkctl --socket S --key-file K ARGS... (NULL-terminated) */
#define CTL(...)                                                                                   \
        ((const char *const[]){env_or_die("FORKCTL"), "--socket", d.sock, "--key-file", d.key,     \
                               __VA_ARGS__, NULL})

static void stop_daemon(void)
{
        int st = daemon_stop(&d);

        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

START_TEST(versions)
{
        const char *ctl[] = {env_or_die("FORKCTL"), "--version", NULL};
        const char *fsd[] = {env_or_die("FORKSERVERD"), "--version", NULL};
        static char out[65536];
        char err[256], want[128];

        ck_assert_int_eq(exit_code(run2(ctl, out, sizeof(out), err, sizeof(err))), 0);
        snprintf(want, sizeof(want), "forkctl %s (libforkserver %s)\n", FORKSERVER_VERSION,
                 FORKSERVER_VERSION);
        ck_assert_str_eq(out, want);
        ck_assert_int_eq(exit_code(run2(fsd, out, sizeof(out), err, sizeof(err))), 0);
        ck_assert_str_eq(out, "forkserverd " FORKSERVER_VERSION "\n");

        /* the running server's version: a string in JSON, a label of build_info */
        daemon_start(&d, NULL);
        ck_assert_int_eq(exit_code(run2(CTL("status"), out, sizeof(out), err, sizeof(err))), 0);
        snprintf(want, sizeof(want), "\n  \"version\": \"%s\",\n", FORKSERVER_VERSION);
        ck_assert_msg(strstr(out, want), "no %s in\n%s", want, out);
        ck_assert_int_eq(
            exit_code(run2(CTL("status", "--prometheus"), out, sizeof(out), err, sizeof(err))), 0);
        ck_assert_msg(strstr(out, "# TYPE forkserver_build_info gauge\n"
                                  "forkserver_build_info{version=\"" FORKSERVER_VERSION "\"} 1\n"),
                      "no build_info in\n%s", out);
        stop_daemon();
}
END_TEST

START_TEST(per_command_help)
{
        static const char *const cmds[] = {"keygen", "run", "ping", "status", "stop"};
        const char *ctl = env_or_die("FORKCTL");
        char out[8192], err[512], want[64], *at;

        /* no server anywhere: help never needs one */
        setenv("XDG_RUNTIME_DIR", "/nonexistent", 1);
        for (size_t i = 0; i < FS_ARRAY_SIZE(cmds); i++) {
                const char *argv[] = {ctl, cmds[i], "--help", NULL};
                const char *argv_h[] = {ctl, cmds[i], "-h", NULL};

                ck_assert_int_eq(exit_code(run2(argv, out, sizeof(out), err, sizeof(err))), 0);
                snprintf(want, sizeof(want), " %s", cmds[i]);
                /* the command's own text: its name on the first line, not the global one */
                ck_assert_msg(strncmp(out, "Usage: forkctl", 14) == 0 && (at = strstr(out, want)) &&
                                  at < strchr(out, '\n') &&
                                  !strstr(out, "keygen [-o FILE]\n       forkctl"),
                              "%s --help:\n%s", cmds[i], out);
                ck_assert_str_eq(err, "");
                ck_assert_int_eq(exit_code(run2(argv_h, out, sizeof(out), err, sizeof(err))), 0);
        }
        const char *run[] = {ctl, "run", "--help", NULL};

        run2(run, out, sizeof(out), err, sizeof(err));
        ck_assert_ptr_nonnull(strstr(out, "--clear-env"));
        ck_assert_ptr_nonnull(strstr(out, "--no-private"));
        ck_assert_ptr_nonnull(strstr(out, "Exit status:"));
}
END_TEST

START_TEST(clear_env)
{
        char out[8192], err[512];

        setenv("FS_TEST_SECRET", "hunter2", 1);
        daemon_start(&d, NULL);
        ck_assert_int_eq(exit_code(run2(CTL("run", "--clear-env", "--env", "A=1", "--env", "B=2",
                                            "--", "/usr/bin/env"),
                                        out, sizeof(out), err, sizeof(err))),
                         0);
        ck_assert_str_eq(out, "A=1\nB=2\n"); /* exactly --env, nothing of forkctl's */
        ck_assert_int_eq(exit_code(run2(CTL("run", "--clear-env", "--", "/usr/bin/env"), out,
                                        sizeof(out), err, sizeof(err))),
                         0);
        ck_assert_str_eq(out, "");
        /* without it, forkctl's environment, with --env replacing */
        ck_assert_int_eq(
            exit_code(run2(CTL("run", "--env", "FS_TEST_SECRET=x", "--", "/usr/bin/env"), out,
                           sizeof(out), err, sizeof(err))),
            0);
        ck_assert_ptr_nonnull(strstr(out, "FS_TEST_SECRET=x\n"));
        ck_assert_ptr_null(strstr(out, "hunter2"));
        ck_assert_ptr_nonnull(strstr(out, "PATH="));
        stop_daemon();
}
END_TEST

START_TEST(run_exit_statuses)
{
        char out[4096], err[1024], noexec[160], script[160], dir[] = "/tmp/fs-cli-XXXXXX";
        int fd;

        daemon_start(&d, NULL);
        /* not in the daemon's own directory, which no worker reaches */
        ck_assert_ptr_nonnull(mkdtemp(dir));
        snprintf(noexec, sizeof(noexec), "%s/noexec", dir);
        ck_assert_int_ge(fd = open(noexec, O_WRONLY | O_CREAT | O_CLOEXEC, 0644), 0);
        close(fd);
        snprintf(script, sizeof(script), "%s/script", dir);
        ck_assert_int_ge(fd = open(script, O_WRONLY | O_CREAT | O_CLOEXEC, 0755), 0);
        ck_assert_int_eq(fs_write_all(fd, "#!/nonexistent/interpreter\n", 27), 0);
        close(fd);

        /* the worker's own status, and 128+N */
        ck_assert_int_eq(exit_code(run2(CTL("run", "--", "sh", "-c", "exit 7"), out, sizeof(out),
                                        err, sizeof(err))),
                         7);
        ck_assert_int_eq(exit_code(run2(CTL("run", "--", "sh", "-c", "kill -TERM $$"), out,
                                        sizeof(out), err, sizeof(err))),
                         128 + SIGTERM);
        /* 125: forkctl's own failures, the worker's set-up before exec included */
        ck_assert_int_eq(exit_code(run2(CTL("run", "--cwd", "/nonexistent", "--", "true"), out,
                                        sizeof(out), err, sizeof(err))),
                         125);
        ck_assert_msg(strstr(err, "chdir"), "stderr: %s", err);
        ck_assert_int_eq(exit_code(run2(CTL("run", "--bogus", "--", "true"), out, sizeof(out), err,
                                        sizeof(err))),
                         125);
        ck_assert_int_eq(exit_code(run2(CTL("run", "--fd", "5=999", "--", "true"), out, sizeof(out),
                                        err, sizeof(err))),
                         125);
        ck_assert_int_eq(exit_code(run2(CTL("run", "--profile", "no-such-profile", "--", "true"),
                                        out, sizeof(out), err, sizeof(err))),
                         125);
        ck_assert_int_eq(exit_code(run2(CTL("run"), out, sizeof(out), err, sizeof(err))), 125);
        const char *global_bad[] = {
            env_or_die("FORKCTL"), "--key-fd", "x", "run", "--", "true", NULL};

        ck_assert_int_eq(exit_code(run2(global_bad, out, sizeof(out), err, sizeof(err))), 125);
        const char *global_bad_ping[] = {env_or_die("FORKCTL"), "--key-fd", "x", "ping", NULL};

        ck_assert_int_eq(exit_code(run2(global_bad_ping, out, sizeof(out), err, sizeof(err))), 2);
        /* 126 and 127 keep env(1)'s meaning: found but not runnable, not found */
        ck_assert_int_eq(
            exit_code(run2(CTL("run", "--", noexec), out, sizeof(out), err, sizeof(err))), 126);
        ck_assert_int_eq(exit_code(run2(CTL("run", "--", "no-such-command-xyz"), out, sizeof(out),
                                        err, sizeof(err))),
                         127);
        ck_assert_int_eq(
            exit_code(run2(CTL("run", "--", script), out, sizeof(out), err, sizeof(err))),
            127); /* execve's ENOENT: the interpreter is missing, as env says */
        unlink(noexec);
        unlink(script);
        rmdir(dir);
        stop_daemon();
}
END_TEST

START_TEST(spawn_reports_its_step)
{
        const char *argv[] = {"/bin/true", NULL};
        const char *missing[] = {"/nonexistent/prog", NULL};
        struct forkserver_spawn_args a = {.path = argv[0], .argv = argv, .cwd = "/nonexistent"};
        struct forkserver_spawn_args b = {.path = missing[0], .argv = missing};
        struct forkserver_spawn_args ok = {.path = argv[0], .argv = argv};
        struct forkserver_spawn_args res = {.path = argv[0], .argv = argv};
        struct forkserver_proc *w;
        struct forkserver *fs;
        int st;

        daemon_start(&d, NULL);
        fs = daemon_connect(&d);
        ck_assert_int_eq(forkserver_spawn(fs, &a, &w), -ENOENT);
        ck_assert_int_eq(forkserver_error_step(fs), FORKSERVER_STEP_CHDIR);
        ck_assert_int_eq(forkserver_spawn(fs, &b, &w), -ENOENT);
        ck_assert_int_eq(forkserver_error_step(fs), FORKSERVER_STEP_EXEC);
        ck_assert_int_eq(forkserver_spawn(fs, &ok, &w), 0);
        ck_assert_int_eq(forkserver_error_step(fs), 0);
        ck_assert_int_eq(forkserver_wait(fs, w, &st), 0);
        forkserver_proc_free(fs, w);
        res.reserved[0] = 1; /* a member of some later version */
        ck_assert_int_eq(forkserver_spawn(fs, &res, &w), -EINVAL);
        ck_assert_int_eq(forkserver_error_step(fs), 0);
        ck_assert_int_eq(forkserver_ping(fs), 0); /* refused here, the connection lives */
        forkserver_close(fs);
        stop_daemon();
}
END_TEST

START_TEST(missing_socket_named)
{
        char sock[160], out[1024], err[1024];

        daemon_paths(&d);
        snprintf(sock, sizeof(sock), "%s/none.sock", d.dir);
        const char *ping[] = {env_or_die("FORKCTL"), "--socket", sock, "ping", NULL};

        /* neither socket nor key there: the socket is what is missing */
        ck_assert_int_eq(exit_code(run2(ping, out, sizeof(out), err, sizeof(err))), 1);
        ck_assert_msg(strstr(err, "no server") && strstr(err, sock) && !strstr(err, "key"),
                      "stderr: %s", err);
        const char *run[] = {env_or_die("FORKCTL"), "--socket", sock, "run", "--", "true", NULL};

        ck_assert_int_eq(exit_code(run2(run, out, sizeof(out), err, sizeof(err))), 125);
        ck_assert_msg(strstr(err, "no server") && !strstr(err, "key"), "stderr: %s", err);
        daemon_cleanup_dir(&d);
}
END_TEST

/* Entries of dir other than . and .. */
static int entries(const char *dir)
{
        int n = fs_count_dir(dir);

        ck_assert_int_ge(n, 0);
        return n;
}

START_TEST(private_daemon_said_and_refused)
{
        const char *ctl = env_or_die("FORKCTL");
        char rt[] = "/tmp/fs-test-rt-XXXXXX", out[256], err[1024];

        ck_assert_ptr_nonnull(mkdtemp(rt));
        setenv("XDG_RUNTIME_DIR", rt, 1);
        unsetenv("FORKSERVER_SOCKET");
        unsetenv("FORKSERVER_KEY_FILE");
        const char *run[] = {ctl, "run", "--", "sh", "-c", "echo private", NULL};

        ck_assert_int_eq(exit_code(run2(run, out, sizeof(out), err, sizeof(err))), 0);
        ck_assert_str_eq(out, "private\n");
        ck_assert_msg(strstr(err, "started a private one") && strstr(err, rt), "stderr: %s", err);
        ck_assert_int_eq(entries(rt), 0); /* stopped and removed */

        const char *refuse[] = {ctl, "run", "--no-private", "--", "sh", "-c", "echo ran", NULL};

        ck_assert_int_eq(exit_code(run2(refuse, out, sizeof(out), err, sizeof(err))), 125);
        ck_assert_str_eq(out, "");
        ck_assert_msg(strstr(err, "no server") && !strstr(err, "private one"), "stderr: %s", err);
        ck_assert_int_eq(entries(rt), 0); /* no private directory was made */
        ck_assert_int_eq(rmdir(rt), 0);
}
END_TEST

/* Runs argv with text on its stdin and its output discarded; returns the wait status. */
static int run_stdin(const char *const *argv, const char *text)
{
        int p[2], st;
        pid_t pid;

        ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
        ck_assert_int_ge(pid = fork(), 0);
        if (pid == 0) {
                int null = open("/dev/null", O_WRONLY);

                dup2(p[0], 0);
                dup2(null, 1);
                execv(argv[0], (char *const *)argv);
                _exit(127);
        }
        close(p[0]);
        ck_assert_int_eq(fs_write_all(p[1], text, strlen(text)), 0);
        close(p[1]);
        ck_assert_int_eq(waitpid(pid, &st, 0), pid);
        return st;
}

/* What promtool's lint refuses, checked here too where it is not installed: a quantile
 * label outside a summary, a family named in ms or us. */
static void prometheus_lint(char *text)
{
        char typed[64][96], types[64][16];
        size_t n = 0;

        for (char *save, *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
                char name[96];

                if (sscanf(l, "# TYPE %95s %15s", typed[n], types[n]) == 2) {
                        ck_assert_msg(!fs_endswith(typed[n], "_ms") &&
                                          !fs_endswith(typed[n], "_us"),
                                      "%s: not a base unit", typed[n]);
                        ck_assert_uint_lt(++n, 64);
                        continue;
                }
                if (l[0] == '#' || !strstr(l, "quantile=") || sscanf(l, "%95[a-z_]", name) != 1)
                        continue;
                ck_assert_msg(n > 0 && strcmp(typed[n - 1], name) == 0 &&
                                  strcmp(types[n - 1], "summary") == 0,
                              "quantile label outside a summary: %s", l);
        }
}

START_TEST(prometheus_valid_and_output_atomic)
{
        const char *promtool = getenv("PROMTOOL");
        const char *echo[] = {"/bin/true", NULL};
        struct forkserver_spawn_args a = {.path = echo[0], .argv = echo};
        static char out[65536], file[65536];
        char err[512], path[160], tmpl[200];
        struct forkserver_proc *w;
        struct forkserver *fs;
        struct stat st;
        int fd, status;

        daemon_start(&d, NULL);
        fs = daemon_connect(&d);
        ck_assert_int_eq(forkserver_spawn(fs, &a, &w), 0); /* latency quantiles to print */
        ck_assert_int_eq(forkserver_wait(fs, w, &status), 0);
        forkserver_close(fs);
        ck_assert_int_eq(
            exit_code(run2(CTL("status", "--prometheus"), out, sizeof(out), err, sizeof(err))), 0);
        ck_assert_ptr_nonnull(strstr(out, "# TYPE forkserver_spawn_latency_seconds summary\n"));
        ck_assert_ptr_nonnull(strstr(out, "# TYPE forkserver_uptime_seconds gauge\n"));
        if (promtool && *promtool) {
                const char *check[] = {promtool, "check", "metrics", NULL};

                ck_assert_msg(exit_code(run_stdin(check, out)) == 0,
                              "promtool check metrics refused:\n%s", out);
        }
        prometheus_lint(out);

        /* --output: the whole text lands in FILE, mode 644, with no temporary file left */
        snprintf(path, sizeof(path), "%s/forkserver.prom", d.dir);
        ck_assert_int_ge(fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600), 0);
        ck_assert_int_eq(fs_write_all(fd, "old\n", 4), 0);
        close(fd);
        ck_assert_int_eq(exit_code(run2(CTL("status", "--prometheus", "--output", path), out,
                                        sizeof(out), err, sizeof(err))),
                         0);
        ck_assert_str_eq(out, "");
        ck_assert_int_eq(stat(path, &st), 0);
        ck_assert_int_eq(st.st_mode & 0777, 0644);
        ck_assert_int_ge(fd = open(path, O_RDONLY | O_CLOEXEC), 0);
        read_all_close(fd, file, sizeof(file));
        ck_assert_msg(strncmp(file, "# HELP forkserver_", 18) == 0 &&
                          strstr(file, "forkserver_build_info{version="),
                      "%s", file);
        ck_assert_int_eq(entries(d.dir), 3); /* key, socket, forkserver.prom */
        /* a failure leaves FILE as it was: here the directory is gone */
        snprintf(tmpl, sizeof(tmpl), "%s/none/forkserver.prom", d.dir);
        ck_assert_int_eq(
            exit_code(run2(CTL("status", "--output", tmpl), out, sizeof(out), err, sizeof(err))),
            1);
        unlink(path);
        stop_daemon();
}
END_TEST

/* Replaces the daemon's key file (a fresh key, renamed into place); returns its path. */
static void new_key_file(const char *tmp)
{
        make_key_file(tmp);
        ck_assert_int_eq(rename(tmp, d.key), 0);
}

/* Waits for key_reloads to reach want (SIGHUP is handled asynchronously). */
static void wait_reloads(struct forkserver *fs, uint64_t want)
{
        for (int i = 0; i < 500 && daemon_stat(fs, "key_reloads") != want; i++)
                usleep(10000);
        ck_assert_uint_eq(daemon_stat(fs, "key_reloads"), want);
}

START_TEST(sighup_rereads_key)
{
        const char *sleeper[] = {"/bin/sleep", "100", NULL};
        struct forkserver_spawn_args a = {.path = sleeper[0], .argv = sleeper};
        static const char hex[] =
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n";
        char old_key[160], good_key[160], tmp[160], log[160], text[8192];
        struct forkserver *before, *after, *fs;
        struct forkserver_options o = {.socket_path = NULL};
        struct forkserver_proc *w;
        const char *why = NULL;
        int fd, st;

        daemon_paths(&d);
        snprintf(log, sizeof(log), "%s/log", d.dir);
        d.log_path = log;
        make_key_file(d.key);
        const char *args[] = {"--socket", d.sock, "--key-file", d.key, "--log-level", "info", NULL};

        ck_assert_int_eq(daemon_spawn(&d, args, NULL), 0);
        before = daemon_connect(&d);
        ck_assert_int_eq(forkserver_spawn(before, &a, &w), 0);
        ck_assert_uint_eq(daemon_stat(before, "key_reloads"), 0);
        snprintf(old_key, sizeof(old_key), "%s/old-key", d.dir);
        ck_assert_int_eq(link(d.key, old_key), 0);

        /* a new key: new connections need it, the running one and its worker go on */
        snprintf(tmp, sizeof(tmp), "%s/key.new", d.dir);
        new_key_file(tmp);
        ck_assert_int_eq(kill(d.pid, SIGHUP), 0);
        wait_reloads(before, 1);
        ck_assert_uint_lt(daemon_stat(before, "key_age_ms"), 5000);
        after = daemon_connect(&d); /* with the new key file */
        ck_assert_int_eq(forkserver_ping(after), 0);
        o.socket_path = d.sock;
        o.key_file = old_key;
        ck_assert_int_eq(forkserver_connect(&o, &fs, &why), -EACCES);
        ck_assert_int_eq(forkserver_poll(before, w, &st), 0); /* still running */
        ck_assert_int_eq(forkserver_ping(before), 0);

        /* a bad new key (group-readable) is refused, and the current one kept */
        snprintf(good_key, sizeof(good_key), "%s/good-key", d.dir);
        ck_assert_int_eq(link(d.key, good_key), 0);
        ck_assert_int_ge(fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644), 0);
        ck_assert_int_eq(fchmod(fd, 0644), 0);
        ck_assert_int_eq(fs_write_all(fd, hex, sizeof(hex) - 1), 0);
        close(fd);
        ck_assert_int_eq(rename(tmp, d.key), 0);
        ck_assert_int_eq(kill(d.pid, SIGHUP), 0);
        for (int i = 0; i < 200; i++) { /* until the refusal is logged */
                ck_assert_int_ge(fd = open(log, O_RDONLY | O_CLOEXEC), 0);
                read_all_close(fd, text, sizeof(text));
                if (strstr(text, "keeping the old key"))
                        break;
                usleep(10000);
        }
        ck_assert_msg(strstr(text, "keeping the old key"), "log:\n%s", text);
        ck_assert_uint_eq(daemon_stat(after, "key_reloads"), 1);
        o.key_file = good_key;
        ck_assert_int_eq(forkserver_connect(&o, &fs, &why), 0);
        forkserver_close(fs);

        ck_assert_int_eq(forkserver_kill(before, w, SIGKILL), 0);
        ck_assert_int_eq(forkserver_wait(before, w, &st), 0);
        forkserver_close(before);
        forkserver_close(after);
        unlink(old_key);
        unlink(good_key);
        unlink(log);
        stop_daemon();
}
END_TEST

static Suite *suite(void)
{
        Suite *s = suite_create("cli");
        TCase *tc = tcase_create("cli");

        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, versions);
        tcase_add_test(tc, per_command_help);
        tcase_add_test(tc, clear_env);
        tcase_add_test(tc, run_exit_statuses);
        tcase_add_test(tc, spawn_reports_its_step);
        tcase_add_test(tc, missing_socket_named);
        tcase_add_test(tc, private_daemon_said_and_refused);
        tcase_add_test(tc, prometheus_valid_and_output_atomic);
        TCase *tp = tcase_create("pidfd-signal");

        tcase_set_tags(tp, "pidfd"); /* forkserver_kill: valgrind 3.19 lacks pidfd_send_signal */
        tcase_set_timeout(tp, 60);
        tcase_add_test(tp, sighup_rereads_key);
        suite_add_tcase(s, tp);
        suite_add_tcase(s, tc);
        return s;
}

int main(void)
{
        return run_suite(suite());
}
