/* Integration: seccomp profiles and child hygiene, probed from inside real workers. */
#include "daemon.h"

#include <sys/resource.h>

static struct daemon d;

static const char *const all_profiles[] = {"--allow-profile", "default,default-kill,strict,none",
                                           NULL};

/* Each class the default profile denies, probed by sysprobe with a raw syscall. */
static const char *const denied[] = {
    "ptrace",
    "process_vm_readv",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "kexec_load",
    "init_module",
    "delete_module",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "fsopen",
    "unshare",
    "setns",
    "clone_newuser",
    "keyctl",
    "add_key",
    "io_uring_setup",
    "reboot",
    "swapon",
    "clock_settime",
    "settimeofday",
    "personality",
    "tiocsti",
    "tiocsti_high",
    "tioclinux",
    "open_by_handle_at",
};

/* Runs sysprobe ARGS under profile; returns the wait status. */
static int probe(struct forkserver *fs, const char *profile, const char *a1, const char *a2)
{
        const char *argv[] = {env_or_die("SYSPROBE"), a1, a2, NULL};
        struct forkserver_spawn_args a = {.path = argv[0], .argv = argv, .profile = profile};
        struct forkserver_proc *w;
        int st;

        ck_assert_msg(forkserver_spawn(fs, &a, &w) == 0, "spawn: %s", forkserver_error(fs));
        ck_assert_int_eq(forkserver_wait(fs, w, &st), 0);
        forkserver_proc_free(fs, w);
        return st;
}

#define EXITS(st, code) (WIFEXITED(st) && WEXITSTATUS(st) == (code))
#define SECCOMP_KILLED(st) (WIFSIGNALED(st) && WTERMSIG(st) == SIGSYS)

START_TEST(default_denies_with_eperm)
{
        struct forkserver *fs;

        daemon_start(&d, all_profiles);
        fs = daemon_connect(&d);
        /* a plain zygote, and one living under each of default and default-kill */
        ck_assert_uint_eq(daemon_stat(fs, "zygotes"), 3);
        for (size_t i = 0; i < FS_ARRAY_SIZE(denied); i++) {
                int st = probe(fs, NULL, denied[i], NULL); /* no profile named: default */

                ck_assert_msg(EXITS(st, 0), "%s not denied with EPERM (status %#x)", denied[i], st);
        }
        /* clone3 answers ENOSYS so that libc falls back to clone, whose flags are checked */
        ck_assert(EXITS(probe(fs, "default", "clone3", "ENOSYS"), 0));
        /* the personality query stays allowed */
        ck_assert(EXITS(probe(fs, "default", "personality_query", NULL), 1));
        forkserver_close(fs);
        ck_assert_int_eq(daemon_stop(&d), 0);
}
END_TEST

START_TEST(default_kill_kills_with_sigsys)
{
        struct forkserver *fs;

        daemon_start(&d, all_profiles);
        fs = daemon_connect(&d);
        for (size_t i = 0; i < FS_ARRAY_SIZE(denied); i++) {
                int st = probe(fs, "default-kill", denied[i], NULL);

                ck_assert_msg(SECCOMP_KILLED(st), "%s not killed (status %#x)", denied[i], st);
        }
        forkserver_close(fs);
        ck_assert_int_eq(daemon_stop(&d), 0);
}
END_TEST

START_TEST(filter_is_the_cause)
{
        /* Calls whose unfiltered result is never EPERM, whatever the uid: with no profile
         * they go through, so the EPERM above came from the filter. */
        static const char *const calls[] = {"ptrace",  "process_vm_readv", "personality",
                                            "tiocsti", "io_uring_setup",   "clone3"};
        struct forkserver *fs;

        daemon_start(&d, all_profiles);
        fs = daemon_connect(&d);
        for (size_t i = 0; i < FS_ARRAY_SIZE(calls); i++) {
                int st = probe(fs, "none", calls[i], NULL);

                ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) != 0, "%s refused without a filter",
                              calls[i]);
        }
        forkserver_close(fs);
        ck_assert_int_eq(daemon_stop(&d), 0);
}
END_TEST

START_TEST(default_allows_normal_work)
{
        static const char *const work[] = {"files",  "socketpair", "thread",
                                           "memory", "fork",       "getrandom"};
        const char *sh[] = {"/bin/sh", "-c", "echo $(echo nested) | cat >/dev/null", NULL};
        struct forkserver_spawn_args a = {.path = sh[0], .argv = sh};
        struct forkserver_proc *w;
        struct forkserver *fs;
        int st;

        char dir[] = "/tmp/fs-work-XXXXXX";

        daemon_start(&d, all_profiles);
        fs = daemon_connect(&d);
        /* made after the daemon started: workers reach it all the same (not the daemon's own
         * directory, which no worker reaches) */
        ck_assert_ptr_nonnull(mkdtemp(dir));
        for (size_t i = 0; i < FS_ARRAY_SIZE(work); i++) {
                st = probe(fs, "default", work[i], dir);
                ck_assert_msg(EXITS(st, 0), "%s failed under default (status %#x)", work[i], st);
        }
        /* processes and exec, as a shell pipeline does */
        ck_assert_int_eq(forkserver_spawn(fs, &a, &w), 0);
        ck_assert_int_eq(forkserver_wait(fs, w, &st), 0);
        ck_assert(EXITS(st, 0));
        forkserver_close(fs);
        ck_assert_int_eq(rmdir(dir), 0);
        ck_assert_int_eq(daemon_stop(&d), 0);
}
END_TEST

START_TEST(strict_allowlist)
{
        static const char *const ok[] = {"thread", "memory", "getrandom"};
        static const char *const killed[] = {"openwrite", "rawfork", "kill", "ptrace", "mount"};
        struct forkserver *fs;
        char out[64];
        int st;

        daemon_start(&d, all_profiles);
        fs = daemon_connect(&d);
        for (size_t i = 0; i < FS_ARRAY_SIZE(ok); i++)
                ck_assert_msg(EXITS(probe(fs, "strict", ok[i], NULL), 0), "%s failed under strict",
                              ok[i]);
        for (size_t i = 0; i < FS_ARRAY_SIZE(killed); i++)
                ck_assert_msg(SECCOMP_KILLED(probe(fs, "strict", killed[i], NULL)),
                              "%s not killed under strict", killed[i]);
        forkserver_close(fs);

        /* forkctl exits 128+SIGSYS when a worker is killed by seccomp; a strict worker talks
         * over the fds it was given */
        const char *ctl = env_or_die("FORKCTL");
        const char *run[] = {ctl,       "--socket",  d.sock,   "--key-file", d.key,
                             "run",     "--profile", "strict", "--",         env_or_die("SYSPROBE"),
                             "rawfork", NULL};
        st = run_cmd(run, out, sizeof(out));
        ck_assert(EXITS(st, 128 + SIGSYS));
        const char *wrfd[] = {
            ctl,       "--socket",  d.sock,   "--key-file", d.key,
            "run",     "--profile", "strict", "--",         env_or_die("SYSPROBE"),
            "writefd", "1",         NULL};
        st = run_cmd(wrfd, out, sizeof(out));
        ck_assert(EXITS(st, 0));
        ck_assert_str_eq(out, "ok\n");
        ck_assert_int_eq(daemon_stop(&d), 0);
}
END_TEST

START_TEST(profile_policy)
{
        const char *t[] = {"/bin/true", NULL};
        struct forkserver_spawn_args a = {.path = t[0], .argv = t};
        struct forkserver_proc *w;
        struct forkserver *fs;

        daemon_start(&d, NULL); /* default policy: default and strict only */
        fs = daemon_connect(&d);
        a.profile = "none";
        ck_assert_int_eq(forkserver_spawn(fs, &a, &w), -EPERM);
        ck_assert_ptr_nonnull(strstr(forkserver_error(fs), "not allowed"));
        a.profile = "no-such-profile";
        ck_assert_int_eq(forkserver_spawn(fs, &a, &w), -EINVAL);
        ck_assert_ptr_nonnull(strstr(forkserver_error(fs), "unknown profile"));
        a.profile = "strict";
        ck_assert_int_eq(forkserver_spawn(fs, &a, &w), 0);
        forkserver_close(fs);
        ck_assert_int_eq(daemon_stop(&d), 0);
}
END_TEST

START_TEST(min_profile_stacks)
{
        const char *const extra[] = {"--allow-profile", "none,default", "--min-profile", "strict",
                                     NULL};
        struct forkserver *fs;

        daemon_start(&d, extra);
        fs = daemon_connect(&d);
        /* no zygote can live under strict: every worker installs its filters */
        ck_assert_uint_eq(daemon_stat(fs, "zygotes"), 1);
        /* asking for none still gets strict underneath */
        ck_assert(SECCOMP_KILLED(probe(fs, "none", "rawfork", NULL)));
        ck_assert(EXITS(probe(fs, "none", "memory", NULL), 0));
        ck_assert(SECCOMP_KILLED(probe(fs, "default", "rawfork", NULL)));
        forkserver_close(fs);
        ck_assert_int_eq(daemon_stop(&d), 0);
}
END_TEST

static void write_file(const char *path, const char *text, mode_t mode)
{
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);

        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(fs_write_all(fd, text, strlen(text)), 0);
        ck_assert_int_eq(fchmod(fd, mode), 0);
        close(fd);
}

START_TEST(profile_dir)
{
        char pdir[160], pfile[200], arg[200], errbuf[2048] = {0};
        struct forkserver *fs;
        int st;

        daemon_paths(&d);
        make_key_file(d.key);
        snprintf(pdir, sizeof(pdir), "%s/profiles", d.dir);
        ck_assert_int_eq(mkdir(pdir, 0700), 0);
        snprintf(pfile, sizeof(pfile), "%s/nosock.profile", pdir);
        write_file(pfile,
                   "# sockets are someone else's job\ndefault allow\nkill socket\n"
                   "errno EACCES socketpair\n",
                   0600);
        snprintf(arg, sizeof(arg), "%s", pdir);
        const char *args[] = {
            "--socket",        d.sock,           "--key-file", d.key, "--profile-dir", arg,
            "--allow-profile", "default,nosock", NULL};
        ck_assert_int_eq(daemon_spawn(&d, args, &st), 0);
        fs = daemon_connect(&d);
        ck_assert(SECCOMP_KILLED(probe(fs, "nosock", "socket", NULL)));
        ck_assert(EXITS(probe(fs, "nosock", "memory", NULL), 0));
        forkserver_close(fs);
        kill(d.pid, SIGTERM);
        ck_assert_int_eq(waitpid(d.pid, &st, 0), d.pid);

        /* a bad line stops start-up with file:line and the token */
        write_file(pfile, "default allow\nkill socket not_a_syscall\n", 0600);
        const char *bad[] = {env_or_die("FORKSERVERD"),
                             "--foreground",
                             "--allow-root-workers",
                             "--socket",
                             d.sock,
                             "--key-file",
                             d.key,
                             "--profile-dir",
                             pdir,
                             NULL};
        st = exec_capture(bad, 2, errbuf, sizeof(errbuf));
        ck_assert(EXITS(st, 1));
        ck_assert_msg(strstr(errbuf, "nosock.profile:2: unknown syscall 'not_a_syscall'"),
                      "got: %s", errbuf);
        /* a profile others may write is refused */
        write_file(pfile, "default allow\n", 0666);
        d.pid = 0;
        ck_assert_int_eq(daemon_spawn(&d, args, &st), -1);
        ck_assert(EXITS(st, 1));
        unlink(pfile);
        rmdir(pdir);
        daemon_cleanup_dir(&d);
}
END_TEST

/* Runs a shell line in a worker with extra settings and returns its stdout. */
static int shell(struct forkserver *fs, struct forkserver_spawn_args *a, const char *line,
                 char *out, size_t cap)
{
        const char *argv[] = {"/bin/sh", "-c", line, NULL};

        a->path = argv[0];
        a->argv = argv;
        return spawn_capture(fs, a, 1, out, cap);
}

START_TEST(child_hygiene)
{
        struct forkserver *fs;
        char out[4096];
        int st;

        daemon_start(&d, NULL);
        fs = daemon_connect(&d);

        struct forkserver_spawn_args a = {0};
        st = shell(fs, &a,
                   "grep -E '^(SigBlk|SigIgn|NoNewPrivs|Seccomp):' /proc/self/status; "
                   "grep 'core file' /proc/self/limits | tr -s ' '; umask",
                   out, sizeof(out));
        ck_assert(EXITS(st, 0));
        ck_assert_str_eq(out, "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n"
                              "NoNewPrivs:\t1\nSeccomp:\t2\nMax core file size 0 0 bytes \n0022\n");

        /* stdio not given is /dev/null, whichever of the three is given */
        a = (struct forkserver_spawn_args){0};
        st = shell(fs, &a, "readlink /proc/self/fd/0 /proc/self/fd/2", out, sizeof(out));
        ck_assert(EXITS(st, 0));
        ck_assert_str_eq(out, "/dev/null\n/dev/null\n");
        const char *to_err[] = {"/bin/sh", "-c",
                                "x=$(readlink /proc/$$/fd/0 /proc/$$/fd/1); echo \"$x\" >&2", NULL};
        a = (struct forkserver_spawn_args){.path = to_err[0], .argv = to_err};
        st = spawn_capture(fs, &a, 2, out, sizeof(out));
        ck_assert(EXITS(st, 0));
        ck_assert_str_eq(out, "/dev/null\n/dev/null\n");

        /* rlimits, umask and a process group as asked */
        struct forkserver_rlimit rl[] = {{RLIMIT_NOFILE, 64, 64}, {RLIMIT_CORE, 4096, 8192}};
        a = (struct forkserver_spawn_args){.rlimits = rl,
                                           .nrlimits = 2,
                                           .umask = FORKSERVER_UMASK(077),
                                           .flags = FORKSERVER_SPAWN_NEWPGRP};
        st = shell(fs, &a,
                   "grep -E 'open files|core file' /proc/self/limits | tr -s ' '; umask; "
                   "echo $(cut -d' ' -f5 /proc/$$/stat) $$",
                   out, sizeof(out));
        ck_assert(EXITS(st, 0));
        char *pg = strrchr(out, '\n');
        *pg = '\0';
        pg = strrchr(out, '\n') + 1;
        ck_assert_msg(strncmp(pg, pg + strlen(pg) / 2 + 1, strlen(pg) / 2) == 0,
                      "not a group leader: %s", pg);
        ck_assert_ptr_nonnull(strstr(out, "Max core file size 4096 8192 bytes"));
        ck_assert_ptr_nonnull(strstr(out, "Max open files 64 64 files"));
        ck_assert_ptr_nonnull(strstr(out, "\n0077\n"));

        /* exactly the environment given */
        const char *envp[] = {"ONLY=this", "AND=that", NULL};
        const char *argv[] = {"/usr/bin/env", NULL};
        a = (struct forkserver_spawn_args){.path = argv[0], .argv = argv, .envp = envp};
        st = spawn_capture(fs, &a, 1, out, sizeof(out));
        ck_assert_str_eq(out, "ONLY=this\nAND=that\n");

        /* a hard limit above ours cannot be granted to a non-root worker */
        if (geteuid() != 0) {
                struct rlimit cur;
                getrlimit(RLIMIT_NOFILE, &cur);
                struct forkserver_rlimit up[] = {{RLIMIT_NOFILE, cur.rlim_max, cur.rlim_max + 1}};
                struct forkserver_proc *w;
                a = (struct forkserver_spawn_args){.path = "/bin/true",
                                                   .argv = (const char *[]){"true", NULL},
                                                   .rlimits = up,
                                                   .nrlimits = 1};
                ck_assert_int_eq(forkserver_spawn(fs, &a, &w), -EPERM);
                ck_assert_ptr_nonnull(strstr(forkserver_error(fs), "rlimit"));
        }
        forkserver_close(fs);
        ck_assert_int_eq(daemon_stop(&d), 0);
}
END_TEST

static Suite *suite(void)
{
        Suite *s = suite_create("sandbox");
        TCase *tc = tcase_create("integration");

        tcase_set_timeout(tc, 120);
        tcase_add_test(tc, default_denies_with_eperm);
        tcase_add_test(tc, default_kill_kills_with_sigsys);
        tcase_add_test(tc, filter_is_the_cause);
        tcase_add_test(tc, default_allows_normal_work);
        tcase_add_test(tc, strict_allowlist);
        tcase_add_test(tc, profile_policy);
        tcase_add_test(tc, min_profile_stacks);
        tcase_add_test(tc, profile_dir);
        tcase_add_test(tc, child_hygiene);
        suite_add_tcase(s, tc);
        return s;
}

int main(void)
{
        return run_suite(suite());
}
