/* Fork-mode entries for the tests (preloaded as libjobs), and the channel echo service. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "client/forkserver.h"

#define EXPORT __attribute__((visibility("default")))

EXPORT int job_exit(const struct forkserver_worker *w);
EXPORT int job_signal(const struct forkserver_worker *w);
EXPORT int job_sleep(const struct forkserver_worker *w);
EXPORT int job_echo(const struct forkserver_worker *w);
EXPORT int job_report(const struct forkserver_worker *w);
EXPORT int job_noop(const struct forkserver_worker *w);
EXPORT int job_index(const struct forkserver_worker *w);
EXPORT int job_scan(const struct forkserver_worker *w);
EXPORT int job_fopen(const struct forkserver_worker *w);
EXPORT int job_cpu(const struct forkserver_worker *w);
EXPORT int job_stack(const struct forkserver_worker *w);

static long arg_number(const struct forkserver_worker *w)
{
        char buf[32] = {0};

        memcpy(buf, w->arg, w->arglen < sizeof(buf) - 1 ? w->arglen : sizeof(buf) - 1);
        return strtol(buf, NULL, 10);
}

int job_noop(const struct forkserver_worker *w)
{
        (void)w;
        return 0;
}

/* The load test's worker: its argument as one line on stdout, exit (index*7)%256. */
int job_index(const struct forkserver_worker *w)
{
        char line[34];
        size_t n = w->arglen < 32 ? w->arglen : 32;

        memcpy(line, w->arg, n);
        line[n++] = '\n';
        if (write(1, line, n) != (ssize_t)n)
                return 254;
        return (int)(arg_number(w) * 7 % 256);
}

/* Writes a line into the file its argument names, through a stream it leaves open: returning
 * must flush it. */
int job_fopen(const struct forkserver_worker *w)
{
        char path[256] = {0};
        FILE *f;

        memcpy(path, w->arg, w->arglen < sizeof(path) - 1 ? w->arglen : sizeof(path) - 1);
        if (!(f = fopen(path, "w")))
                return 1;
        fputs("left in the buffer\n", f);
        return 0;
}

/* The CPU it runs on, as libc and as the kernel say (a worker has no rseq area). */
int job_cpu(const struct forkserver_worker *w)
{
        (void)w;
        for (int i = 0; i < 1000; i++) { /* it may move between the two */
                unsigned cpu = ~0u;

                if (syscall(SYS_getcpu, &cpu, NULL, NULL) < 0)
                        return 2;
                if (sched_getcpu() == (int)cpu)
                        return 0;
        }
        return 1;
}

/* Uses 2 MiB of stack, as a main thread may (its usual limit is 8 MiB). */
int job_stack(const struct forkserver_worker *w)
{
        volatile char big[2 << 20];

        (void)w;
        for (size_t i = 0; i < sizeof(big); i += 4096)
                big[i] = (char)i;
        return big[sizeof(big) - 4096] == (char)(sizeof(big) - 4096) ? 0 : 1;
}

int job_exit(const struct forkserver_worker *w)
{
        return (int)arg_number(w);
}

int job_signal(const struct forkserver_worker *w)
{
        raise((int)arg_number(w));
        return 99;
}

int job_sleep(const struct forkserver_worker *w)
{
        (void)w;
        for (;;)
                pause();
}

static int count_fds(void)
{
        DIR *d = opendir("/proc/self/fd");
        int n = 0;

        if (!d)
                return -1;
        for (struct dirent *e; (e = readdir(d));)
                n += e->d_name[0] != '.';
        closedir(d);
        return n - 1;
}

/* Prints what the worker was given: arg, channel, fds, open fds and $X, on stdout. */
int job_report(const struct forkserver_worker *w)
{
        printf("arg=%.*s channel=%d nfds=%zu open=%d X=%s\n", (int)w->arglen, (const char *)w->arg,
               w->channel_fd, w->nfds, count_fds(), getenv("X") ? getenv("X") : "-");
        return 0;
}

static int reply(int ch, const char *text, const int *fds, size_t nfds)
{
        return forkserver_channel_send(ch, text, strlen(text), fds, nfds);
}

/*
 * Serves the channel until EOF: "mem"+memfd → "mem"+a new memfd with the contents in upper
 * case; "pipe"+fd → writes a line into it; "count"+fds → their number; "fds" → how many fds
 * this process has open; "env" → $FORKSERVER_CHANNEL_FD; "bye" → exits 7. A message it cannot
 * receive gets "refused: ERRNO".
 */
int job_echo(const struct forkserver_worker *w)
{
        static char buf[FORKSERVER_CHANNEL_MAX_BYTES + 1];
        int fds[FORKSERVER_CHANNEL_MAX_FDS], ch = w->channel_fd;
        char text[64];

        for (;;) {
                size_t nfds;
                int n = forkserver_channel_recv(ch, buf, sizeof(buf) - 1, fds, 64, &nfds);

                if (n == -EPIPE)
                        return 0;
                if (n < 0) {
                        snprintf(text, sizeof(text), "refused: %d", -n);
                        reply(ch, text, NULL, 0);
                        continue;
                }
                buf[n] = '\0';
                if (strcmp(buf, "mem") == 0 && nfds == 1) {
                        char data[256];
                        ssize_t k = pread(fds[0], data, sizeof(data), 0);
                        int out = memfd_create("upper", MFD_CLOEXEC);

                        for (ssize_t i = 0; i < k; i++)
                                data[i] = (char)toupper((unsigned char)data[i]);
                        if (k < 0 || out < 0 || write(out, data, (size_t)k) != k)
                                return 1;
                        reply(ch, "mem", &out, 1);
                        close(out);
                } else if (strcmp(buf, "pipe") == 0 && nfds == 1) {
                        if (write(fds[0], "from worker\n", 12) != 12)
                                return 1;
                        reply(ch, "ok", NULL, 0);
                } else if (strcmp(buf, "count") == 0) {
                        snprintf(text, sizeof(text), "%zu", nfds);
                        reply(ch, text, NULL, 0);
                } else if (strcmp(buf, "fds") == 0) {
                        snprintf(text, sizeof(text), "%d", count_fds());
                        reply(ch, text, NULL, 0);
                } else if (strcmp(buf, "env") == 0) {
                        const char *e = getenv("FORKSERVER_CHANNEL_FD");

                        reply(ch, e ? e : "-", NULL, 0);
                } else if (strcmp(buf, "bye") == 0) {
                        return 7;
                } else {
                        reply(ch, "?", NULL, 0);
                }
                for (size_t i = 0; i < nfds; i++)
                        close(fds[i]);
        }
}

/* GPU: maps its first buffer and writes its argument at offset 0. 0, or 10 + the step. */
EXPORT int job_gpu_write(const struct forkserver_worker *w);
int job_gpu_write(const struct forkserver_worker *w)
{
        struct forkserver_gpu_map m;

        if (w->ngpu < 1)
                return 10;
        if (forkserver_gpu_map(&w->gpu[0], &m) < 0)
                return 11;
        if (forkserver_gpu_fill(&m, 0) < 0 || forkserver_gpu_write(&m, 0, w->arg, w->arglen) < 0)
                return 12;
        return forkserver_gpu_unmap(&m) < 0 ? 13 : 0;
}

/* GPU: fills its first buffer with 0 and writes its argument there, says "ok" on stdout and
 * keeps the mapping until its stdin ends: what it wrote must be on the device by then, for
 * another process to read (the fake applies unsynchronized work only at sync or unmap). */
EXPORT int job_gpu_write_hold(const struct forkserver_worker *w);
int job_gpu_write_hold(const struct forkserver_worker *w)
{
        struct forkserver_gpu_map m;
        char c;

        if (w->ngpu < 1)
                return 10;
        if (forkserver_gpu_map(&w->gpu[0], &m) < 0)
                return 11;
        if (forkserver_gpu_fill(&m, 0) < 0 || forkserver_gpu_write(&m, 0, w->arg, w->arglen) < 0)
                return 12;
        if (write(1, "ok\n", 3) != 3)
                return 13;
        while (read(0, &c, 1) > 0)
                ;
        return forkserver_gpu_unmap(&m) < 0 ? 14 : 0;
}

/* GPU: hands its first buffer's fd on to a child of its own, which keeps it until its stdin
 * ends, and exits at once: the memory outlives the worker, out of the daemon's sight. */
EXPORT int job_gpu_pass_on(const struct forkserver_worker *w);
int job_gpu_pass_on(const struct forkserver_worker *w)
{
        pid_t pid;
        char c;

        if (w->ngpu < 1)
                return 10;
        if ((pid = fork()) < 0)
                return 11;
        if (pid == 0) {
                while (read(0, &c, 1) > 0)
                        ;
                _exit(0);
        }
        return 0;
}

/* GPU: arg "FD:UUID:SIZE:LEN": maps that fd (a plain extra fd, described the way
 * FORKSERVER_GPU_FDS describes one) and prints its first LEN bytes. */
EXPORT int job_gpu_read(const struct forkserver_worker *w);
int job_gpu_read(const struct forkserver_worker *w)
{
        char arg[160], *len_at, data[256];
        struct forkserver_gpu_buf b;
        struct forkserver_gpu_map m;
        size_t n, len;

        snprintf(arg, sizeof(arg), "%.*s", (int)w->arglen, (const char *)w->arg);
        if (!(len_at = strrchr(arg, ':')) || (len = strtoul(len_at + 1, NULL, 10)) > sizeof(data))
                return 10;
        *len_at = '\0';
        if (setenv("FORKSERVER_GPU_FDS", arg, 1) < 0 || forkserver_gpu_from_env(&b, 1, &n) < 0 ||
            n != 1)
                return 11;
        if (forkserver_gpu_map(&b, &m) < 0)
                return 12;
        if (forkserver_gpu_read(&m, 0, data, len) < 0)
                return 13;
        fwrite(data, 1, len, stdout);
        return forkserver_gpu_unmap(&m) < 0 ? 14 : 0;
}

/*
 * Counts, in its own memory, a secret it is given XORed with 0x5a (so that its own request does
 * not hold it), leaving out the one buffer it decodes the secret into. Prints the count.
 */
int job_scan(const struct forkserver_worker *w)
{
        static char maps[1 << 16], chunk[1 << 16];
        char *needle, out[32];
        size_t n = w->arglen, got = 0;
        int fd, found = 0;
        ssize_t k;

        if (n == 0 || n > 256 || !(needle = malloc(n)))
                return 2;
        for (size_t i = 0; i < n; i++)
                needle[i] = (char)(((const unsigned char *)w->arg)[i] ^ 0x5a);
        if ((fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC)) < 0)
                return 3;
        while (got < sizeof(maps) - 1 && (k = read(fd, maps + got, sizeof(maps) - 1 - got)) > 0)
                got += (size_t)k;
        close(fd);
        maps[got] = '\0';
        /* Our memory through a pipe: write() fails with EFAULT where a plain read would
         * crash, and /proc/self/mem is root's in a process that is not dumpable. */
        int p[2];

        if (pipe2(p, O_CLOEXEC) < 0 || fcntl(p[1], F_SETPIPE_SZ, (int)sizeof(chunk)) < 0)
                return 4;
        fd = p[1];
        for (char *save, *line = strtok_r(maps, "\n", &save); line;
             line = strtok_r(NULL, "\n", &save)) {
                unsigned long lo, hi;
                char perms[8];

                if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) != 3 || perms[0] != 'r' ||
                    strstr(line, "[vvar]") || strstr(line, "[vsyscall]") || hi - lo > (1ul << 30))
                        continue;
                for (unsigned long a = lo; a < hi;) {
                        size_t want = hi - a < sizeof(chunk) ? hi - a : sizeof(chunk);

                        /* raw: a sanitizer's write() would check the memory it is given */
                        k = syscall(SYS_write, fd, (const void *)a, want);
                        if (k < (ssize_t)n || read(p[0], chunk, (size_t)k) != k)
                                break;
                        for (ssize_t i = 0; i + (ssize_t)n <= k; i++)
                                if (memcmp(chunk + i, needle, n) == 0 &&
                                    a + (unsigned long)i != (uintptr_t)needle &&
                                    !(a + (unsigned long)i >= (uintptr_t)chunk &&
                                      a + (unsigned long)i < (uintptr_t)chunk + sizeof(chunk)))
                                        found++; /* not the decoded copy, nor our reading */
                        if (a + (unsigned long)k >= hi)
                                break;
                        a += (unsigned long)k - n + 1; /* a match across the cut is found once */
                }
        }
        close(p[0]);
        close(p[1]);
        snprintf(out, sizeof(out), "%d\n", found);
        return write(1, out, strlen(out)) > 0 ? 0 : 5;
}
