/*
 * Integration: what a hostile worker must not reach, attacked for real from inside workers:
 * other workers' memory, signals to the daemon, its zygotes and other workers, the daemon's
 * directory and key, socket families, and what other requests left in a zygote.
 */
#include "daemon.h"

#include <sys/syscall.h>

static struct daemon d;

static const char *const all_profiles[] = {"--allow-profile", "default,default-kill,strict,none",
                                           NULL};

#define EXITS(st, code) (WIFEXITED(st) && WEXITSTATUS(st) == (code))

static long kernel_landlock_abi(void)
{
        long v = syscall(444 /* landlock_create_ruleset */, NULL, 0, 1 /* VERSION */);

        return v < 0 ? 0 : v;
}

static bool landlock(struct forkserver *fs)
{
        return daemon_stat(fs, "landlock_abi") > 0;
}

/* sysprobe WHAT TARGET ERRNO under profile: 0 refused with ERRNO, 1 done, 3 other errno. */
static int probe(struct forkserver *fs, const char *profile, const char *what, const char *target,
                 int err)
{
        char e[16];

        snprintf(e, sizeof(e), "%d", err);
        const char *argv[] = {env_or_die("SYSPROBE"), what, target, e, NULL};
        struct forkserver_spawn_args a = {.path = argv[0], .argv = argv, .profile = profile};
        struct forkserver_proc *w;
        int st;

        ck_assert_msg(forkserver_spawn(fs, &a, &w) == 0, "spawn: %s", forkserver_error(fs));
        ck_assert_int_eq(forkserver_wait(fs, w, &st), 0);
        forkserver_proc_free(fs, w);
        ck_assert_msg(WIFEXITED(st), "sysprobe %s %s: status %#x", what, target, st);
        return WEXITSTATUS(st);
}

static struct forkserver_proc *sleeper(struct forkserver *fs, const char *profile)
{
        const char *argv[] = {"/bin/sleep", "60", NULL};
        struct forkserver_spawn_args a = {.path = argv[0], .argv = argv, .profile = profile};
        struct forkserver_proc *w;

        ck_assert_msg(forkserver_spawn(fs, &a, &w) == 0, "spawn: %s", forkserver_error(fs));
        return w;
}

static void end(struct forkserver *fs, struct forkserver_proc *w)
{
        int st;

        ck_assert_int_eq(forkserver_kill(fs, w, SIGKILL), 0);
        ck_assert_int_eq(forkserver_wait(fs, w, &st), 0);
        forkserver_proc_free(fs, w);
}

static const char *num(char *buf, long v)
{
        sprintf(buf, "%ld", v);
        return buf;
}

START_TEST(no_reach_into_other_processes)
{
        static const char *const profiles[] = {"default", "default-kill", "strict", "none"};
        struct forkserver *fs;
        pid_t zyg[8];
        char t[32];
        size_t nz;

        daemon_start(&d, all_profiles);
        fs = daemon_connect(&d);
        if (!landlock(fs)) {
                forkserver_close(fs);
                daemon_stop(&d);
                fprintf(stderr, "no Landlock in this kernel: skipped\n");
                return;
        }
        nz = zygotes_of(d.pid, zyg, FS_ARRAY_SIZE(zyg));
        ck_assert_uint_eq(nz, daemon_stat(fs, "zygotes"));
        for (size_t i = 0; i < FS_ARRAY_SIZE(profiles); i++) {
                const char *p = profiles[i];
                struct forkserver_proc *victim = sleeper(fs, p);
                pid_t v = forkserver_proc_pid(victim);
                char path[64];
                int fd;

                /* The honest side first: the kernel's own rules let us (the client) in, so
                 * what refuses the worker below is its domain. */
                snprintf(path, sizeof(path), "/proc/%d/mem", (int)v);
                ck_assert_int_ge(fd = open(path, O_RDONLY | O_CLOEXEC), 0);
                close(fd);

                /* a sibling of the same profile and of another, the client, the zygotes */
                ck_assert_msg(probe(fs, p, "mem_read", num(t, v), EACCES) == 0,
                              "%s: a worker read a sibling's memory", p);
                ck_assert_msg(probe(fs, "default", "mem_read", num(t, v), EACCES) == 0,
                              "%s: a default worker read its memory", p);
                ck_assert_msg(probe(fs, p, "mem_read", num(t, getpid()), EACCES) == 0,
                              "%s: a worker read its client's memory", p);
                if (strcmp(p, "strict") != 0) /* strict kills a writable open anyway */
                        ck_assert_msg(probe(fs, p, "mem_write", num(t, v), EACCES) == 0,
                                      "%s: a worker wrote a sibling's memory", p);
                for (size_t z = 0; z < nz; z++)
                        ck_assert_msg(probe(fs, p, "mem_read", num(t, zyg[z]), EACCES) == 0,
                                      "%s: a worker read zygote %d's memory", p, (int)zyg[z]);
                if (strcmp(p, "strict") != 0) { /* strict kills kill() */
                        ck_assert_msg(probe(fs, p, "signal", num(t, v), EPERM) == 0,
                                      "%s: a worker signalled a sibling", p);
                        ck_assert_msg(probe(fs, p, "signal", num(t, d.pid), EPERM) == 0,
                                      "%s: a worker signalled the front", p);
                        for (size_t z = 0; z < nz; z++)
                                ck_assert_msg(probe(fs, p, "signal", num(t, zyg[z]), EPERM) == 0,
                                              "%s: a worker signalled a zygote", p);
                }
                end(fs, victim);
        }
        /* the daemon still serves */
        ck_assert_int_eq(forkserver_ping(fs), 0);
        forkserver_close(fs);
        ck_assert_int_eq(daemon_stop(&d), 0);
}
END_TEST

START_TEST(no_reach_into_the_daemons_directory)
{
        struct forkserver *fs;
        char dir[] = "/tmp/fs-confine-XXXXXX", file[64];

        daemon_start(&d, all_profiles);
        fs = daemon_connect(&d);
        if (!landlock(fs)) {
                forkserver_close(fs);
                daemon_stop(&d);
                fprintf(stderr, "no Landlock in this kernel: skipped\n");
                return;
        }
        for (const char *const *p = (const char *const[]){"default", "strict", "none", NULL}; *p;
             p++) {
                ck_assert_msg(probe(fs, *p, "open", d.key, EACCES) == 0,
                              "%s: a worker opened the key file", *p);
                ck_assert_msg(probe(fs, *p, "open", d.dir, EACCES) == 0,
                              "%s: a worker opened the socket directory", *p);
        }
        ck_assert_msg(probe(fs, "none", "create", d.sock, EACCES) == 0,
                      "a worker replaced the socket");
        /* the rest of the filesystem as before, also what appeared after the daemon started */
        ck_assert_ptr_nonnull(mkdtemp(dir));
        snprintf(file, sizeof(file), "%s/out", dir);
        ck_assert_int_eq(probe(fs, "default", "create", file, 0), 1);
        ck_assert_int_eq(probe(fs, "strict", "open", file, 0), 1);
        ck_assert_int_eq(probe(fs, "default", "open", "/etc/passwd", 0), 1);
        ck_assert_int_eq(unlink(file), 0);
        ck_assert_int_eq(rmdir(dir), 0);
        forkserver_close(fs);
        ck_assert_int_eq(daemon_stop(&d), 0);
}
END_TEST

START_TEST(profile_file_paths)
{
        char base[] = "/tmp/fs-walled-XXXXXX", profiles[64], path[96], secret[64], pub[80],
             sfile[96], pfile[96];
        const char *extra[] = {"--profile-dir", profiles, "--allow-profile", "default,walled",
                               NULL};
        struct forkserver *fs;
        int fd;

        ck_assert_ptr_nonnull(mkdtemp(base));
        snprintf(profiles, sizeof(profiles), "%s/profiles", base);
        snprintf(secret, sizeof(secret), "%s/secret", base);
        snprintf(pub, sizeof(pub), "%s/pub", secret);
        snprintf(sfile, sizeof(sfile), "%s/f", secret);
        snprintf(pfile, sizeof(pfile), "%s/f", pub);
        ck_assert_int_eq(mkdir(profiles, 0700), 0);
        ck_assert_int_eq(mkdir(secret, 0700), 0);
        ck_assert_int_eq(mkdir(pub, 0700), 0);
        snprintf(path, sizeof(path), "%s/walled.profile", profiles);
        ck_assert_int_ge(fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600), 0);
        dprintf(fd, "default allow\nfs deny %s\nfs ro %s\n", secret, pub);
        close(fd);
        close(open(sfile, O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
        close(open(pfile, O_WRONLY | O_CREAT | O_CLOEXEC, 0600));

        daemon_start(&d, extra);
        fs = daemon_connect(&d);
        if (landlock(fs)) {
                ck_assert_int_eq(probe(fs, "walled", "open", sfile, EACCES), 0);
                ck_assert_int_eq(probe(fs, "default", "open", sfile, 0), 1);
                ck_assert_int_eq(probe(fs, "walled", "open", pfile, 0), 1);        /* read */
                ck_assert_int_eq(probe(fs, "walled", "create", pfile, EACCES), 0); /* write */
                ck_assert_int_eq(probe(fs, "default", "create", pfile, 0), 1);
        }
        forkserver_close(fs);
        ck_assert_int_eq(daemon_stop(&d), 0);
        ck_assert_int_eq(unlink(pfile) | unlink(sfile) | unlink(path), 0);
        ck_assert_int_eq(rmdir(pub) | rmdir(secret) | rmdir(profiles) | rmdir(base), 0);
}
END_TEST

START_TEST(socket_families)
{
        static const char *const refused[] = {"40" /* AF_VSOCK */,
                                              "38" /* AF_ALG */,
                                              "16" /* AF_NETLINK */,
                                              "17" /* AF_PACKET */,
                                              "0",
                                              "44" /* AF_XDP */,
                                              "4294967336" /* 40 */,
                                              "4294967297" /* 1, high bits set */};
        static const char *const allowed[] = {"1", "2", "10"};
        struct forkserver *fs;

        daemon_start(&d, all_profiles);
        fs = daemon_connect(&d);
        for (const char *const *p =
                 (const char *const[]){"default", "default-kill", "strict", NULL};
             *p; p++) {
                for (size_t i = 0; i < FS_ARRAY_SIZE(refused); i++)
                        ck_assert_msg(probe(fs, *p, "family", refused[i], EAFNOSUPPORT) == 0,
                                      "%s: family %s not refused with EAFNOSUPPORT", *p,
                                      refused[i]);
                for (size_t i = 0; i < FS_ARRAY_SIZE(allowed); i++)
                        ck_assert_msg(probe(fs, *p, "family", allowed[i], 0) == 1,
                                      "%s: family %s refused", *p, allowed[i]);
        }
        forkserver_close(fs);
        ck_assert_int_eq(daemon_stop(&d), 0);
}
END_TEST

/*
 * One client's request (argv, environment, entry bytes) leaves nothing in a zygote that the
 * next client's fork-mode worker could find. The first request is the larger one, so that
 * the second, written over it, cannot hide what would be left behind.
 */
/* The Python zygote's library beside forkserverd, where the build puts it; NULL if not built. */
static const char *python_zygote(void)
{
        static char path[4096];
        const char *bin = env_or_die("FORKSERVERD"), *slash = strrchr(bin, '/');

        snprintf(path, sizeof(path), "%.*s/libforkserver-python.so", slash ? (int)(slash - bin) : 1,
                 slash ? bin : ".");
        return access(path, R_OK) == 0 ? path : NULL;
}

/*
 * One client's request (argv, environment, entry bytes) leaves nothing in a zygote that the
 * next client's fork-mode worker could find: every zygote (plain, sandboxed, and the Python
 * zygote, whose interpreter lives in the same process). The first request is the larger one,
 * so that the second, written over it, cannot hide what would be left behind.
 */
static void residue(bool python)
{
        const char *extra[] = {"--allow-profile",
                               "default,default-kill,strict,none",
                               "--preload",
                               env_or_die("LIBJOBS"),
                               python ? "--python-preload" : NULL,
                               "",
                               NULL};
        static const char *const profiles[] = {"default", "default-kill", "strict", "none"};
        const char secret[] = "zq8-forkserver-residue-secret-7Hk";
        char env[8192], arg[4096], xored[sizeof(secret)], out[64];
        struct forkserver *a, *b;

        daemon_start(&d, extra);
        a = daemon_connect(&d);
        b = daemon_connect(&d);
        /* the secret at the end of long values */
        memset(env, 'e', sizeof(env));
        memcpy(env, "PAD=", 4);
        memcpy(env + sizeof(env) - sizeof(secret), secret, sizeof(secret));
        memset(arg, 'a', sizeof(arg));
        memcpy(arg + sizeof(arg) - sizeof(secret) + 1, secret, sizeof(secret) - 1);
        for (size_t i = 0; i < sizeof(secret) - 1; i++)
                xored[i] = (char)(secret[i] ^ 0x5a);
        for (size_t i = 0; i < FS_ARRAY_SIZE(profiles); i++) {
                char argv1[64 + sizeof(secret)];
                const char *ev[] = {env, NULL};
                struct forkserver_spawn_args sa = {
                    .entry = python ? "libforkserver-python:forkserver_python_worker"
                                    : "libjobs:job_noop",
                    .envp = ev,
                    .arg = arg,
                    .arglen = sizeof(arg),
                    .profile = profiles[i]};
                struct forkserver_proc *w;
                int st;

                snprintf(argv1, sizeof(argv1), "--token=%s", secret);
                ck_assert_msg(forkserver_spawn(a, &sa, &w) == 0, "%s", forkserver_error(a));
                ck_assert_int_eq(forkserver_wait(a, w, &st), 0);
                forkserver_proc_free(a, w);
                /* the same in exec mode, through the same zygote */
                const char *true_av[] = {"/bin/true", argv1, NULL};
                struct forkserver_spawn_args se = {
                    .path = "/bin/true", .argv = true_av, .envp = ev, .profile = profiles[i]};
                ck_assert_msg(forkserver_spawn(a, &se, &w) == 0, "%s", forkserver_error(a));
                ck_assert_int_eq(forkserver_wait(a, w, &st), 0);
                forkserver_proc_free(a, w);

                struct forkserver_spawn_args sb = {.entry = "libjobs:job_scan",
                                                   .arg = xored,
                                                   .arglen = sizeof(secret) - 1,
                                                   .profile = profiles[i]};

                st = spawn_capture(b, &sb, 1, out, sizeof(out));
                ck_assert_msg(EXITS(st, 0), "%s: scan failed (status %#x)", profiles[i], st);
                ck_assert_msg(strcmp(out, "0\n") == 0,
                              "%s%s: another client's secret found %s time(s) in a worker",
                              python ? "Python zygote, " : "", profiles[i], out);
        }
        forkserver_close(a);
        forkserver_close(b);
        ck_assert_int_eq(daemon_stop(&d), 0);
}

START_TEST(no_residue_of_other_requests)
{
        residue(false);
        if (python_zygote())
                residue(true);
        else
                fprintf(stderr, "no Python zygote built: its residue check skipped\n");
}
END_TEST

START_TEST(require_landlock)
{
        const char *extra[] = {"--require-landlock", NULL};
        struct forkserver *fs;

        /* this kernel has ABI 6 or more, or the daemon refuses to start */
        if (kernel_landlock_abi() >= 6) {
                daemon_start(&d, extra);
                fs = daemon_connect(&d);
                ck_assert_uint_ge(daemon_stat(fs, "landlock_abi"), 6);
                forkserver_close(fs);
                ck_assert_int_eq(daemon_stop(&d), 0);
        } else {
                int st;

                daemon_paths(&d);
                make_key_file(d.key);
                const char *args[] = {"--socket",           d.sock, "--key-file", d.key,
                                      "--require-landlock", NULL};

                ck_assert_int_eq(daemon_spawn(&d, args, &st), -1);
                ck_assert(EXITS(st, 1));
                daemon_cleanup_dir(&d);
        }
}
END_TEST

static Suite *suite(void)
{
        Suite *s = suite_create("confine");
        TCase *tc = tcase_create("integration");

        tcase_set_timeout(tc, 120);
        /* signals through pidfds, and Landlock probed from this process: valgrind 3.19 has
         * neither system call */
        tcase_set_tags(tc, "pidfd");
        tcase_add_test(tc, no_reach_into_other_processes);
        tcase_add_test(tc, no_reach_into_the_daemons_directory);
        tcase_add_test(tc, profile_file_paths);
        tcase_add_test(tc, socket_families);
        tcase_add_test(tc, no_residue_of_other_requests);
        tcase_add_test(tc, require_landlock);
        suite_add_tcase(s, tc);
        return s;
}

int main(void)
{
        return run_suite(suite());
}
