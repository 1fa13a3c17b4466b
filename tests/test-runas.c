/* Workers run as their clients, with no capability (issue 14, items 4 and 7). As a normal user
 * only the "no capability" part runs: acting as other uids needs root. */
#include <ctype.h>

#include "daemon.h"

#define DAEMON_UID 61240    /* --user: a uid with no name, so gid 61240 and no other group */
#define CAPS_SWITCH 0xc0ull /* CAP_SETUID | CAP_SETGID */

static struct daemon d;

struct client {
        uid_t uid;
        gid_t gid;
        size_t ngroups;
        gid_t groups[4];
};

/* Two tenants; their supplementary groups differ from their gids and from each other. */
static const struct client alice = {65534, 65534, 3, {4242, 4243, 65534}};
static const struct client bob = {65533, 65533, 1, {4244}};

/* The value of a "Name:" line of /proc/PID/status, or NULL. */
static const char *status_line(pid_t pid, const char *name, char *buf, size_t cap)
{
        char path[64], line[512];
        size_t n = strlen(name);
        const char *r = NULL;
        FILE *f;

        snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
        if (!(f = fopen(path, "re")))
                return NULL;
        while (!r && fgets(line, sizeof(line), f))
                if (strncmp(line, name, n) == 0 && line[n] == ':') {
                        const char *v = line + n + 1;

                        while (*v == '\t' || *v == ' ')
                                v++;
                        snprintf(buf, cap, "%s", v);
                        buf[strcspn(buf, "\n")] = '\0';
                        r = buf;
                }
        fclose(f);
        return r;
}

static unsigned long long status_hex(pid_t pid, const char *name)
{
        char buf[64];

        ck_assert_msg(status_line(pid, name, buf, sizeof(buf)), "pid %d: no %s", (int)pid, name);
        return strtoull(buf, NULL, 16);
}

/* "Uid:" and "Gid:" lines: all four ids equal to want. */
static void assert_ids(pid_t pid, const char *name, unsigned want)
{
        char buf[128], expect[128];

        snprintf(expect, sizeof(expect), "%u\t%u\t%u\t%u", want, want, want, want);
        ck_assert_ptr_nonnull(status_line(pid, name, buf, sizeof(buf)));
        ck_assert_msg(strcmp(buf, expect) == 0, "pid %d %s: '%s', want '%s'", (int)pid, name, buf,
                      expect);
}

static int cmp_gid(const void *a, const void *b)
{
        gid_t x = *(const gid_t *)a, y = *(const gid_t *)b;

        return (x > y) - (x < y);
}

/* "Groups:" equal to want as a set. */
static void assert_groups(pid_t pid, const gid_t *want, size_t n)
{
        gid_t got[64], exp[64];
        size_t ngot = 0;
        char buf[512], *p, *end;

        ck_assert_ptr_nonnull(status_line(pid, "Groups", buf, sizeof(buf)));
        for (p = buf; ngot < 64; p = end) {
                unsigned long v = strtoul(p, &end, 10);

                if (end == p)
                        break;
                got[ngot++] = (gid_t)v;
        }
        memcpy(exp, want, n * sizeof(gid_t));
        qsort(got, ngot, sizeof(gid_t), cmp_gid);
        qsort(exp, n, sizeof(gid_t), cmp_gid);
        ck_assert_msg(ngot == n && memcmp(got, exp, n * sizeof(gid_t)) == 0,
                      "pid %d: Groups '%s', want %zu groups", (int)pid, buf, n);
}

/* No capability in any set, no_new_privs; the bounding set empty where the daemon could
 * empty it (it had CAP_SETPCAP: root), else as ours. */
static void assert_no_caps(pid_t pid)
{
        unsigned long long bnd = status_hex(getpid(), "CapBnd");

        ck_assert_uint_eq(status_hex(pid, "CapEff"), 0);
        ck_assert_uint_eq(status_hex(pid, "CapPrm"), 0);
        ck_assert_uint_eq(status_hex(pid, "CapInh"), 0);
        ck_assert_uint_eq(status_hex(pid, "CapAmb"), 0);
        ck_assert_uint_eq(status_hex(pid, "CapBnd"), geteuid() == 0 ? 0 : bnd);
        ck_assert_uint_eq(status_hex(pid, "NoNewPrivs"), 1);
}

/* The front holds nothing; each zygote CAP_SETUID and CAP_SETGID when it switches uids,
 * nothing otherwise. */
static void assert_daemon_caps(pid_t front, unsigned long long zygote_caps)
{
        pid_t kids[64];
        size_t n = children_of(front, false, kids, 64), zygotes = 0;

        ck_assert_uint_eq(status_hex(front, "CapEff"), 0);
        ck_assert_uint_eq(status_hex(front, "CapPrm"), 0);
        ck_assert_uint_eq(status_hex(front, "CapInh"), 0);
        for (size_t i = 0; i < n; i++) {
                char comm[64];

                if (!status_line(kids[i], "Name", comm, sizeof(comm)) ||
                    strncmp(comm, "forkserverd-zy", 14) != 0)
                        continue;
                zygotes++;
                ck_assert_uint_eq(status_hex(kids[i], "CapEff"), zygote_caps);
                ck_assert_uint_eq(status_hex(kids[i], "CapPrm"), zygote_caps);
                ck_assert_uint_eq(status_hex(kids[i], "CapInh"), 0);
                ck_assert_uint_eq(status_hex(kids[i], "CapAmb"), 0);
        }
        ck_assert_uint_ge(zygotes, 1);
}

/* root's copy of the key: the daemon's file belongs to --user, and a client loads only its
 * own (the clients load it before they drop root) */
static char root_key[160];

/* The directory for a daemon run with --user DAEMON_UID: key and directory are its. */
static void user_paths(void)
{
        char hex[FS_KEY_HEX_LEN + 1];
        int fd;

        daemon_paths(&d);
        snprintf(root_key, sizeof(root_key), "%s/root-key", d.dir);
        make_key_file(root_key);
        ck_assert_int_ge(fd = open(root_key, O_RDONLY | O_CLOEXEC), 0);
        ck_assert_int_eq(read(fd, hex, sizeof(hex)), sizeof(hex));
        close(fd);
        ck_assert_int_ge(fd = open(d.key, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600), 0);
        ck_assert_int_eq(fs_write_all(fd, hex, sizeof(hex)), 0);
        close(fd);
        ck_assert_int_eq(chown(d.dir, DAEMON_UID, DAEMON_UID), 0);
        ck_assert_int_eq(chown(d.key, DAEMON_UID, DAEMON_UID), 0);
        ck_assert_int_eq(chmod(d.dir, 0711), 0); /* the clients reach the socket */
}

static struct forkserver *connect_root(int *ret)
{
        struct forkserver_options o = {
            .socket_path = d.sock, .key_file = root_key, .key_fd = -1, .server_uid = DAEMON_UID};
        struct forkserver *fs = NULL;
        const char *why = "";

        *ret = forkserver_connect(&o, &fs, &why);
        return fs;
}

static void stop_user_daemon(void)
{
        unlink(root_key);
        ck_assert_int_eq(daemon_stop(&d), 0);
}

static void wait_gone(pid_t pid)
{
        char state;
        pid_t ppid;

        for (int i = 0; i < 500 && proc_stat(pid, &state, &ppid) == 0; i++)
                usleep(10000);
        ck_assert_msg(proc_stat(pid, &state, &ppid) < 0, "worker %d still there", (int)pid);
}

/* Exec mode and fork mode each: a worker that waits for its end. */
static const char *const sleep_argv[] = {"/bin/sleep", "60", NULL};
static const struct forkserver_spawn_args exec_sleep = {.path = "/bin/sleep", .argv = sleep_argv};
static const struct forkserver_spawn_args fork_sleep = {.entry = "libjobs:job_sleep"};

/* Workers of the test's own uid: no capability, as root or not. */
START_TEST(own_workers_have_no_caps)
{
        const char *const extra[] = {"--preload", env_or_die("LIBJOBS"), NULL};
        const struct forkserver_spawn_args *kinds[] = {&exec_sleep, &fork_sleep};
        struct forkserver *fs;
        int st;

        daemon_start(&d, extra);
        fs = daemon_connect(&d);
        /* root: --allow-root-workers (tests/daemon.h), so root keeps the zygotes' two */
        ck_assert_uint_eq(daemon_stat(fs, "workers_run_as"), geteuid() == 0 ? 2 : 1);
        assert_daemon_caps(d.pid, geteuid() == 0 ? CAPS_SWITCH : 0);
        /* forkctl status says so in a word */
        const char *const ctl[] = {
            env_or_die("FORKCTL"), "--socket", d.sock, "--key-file", d.key, "status", NULL};
        char out[8192];

        ck_assert_int_eq(run_cmd(ctl, out, sizeof(out)), 0);
        ck_assert_msg(strstr(out, geteuid() == 0 ? "\"workers_run_as\": \"client\""
                                                 : "\"workers_run_as\": \"daemon\""),
                      "%s", out);
        for (size_t k = 0; k < 2; k++) {
                struct forkserver_proc *w;
                pid_t pid;

                ck_assert_msg(forkserver_spawn(fs, kinds[k], &w) == 0, "spawn: %s",
                              forkserver_error(fs));
                pid = forkserver_proc_pid(w);
                assert_ids(pid, "Uid", (unsigned)geteuid());
                assert_no_caps(pid);
                ck_assert_int_eq(forkserver_kill(fs, w, SIGKILL), 0);
                ck_assert_int_eq(forkserver_wait(fs, w, &st), 0);
                forkserver_proc_free(fs, w);
        }
        forkserver_close(fs);
        ck_assert_int_eq(daemon_stop(&d), 0);
}
END_TEST

/* A client of c's uid, gid and groups in a child: spawns a worker of each kind, writes their
 * pids into report, and closes when done is closed. Its exit status says what failed. */
static pid_t client_as(const struct client *c, int report, int done, int done_w)
{
        pid_t pid = fork();

        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                struct forkserver_options o = {
                    .socket_path = d.sock, .key_fd = -1, .server_uid = DAEMON_UID};
                const struct forkserver_spawn_args *kinds[] = {&exec_sleep, &fork_sleep};
                struct forkserver_key *key;
                struct forkserver *fs;
                const char *why = "";
                char c1;

                close(done_w); /* EOF on done once the test closes its end */
                /* loaded before the drop, from root's copy */
                if (forkserver_key_load_file(root_key, &key, NULL) < 0)
                        _exit(100);
                o.key = key;
                if (setgroups(c->ngroups, c->groups) < 0 || setresgid(c->gid, c->gid, c->gid) < 0 ||
                    setresuid(c->uid, c->uid, c->uid) < 0)
                        _exit(101);
                if (forkserver_connect(&o, &fs, &why) < 0)
                        _exit(102);
                for (size_t k = 0; k < 2; k++) {
                        struct forkserver_proc *w;
                        pid_t wp;

                        if (forkserver_spawn(fs, kinds[k], &w) < 0) {
                                fprintf(stderr, "uid %u: spawn: %s\n", (unsigned)c->uid,
                                        forkserver_error(fs));
                                _exit(103);
                        }
                        wp = forkserver_proc_pid(w);
                        if (write(report, &wp, sizeof(wp)) != sizeof(wp))
                                _exit(104);
                }
                (void)!read(done, &c1, 1);
                /* the workers end with the connection: the front has the zygote signal them */
                forkserver_close(fs);
                _exit(0);
        }
        return pid;
}

START_TEST(workers_run_as_their_clients)
{
        char uid_s[16];
        const char *const extra[] = {"--user",      uid_s,   "--allow-uid", "65534",
                                     "--allow-uid", "65533", "--preload",   env_or_die("LIBJOBS"),
                                     NULL};
        const struct client *clients[] = {&alice, &bob};
        int report[2], done[2], st;
        pid_t cpid[2], wpid[4];
        struct forkserver *fs;

        snprintf(uid_s, sizeof(uid_s), "%d", DAEMON_UID);
        user_paths();
        const char *args[16] = {"--socket", d.sock, "--key-file", d.key};
        size_t n = 4;

        for (size_t i = 0; extra[i]; i++)
                args[n++] = extra[i];
        args[n] = NULL;
        ck_assert_int_eq(daemon_spawn(&d, args, NULL), 0);
        assert_ids(d.pid, "Uid", DAEMON_UID);
        assert_daemon_caps(d.pid, CAPS_SWITCH);

        ck_assert_int_eq(pipe2(report, O_CLOEXEC), 0);
        ck_assert_int_eq(pipe2(done, O_CLOEXEC), 0);
        for (int i = 0; i < 2; i++)
                cpid[i] = client_as(clients[i], report[1], done[0], done[1]);
        close(report[1]);
        close(done[0]);
        /* both tenants' workers live side by side */
        for (int i = 0; i < 4; i++)
                ck_assert_int_eq(read(report[0], &wpid[i], sizeof(wpid[i])), sizeof(wpid[i]));
        close(report[0]);
        unsigned seen[2] = {0, 0};

        for (int i = 0; i < 4; i++) {
                pid_t w = wpid[i];
                char state;
                pid_t ppid;
                const struct client *c = NULL;
                char buf[64];

                /* whose is it? the order of the two clients' reports is theirs */
                ck_assert_ptr_nonnull(status_line(w, "Uid", buf, sizeof(buf)));
                for (int j = 0; j < 2; j++)
                        if ((unsigned)atoi(buf) == clients[j]->uid) {
                                c = clients[j];
                                seen[j]++;
                        }
                ck_assert_msg(c, "worker %d runs as '%s'", (int)w, buf);
                assert_ids(w, "Uid", c->uid);
                assert_ids(w, "Gid", c->gid);
                assert_groups(w, c->groups, c->ngroups);
                assert_no_caps(w);
                ck_assert_int_eq(proc_stat(w, &state, &ppid), 0);
                ck_assert_int_eq(ppid, d.pid); /* the front's, reaped by it */
        }
        /* an exec-mode and a fork-mode worker of each */
        ck_assert_uint_eq(seen[0], 2);
        ck_assert_uint_eq(seen[1], 2);
        close(done[1]);
        for (int i = 0; i < 2; i++) {
                ck_assert_int_eq(waitpid(cpid[i], &st, 0), cpid[i]);
                ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "client %d: status %d", i, st);
        }
        /* ended by their connections' close, though neither the front nor the zygotes may
         * signal another uid's process themselves */
        for (int i = 0; i < 4; i++)
                wait_gone(wpid[i]);

        /* root is not allowed here (its uid is not listed): a root client is refused */
        fs = connect_root(&st);
        ck_assert_int_eq(st, -EPERM);
        ck_assert_ptr_null(fs);
        stop_user_daemon();
}
END_TEST

/* Root workers only for a root client and only with --allow-root-workers. */
START_TEST(root_workers_need_the_option)
{
        char uid_s[16];
        struct forkserver_proc *w;
        struct forkserver *fs;
        int r, st;

        snprintf(uid_s, sizeof(uid_s), "%d", DAEMON_UID);
        for (int allow = 0; allow < 2; allow++) {
                const char *args[] = {
                    "--socket",    d.sock,   "--key-file",
                    d.key,         "--user", uid_s,
                    "--allow-uid", "0",      allow ? "--allow-root-workers" : NULL,
                    NULL};

                user_paths();
                ck_assert_int_eq(daemon_spawn(&d, args, NULL), 0);
                fs = connect_root(&r);
                ck_assert_int_eq(r, 0);
                /* it may connect (ping, status, stop), but its spawns need the option */
                ck_assert_int_eq(forkserver_ping(fs), 0);
                ck_assert_uint_eq(daemon_stat(fs, "root_workers_allowed"), (uint64_t)allow);
                if (!allow) {
                        ck_assert_int_eq(forkserver_spawn(fs, &exec_sleep, &w), -EPERM);
                        ck_assert_ptr_nonnull(strstr(forkserver_error(fs), "--allow-root-workers"));
                } else {
                        ck_assert_msg(forkserver_spawn(fs, &exec_sleep, &w) == 0, "spawn: %s",
                                      forkserver_error(fs));
                        assert_ids(forkserver_proc_pid(w), "Uid", 0);
                        assert_ids(forkserver_proc_pid(w), "Gid", 0);
                        assert_no_caps(forkserver_proc_pid(w));
                        ck_assert_int_eq(forkserver_kill(fs, w, SIGKILL), 0);
                        ck_assert_int_eq(forkserver_wait(fs, w, &st), 0);
                        forkserver_proc_free(fs, w);
                }
                forkserver_close(fs);
                stop_user_daemon();
        }
}
END_TEST

/* Started as root with neither --user nor --allow-root-workers: no start, exit status 1. */
START_TEST(root_without_a_plan_refuses_to_start)
{
        char log[128], err[2048];
        int st, fd;

        daemon_paths(&d);
        make_key_file(d.key);
        snprintf(log, sizeof(log), "%s/log", d.dir);
        d.log_path = log;
        d.no_plan = true;
        const char *args[] = {"--socket", d.sock, "--key-file", d.key, NULL};

        ck_assert_int_eq(daemon_spawn(&d, args, &st), -1);
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1);
        ck_assert_int_ge(fd = open(log, O_RDONLY | O_CLOEXEC), 0);
        read_all_close(fd, err, sizeof(err));
        ck_assert_msg(strstr(err, "--user NAME") && strstr(err, "--allow-root-workers"), "got: %s",
                      err);
        unlink(log);
        d.log_path = NULL;
        d.no_plan = false;
        daemon_cleanup_dir(&d);
}
END_TEST

int main(void)
{
        Suite *s = suite_create("runas");
        TCase *tc = tcase_create("integration");

        tcase_set_timeout(tc, 60);
        tcase_set_tags(tc, "pidfd"); /* forkserver_kill: valgrind 3.19 lacks pidfd_send_signal */
        tcase_add_test(tc, own_workers_have_no_caps);
        if (geteuid() == 0) {
                tcase_add_test(tc, workers_run_as_their_clients);
                tcase_add_test(tc, root_workers_need_the_option);
                tcase_add_test(tc, root_without_a_plan_refuses_to_start);
        } else {
                printf("workers of other uids: skipped (acting as other uids needs root); "
                       "the own-uid workers are checked for capabilities all the same\n");
        }
        suite_add_tcase(s, tc);
        return run_suite(s);
}
