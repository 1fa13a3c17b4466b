/* forkctl: keygen, run, ping, status, stop (see forkctl --help). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "client/forkserver.h"
#include "common/key.h"
#include "common/paths.h"
#include "common/util.h"

#define EXIT_FAIL 1
#define EXIT_USAGE 2
#define EXIT_RUN_FAIL 125 /* forkctl run: our own failure */
#define EXIT_NOEXEC 126   /* forkctl run: found but not executable */
#define EXIT_NOTFOUND 127 /* forkctl run: not found */
#define MAX_ENV_ADD 1024
#define MAX_FD_MAP 64
#define READY_TIMEOUT_MS 10000

extern char **environ;

static const char usage_text[] =
    "Usage: forkctl keygen [-o FILE]\n"
    "       forkctl [--socket PATH] [--key-file PATH | --key-fd N] [--server-uid UID]\n"
    "               run [--profile NAME] [--cwd DIR] [--env K=V]... [--clear-env]\n"
    "               [--fd CHILD=PARENT]... [--detach] [--gpu DEV:SIZE]... [--no-private]\n"
    "               -- PROG [ARG]...\n"
    "       forkctl [...] run [options] --entry LIBNAME:SYMBOL [-- ARG...]\n"
    "       forkctl [...] ping | status [--prometheus] [--output FILE] | stop\n"
    "       forkctl [COMMAND] --help | --version\n"
    "\n"
    "  keygen      write a fresh key (64 hex digits, mode 600) to FILE, '-' for stdout,\n"
    "              or by default to the default key path; never overwrites\n"
    "  run         run PROG in a worker with forkctl's stdio, cwd and environment (plus\n"
    "              --env; only --env with --clear-env); exit with its status (128+N for\n"
    "              signal N). With no server reachable and none named, start a private\n"
    "              one for this run (saying so on stderr), unless --no-private.\n"
    "              --entry runs SYMBOL of a library the server preloaded, without exec;\n"
    "              the ARGs become its argument bytes, each ended by a NUL.\n"
    "              --gpu gives the worker a GPU buffer of SIZE bytes (K, M, G) on the\n"
    "              server's device DEV (in forkserverd --cuda-devices order), as an fd in\n"
    "              $FORKSERVER_GPU_FDS (FD:UUID:SIZE,...).\n"
    "  ping        check that the server answers\n"
    "  status      print the server's counters as JSON, or with --prometheus in the\n"
    "              Prometheus text format; --output FILE writes them atomically\n"
    "  stop        ask the server to stop (as SIGTERM)\n"
    "  --server-uid UID  also accept a server whose socket belongs to UID (besides\n"
    "              our own uid and root's), and directories of UID on its path\n"
    "  -h, --help  this text; after a command, that command's\n"
    "  --version   print the version and exit\n"
    "\n"
    "Exit status: run: the worker's, or 125 forkctl failed (options, server, key, cwd,\n"
    "a refused spawn), 126 PROG not executable, 127 PROG not found; others: 0 success,\n"
    "1 failure, 2 usage error.\n";

static const char keygen_help[] =
    "Usage: forkctl keygen [-o FILE]\n"
    "\n"
    "Writes a fresh key (64 hex digits and a newline, mode 600) to FILE, to stdout for\n"
    "'-', or by default to the default key path (creating its directory, mode 700).\n"
    "Never overwrites an existing file.\n"
    "\n"
    "  -o FILE     where to write the key\n"
    "  -h, --help  this text\n"
    "\n"
    "Exit status: 0 written, 1 failure, 2 usage error.\n";

static const char run_help[] =
    "Usage: forkctl [GLOBAL OPTIONS] run [OPTIONS] -- PROG [ARG]...\n"
    "       forkctl [GLOBAL OPTIONS] run [OPTIONS] --entry LIBNAME:SYMBOL [-- ARG...]\n"
    "\n"
    "Runs PROG in a worker with forkctl's stdin, stdout, stderr, working directory and\n"
    "environment, forwards SIGINT, SIGTERM, SIGHUP and SIGQUIT to it, and exits with its\n"
    "status. PROG without a slash is looked up in forkctl's $PATH. With no server\n"
    "reachable at the default socket and none named (--socket, --key-file, --key-fd,\n"
    "$FORKSERVER_SOCKET), forkctl starts a private server for this run, says so on\n"
    "stderr, and stops it after.\n"
    "\n"
    "  --profile NAME      the worker's seccomp profile (the server decides which are\n"
    "                      allowed)\n"
    "  --cwd DIR           its working directory (default: forkctl's)\n"
    "  --env K=V           add or replace an environment variable (repeatable)\n"
    "  --clear-env         start from an empty environment, as env -i: only the --env\n"
    "                      values reach the worker\n"
    "  --fd CHILD=PARENT   give forkctl's fd PARENT to the worker as fd CHILD\n"
    "                      (repeatable, at most 64)\n"
    "  --detach            the worker outlives forkctl's connection: print its pid and\n"
    "                      exit 0 at once (never starts a private server)\n"
    "  --gpu DEV:SIZE      a GPU buffer of SIZE bytes (K, M, G) on the server's device\n"
    "                      DEV, as an fd in $FORKSERVER_GPU_FDS (repeatable, at most 8)\n"
    "  --entry LIBNAME:SYMBOL  fork mode: call SYMBOL of a library the server preloaded,\n"
    "                      without exec; the ARGs become its argument bytes, each ended\n"
    "                      by a NUL\n"
    "  --no-private        with no server reachable, fail (125) rather than start one\n"
    "  -h, --help          this text\n"
    "\n"
    "Exit status: the worker's (128+N when killed by signal N); 125 forkctl itself failed\n"
    "(a bad option, no server, the key, a refused spawn, a --cwd that does not exist);\n"
    "126 PROG cannot be executed; 127 PROG was not found.\n";

static const char ping_help[] = "Usage: forkctl [GLOBAL OPTIONS] ping\n"
                                "\n"
                                "Checks that the server answers and prints the round-trip time.\n"
                                "\n"
                                "  -h, --help  this text\n"
                                "\n"
                                "Exit status: 0 it answered, 1 failure, 2 usage error.\n";

static const char status_help[] =
    "Usage: forkctl [GLOBAL OPTIONS] status [--prometheus] [--output FILE]\n"
    "\n"
    "Prints the server's counters as JSON (dotted names as nested objects; \"version\"\n"
    "as a string), or in the Prometheus text format.\n"
    "\n"
    "  --prometheus    the Prometheus text format (with forkserver_build_info)\n"
    "  --output FILE   write to FILE atomically (a temporary file renamed over it, mode\n"
    "                  644; on failure FILE is left as it was), e.g. for node_exporter's\n"
    "                  textfile collector\n"
    "  -h, --help      this text\n"
    "\n"
    "Exit status: 0 printed, 1 failure, 2 usage error.\n";

static const char stop_help[] = "Usage: forkctl [GLOBAL OPTIONS] stop\n"
                                "\n"
                                "Asks the server to stop, as SIGTERM would: its workers end.\n"
                                "\n"
                                "  -h, --help  this text\n"
                                "\n"
                                "Exit status: 0 it is stopping, 1 failure, 2 usage error.\n";

struct global {
        const char *socket;
        const char *key_file;
        int key_fd;
        uid_t server_uid; /* 0: none named */
};

static __attribute__((format(printf, 2, 3))) int fail(int code, const char *fmt, ...)
{
        va_list ap;

        fputs("forkctl: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
        return code;
}

/* ---- keygen ---- */

static int cmd_keygen(int argc, char **argv)
{
        char path[4096], sock[FS_SOCKET_PATH_MAX], dir[4096], hex[FS_KEY_HEX_LEN + 1];
        const char *out = NULL;
        struct fs_key *k;
        int c, fd, r;

        static const struct option opts[] = {{"help", no_argument, NULL, 'h'}, {0}};

        optind = 1;
        while ((c = getopt_long(argc, argv, "+o:h", opts, NULL)) != -1) {
                if (c == 'o')
                        out = optarg;
                else if (c == 'h')
                        return fputs(keygen_help, stdout), 0;
                else
                        return fail(EXIT_USAGE, "usage: forkctl keygen [-o FILE]");
        }
        if (optind != argc)
                return fail(EXIT_USAGE, "keygen: unexpected argument '%s'", argv[optind]);
        if (!out) {
                if (fs_default_socket(sock, sizeof(sock)) < 0 ||
                    fs_default_key(sock, path, sizeof(path)) < 0 ||
                    fs_dirname(path, dir, sizeof(dir)) < 0)
                        return fail(EXIT_FAIL, "keygen: default key path too long; use -o");
                if (mkdir(dir, 0700) < 0 && errno != EEXIST)
                        return fail(EXIT_FAIL, "keygen: cannot create %s: %s", dir,
                                    strerror(errno));
                out = path;
        }
        if (strcmp(out, "-") == 0)
                fd = STDOUT_FILENO;
        else if ((fd = open(out, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600)) < 0)
                return fail(EXIT_FAIL, "keygen: cannot create %s: %s%s", out, strerror(errno),
                            errno == EEXIST ? " (not overwritten; remove it first)" : "");
        if ((r = fs_key_generate(&k)) < 0) {
                if (fd != STDOUT_FILENO)
                        close(fd), unlink(out);
                return fail(EXIT_FAIL, "keygen: no random bytes: %s", strerror(-r));
        }
        fs_key_hex(k, hex);
        fs_key_free(k);
        r = fs_write_all(fd, hex, sizeof(hex));
        OPENSSL_cleanse(hex, sizeof(hex));
        if (fd != STDOUT_FILENO && (close(fd) < 0 && r == 0))
                r = -errno;
        if (r < 0) {
                if (fd != STDOUT_FILENO)
                        unlink(out);
                return fail(EXIT_FAIL, "keygen: writing %s: %s", out, strerror(-r));
        }
        if (fd != STDOUT_FILENO)
                fprintf(stderr, "forkctl: key written to %s\n", out);
        return 0;
}

/* ---- connecting, with a private daemon when none is there ---- */

struct private_daemon {
        pid_t pid;
        char dir[PATH_MAX];
        char socket[FS_SOCKET_PATH_MAX];
        struct fs_key *key;
};

static bool socket_reachable(const char *path)
{
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        fs_autoclose int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

        if (fd < 0 || strlen(path) >= sizeof(sa.sun_path))
                return false;
        strcpy(sa.sun_path, path);
        return connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
}

static bool executable(const char *p)
{
        struct stat st;

        return stat(p, &st) == 0 && S_ISREG(st.st_mode) && access(p, X_OK) == 0;
}

/* $FORKSERVERD, beside forkctl (installed or build tree), then $PATH. */
static int find_daemon(char *buf, size_t size)
{
        static const char *const rel[] = {"forkserverd", "../sbin/forkserverd",
                                          "../forkserver/forkserverd"};
        const char *e = getenv("FORKSERVERD");
        char self[PATH_MAX], dir[PATH_MAX];
        ssize_t n;

        if (e && *e) {
                snprintf(buf, size, "%s", e);
                return executable(buf) ? 0 : -ENOENT;
        }
        if ((n = readlink("/proc/self/exe", self, sizeof(self) - 1)) > 0) {
                self[n] = '\0';
                if (fs_dirname(self, dir, sizeof(dir)) == 0)
                        for (size_t i = 0; i < FS_ARRAY_SIZE(rel); i++) {
                                if (fs_format(buf, size, "%s/%s", dir, rel[i]) == 0 &&
                                    executable(buf))
                                        return 0;
                        }
        }
        const char *path = getenv("PATH");
        char copy[4096];

        snprintf(copy, sizeof(copy), "%s:/usr/sbin:/usr/local/sbin", path ? path : "/usr/bin:/bin");
        for (char *save, *d = strtok_r(copy, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
                if (fs_format(buf, size, "%s/forkserverd", d) == 0 && executable(buf))
                        return 0;
        }
        return -ENOENT;
}

static void private_stop(struct private_daemon *d)
{
        char path[PATH_MAX + 32];

        if (d->pid > 0) {
                kill(d->pid, SIGTERM);
                while (waitpid(d->pid, NULL, 0) < 0 && errno == EINTR)
                        ;
                d->pid = 0;
        }
        if (d->dir[0]) {
                snprintf(path, sizeof(path), "%s/forkserverd.sock", d->dir);
                unlink(path); /* only if the daemon could not */
                rmdir(d->dir);
                d->dir[0] = '\0';
        }
        fs_key_free(fs_take_ptr(&d->key));
}

static int private_start(struct private_daemon *d, const char *def)
{
        const char *rt = getenv("XDG_RUNTIME_DIR");
        char daemon[PATH_MAX], hex[FS_KEY_HEX_LEN + 1], ready[8];
        int keyp[2] = {-1, -1}, readyp[2] = {-1, -1}, r;
        posix_spawn_file_actions_t fa;
        struct pollfd pf;
        ssize_t n;

        if (find_daemon(daemon, sizeof(daemon)) < 0)
                return fail(-1, "no server is running and forkserverd was not found");
        snprintf(d->dir, sizeof(d->dir), "%s/forkctl-XXXXXX", rt && *rt == '/' ? rt : "/tmp");
        if (!mkdtemp(d->dir)) {
                d->dir[0] = '\0';
                return fail(-1, "cannot create a private directory: %s", strerror(errno));
        }
        if (fs_format(d->socket, sizeof(d->socket), "%s/forkserverd.sock", d->dir) < 0) {
                r = fail(-1, "private directory path %s is too long for a socket", d->dir);
                goto out;
        }
        if ((r = fs_key_generate(&d->key)) < 0 || pipe2(keyp, O_CLOEXEC) < 0 ||
            pipe2(readyp, O_CLOEXEC) < 0) {
                r = fail(-1, "private server set-up failed: %s", strerror(r < 0 ? -r : errno));
                goto out;
        }
        /* it serves its starter alone: root's private server gives root workers */
        char *const args[] = {daemon,
                              "--socket",
                              d->socket,
                              "--key-fd",
                              "3",
                              "--ready-fd",
                              "4",
                              "--foreground",
                              "--log-level",
                              "warning",
                              "--allow-root-workers",
                              NULL};
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_adddup2(&fa, keyp[0], 3);
        posix_spawn_file_actions_adddup2(&fa, readyp[1], 4);
        r = posix_spawn(&d->pid, daemon, &fa, NULL, args, environ);
        posix_spawn_file_actions_destroy(&fa);
        keyp[0] = fs_close(keyp[0]);
        readyp[1] = fs_close(readyp[1]);
        if (r != 0) {
                d->pid = 0;
                r = fail(-1, "cannot start %s: %s", daemon, strerror(r));
                goto out;
        }
        /* The key travels over a pipe, never argv or the environment. */
        fs_key_hex(d->key, hex);
        r = fs_write_all(keyp[1], hex, sizeof(hex));
        OPENSSL_cleanse(hex, sizeof(hex));
        keyp[1] = fs_close(keyp[1]);
        pf = (struct pollfd){.fd = readyp[0], .events = POLLIN};
        if (r < 0 || poll(&pf, 1, READY_TIMEOUT_MS) <= 0 ||
            (n = read(readyp[0], ready, sizeof(ready))) != 6 || memcmp(ready, "READY\n", 6) != 0) {
                r = fail(-1, "the private server did not start");
                goto out;
        }
        /* Not silent: a user who expected their own server learns it was not there. */
        fprintf(stderr, "forkctl: no server at %s: started a private one (pid %d) for this run\n",
                def, (int)d->pid);
        r = 0;
out:
        fs_close_many(keyp, 2);
        fs_close_many(readyp, 2);
        if (r < 0)
                private_stop(d);
        return r;
}

static int open_conn(const struct global *g, bool allow_private, struct private_daemon *priv,
                     struct forkserver **ret)
{
        struct forkserver_options o = {
            .socket_path = g->socket, .key_file = g->key_file, .server_uid = g->server_uid};
        struct forkserver_key *key = NULL;
        char def[FS_SOCKET_PATH_MAX];
        const char *why = "";
        int r;

        if (allow_private && !g->socket && !g->key_file && g->key_fd < 0 &&
            !getenv("FORKSERVER_SOCKET") && fs_default_socket(def, sizeof(def)) == 0 &&
            !socket_reachable(def)) {
                if (private_start(priv, def) < 0)
                        return -1;
                o.socket_path = priv->socket;
                o.key = (const struct forkserver_key *)priv->key;
        }
        if (g->key_fd >= 0) {
                /* loaded here: the library's key_fd 0 means none, and --key-fd 0 is stdin */
                r = forkserver_key_load_fd(g->key_fd, &key, &why);
                close(g->key_fd);
                if (r < 0)
                        return fail(r, "--key-fd %d: %s", g->key_fd, why);
                o.key = key;
        }
        r = forkserver_connect(&o, ret, &why);
        forkserver_key_free(key);
        if (r < 0) {
                fail(-1, "%s", why);
                private_stop(priv);
        }
        return r;
}

/* ---- run ---- */

/* Resolves PROG like a shell: a name without '/' through $PATH, relative paths against cwd. */
static int resolve_prog(const char *prog, const char *cwd, char *buf, size_t size)
{
        if (strchr(prog, '/')) {
                if ((prog[0] == '/' ? fs_format(buf, size, "%s", prog)
                                    : fs_format(buf, size, "%s/%s", cwd, prog)) < 0)
                        return -ENAMETOOLONG;
                return access(buf, F_OK) == 0 ? 0 : -ENOENT;
        }
        const char *path = getenv("PATH");
        char copy[8192];
        bool found_noexec = false;

        snprintf(copy, sizeof(copy), "%s", path ? path : "/usr/local/bin:/usr/bin:/bin");
        for (char *save, *d = strtok_r(copy, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
                struct stat st;

                if ((*d == '/' ? fs_format(buf, size, "%s/%s", d, prog)
                               : fs_format(buf, size, "%s/%s/%s", cwd, d, prog)) < 0)
                        continue;
                if (stat(buf, &st) == 0 && S_ISREG(st.st_mode)) {
                        if (access(buf, X_OK) == 0)
                                return 0;
                        found_noexec = true;
                }
        }
        return found_noexec ? -EACCES : -ENOENT;
}

/* forkctl's environment (none with --clear-env) with each --env K=V replacing or adding K. */
static const char **build_env(bool clear, char **add, size_t nadd)
{
        size_t n = 0, k = 0;
        const char **env;

        while (!clear && environ[n])
                n++;
        if (!(env = calloc(n + nadd + 1, sizeof(*env))))
                return NULL;
        for (size_t i = 0; i < n; i++) {
                bool replaced = false;

                for (size_t j = 0; j < nadd && !replaced; j++) {
                        size_t kl = (size_t)(strchr(add[j], '=') - add[j]);

                        replaced = strncmp(environ[i], add[j], kl + 1) == 0;
                }
                if (!replaced)
                        env[k++] = environ[i];
        }
        for (size_t j = 0; j < nadd; j++)
                env[k++] = add[j];
        env[k] = NULL;
        return env;
}

static int report_exit(int status, pid_t pid)
{
        if (WIFEXITED(status))
                return WEXITSTATUS(status);
        int sig = WTERMSIG(status);

        if (sig == SIGSYS)
                fprintf(stderr, "forkctl: worker %d killed by seccomp (SIGSYS)\n", (int)pid);
        else if (sig != SIGINT && sig != SIGPIPE)
                fprintf(stderr, "forkctl: worker %d killed by signal %d (%s)%s\n", (int)pid, sig,
                        strsignal(sig), WCOREDUMP(status) ? ", core dumped" : "");
        return 128 + sig;
}

/* Waits for the worker, forwarding the signals a terminal or a supervisor sends us. */
static int wait_forwarding(struct forkserver *fs, struct forkserver_proc *w, int *ret_status)
{
        sigset_t sigs;
        fs_autoclose int sfd = -1;
        int r;

        sigemptyset(&sigs);
        sigaddset(&sigs, SIGINT);
        sigaddset(&sigs, SIGTERM);
        sigaddset(&sigs, SIGHUP);
        sigaddset(&sigs, SIGQUIT);
        sigprocmask(SIG_BLOCK, &sigs, NULL);
        if ((sfd = signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK)) < 0)
                return forkserver_wait(fs, w, ret_status);
        for (;;) {
                struct pollfd p[2] = {{.fd = forkserver_fd(fs), .events = POLLIN},
                                      {.fd = sfd, .events = POLLIN}};
                struct signalfd_siginfo si;

                if ((r = forkserver_poll(fs, w, ret_status)) != 0)
                        return r < 0 ? r : 0;
                if (poll(p, 2, -1) < 0 && errno != EINTR)
                        return -errno;
                while (read(sfd, &si, sizeof(si)) == sizeof(si))
                        (void)forkserver_kill(fs, w, (int)si.ssi_signo);
        }
}

static int cmd_run(const struct global *g, int argc, char **argv)
{
        enum {
                O_PROFILE = 256,
                O_CWD,
                O_ENV,
                O_FD,
                O_DETACH,
                O_ENTRY,
                O_GPU,
                O_CLEAR_ENV,
                O_NO_PRIVATE
        };
        static const struct option opts[] = {
            {"profile", required_argument, NULL, O_PROFILE},
            {"cwd", required_argument, NULL, O_CWD},
            {"env", required_argument, NULL, O_ENV},
            {"clear-env", no_argument, NULL, O_CLEAR_ENV},
            {"fd", required_argument, NULL, O_FD},
            {"detach", no_argument, NULL, O_DETACH},
            {"entry", required_argument, NULL, O_ENTRY},
            {"gpu", required_argument, NULL, O_GPU},
            {"no-private", no_argument, NULL, O_NO_PRIVATE},
            {"help", no_argument, NULL, 'h'},
            {0},
        };
        bool clear_env = false, no_private = false;
        static char argbytes[60000];
        struct forkserver_gpu_request gpu[8];
        size_t ngpu = 0;
        const char *entry = NULL;
        size_t arglen = 0;
        static char *env_add[MAX_ENV_ADD];
        struct forkserver_fd_map map[MAX_FD_MAP];
        struct private_daemon priv = {0};
        struct forkserver_proc *w;
        struct forkserver *fs;
        char here[PATH_MAX], cwd[PATH_MAX], prog[PATH_MAX];
        const char *cwd_arg = NULL, *profile = NULL;
        size_t nenv = 0, nmap = 0;
        unsigned flags = 0;
        int c, r, status;

        optind = 1;
        while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
                switch (c) {
                case 'h':
                        fputs(run_help, stdout);
                        return 0;
                case O_PROFILE:
                        profile = optarg;
                        break;
                case O_CLEAR_ENV:
                        clear_env = true;
                        break;
                case O_NO_PRIVATE:
                        no_private = true;
                        break;
                case O_CWD:
                        cwd_arg = optarg;
                        break;
                case O_ENV:
                        if (!strchr(optarg, '=') || optarg[0] == '=')
                                return fail(EXIT_RUN_FAIL, "--env: need K=V, got '%s'", optarg);
                        if (nenv == MAX_ENV_ADD)
                                return fail(EXIT_RUN_FAIL, "--env: at most %d", MAX_ENV_ADD);
                        env_add[nenv++] = optarg;
                        break;
                case O_FD: {
                        long child, parent;
                        char *eq = strchr(optarg, '=');

                        if (!eq)
                                return fail(EXIT_RUN_FAIL, "--fd: need CHILD=PARENT, got '%s'",
                                            optarg);
                        *eq = '\0';
                        if (fs_parse_long(optarg, 0, 1023, &child) < 0 ||
                            fs_parse_long(eq + 1, 0, INT_MAX, &parent) < 0)
                                return fail(EXIT_RUN_FAIL, "--fd: bad numbers in '%s=%s'", optarg,
                                            eq + 1);
                        if (fcntl((int)parent, F_GETFD) < 0)
                                return fail(EXIT_RUN_FAIL, "--fd: fd %ld is not open", parent);
                        for (size_t i = 0; i < nmap; i++)
                                if (map[i].child_fd == child)
                                        nmap--, memmove(&map[i], &map[i + 1],
                                                        (nmap - i) * sizeof(map[0]));
                        if (nmap == MAX_FD_MAP)
                                return fail(EXIT_RUN_FAIL, "--fd: at most %d", MAX_FD_MAP);
                        map[nmap++] = (struct forkserver_fd_map){(int)child, (int)parent};
                        break;
                }
                case O_DETACH:
                        flags |= FORKSERVER_SPAWN_DETACH;
                        break;
                case O_ENTRY:
                        if (!strchr(optarg, ':'))
                                return fail(EXIT_RUN_FAIL, "--entry: need LIBNAME:SYMBOL, got '%s'",
                                            optarg);
                        entry = optarg;
                        break;
                case O_GPU: {
                        const char *colon = strchr(optarg, ':');
                        long dev;
                        char num[16];

                        if (!colon || (size_t)(colon - optarg) >= sizeof(num) || ngpu == 8)
                                return fail(EXIT_RUN_FAIL,
                                            "--gpu: need DEV:SIZE (at most 8), "
                                            "got '%s'",
                                            optarg);
                        snprintf(num, sizeof(num), "%.*s", (int)(colon - optarg), optarg);
                        if (fs_parse_long(num, 0, 1023, &dev) < 0 ||
                            fs_parse_size(colon + 1, &gpu[ngpu].size) < 0 || !gpu[ngpu].size)
                                return fail(EXIT_RUN_FAIL, "--gpu: bad device or size in '%s'",
                                            optarg);
                        gpu[ngpu++].device = (unsigned)dev;
                        break;
                }
                default:
                        return fail(EXIT_RUN_FAIL, "run: bad option (see forkctl run --help)");
                }
        }
        if (entry) {
                for (int i = optind; i < argc; i++) {
                        size_t n = strlen(argv[i]) + 1;

                        if (n > sizeof(argbytes) - arglen)
                                return fail(EXIT_RUN_FAIL,
                                            "--entry: arguments longer than %zu "
                                            "bytes",
                                            sizeof(argbytes));
                        memcpy(argbytes + arglen, argv[i], n);
                        arglen += n;
                }
        } else if (optind >= argc) {
                return fail(EXIT_RUN_FAIL, "run: no program given");
        }
        if (!getcwd(here, sizeof(here)))
                return fail(EXIT_RUN_FAIL, "cannot get the current directory: %s", strerror(errno));
        if (!cwd_arg)
                r = fs_format(cwd, sizeof(cwd), "%s", here);
        else if (cwd_arg[0] == '/')
                r = fs_format(cwd, sizeof(cwd), "%s", cwd_arg);
        else
                r = fs_format(cwd, sizeof(cwd), "%s/%s", here, cwd_arg);
        if (r < 0)
                return fail(EXIT_RUN_FAIL, "--cwd: path too long");
        if (!entry && (r = resolve_prog(argv[optind], here, prog, sizeof(prog))) < 0)
                return fail(r == -EACCES ? EXIT_NOEXEC : EXIT_NOTFOUND, "%s: %s", argv[optind],
                            r == -EACCES ? "permission denied" : "command not found");

        /* Our stdio, unless --fd already placed something there. */
        for (int fd = 0; fd <= 2; fd++) {
                bool taken = false;

                for (size_t i = 0; i < nmap; i++)
                        taken |= map[i].child_fd == fd;
                if (!taken && fcntl(fd, F_GETFD) >= 0 && nmap < MAX_FD_MAP)
                        map[nmap++] = (struct forkserver_fd_map){fd, fd};
        }
        const char **env = build_env(clear_env, env_add, nenv);

        if (!env)
                return fail(EXIT_RUN_FAIL, "out of memory");
        struct forkserver_spawn_args a = {.path = entry ? NULL : prog,
                                          .entry = entry,
                                          .arg = argbytes,
                                          .arglen = arglen,
                                          .argv = entry ? NULL : (const char *const *)argv + optind,
                                          .envp = env,
                                          .gpu = gpu,
                                          .ngpu = ngpu,
                                          .cwd = cwd,
                                          .fds = map,
                                          .nfds = nmap,
                                          .flags = flags,
                                          .profile = profile};

        if (open_conn(g, !(flags & FORKSERVER_SPAWN_DETACH) && !no_private, &priv, &fs) < 0) {
                free(env);
                return EXIT_RUN_FAIL;
        }
        r = forkserver_spawn(fs, &a, &w);
        free(env);
        if (r < 0) {
                int step = forkserver_error_step(fs);

                fail(0, "%s", forkserver_error(fs));
                /* 126 and 127 as env(1): PROG (or the entry) failed to run or is not there.
                 * Any other failure, a --cwd that does not exist included, is our own: 125. */
                if (step == FORKSERVER_STEP_EXEC || step == FORKSERVER_STEP_ENTRY)
                        status = r == -ENOENT ? EXIT_NOTFOUND : EXIT_NOEXEC;
                else
                        status = EXIT_RUN_FAIL;
        } else if (flags & FORKSERVER_SPAWN_DETACH) {
                printf("%d\n", (int)forkserver_proc_pid(w));
                status = 0;
        } else if ((r = wait_forwarding(fs, w, &status)) < 0) {
                fail(0, "lost the worker: %s", forkserver_error(fs));
                status = EXIT_RUN_FAIL;
        } else {
                status = report_exit(status, forkserver_proc_pid(w));
        }
        forkserver_close(fs);
        private_stop(&priv);
        return status;
}

/* ---- ping, status, stop ---- */

/* STATUS counters as nested JSON: "a.b.c" is c inside object b inside object a. The server
 * sends the names of one group together. */
#define STATUS_DEPTH 4

struct status_out {
        bool prometheus;
        bool started, any; /* JSON: "{" written; a member written in the open object */
        size_t depth;
        char open[STATUS_DEPTH][64]; /* JSON: the objects open now */
        char family[96];             /* Prometheus: the metric family typed last */
        char conn_uid[24], conn_pid[24];
        FILE *f; /* stdout, or --output's temporary file */
};

static void json_key(struct status_out *o, const char *k, size_t len)
{
        fputc('"', o->f);
        for (size_t i = 0; i < len; i++) /* names are the server's, but escape all the same */
                fprintf(o->f,
                        k[i] == '"' || k[i] == '\\'  ? "\\%c"
                        : (unsigned char)k[i] < 0x20 ? "?"
                                                     : "%c",
                        k[i]);
        fputc('"', o->f);
}

static void json_sep(struct status_out *o)
{
        if (!o->started)
                fputc('{', o->f);
        o->started = true;
        fprintf(o->f, "%s\n%*s", o->any ? "," : "", (int)(2 * o->depth + 2), "");
}

/* A counter that stands for a word: its JSON is the word (docs/PROTOCOL.md). */
static const char *stat_word(const char *name, uint64_t v)
{
        if (strcmp(name, "workers_run_as") == 0)
                return v == 1 ? "daemon" : v == 2 ? "client" : NULL;
        return NULL;
}

static void json_stat(struct status_out *o, const char *name, uint64_t v)
{
        const char *word = stat_word(name, v);
        const char *part[STATUS_DEPTH + 1];
        size_t len[STATUS_DEPTH + 1], n = 0, common = 0;

        for (const char *p = name;;) {
                const char *dot = n < STATUS_DEPTH ? strchr(p, '.') : NULL;

                part[n] = p;
                len[n++] = dot ? (size_t)(dot - p) : strlen(p);
                if (!dot)
                        break;
                p = dot + 1;
        }
        while (common < o->depth && common + 1 < n && strlen(o->open[common]) == len[common] &&
               memcmp(o->open[common], part[common], len[common]) == 0)
                common++;
        for (; o->depth > common; o->depth--) {
                fprintf(o->f, "\n%*s}", (int)(2 * o->depth), "");
                o->any = true;
        }
        for (; o->depth + 1 < n; o->depth++) {
                json_sep(o);
                json_key(o, part[o->depth], len[o->depth]);
                fprintf(o->f, ": {");
                snprintf(o->open[o->depth], sizeof(o->open[0]), "%.*s", (int)len[o->depth],
                         part[o->depth]);
                o->any = false;
        }
        json_sep(o);
        json_key(o, part[n - 1], len[n - 1]);
        if (word)
                fprintf(o->f, ": \"%s\"", word);
        else if (strcmp(name, "version") == 0) /* MAJOR << 16 | MINOR << 8 | PATCH */
                fprintf(o->f, ": \"%u.%u.%u\"", (unsigned)(v >> 16) & 0xffff,
                        (unsigned)(v >> 8) & 0xff, (unsigned)v & 0xff);
        else
                fprintf(o->f, ": %llu", (unsigned long long)v);
        o->any = true;
}

static bool is_counter(const char *name)
{
        static const char *const counters[] = {
            "connections_total", "auth_ok", "auth_failed",    "auth_pid_bound", "peer_refused",
            "bad_requests",      "spawns",  "spawn_failures", "exits",          "key_reloads"};

        for (size_t i = 0; i < FS_ARRAY_SIZE(counters); i++)
                if (strcmp(name, counters[i]) == 0)
                        return true;
        return false;
}

static void prom_family(struct status_out *o, const char *family, const char *type,
                        const char *help)
{
        if (strcmp(o->family, family) == 0)
                return;
        snprintf(o->family, sizeof(o->family), "%s", family);
        fprintf(o->f, "# HELP %s %s\n# TYPE %s %s\n", family, help, family, type);
}

/* Prometheus text format: counters end in _total, groups become labels. */
static void prom_stat(struct status_out *o, const char *name, uint64_t v)
{
        unsigned long long u = (unsigned long long)v;
        char family[96], id[24], field[32];
        const char *leaf;

        if (strcmp(name, "version") == 0) {
                prom_family(o, "forkserver_build_info", "gauge",
                            "The server's version, as a label; the value is 1.");
                fprintf(o->f, "forkserver_build_info{version=\"%u.%u.%u\"} 1\n",
                        (unsigned)(v >> 16) & 0xffff, (unsigned)(v >> 8) & 0xff,
                        (unsigned)v & 0xff);
        } else if ((leaf = fs_startswith(name, "spawn_failures_by_cause."))) {
                prom_family(o, "forkserver_spawn_failures_by_cause_total", "counter",
                            "Spawn requests that gave no worker, by cause.");
                fprintf(o->f, "forkserver_spawn_failures_by_cause_total{cause=\"%s\"} %llu\n", leaf,
                        u);
        } else if ((leaf = fs_startswith(name, "spawn_latency_us."))) {
                static const char *const q[][2] = {
                    {"p50", "0.5"}, {"p90", "0.9"}, {"p99", "0.99"}, {"max", "1"}};

                if (strcmp(leaf, "samples") == 0) {
                        prom_family(o, "forkserver_spawn_latency_samples", "gauge",
                                    "Spawns the latency quantiles are taken over.");
                        fprintf(o->f, "forkserver_spawn_latency_samples %llu\n", u);
                        return;
                }
                /* quantile labels belong to a summary (promtool refuses them on a gauge); it
                 * has no _sum or _count: the daemon keeps a window, not totals */
                prom_family(o, "forkserver_spawn_latency_seconds", "summary",
                            "Time from a spawn request to its reply, over recent spawns.");
                for (size_t i = 0; i < FS_ARRAY_SIZE(q); i++)
                        if (strcmp(leaf, q[i][0]) == 0)
                                fprintf(o->f,
                                        "forkserver_spawn_latency_seconds{quantile=\"%s\"} %.6f\n",
                                        q[i][1], (double)v / 1e6);
        } else if (sscanf(name, "connection.%23[0-9].%31s", id, field) == 2) {
                /* uid and pid come first and become labels of the workers gauge */
                if (strcmp(field, "uid") == 0) {
                        snprintf(o->conn_uid, sizeof(o->conn_uid), "%llu", u);
                } else if (strcmp(field, "pid") == 0) {
                        snprintf(o->conn_pid, sizeof(o->conn_pid), "%llu", u);
                } else {
                        snprintf(family, sizeof(family), "forkserver_connection_%s", field);
                        prom_family(o, family, "gauge", "Live workers of a connection.");
                        fprintf(o->f, "%s{connection=\"%s\",uid=\"%s\",pid=\"%s\"} %llu\n", family,
                                id, o->conn_uid, o->conn_pid, u);
                }
        } else {
                bool counter = is_counter(name);
                /* Prometheus wants base units: uptime_ms is forkserver_uptime_seconds */
                bool ms = fs_endswith(name, "_ms");

                snprintf(family, sizeof(family), "forkserver_%.*s%s%s",
                         (int)(strlen(name) - (ms ? 3 : 0)), name, ms ? "_seconds" : "",
                         counter && !fs_endswith(name, "_total") ? "_total" : "");
                for (char *p = family; *p; p++)
                        if (*p == '.')
                                *p = '_';
                prom_family(o, family, counter ? "counter" : "gauge", "See forkctl(1).");
                if (ms)
                        fprintf(o->f, "%s %.3f\n", family, (double)v / 1e3);
                else
                        fprintf(o->f, "%s %llu\n", family, u);
        }
}

static int print_stat(void *ud, const char *name, uint64_t v)
{
        struct status_out *o = ud;

        if (o->prometheus)
                prom_stat(o, name, v);
        else
                json_stat(o, name, v);
        return 0;
}

static void status_end(struct status_out *o)
{
        if (o->prometheus)
                return;
        if (!o->started) {
                fputs("{}\n", o->f);
                return;
        }
        for (; o->depth > 0; o->depth--)
                fprintf(o->f, "\n%*s}", (int)(2 * o->depth), "");
        fprintf(o->f, "\n}\n");
}

/* status --output FILE: written to a temporary file beside FILE, renamed over it once
 * complete, so that a reader (node_exporter's textfile collector) never sees half of it and
 * a failure leaves the old one. */
struct output {
        const char *path;
        char tmp[PATH_MAX];
        FILE *f;
};

static int output_open(struct output *out)
{
        int fd;

        if (fs_format(out->tmp, sizeof(out->tmp), "%s.XXXXXX", out->path) < 0)
                return fail(-ENAMETOOLONG, "--output %s: path too long", out->path);
        if ((fd = mkostemp(out->tmp, O_CLOEXEC)) < 0)
                return fail(-errno, "--output %s: %s", out->path, strerror(errno));
        /* readable by a collector running as another user, like a file made by > */
        if (fchmod(fd, 0644) < 0 || !(out->f = fdopen(fd, "w"))) {
                int e = errno;

                close(fd);
                unlink(out->tmp);
                return fail(-e, "--output %s: %s", out->path, strerror(e));
        }
        return 0;
}

static int output_close(struct output *out, bool ok)
{
        int r = 0;

        if (!out->f)
                return 0;
        if (ok && (fflush(out->f) != 0 || fsync(fileno(out->f)) < 0))
                r = -errno;
        if (fclose(out->f) != 0 && r == 0)
                r = -errno;
        out->f = NULL;
        if (ok && r == 0 && rename(out->tmp, out->path) < 0)
                r = -errno;
        if (!ok || r < 0)
                unlink(out->tmp);
        if (ok && r < 0)
                return fail(r, "--output %s: %s", out->path, strerror(-r));
        return 0;
}

static int cmd_simple(const struct global *g, const char *cmd, int argc, char **argv)
{
        struct private_daemon none = {0};
        struct output out = {0};
        bool prometheus = false, status = strcmp(cmd, "status") == 0;
        struct forkserver *fs;
        int64_t t0;
        int r;

        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
                        fputs(strcmp(cmd, "ping") == 0 ? ping_help
                              : status                 ? status_help
                                                       : stop_help,
                              stdout);
                        return 0;
                } else if (status && strcmp(argv[i], "--prometheus") == 0) {
                        prometheus = true;
                } else if (status && strcmp(argv[i], "--output") == 0 && i + 1 < argc) {
                        out.path = argv[++i];
                } else if (status && strncmp(argv[i], "--output=", 9) == 0) {
                        out.path = argv[i] + 9;
                } else {
                        return fail(EXIT_USAGE, "%s takes no arguments%s", cmd,
                                    status ? " but --prometheus and --output FILE" : "");
                }
        }
        if (open_conn(g, false, &none, &fs) < 0)
                return EXIT_FAIL;
        if (out.path && output_open(&out) < 0) {
                forkserver_close(fs);
                return EXIT_FAIL;
        }
        t0 = fs_now_us();
        if (strcmp(cmd, "ping") == 0) {
                if ((r = forkserver_ping(fs)) == 0)
                        printf("pong: %.0f us\n", (double)(fs_now_us() - t0));
        } else if (strcmp(cmd, "status") == 0) {
                struct status_out o = {.prometheus = prometheus, .f = out.f ? out.f : stdout};

                if ((r = forkserver_status(fs, print_stat, &o)) == 0)
                        status_end(&o);
                if (r < 0)
                        fail(0, "%s: %s", cmd, forkserver_error(fs));
                if (output_close(&out, r == 0) < 0) /* says why */
                        r = -EIO;
                forkserver_close(fs);
                return r < 0 ? EXIT_FAIL : 0;
        } else {
                if ((r = forkserver_stop(fs)) == 0)
                        fprintf(stderr, "forkctl: server stopping\n");
        }
        if (r < 0)
                fail(0, "%s: %s", cmd, forkserver_error(fs));
        forkserver_close(fs);
        return r < 0 ? EXIT_FAIL : 0;
}

/* The command word, found before the global options are parsed: a usage error in them is
 * then 125 for run (as env(1): every failure of forkctl itself), 2 for the others. */
static const char *find_command(int argc, char **argv)
{
        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--") == 0)
                        return i + 1 < argc ? argv[i + 1] : NULL;
                if (argv[i][0] != '-')
                        return argv[i];
                if (strcmp(argv[i], "--socket") == 0 || strcmp(argv[i], "--key-file") == 0 ||
                    strcmp(argv[i], "--key-fd") == 0)
                        i++; /* its argument */
        }
        return NULL;
}

int main(int argc, char **argv)
{
        enum { O_SOCKET = 256, O_KEY_FILE, O_KEY_FD, O_SERVER_UID, O_VERSION };
        static const struct option opts[] = {
            {"socket", required_argument, NULL, O_SOCKET},
            {"key-file", required_argument, NULL, O_KEY_FILE},
            {"key-fd", required_argument, NULL, O_KEY_FD},
            {"server-uid", required_argument, NULL, O_SERVER_UID},
            {"help", no_argument, NULL, 'h'},
            {"version", no_argument, NULL, O_VERSION},
            {0},
        };
        const char *first = find_command(argc, argv);
        const int usage = first && strcmp(first, "run") == 0 ? EXIT_RUN_FAIL : EXIT_USAGE;
        struct global g = {.key_fd = -1};
        const char *cmd;
        long v;
        int c;

        while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
                switch (c) {
                case O_SOCKET:
                        g.socket = optarg;
                        break;
                case O_KEY_FILE:
                        g.key_file = optarg;
                        break;
                case O_KEY_FD:
                        if (fs_parse_long(optarg, 0, INT_MAX, &v) < 0)
                                return fail(usage, "--key-fd: not a file descriptor: '%s'", optarg);
                        g.key_fd = (int)v;
                        break;
                case O_SERVER_UID:
                        if (fs_parse_long(optarg, 0, UINT32_MAX - 1, &v) < 0)
                                return fail(EXIT_USAGE, "--server-uid: not a uid: '%s'", optarg);
                        g.server_uid = (uid_t)v;
                        break;
                case 'h':
                        fputs(usage_text, stdout);
                        return 0;
                case O_VERSION:
                        /* the library's version too: a program may run with another one */
                        printf("forkctl %s (libforkserver %s)\n", FS_VERSION, forkserver_version());
                        return 0;
                default:
                        return fail(usage, "bad option (see forkctl --help)");
                }
        }
        if (g.key_file && g.key_fd >= 0)
                return fail(usage, "give --key-file or --key-fd, not both");
        if (optind >= argc)
                return fail(EXIT_USAGE, "no command (see forkctl --help)");
        cmd = argv[optind];
        argc -= optind;
        argv += optind;
        if (strcmp(cmd, "keygen") == 0)
                return cmd_keygen(argc, argv);
        if (strcmp(cmd, "run") == 0)
                return cmd_run(&g, argc, argv);
        if (strcmp(cmd, "ping") == 0 || strcmp(cmd, "status") == 0 || strcmp(cmd, "stop") == 0)
                return cmd_simple(&g, cmd, argc, argv);
        return fail(EXIT_USAGE, "unknown command '%s' (see forkctl --help)", cmd);
}
