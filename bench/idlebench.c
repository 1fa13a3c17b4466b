/*
 * What idle connections cost the daemon: its memory (VmRSS) per authenticated idle
 * connection, and the spawn rate of one more client beside them against its rate with none.
 * Rounds alternate between none and N, so the rates are measured side by side; prints the
 * medians, their ratio, and JSON (the last line).
 *
 *   idlebench SOCKET KEYFILE DAEMON_PID [IDLE [ROUNDS [SECONDS]]]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>

#include "client/forkserver.h"

static double now_s(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long rss_kib(int pid)
{
        char path[64], line[256];
        long kib = -1;
        FILE *f;

        snprintf(path, sizeof(path), "/proc/%d/status", pid);
        if (!(f = fopen(path, "re")))
                return -1;
        while (fgets(line, sizeof(line), f))
                if (sscanf(line, "VmRSS: %ld", &kib) == 1)
                        break;
        fclose(f);
        return kib;
}

static double spawn_rate(struct forkserver *fs, double seconds)
{
        const char *argv[] = {"/bin/true", NULL};
        struct forkserver_spawn_args a = {.path = argv[0], .argv = argv};
        double t0 = now_s(), end = t0 + seconds;
        long n = 0;

        while (now_s() < end) {
                struct forkserver_proc *w;
                int st;

                if (forkserver_spawn(fs, &a, &w) < 0 || forkserver_wait(fs, w, &st) < 0) {
                        fprintf(stderr, "idlebench: spawn: %s\n", forkserver_error(fs));
                        exit(1);
                }
                forkserver_proc_free(fs, w);
                n++;
        }
        return (double)n / (now_s() - t0);
}

static int cmp_double(const void *a, const void *b)
{
        double x = *(const double *)a, y = *(const double *)b;

        return (x > y) - (x < y);
}

static double median(double *v, int n)
{
        qsort(v, (size_t)n, sizeof(*v), cmp_double);
        return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(int argc, char **argv)
{
        struct forkserver_options o = FORKSERVER_OPTIONS_INIT;
        struct forkserver_key *key;
        struct forkserver *probe, **idle;
        const char *why = "";
        double none[16], busy[16], per[16];
        struct rlimit rl;

        if (argc < 4) {
                fprintf(stderr, "usage: idlebench SOCKET KEYFILE DAEMON_PID [IDLE [ROUNDS "
                                "[SECONDS]]]\n");
                return 2;
        }
        int pid = atoi(argv[3]), n = argc > 4 ? atoi(argv[4]) : 10000;
        int rounds = argc > 5 ? atoi(argv[5]) : 3;
        double seconds = argc > 6 ? atof(argv[6]) : 2.0;

        if (rounds < 1 || rounds > 16 || n < 1) {
                fprintf(stderr, "idlebench: 1 to 16 rounds, 1 or more connections\n");
                return 2;
        }
        getrlimit(RLIMIT_NOFILE, &rl);
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        if (forkserver_key_load_file(argv[2], &key, &why) < 0) {
                fprintf(stderr, "idlebench: key: %s\n", why);
                return 1;
        }
        o.socket_path = argv[1];
        o.key = key;
        if (forkserver_connect(&o, &probe, &why) < 0 ||
            !(idle = calloc((size_t)n, sizeof(*idle)))) {
                fprintf(stderr, "idlebench: connect: %s\n", why);
                return 1;
        }
        for (int r = 0; r < rounds; r++) {
                none[r] = spawn_rate(probe, seconds);
                long before = rss_kib(pid);

                for (int i = 0; i < n; i++)
                        if (forkserver_connect(&o, &idle[i], &why) < 0) {
                                fprintf(stderr, "idlebench: connection %d: %s\n", i, why);
                                return 1;
                        }
                if (forkserver_ping(idle[n - 1]) < 0)
                        return 1;
                per[r] = (double)(rss_kib(pid) - before) * 1024.0 / n;
                busy[r] = spawn_rate(probe, seconds);
                for (int i = 0; i < n; i++)
                        forkserver_close(idle[i]);
        }
        double mn = median(none, rounds), mb = median(busy, rounds), mp = median(per, rounds);

        printf("%d idle authenticated connections: %.0f bytes of daemon RSS each; one more "
               "client's spawn rate %.2f x its rate with none (medians of %d rounds)\n",
               n, mp, mb / mn, rounds);
        printf("{\"idle\": %d, \"rounds\": %d, \"bytes_per_idle_connection\": %.0f, "
               "\"spawns_per_s_none\": %.1f, \"spawns_per_s_idle\": %.1f, \"ratio\": %.3f}\n",
               n, rounds, mp, mn, mb, mb / mn);
        forkserver_close(probe);
        forkserver_key_free(key);
        free(idle);
        return 0;
}
