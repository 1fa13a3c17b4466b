/* Integration helpers: start the real forkserverd in a fresh directory, drive it, stop it. */
#pragma once

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "client/forkserver.h"
#include "common/auth.h"
#include "common/creds.h"
#include "common/fdpass.h"
#include "common/key.h"
#include "testutil.h"

struct daemon {
        pid_t pid;
        char dir[64];
        char sock[128];
        char key[128];
        const char *log_path; /* when set, the daemon's stderr is appended there */
        uid_t run_as;         /* when set (root only), the daemon runs as this uid and gid */
        bool no_plan;         /* no --allow-root-workers: as root, it must refuse to start */
};

static inline const char *env_or_die(const char *name)
{
        const char *v = getenv(name);

        ck_assert_msg(v && *v, "%s is not set (run through meson test)", name);
        return v;
}

static inline void make_key_file(const char *path)
{
        char hex[FS_KEY_HEX_LEN + 1];
        struct fs_key *k;
        int fd;

        ck_assert_int_eq(fs_key_generate(&k), 0);
        fs_key_hex(k, hex);
        fs_key_free(k);
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(fs_write_all(fd, hex, sizeof(hex)), 0);
        close(fd);
}

static inline void daemon_paths(struct daemon *d)
{
        (void)env_or_die("FORKSERVERD"); /* before there is a directory to leave behind */
        strcpy(d->dir, "/tmp/fs-test-XXXXXX");
        ck_assert_ptr_nonnull(mkdtemp(d->dir));
        snprintf(d->sock, sizeof(d->sock), "%s/s.sock", d->dir);
        snprintf(d->key, sizeof(d->key), "%s/key", d->dir);
}

/* Starts forkserverd with args (NULL-terminated) after its fd 3 as --ready-fd; waits for READY.
 * Returns 0 when ready, -1 when it closed the ready fd without READY (its exit is then
 * reaped and its status left in *ret_status). */
static inline int daemon_spawn(struct daemon *d, const char *const *args, int *ret_status)
{
        /* FORKSERVERD_WRAPPER (e.g. "valgrind --error-exitcode=99 ...") runs the daemon under a
         * tool; words split on spaces. */
        static char wrapper[512];
        const char *argv[96];
        size_t n = 0;
        const char *wrap = getenv("FORKSERVERD_WRAPPER");

        if (wrap && *wrap) {
                snprintf(wrapper, sizeof(wrapper), "%s", wrap);
                for (char *save, *t = strtok_r(wrapper, " ", &save); t && n < 32;
                     t = strtok_r(NULL, " ", &save))
                        argv[n++] = t;
        }
        argv[n++] = env_or_die("FORKSERVERD");
        argv[n++] = "--foreground";
        argv[n++] = "--ready-fd";
        argv[n++] = "3";
        argv[n++] = "--log-level";
        argv[n++] = "warning";
        char buf[16] = {0};
        int p[2];
        ssize_t got;

        bool user = false;

        for (size_t i = 0; args && args[i]; i++) {
                user |= strcmp(args[i], "--user") == 0;
                argv[n++] = args[i];
        }
        /* CI runs as root, and a root daemon needs a plan for its workers: the suite's plan is
         * root workers for the root test process (without capabilities), unless a test names
         * --user. The option changes nothing for a daemon without CAP_SETUID. */
        if (!user && !d->no_plan)
                argv[n++] = "--allow-root-workers";
        argv[n] = NULL;
        ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
        d->pid = fork();
        ck_assert_int_ge(d->pid, 0);
        if (d->pid == 0) {
                dup2(p[1], 3);
                if (d->log_path) {
                        int lf = open(d->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);

                        if (lf < 0 || dup2(lf, 2) < 0)
                                _exit(126);
                }
                if (d->run_as &&
                    (setgroups(0, NULL) < 0 || setresgid(d->run_as, d->run_as, d->run_as) < 0 ||
                     setresuid(d->run_as, d->run_as, d->run_as) < 0))
                        _exit(126);
                execvp(argv[0], (char *const *)argv);
                _exit(127);
        }
        close(p[1]);
        struct pollfd pf = {.fd = p[0], .events = POLLIN};
        ck_assert_int_eq(poll(&pf, 1, 15000), 1);
        got = read(p[0], buf, sizeof(buf) - 1);
        close(p[0]);
        if (got == 6 && strcmp(buf, "READY\n") == 0)
                return 0;
        ck_assert_int_eq(got, 0); /* a failure closes it without writing */
        ck_assert_int_eq(waitpid(d->pid, ret_status, 0), d->pid);
        d->pid = 0;
        return -1;
}

static inline void daemon_start(struct daemon *d, const char *const *extra)
{
        const char *args[48] = {"--socket", d->sock, "--key-file", d->key};
        size_t n = 4;

        daemon_paths(d);
        make_key_file(d->key);
        if (d->run_as) {
                ck_assert_int_eq(chown(d->dir, d->run_as, d->run_as), 0);
                ck_assert_int_eq(chown(d->key, d->run_as, d->run_as), 0);
        }
        for (size_t i = 0; extra && extra[i]; i++)
                args[n++] = extra[i];
        args[n] = NULL;
        ck_assert_int_eq(daemon_spawn(d, args, NULL), 0);
}

static inline void daemon_cleanup_dir(struct daemon *d)
{
        unlink(d->key);
        unlink(d->sock);
        rmdir(d->dir);
}

/* SIGTERM; returns the exit status after asserting the socket is gone. */
static inline int daemon_stop(struct daemon *d)
{
        struct stat st;
        int status;

        if (d->pid <= 0)
                return 0;
        kill(d->pid, SIGTERM);
        ck_assert_int_eq(waitpid(d->pid, &status, 0), d->pid);
        d->pid = 0;
        ck_assert_msg(lstat(d->sock, &st) < 0 && errno == ENOENT, "socket left behind");
        daemon_cleanup_dir(d);
        return status;
}

static inline struct forkserver *daemon_connect(struct daemon *d)
{
        struct forkserver_options o = {
            .socket_path = d->sock, .key_file = d->key, .key_fd = -1, .server_uid = d->run_as};
        struct forkserver *fs = NULL;
        const char *why = "";
        int r = forkserver_connect(&o, &fs, &why);

        ck_assert_msg(r == 0, "connect: %s", why);
        return fs;
}

/* Reads fd to EOF into out (NUL-terminated, cut at cap - 1 bytes) and closes it. */
static inline void read_all_close(int fd, char *out, size_t cap)
{
        size_t len = 0;
        ssize_t n;

        while (len + 1 < cap && (n = read(fd, out + len, cap - 1 - len)) > 0)
                len += (size_t)n;
        if (cap)
                out[len] = '\0';
        close(fd);
}

/* Spawns a with its fd child_fd (and no other given fd) writing into a pipe, reads that to EOF,
 * waits; returns the wait status. The worker's handle goes to *keep if given, else is freed. */
static inline int spawn_capture_keep(struct forkserver *fs, const struct forkserver_spawn_args *a,
                                     int child_fd, char *out, size_t cap,
                                     struct forkserver_proc **keep)
{
        struct forkserver_spawn_args b = *a;
        struct forkserver_fd_map map[1];
        struct forkserver_proc *w;
        int p[2], status;

        ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
        map[0] = (struct forkserver_fd_map){child_fd, p[1]};
        b.fds = map;
        b.nfds = 1;
        ck_assert_msg(forkserver_spawn(fs, &b, &w) == 0, "spawn: %s", forkserver_error(fs));
        close(p[1]);
        read_all_close(p[0], out, cap);
        ck_assert_int_eq(forkserver_wait(fs, w, &status), 0);
        if (keep)
                *keep = w;
        else
                forkserver_proc_free(fs, w);
        return status;
}

static inline int spawn_capture(struct forkserver *fs, const struct forkserver_spawn_args *a,
                                int child_fd, char *out, size_t cap)
{
        return spawn_capture_keep(fs, a, child_fd, out, cap, NULL);
}

/* Spawns argv with stdout into a pipe; returns the wait status and the output. */
static inline int run_capture(struct forkserver *fs, const char *const *argv, char *out, size_t cap)
{
        struct forkserver_spawn_args a = {.path = argv[0], .argv = argv};

        return spawn_capture(fs, &a, 1, out, cap);
}

/* Runs argv (argv[0] a path) with fd `to` (1 or 2) into a pipe; returns its wait status. */
static inline int exec_capture(const char *const *argv, int to, char *out, size_t cap)
{
        int p[2], status;
        pid_t pid;

        ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
        pid = fork();
        if (pid == 0) {
                dup2(p[1], to);
                execv(argv[0], (char *const *)argv);
                _exit(127);
        }
        close(p[1]);
        read_all_close(p[0], out, cap);
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        return status;
}

/* Runs a command with stdout captured; returns its wait status. */
static inline int run_cmd(const char *const *argv, char *out, size_t cap)
{
        return exec_capture(argv, 1, out, cap);
}

struct stat_lookup {
        const char *name;
        uint64_t value;
};

static inline int stat_cb(void *ud, const char *name, uint64_t v)
{
        struct stat_lookup *l = ud;

        if (strcmp(name, l->name) == 0)
                l->value = v;
        return 0;
}

static inline uint64_t daemon_stat(struct forkserver *fs, const char *name)
{
        struct stat_lookup l = {name, UINT64_MAX};

        ck_assert_int_eq(forkserver_status(fs, stat_cb, &l), 0);
        ck_assert_msg(l.value != UINT64_MAX, "no stat %s", name);
        return l.value;
}

/* The state and parent of pid from /proc/PID/stat; -1 when it is gone. */
static inline int proc_stat(pid_t pid, char *state, pid_t *ppid)
{
        char path[64], buf[512];
        int pp, r = -1;
        FILE *f;

        snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
        if (!(f = fopen(path, "re")))
                return -1;
        if (fgets(buf, sizeof(buf), f)) {
                char *rp = strrchr(buf, ')');

                if (rp && sscanf(rp + 2, "%c %d", state, &pp) == 2) {
                        *ppid = (pid_t)pp;
                        r = 0;
                }
        }
        fclose(f);
        return r;
}

/* The children of parent (zombies only, if zombies): their pids into out, at most cap.
 * Returns how many were stored, or with out NULL how many there are. */
static inline size_t children_of(pid_t parent, bool zombies, pid_t *out, size_t cap)
{
        DIR *d = opendir("/proc");
        size_t n = 0;

        ck_assert_ptr_nonnull(d);
        for (struct dirent *e; (e = readdir(d));) {
                pid_t pid = (pid_t)atoi(e->d_name), ppid;
                char state;

                if (pid <= 0 || proc_stat(pid, &state, &ppid) < 0 || ppid != parent ||
                    (zombies && state != 'Z'))
                        continue;
                if (n < cap)
                        out[n] = pid;
                n++;
        }
        closedir(d);
        return out && n > cap ? cap : n;
}

/* Children of pid in state Z. */
/* Is pid one of the front's zygotes (not a worker, the closer or the GPU broker)? */
static inline bool is_zygote(pid_t pid)
{
        char path[64], comm[32] = "";
        bool yes = false;
        FILE *f;

        snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
        if ((f = fopen(path, "re"))) {
                yes = fgets(comm, sizeof(comm), f) && strncmp(comm, "forkserverd-zy", 14) == 0;
                fclose(f);
        }
        return yes;
}

/* The front's zygotes. */
static inline size_t zygotes_of(pid_t front, pid_t *out, size_t cap)
{
        pid_t kids[256];
        size_t n = children_of(front, false, kids, 256), k = 0;

        for (size_t i = 0; i < n && k < cap; i++)
                if (is_zygote(kids[i]))
                        out[k++] = kids[i];
        return k;
}

/* Zombies of parent that outlast a second: the daemon reaps on its loop, never waiting for a
 * child to die, so one just killed may be a zombie for a moment, but not for long. */
static inline int count_zombies(pid_t parent)
{
        int n;

        for (int i = 0; (n = (int)children_of(parent, true, NULL, 0)) > 0 && i < 100; i++)
                usleep(10 * 1000);
        return n;
}

/* A raw connection, for speaking the protocol by hand. */
static inline int raw_connect(const char *path)
{
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

        ck_assert_int_ge(fd, 0);
        strcpy(sa.sun_path, path);
        ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
        return fd;
}

/* Receives one message with a timeout; returns its length, 0 at EOF, -ETIMEDOUT. */
static inline int raw_recv(int fd, uint8_t *buf, size_t cap, int timeout_ms)
{
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        int fds[4];
        size_t nfds;
        int n;

        if (poll(&pf, 1, timeout_ms) != 1)
                return -ETIMEDOUT;
        n = fs_fdpass_recv(fd, buf, cap, fds, 4, &nfds, 0);
        fs_close_many(fds, nfds);
        return n;
}

static inline uint16_t msg_type(const uint8_t *buf, int n)
{
        struct fs_hdr h;
        struct fs_buf p;

        ck_assert_int_eq(fs_proto_parse_hdr(buf, (size_t)n, &h, &p), 0);
        return h.type;
}

/* Completes the handshake by hand on a raw connection. */
static inline void raw_auth(int fd, const char *key_path)
{
        static uint8_t buf[FS_MAX_MSG];
        struct fs_auth_client c;
        struct fs_creds self;
        struct fs_key *k;
        int n;

        ck_assert_int_eq(fs_key_load_file(key_path, &k, NULL), 0);
        n = raw_recv(fd, buf, sizeof(buf), 5000);
        ck_assert_int_gt(n, 0);
        fs_creds_self(&self);
        n = fs_auth_client_hello(&c, k, &self, buf, (size_t)n, buf, sizeof(buf), NULL);
        ck_assert_int_gt(n, 0);
        ck_assert_int_eq(fs_fdpass_send(fd, buf, (size_t)n, NULL, 0, 0), 0);
        n = raw_recv(fd, buf, sizeof(buf), 5000);
        ck_assert_int_gt(n, 0);
        ck_assert_int_eq(fs_auth_client_finish(&c, k, buf, (size_t)n, NULL), 0);
        fs_key_free(k);
}

/* Counts occurrences of needle in every readable mapping of pid (needs ptrace rights). */
static inline int scan_memory(pid_t pid, const uint8_t *needle, size_t n)
{
        char path[64], line[512];
        static uint8_t chunk[1 << 20];
        int found = 0, mem;
        FILE *maps;

        snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
        ck_assert_ptr_nonnull(maps = fopen(path, "re"));
        snprintf(path, sizeof(path), "/proc/%d/mem", (int)pid);
        ck_assert_int_ge(mem = open(path, O_RDONLY | O_CLOEXEC), 0);
        while (fgets(line, sizeof(line), maps)) {
                unsigned long lo, hi;
                char perms[8];

                /* over 1 GiB is a sanitizer's shadow reservation, not our data */
                if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) != 3 || perms[0] != 'r' ||
                    strstr(line, "[vvar]") || strstr(line, "[vsyscall]") || hi - lo > (1ul << 30))
                        continue;
                for (unsigned long a = lo; a < hi; a += sizeof(chunk) - n) {
                        size_t want = hi - a < sizeof(chunk) ? hi - a : sizeof(chunk);
                        ssize_t got = pread(mem, chunk, want, (off_t)a);

                        if (got < (ssize_t)n)
                                break;
                        for (ssize_t i = 0; i + (ssize_t)n <= got; i++)
                                found += memcmp(chunk + i, needle, n) == 0;
                        if (want < sizeof(chunk))
                                break;
                }
        }
        fclose(maps);
        close(mem);
        return found;
}
