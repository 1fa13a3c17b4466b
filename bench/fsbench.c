/*
 * fsbench: what creating a process costs, by method, side by side in one run.
 *
 * Each method creates TOTAL processes keeping at most ACTIVE alive, for each (ACTIVE, TOTAL)
 * and each repetition, with the methods interleaved inside a repetition (in an order that
 * rotates) so that drift on a shared machine hits all alike. Reported per method: procs/sec
 * (median, min, max over repetitions) and the latency of one create→exit→reaped (p50, p99,
 * pooled over repetitions; the JSON adds p10, p90, min and max). fs_handshake and uds_rtt
 * report operations/sec and their own latency.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client/forkserver.h"
#include "common/key.h"
#include "common/util.h"

extern char **environ;

#define MAX_SAMPLES (1 << 16)

struct config {
        const char *sock, *key, *static_prog, *libbench;
        /* a second daemon, with --prefork 0, for fs_fork_noprefork; sock0 NULL: none */
        const char *sock0, *key0;
        struct forkserver_key *fkey0;
        const char *prefork; /* the first daemon's --prefork; NULL: its default */
        const char *only;    /* comma-separated method names, or NULL for all */
        int zygote_mib;
        struct forkserver_key *fkey;
        int reps;
        bool quick;
};

struct method {
        const char *name;
        const char *program; /* "" when none */
        const char *profile; /* "" when not forkserver */
        int (*run)(const struct method *m, const struct config *c, int active, int total,
                   double *lat_us, int *nlat);
};

static double now_s(void)
{
        return (double)fs_now_us() / 1e6;
}

/* ---- raw methods in this process ---- */

static char *ballast;
static size_t ballast_len;
static double untimed; /* seconds a run spent on set-up that its rate must not count */

/* Makes this process hold mib MiB of touched memory, on 4 KiB pages or huge pages. */
static int hold_ballast(int mib, bool huge)
{
        if (ballast)
                munmap(ballast, ballast_len);
        ballast = NULL;
        ballast_len = (size_t)mib << 20;
        if (mib == 0)
                return 0;
        ballast =
            mmap(NULL, ballast_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (ballast == MAP_FAILED) {
                ballast = NULL;
                return -1;
        }
        madvise(ballast, ballast_len, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
        memset(ballast, 1, ballast_len);
        return 0;
}

struct slot {
        pid_t pid;
        int64_t t0;
};

static int reap_one(struct slot *slots, int active, double *lat, int *nlat)
{
        int st;
        pid_t pid;

        do
                pid = waitpid(-1, &st, 0);
        while (pid < 0 && errno == EINTR);
        if (pid < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
                return -1;
        for (int i = 0; i < active; i++)
                if (slots[i].pid == pid) {
                        if (*nlat < MAX_SAMPLES)
                                lat[(*nlat)++] = (double)(fs_now_us() - slots[i].t0);
                        slots[i].pid = 0;
                        return i;
                }
        return -1;
}

static pid_t start_raw(const struct method *m)
{
        char *argv[] = {(char *)m->program, NULL};
        pid_t pid;

        if (strcmp(m->name, "fork") == 0 || strcmp(m->name, "fork_sized") == 0) {
                pid = fork();
                if (pid == 0)
                        _exit(0);
                return pid;
        }
        if (strcmp(m->name, "posix_spawn") == 0)
                return posix_spawn(&pid, m->program, NULL, NULL, argv, environ) == 0 ? pid : -1;
        pid = vfork();
        if (pid == 0) {
                execve(m->program, argv, environ);
                _exit(127);
        }
        return pid;
}

static int run_raw(const struct method *m, const struct config *c, int active, int total,
                   double *lat, int *nlat)
{
        struct slot slots[64] = {{0}};
        int started = 0, done = 0;

        double t0 = now_s();

        (void)c;
        if (strcmp(m->name, "fork_sized") == 0 &&
            hold_ballast(c->zygote_mib, strcmp(m->program, "thp") == 0) < 0)
                return -1;
        untimed += now_s() - t0;
        while (started < active && started < total) {
                slots[started].t0 = fs_now_us();
                if ((slots[started].pid = start_raw(m)) <= 0)
                        return -1;
                started++;
        }
        while (done < total) {
                int i = reap_one(slots, active, lat, nlat);

                if (i < 0)
                        return -1;
                done++;
                if (started < total) {
                        slots[i].t0 = fs_now_us();
                        if ((slots[i].pid = start_raw(m)) <= 0)
                                return -1;
                        started++;
                }
        }
        t0 = now_s();
        if (ballast)
                hold_ballast(0, false);
        untimed += now_s() - t0;
        return 0;
}

/* ---- forkserver methods ---- */

static int connect_fs(const struct config *c, struct forkserver **ret)
{
        struct forkserver_options o = {.socket_path = c->sock, .key = c->fkey, .key_fd = -1};
        const char *why;
        int r = forkserver_connect(&o, ret, &why);

        if (r < 0)
                fprintf(stderr, "fsbench: %s\n", why);
        return r;
}

static int run_fs_exec(const struct method *m, const struct config *c, int active, int total,
                       double *lat, int *nlat)
{
        const char *argv[] = {m->program, NULL};
        bool noprefork = strcmp(m->name, "fs_fork_noprefork") == 0;
        bool fork_mode = noprefork || strcmp(m->name, "fs_fork") == 0;
        struct config c0 = *c;
        struct forkserver_spawn_args a = {.path = fork_mode ? NULL : m->program,
                                          .argv = fork_mode ? NULL : argv,
                                          .entry = fork_mode ? "libbench:noop" : NULL,
                                          .profile = m->profile};
        struct {
                uint64_t id; /* 0: free */
                int64_t t0;
        } live[64] = {{0}};
        int64_t sub_t0[64];
        uint32_t tickets[64];
        struct forkserver *fs;
        int started = 0, done = 0, running = 0, r = 0;

        if (noprefork) { /* the same, from the daemon that forks on each request */
                c0.sock = c->sock0;
                c0.fkey = c->fkey0;
        }
        if (connect_fs(&c0, &fs) < 0)
                return -1;
        while (done < total) {
                struct forkserver_proc *w;
                int k = 0, st;

                /* refill: send all requests first (pipelined), then collect the replies */
                while (running + k < active && started + k < total) {
                        sub_t0[k] = fs_now_us();
                        if ((r = forkserver_spawn_submit(fs, &a, &tickets[k])) < 0)
                                goto out;
                        k++;
                }
                for (int i = 0; i < k; i++) {
                        if ((r = forkserver_spawn_collect(fs, tickets[i], &w)) < 0)
                                goto out;
                        for (int j = 0; j < active; j++)
                                if (live[j].id == 0) {
                                        live[j].id = forkserver_proc_id(w);
                                        live[j].t0 = sub_t0[i];
                                        break;
                                }
                }
                running += k;
                started += k;
                if ((r = forkserver_wait_any(fs, -1, &w)) < 0)
                        goto out;
                forkserver_poll(fs, w, &st);
                if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
                        r = -EIO;
                        goto out;
                }
                for (int j = 0; j < active; j++)
                        if (live[j].id == forkserver_proc_id(w)) {
                                if (*nlat < MAX_SAMPLES)
                                        lat[(*nlat)++] = (double)(fs_now_us() - live[j].t0);
                                live[j].id = 0;
                                break;
                        }
                forkserver_proc_free(fs, w);
                running--;
                done++;
        }
out:
        if (r < 0)
                fprintf(stderr, "fsbench: %s: %s\n", m->name, forkserver_error(fs));
        forkserver_close(fs);
        return r < 0 ? -1 : 0;
}

/* A new connection and full handshake for every spawn, ACTIVE connections at once. */
static int run_fs_reconnect(const struct method *m, const struct config *c, int active, int total,
                            double *lat, int *nlat)
{
        const char *argv[] = {m->program, NULL};
        struct forkserver_spawn_args a = {.path = m->program, .argv = argv, .profile = m->profile};
        struct {
                struct forkserver *fs;
                struct forkserver_proc *w;
                int64_t t0;
        } s[64] = {{0}};
        int started = 0, done = 0;

        for (;;) {
                struct pollfd pf[64];

                for (int i = 0; i < active; i++)
                        if (!s[i].fs && started < total) {
                                s[i].t0 = fs_now_us();
                                if (connect_fs(c, &s[i].fs) < 0 ||
                                    forkserver_spawn(s[i].fs, &a, &s[i].w) < 0)
                                        return -1;
                                started++;
                        }
                if (done == total)
                        return 0;
                for (int i = 0; i < active; i++)
                        pf[i] = (struct pollfd){.fd = s[i].fs ? forkserver_fd(s[i].fs) : -1,
                                                .events = POLLIN};
                if (poll(pf, (nfds_t)active, -1) < 0 && errno != EINTR)
                        return -1;
                for (int i = 0; i < active; i++) {
                        int st;

                        if (!s[i].fs || !(pf[i].revents & POLLIN))
                                continue;
                        if (forkserver_poll(s[i].fs, s[i].w, &st) != 1)
                                continue;
                        if (*nlat < MAX_SAMPLES)
                                lat[(*nlat)++] = (double)(fs_now_us() - s[i].t0);
                        forkserver_close(s[i].fs);
                        s[i].fs = NULL;
                        done++;
                }
        }
}

static int run_fs_handshake(const struct method *m, const struct config *c, int active, int total,
                            double *lat, int *nlat)
{
        (void)m;
        (void)active;
        for (int i = 0; i < total; i++) {
                struct forkserver *fs;
                int64_t t0 = fs_now_us();

                if (connect_fs(c, &fs) < 0)
                        return -1;
                if (*nlat < MAX_SAMPLES)
                        lat[(*nlat)++] = (double)(fs_now_us() - t0);
                forkserver_close(fs);
        }
        return 0;
}

/* A 1-byte round trip between two processes over a socketpair: the protocol's floor. */
static int run_uds_rtt(const struct method *m, const struct config *c, int active, int total,
                       double *lat, int *nlat)
{
        int sv[2], st;
        char b = 0;
        pid_t pid;

        (void)m;
        (void)c;
        (void)active;
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
                return -1;
        if ((pid = fork()) == 0) {
                close(sv[0]);
                while (read(sv[1], &b, 1) == 1 && write(sv[1], &b, 1) == 1)
                        ;
                _exit(0);
        }
        close(sv[1]);
        for (int i = 0; i < total; i++) {
                int64_t t0 = fs_now_us();

                if (write(sv[0], &b, 1) != 1 || read(sv[0], &b, 1) != 1)
                        break;
                if (*nlat < MAX_SAMPLES)
                        lat[(*nlat)++] = (double)(fs_now_us() - t0);
        }
        close(sv[0]);
        waitpid(pid, &st, 0);
        return 0;
}

/* ---- 1 MiB round trips: through a worker's channel (memfd passed) and through pipes ---- */

#define RTT_BYTES (1 << 20)

static int run_chan_rtt(const struct method *m, const struct config *c, int active, int total,
                        double *lat, int *nlat)
{
        static char data[RTT_BYTES];
        struct forkserver_spawn_args a = {.entry = "libbench:echo_memfd",
                                          .flags = FORKSERVER_SPAWN_CHANNEL};
        struct forkserver_proc *w;
        struct forkserver *fs;
        int mfd, ch, st, r = -1;

        (void)m;
        (void)active;
        if (connect_fs(c, &fs) < 0)
                return -1;
        if (forkserver_spawn(fs, &a, &w) < 0 || (mfd = memfd_create("rtt", MFD_CLOEXEC)) < 0) {
                forkserver_close(fs);
                return -1;
        }
        ch = forkserver_proc_channel(w);
        memset(data, 'x', sizeof(data));
        for (int i = 0; i < total; i++) {
                int64_t t0 = fs_now_us();
                size_t nfds;
                int back;
                char msg[8];

                /* write the bytes, pass the fd, the worker reads them all, the fd comes back
                 * and the bytes are read again here: 1 MiB each way, as through a pipe */
                if (pwrite(mfd, data, sizeof(data), 0) != sizeof(data) ||
                    forkserver_channel_send(ch, "rtt", 3, &mfd, 1) < 0 ||
                    forkserver_channel_recv(ch, msg, sizeof(msg), &back, 1, &nfds) < 0 || nfds != 1)
                        goto out;
                if (pread(back, data, sizeof(data), 0) != sizeof(data)) {
                        close(back);
                        goto out;
                }
                close(back);
                if (*nlat < MAX_SAMPLES)
                        lat[(*nlat)++] = (double)(fs_now_us() - t0);
        }
        r = 0;
out:
        close(mfd);
        close(forkserver_proc_take_channel(w)); /* EOF: the worker returns */
        forkserver_wait(fs, w, &st);
        forkserver_close(fs);
        return r;
}

static int run_pipe_rtt(const struct method *m, const struct config *c, int active, int total,
                        double *lat, int *nlat)
{
        static char data[RTT_BYTES];
        int there[2], back[2], st;
        pid_t pid;

        (void)m;
        (void)c;
        (void)active;
        if (pipe2(there, O_CLOEXEC) < 0 || pipe2(back, O_CLOEXEC) < 0)
                return -1;
        if ((pid = fork()) == 0) {
                close(there[1]); /* or it never sees EOF */
                close(back[0]);
                for (;;) {
                        size_t got = 0;
                        ssize_t n = 0;

                        while (got < sizeof(data) &&
                               (n = read(there[0], data + got, sizeof(data) - got)) > 0)
                                got += (size_t)n;
                        if (got < sizeof(data) || fs_write_all(back[1], data, got) < 0)
                                _exit(0);
                }
        }
        close(there[0]);
        close(back[1]);
        memset(data, 'x', sizeof(data));
        for (int i = 0; i < total; i++) {
                int64_t t0 = fs_now_us();
                size_t got = 0;
                ssize_t n = 0;

                if (fs_write_all(there[1], data, sizeof(data)) < 0)
                        break;
                while (got < sizeof(data) &&
                       (n = read(back[0], data + got, sizeof(data) - got)) > 0)
                        got += (size_t)n;
                if (got < sizeof(data))
                        break;
                if (*nlat < MAX_SAMPLES)
                        lat[(*nlat)++] = (double)(fs_now_us() - t0);
        }
        close(there[1]);
        close(back[0]);
        waitpid(pid, &st, 0);
        return 0;
}

/* ---- statistics and output ---- */

static int cmp_double(const void *a, const void *b)
{
        double x = *(const double *)a, y = *(const double *)b;

        return x < y ? -1 : x > y;
}

static double pct(double *v, int n, double p)
{
        if (n == 0)
                return 0;
        qsort(v, (size_t)n, sizeof(*v), cmp_double);
        return v[(int)((n - 1) * p + 0.5)];
}

struct result {
        const struct method *m;
        int active, total, zygote_mib;
        double rates[32];
        int nrates;
        double *lat;
        int nlat;
};

static void machine_json(FILE *f)
{
        struct utsname u;
        char line[512], model[256] = "unknown";
        FILE *ci = fopen("/proc/cpuinfo", "re");

        while (ci && fgets(line, sizeof(line), ci))
                if (strncmp(line, "model name", 10) == 0) {
                        char *p = strchr(line, ':');

                        (void)fs_format(model, sizeof(model), "%s", p ? p + 2 : line);
                        model[strcspn(model, "\n")] = '\0';
                        break;
                }
        if (ci)
                fclose(ci);
        uname(&u);
        fprintf(f, "{\"cpu\": \"%s\", \"kernel\": \"%s %s\", \"cores\": %ld}", model, u.sysname,
                u.release, sysconf(_SC_NPROCESSORS_ONLN));
}

static void write_json(const char *path, int reps, struct result *res, int nres)
{
        FILE *f = fopen(path, "we");

        if (!f) {
                perror(path);
                return;
        }
        fprintf(f, "{\"machine\": ");
        machine_json(f);
        fprintf(f, ",\n \"reps\": %d,\n \"results\": [\n", reps);
        for (int i = 0; i < nres; i++) {
                struct result *r = &res[i];
                double rs[32];

                memcpy(rs, r->rates, sizeof(rs));
                double med = pct(rs, r->nrates, 0.5), mn = pct(rs, r->nrates, 0),
                       mx = pct(rs, r->nrates, 1);
                fprintf(f,
                        "  {\"method\": \"%s\", \"program\": \"%s\", \"profile\": \"%s\", "
                        "\"zygote_mib\": %d, \"active\": %d, \"total\": %d, "
                        "\"procs_per_sec\": {\"median\": %.1f, \"min\": %.1f, \"max\": %.1f}, "
                        "\"latency_us\": {\"p50\": %.1f, \"p99\": %.1f, \"p10\": %.1f, "
                        "\"p90\": %.1f, \"min\": %.1f, \"max\": %.1f}}%s\n",
                        r->m->name, r->m->program, r->m->profile, r->zygote_mib, r->active,
                        r->total, med, mn, mx, pct(r->lat, r->nlat, 0.5),
                        pct(r->lat, r->nlat, 0.99), pct(r->lat, r->nlat, 0.1),
                        pct(r->lat, r->nlat, 0.9), pct(r->lat, r->nlat, 0), pct(r->lat, r->nlat, 1),
                        i + 1 < nres ? "," : "");
        }
        fprintf(f, " ]}\n");
        fclose(f);
}

/* ---- a private daemon ---- */

/* Daemon slot 0 is the one every method uses, slot 1 the --prefork 0 one. */
static pid_t start_daemon(struct config *c, char *dir, int slot)
{
        static char socks[2][256], keys[2][256], mib[32];
        char *sock = socks[slot], *key = keys[slot];
        const char *prefork = slot ? "0" : c->prefork;
        char exe[4096], daemon[4096], hex[FS_KEY_HEX_LEN + 1];
        const char *env = getenv("FORKSERVERD");
        struct fs_key *k;
        int p[2], fd;
        pid_t pid;
        ssize_t n;

        if (env && *env) {
                snprintf(daemon, sizeof(daemon), "%s", env);
        } else if ((n = readlink("/proc/self/exe", exe, sizeof(exe) - 1)) > 0) {
                exe[n] = '\0';
                *strrchr(exe, '/') = '\0';
                if (fs_format(daemon, sizeof(daemon), "%s/../forkserver/forkserverd", exe) < 0)
                        return -1;
        }
        if (!mkdtemp(dir) || fs_key_generate(&k) < 0)
                return -1;
        snprintf(mib, sizeof(mib), "%d", c->zygote_mib);
        snprintf(sock, sizeof(socks[0]), "%s/s.sock", dir);
        snprintf(key, sizeof(keys[0]), "%s/key", dir);
        fs_key_hex(k, hex);
        fs_key_free(k);
        fd = open(key, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0 || fs_write_all(fd, hex, sizeof(hex)) < 0)
                return -1;
        close(fd);
        if (pipe2(p, O_CLOEXEC) < 0)
                return -1;
        if ((pid = fork()) == 0) {
                dup2(p[1], 3);
                prctl(PR_SET_PDEATHSIG, SIGTERM); /* a killed fsbench leaves no daemon */
                setenv("FSBENCH_ZYGOTE_MIB", mib, 1);
                execl(daemon, "forkserverd", "--foreground", "--socket", sock, "--key-file", key,
                      "--ready-fd", "3", "--allow-root-workers", "--allow-profile", "default,none",
                      "--max-workers", "4096", "--log-level", "warning", "--preload", c->libbench,
                      prefork ? "--prefork" : NULL, prefork, NULL);
                _exit(127);
        }
        close(p[1]);
        char buf[8];
        struct pollfd pf = {.fd = p[0], .events = POLLIN};
        if (poll(&pf, 1, 120000) != 1 || read(p[0], buf, sizeof(buf)) != 6) {
                fprintf(stderr, "fsbench: %s did not start\n", daemon);
                return -1;
        }
        close(p[0]);
        if (slot) {
                c->sock0 = sock;
                c->key0 = key;
        } else {
                c->sock = sock;
                c->key = key;
        }
        return pid;
}

static void print_result(const struct config *c, struct result *r)
{
        double rs[32];

        memcpy(rs, r->rates, sizeof(rs));
        printf("%-18s %-10s %-8s zyg=%-5d N=%d total=%-5d %8.0f/s (min %8.0f max %8.0f)  p50 "
               "%8.1f us  p99 %8.1f us\n",
               r->m->name, strcmp(r->m->program, c->static_prog) == 0 ? "static" : r->m->program,
               r->m->profile, r->zygote_mib, r->active, r->total, pct(rs, r->nrates, 0.5),
               pct(rs, r->nrates, 0), pct(rs, r->nrates, 1), pct(r->lat, r->nlat, 0.5),
               pct(r->lat, r->nlat, 0.99));
}

static bool selected(const struct config *c, const char *name)
{
        size_t n = strlen(name);

        for (const char *p = c->only; p && *p;) {
                const char *end = strchr(p, ',');
                size_t k = end ? (size_t)(end - p) : strlen(p);

                if (k == n && strncmp(p, name, n) == 0)
                        return true;
                p = end ? end + 1 : p + k;
        }
        return !c->only;
}

/* Every (active, total), each method reps times, interleaved in a rotating order. */
static int series(const struct config *c, const struct method *all, int nall, const int *actives,
                  int nact, const int *totals, int ntot, struct result *res, int *nres)
{
        struct method m[32];
        int nm = 0;

        for (int i = 0; i < nall; i++)
                if (selected(c, all[i].name))
                        m[nm++] = all[i];
        if (nm == 0)
                return 0;
        for (int ti = 0; ti < ntot; ti++)
                for (int ai = 0; ai < nact; ai++) {
                        int base = *nres;

                        for (int mi = 0; mi < nm; mi++) {
                                res[*nres] = (struct result){.m = &all[0],
                                                             .active = actives[ai],
                                                             .total = totals[ti],
                                                             .zygote_mib = c->zygote_mib};
                                for (int i = 0; i < nall; i++) /* point at the caller's table */
                                        if (all[i].run == m[mi].run && all[i].name == m[mi].name &&
                                            all[i].program == m[mi].program &&
                                            all[i].profile == m[mi].profile)
                                                res[*nres].m = &all[i];
                                res[*nres].lat = calloc(MAX_SAMPLES, sizeof(double));
                                (*nres)++;
                        }
                        for (int rep = 0; rep < c->reps; rep++)
                                for (int k = 0; k < nm; k++) {
                                        struct result *r = &res[base + (k + rep) % nm];
                                        double t0 = now_s();

                                        untimed = 0;

                                        if (r->m->run(r->m, c, r->active, r->total, r->lat,
                                                      &r->nlat) < 0) {
                                                fprintf(stderr, "fsbench: %s failed\n", r->m->name);
                                                return -1;
                                        }
                                        r->rates[r->nrates++] = r->total / (now_s() - t0 - untimed);
                                }
                        for (int i = base; i < *nres; i++)
                                print_result(c, &res[i]);
                        fflush(stdout);
                }
        return 0;
}

struct daemons {
        char dir[2][128];
        pid_t pid[2]; /* 0: not started */
};

static void stop_daemons(struct config *c, struct daemons *d)
{
        for (int i = 0; i < 2; i++) {
                if (d->pid[i] <= 0)
                        continue;
                kill(d->pid[i], SIGTERM);
                waitpid(d->pid[i], NULL, 0);
                d->pid[i] = 0;
                unlink(i ? c->key0 : c->key);
                rmdir(d->dir[i]);
        }
        forkserver_key_free(c->fkey);
        forkserver_key_free(c->fkey0);
        c->fkey = c->fkey0 = NULL;
}

/* The daemon, and the one with --prefork 0 when fs_fork_noprefork is to run. */
static int start_daemons(struct config *c, struct daemons *d, bool second)
{
        for (int i = 0; i < (second ? 2 : 1); i++) {
                /* $TMPDIR: the socket's directory and its parents are what every worker's
                 * Landlock domain keeps out, listed again whenever they change (a busy /tmp
                 * costs each spawn a new ruleset) */
                const char *tmp = getenv("TMPDIR");

                if (fs_format(d->dir[i], sizeof(d->dir[i]), "%s/fsbench-XXXXXX",
                              tmp && *tmp ? tmp : "/tmp") < 0)
                        return -1;
                if ((d->pid[i] = start_daemon(c, d->dir[i], i)) < 0 ||
                    forkserver_key_load_file(i ? c->key0 : c->key, i ? &c->fkey0 : &c->fkey, NULL) <
                        0) {
                        d->pid[i] = d->pid[i] < 0 ? 0 : d->pid[i];
                        stop_daemons(c, d);
                        return -1;
                }
        }
        return 0;
}

/* "N,N,..." into out[8], each within [lo, hi]: the count, or -1. "" gives 0. */
static int int_list(char *arg, int *out, int lo, int hi)
{
        int n = 0;

        for (char *save, *t = strtok_r(arg, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                if (n == 8 || (out[n] = atoi(t)) < lo || out[n] > hi)
                        return -1;
                n++;
        }
        return n;
}

int main(int argc, char **argv)
{
        static const struct option opts[] = {
            {"quick", no_argument, NULL, 'q'},        {"json", required_argument, NULL, 'j'},
            {"reps", required_argument, NULL, 'r'},   {"methods", required_argument, NULL, 'm'},
            {"totals", required_argument, NULL, 't'}, {"actives", required_argument, NULL, 'a'},
            {"sizes", required_argument, NULL, 's'},  {"prefork", required_argument, NULL, 'p'},
            {"help", no_argument, NULL, 'h'},         {0}};
        char static_prog[4096], exe[4096], libbench[4096];
        struct daemons dm = {0};
        struct config c = {.reps = 5};
        const char *json = NULL;
        int opt, totals_arg[8], ntot_arg = 0, actives[8] = {1, 2, 8}, nact = 3;
        int sizes[8] = {256, 1024}, nsizes = 2;
        ssize_t n;

        while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
                if (opt == 'q')
                        c.quick = true;
                else if (opt == 'j')
                        json = optarg;
                else if (opt == 'r')
                        c.reps = atoi(optarg);
                else if (opt == 'm')
                        c.only = optarg;
                else if (opt == 'p')
                        c.prefork = optarg;
                else if (opt == 't') {
                        if ((ntot_arg = int_list(optarg, totals_arg, 1, MAX_SAMPLES)) < 1)
                                return 2;
                } else if (opt == 'a') {
                        if ((nact = int_list(optarg, actives, 1, 64)) < 1)
                                return 2;
                } else if (opt == 's') {
                        if ((nsizes = int_list(optarg, sizes, 1, 4096)) < 0)
                                return 2;
                } else {
                        fprintf(stderr, "usage: fsbench [--quick] [--reps N] [--json FILE] "
                                        "[--methods NAME,...] [--totals N,...] "
                                        "[--actives N,...] [--sizes MIB,...] [--prefork N]\n");
                        return opt == 'h' ? 0 : 2;
                }
        }
        if (c.quick)
                c.reps = c.reps > 2 ? 2 : c.reps;
        if (c.reps < 1 || c.reps > 32)
                return 2;
        if ((n = readlink("/proc/self/exe", exe, sizeof(exe) - 1)) <= 0)
                return 1;
        exe[n] = '\0';
        *strrchr(exe, '/') = '\0';
        if (fs_format(static_prog, sizeof(static_prog), "%s/true-static", exe) < 0)
                return 1;
        c.static_prog = static_prog;
        if (fs_format(libbench, sizeof(libbench), "%s/libbench.so", exe) < 0)
                return 1;
        c.libbench = libbench;
        bool second = selected(&c, "fs_fork_noprefork");

        if (start_daemons(&c, &dm, second) < 0)
                return 1;

        const struct method methods[] = {
            {"fork", "", "", run_raw},
            {"vfork_exec", static_prog, "", run_raw},
            {"vfork_exec", "/bin/true", "", run_raw},
            {"posix_spawn", static_prog, "", run_raw},
            {"posix_spawn", "/bin/true", "", run_raw},
            {"fs_exec", static_prog, "default", run_fs_exec},
            {"fs_exec", static_prog, "none", run_fs_exec},
            {"fs_exec", "/bin/true", "default", run_fs_exec},
            {"fs_exec_reconnect", static_prog, "default", run_fs_reconnect},
            {"fs_fork", "", "default", run_fs_exec},
            {"fs_fork", "", "none", run_fs_exec},
            {"fs_fork_noprefork", "", "default", run_fs_exec},
            {"fs_handshake", "", "", run_fs_handshake},
            {"uds_rtt", "", "", run_uds_rtt},
            {"chan_rtt_1m", "", "", run_chan_rtt},
            {"pipe_rtt_1m", "", "", run_pipe_rtt},
        };
        /* the zygote-size series: forkserver with a large zygote beside raw fork from a bench
         * process holding the same memory, on 4 KiB pages and on huge pages */
        const struct method sized[] = {
            {"fs_exec", static_prog, "default", run_fs_exec},
            {"fs_fork", "", "default", run_fs_exec},
            {"fs_fork_noprefork", "", "default", run_fs_exec},
            {"fork_sized", "4k", "", run_raw},
            {"fork_sized", "thp", "", run_raw},
        };
        const int totals_full[] = {256, 1024, 4096}, totals_quick[] = {128};
        static struct result res[256];
        int nres = 0;

        if (series(&c, methods, (int)FS_ARRAY_SIZE(methods), actives, nact,
                   ntot_arg  ? totals_arg
                   : c.quick ? totals_quick
                             : totals_full,
                   ntot_arg  ? ntot_arg
                   : c.quick ? 1
                             : 3,
                   res, &nres) < 0)
                goto fail;
        for (int i = 0; i < nsizes; i++) {
                const int two[] = {2}, total[] = {c.quick ? 32 : 256};

                stop_daemons(&c, &dm);
                c.zygote_mib = sizes[i];
                if (start_daemons(&c, &dm, second) < 0)
                        return 1;
                if (series(&c, sized, (int)FS_ARRAY_SIZE(sized), two, 1, total, 1, res, &nres) < 0)
                        goto fail;
        }
        if (json) {
                /* the JSON names the static program "static" too */
                for (int i = 0; i < nres; i++)
                        if (strcmp(res[i].m->program, static_prog) == 0)
                                ((struct method *)res[i].m)->program = "static";
                write_json(json, c.reps, res, nres);
        }
        stop_daemons(&c, &dm);
        return 0;
fail:
        stop_daemons(&c, &dm);
        return 1;
}
