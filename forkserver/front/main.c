/* forkserverd: command line, start-up order, and the one place exit statuses are chosen. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/wait.h>

#include "common/paths.h"
#include "common/util.h"
#include "forkserver/front/privs.h"
#include "forkserver/front/server.h"
#include "forkserver/front/sockdir.h"
#include "forkserver/front/systemd.h"
#include "forkserver/zygote/zygote.h"
#include <stdlib.h>

#define EXIT_USAGE 2

static const char usage_text[] =
    "Usage: forkserverd [--socket PATH] (--key-file PATH | --key-fd N) [--allow-uid UID]...\n"
    "                   [--max-workers N] [--max-pending N] [--max-connections N]\n"
    "                   [--handshake-timeout MS]\n"
    "                   [--min-profile NAME] [--allow-profile LIST] [--profile-dir DIR]\n"
    "                   [--preload LIB]... [--cuda[=auto]] [--cuda-devices LIST]\n"
    "                   [--cuda-quota SIZE] [--cuda-conn-quota SIZE] [--cuda-reserve SIZE]\n"
    "                   [--python-preload MODULES] [--user NAME] [--allow-root-workers]\n"
    "                   [--prefork N] [--require-landlock] [--ready-fd N]\n"
    "                   [--log-level LEVEL] [--foreground]\n"
    "\n"
    "Creates worker processes for authenticated local clients.\n"
    "\n"
    "  --socket PATH           listening socket (default: $FORKSERVER_SOCKET, else\n"
    "                          $XDG_RUNTIME_DIR/forkserver/forkserverd.sock, else\n"
    "                          /tmp/forkserver-$UID/forkserverd.sock)\n"
    "  --key-file PATH         key file: owned by you, mode 600, 32 bytes or 64 hex digits\n"
    "                          (default: $FORKSERVER_KEY_FILE, else 'key' beside the socket)\n"
    "  --key-fd N              read the key from fd N until EOF (at most 5 s), then close it\n"
    "  --allow-uid UID         also accept clients of this uid (repeatable, max 64)\n"
    "  --max-workers N         live workers at most (default 1024)\n"
    "  --max-pending N         unauthenticated connections at most (default 64); over it\n"
    "                          the oldest of the peer (uid, then pid) holding most is cut\n"
    "  --max-connections N     authenticated connections at most (default 16384)\n"
    "  --handshake-timeout MS  time a client has to authenticate (default 5000)\n"
    "  --min-profile NAME      seccomp profile every worker gets in addition to its own\n"
    "                          (default: none)\n"
    "  --allow-profile LIST    profiles clients may ask for, comma-separated\n"
    "                          (default: default,strict; requests naming none get default)\n"
    "  --profile-dir DIR       load more profiles from DIR/NAME.profile\n"
    "  --require-landlock      refuse to start unless the kernel offers Landlock with\n"
    "                          signal scoping (ABI 6, Linux 6.12); without it, workers\n"
    "                          get what the kernel has, and start-up says what is missing\n"
    "  --preload LIB           load LIB (/dir/LIBNAME.so) into the zygotes before listening;\n"
    "                          requests may then run LIBNAME:SYMBOL without exec (max 16)\n"
    "  --prefork N             with --preload: each zygote keeps up to N idle children\n"
    "                          forked ahead, each serving one fork-mode request (0..64,\n"
    "                          default " FSD_PREFORK_DEFAULT_STR "; 0: fork on each request)\n"
    "  --python-preload MODULES  host a Python zygote: preload libforkserver-python.so,\n"
    "                          which starts Python in the zygotes and imports MODULES\n"
    "                          (comma-separated; may be empty) for forkserver.Pool workers\n"
    "  --cuda[=auto]           start a GPU broker that owns CUDA and leases GPU buffers to\n"
    "                          workers as fds; without a usable driver, start-up fails\n"
    "                          (--cuda=auto: the server starts without GPU support)\n"
    "  --cuda-devices LIST     CUDA device ordinals the broker serves, comma-separated\n"
    "                          (default: all); requests name them 0, 1, ... in this order\n"
    "  --cuda-quota SIZE       GPU buffer bytes held by all workers at most (K, M, G, T;\n"
    "                          default: what the devices have)\n"
    "  --cuda-conn-quota SIZE  GPU buffer bytes held by one connection's workers at most\n"
    "                          (a buffer counts until its worker and, if the client took\n"
    "                          its fd, the client's connection and process are gone)\n"
    "  --cuda-reserve SIZE     device memory the broker leaves free on each GPU for the\n"
    "                          workers' own contexts (default: 512M, or 1/8 of a smaller\n"
    "                          device; 0: none)\n"
    "  --user NAME             started as root: become user NAME (or a numeric uid) first,\n"
    "                          keeping CAP_SETUID and CAP_SETGID for the zygotes; the key\n"
    "                          file and socket directory then belong to NAME\n"
    "  --allow-root-workers    clients of uid 0 get workers running as root (with no\n"
    "                          capabilities); without it their spawns are refused. Started\n"
    "                          as root, one of --user and this is required\n"
    "  --ready-fd N            write \"READY\\n\" to fd N once listening, then close it\n"
    "  --log-level LEVEL       error, warning, info (default) or debug\n"
    "  --foreground            do not detach\n"
    "  -h, --help              this text\n"
    "  --version               print the version and exit\n"
    "\n"
    "\n"
    "Under systemd: a socket passed by socket activation (LISTEN_FDS=1, one listening\n"
    "SOCK_SEQPACKET filesystem socket) is used instead of creating one; READY=1 and\n"
    "STOPPING=1 go to $NOTIFY_SOCKET; with no key option, the key is read from\n"
    "$CREDENTIALS_DIRECTORY/forkserver.key when that file exists.\n"
    "Workers run as their client's uid, gid and groups when the daemon holds CAP_SETUID\n"
    "and CAP_SETGID (root with --user, or a service's AmbientCapabilities=), else as the\n"
    "daemon's uid; they keep no capability either way.\n"
    "Signals: SIGTERM, SIGINT stop; SIGHUP re-reads the key file (new connections use\n"
    "the new key; a key that does not load is refused and the old one kept).\n"
    "\n"
    "Exit status: 0 stopped cleanly, 1 start-up or runtime failure, 2 usage error.\n";

static __attribute__((format(printf, 1, 2))) int usage_error(const char *fmt, ...)
{
        va_list ap;

        fprintf(stderr, "forkserverd: ");
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fprintf(stderr, "\nTry 'forkserverd --help'.\n");
        return EXIT_USAGE;
}

static int parse_uint(const char *s, long min, long max, unsigned *ret)
{
        long v;
        int r = fs_parse_long(s, min, max, &v);

        if (r == 0)
                *ret = (unsigned)v;
        return r;
}

/* libforkserver-python.so: $FORKSERVER_PYTHON_LIB, beside forkserverd, or installed. */
static int python_lib(char *buf, size_t size)
{
        const char *e = getenv("FORKSERVER_PYTHON_LIB");
        char self[4096], dir[4096];
        ssize_t n;

        if (e && *e)
                return fs_format(buf, size, "%s", e) == 0 && access(buf, R_OK) == 0 ? 0 : -ENOENT;
        if ((n = readlink("/proc/self/exe", self, sizeof(self) - 1)) > 0) {
                self[n] = '\0';
                if (fs_dirname(self, dir, sizeof(dir)) == 0 &&
                    fs_format(buf, size, "%s/libforkserver-python.so", dir) == 0 &&
                    access(buf, R_OK) == 0)
                        return 0;
        }
        return fs_format(buf, size, "%s", FSD_PYTHON_LIB) == 0 && access(buf, R_OK) == 0 ? 0
                                                                                         : -ENOENT;
}

static int parse_args(int argc, char **argv, struct fsd_options *o)
{
        static char pylib[4096];
        enum {
                O_SOCKET = 256,
                O_KEY_FILE,
                O_KEY_FD,
                O_ALLOW_UID,
                O_MAX_WORKERS,
                O_MAX_PENDING,
                O_HS_TIMEOUT,
                O_READY_FD,
                O_LOG_LEVEL,
                O_FOREGROUND,
                O_MIN_PROFILE,
                O_ALLOW_PROFILE,
                O_PROFILE_DIR,
                O_PRELOAD,
                O_CUDA,
                O_CUDA_DEVICES,
                O_CUDA_QUOTA,
                O_CUDA_CONN_QUOTA,
                O_CUDA_RESERVE,
                O_PYTHON_PRELOAD,
                O_REQUIRE_LANDLOCK,
                O_VERSION,
                O_USER,
                O_ALLOW_ROOT_WORKERS,
                O_MAX_CONNECTIONS,
                O_PREFORK
        };
        static const struct option opts[] = {
            {"socket", required_argument, NULL, O_SOCKET},
            {"key-file", required_argument, NULL, O_KEY_FILE},
            {"key-fd", required_argument, NULL, O_KEY_FD},
            {"allow-uid", required_argument, NULL, O_ALLOW_UID},
            {"max-workers", required_argument, NULL, O_MAX_WORKERS},
            {"max-pending", required_argument, NULL, O_MAX_PENDING},
            {"max-connections", required_argument, NULL, O_MAX_CONNECTIONS},
            {"handshake-timeout", required_argument, NULL, O_HS_TIMEOUT},
            {"ready-fd", required_argument, NULL, O_READY_FD},
            {"log-level", required_argument, NULL, O_LOG_LEVEL},
            {"foreground", no_argument, NULL, O_FOREGROUND},
            {"min-profile", required_argument, NULL, O_MIN_PROFILE},
            {"allow-profile", required_argument, NULL, O_ALLOW_PROFILE},
            {"profile-dir", required_argument, NULL, O_PROFILE_DIR},
            {"preload", required_argument, NULL, O_PRELOAD},
            {"cuda", optional_argument, NULL, O_CUDA},
            {"python-preload", required_argument, NULL, O_PYTHON_PRELOAD},
            {"cuda-devices", required_argument, NULL, O_CUDA_DEVICES},
            {"cuda-quota", required_argument, NULL, O_CUDA_QUOTA},
            {"cuda-conn-quota", required_argument, NULL, O_CUDA_CONN_QUOTA},
            {"cuda-reserve", required_argument, NULL, O_CUDA_RESERVE},
            {"require-landlock", no_argument, NULL, O_REQUIRE_LANDLOCK},
            {"user", required_argument, NULL, O_USER},
            {"allow-root-workers", no_argument, NULL, O_ALLOW_ROOT_WORKERS},
            {"prefork", required_argument, NULL, O_PREFORK},
            {"help", no_argument, NULL, 'h'},
            {"version", no_argument, NULL, O_VERSION},
            {0},
        };
        unsigned v = 0;
        int c;

        while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
                switch (c) {
                case O_SOCKET:
                        o->socket_path = optarg;
                        break;
                case O_KEY_FILE:
                        o->key_file = optarg;
                        break;
                case O_KEY_FD:
                        if (parse_uint(optarg, 0, INT32_MAX, &v) < 0)
                                return usage_error("--key-fd: not a file descriptor: '%s'", optarg);
                        o->key_fd = (int)v;
                        break;
                case O_ALLOW_UID:
                        if (parse_uint(optarg, 0, UINT32_MAX - 1, &v) < 0)
                                return usage_error("--allow-uid: not a uid: '%s'", optarg);
                        if (o->n_allow_uid == FSD_MAX_ALLOW_UID)
                                return usage_error("--allow-uid: at most 64 (%s)", optarg);
                        o->allow_uid[o->n_allow_uid++] = (uid_t)v;
                        break;
                case O_PREFORK:
                        if (parse_uint(optarg, 0, FSD_MAX_PREFORK, &o->prefork) < 0)
                                return usage_error("--prefork: need 0..%d, got '%s'",
                                                   FSD_MAX_PREFORK, optarg);
                        break;
                case O_MAX_WORKERS:
                        if (parse_uint(optarg, 1, FSD_MAX_WORKERS, &o->max_workers) < 0)
                                return usage_error("--max-workers: need 1..65536, got '%s'",
                                                   optarg);
                        break;
                case O_MAX_PENDING:
                        if (parse_uint(optarg, 1, FSD_MAX_PENDING, &o->max_pending) < 0)
                                return usage_error("--max-pending: need 1..4096, got '%s'", optarg);
                        break;
                case O_MAX_CONNECTIONS:
                        if (parse_uint(optarg, 1, FSD_MAX_CONNS, &o->max_connections) < 0)
                                return usage_error("--max-connections: need 1..65536, got '%s'",
                                                   optarg);
                        break;
                case O_HS_TIMEOUT:
                        if (parse_uint(optarg, 10, 600000, &o->handshake_timeout_ms) < 0)
                                return usage_error("--handshake-timeout: need 10..600000 ms, "
                                                   "got '%s'",
                                                   optarg);
                        break;
                case O_READY_FD:
                        if (parse_uint(optarg, 0, INT32_MAX, &v) < 0)
                                return usage_error("--ready-fd: not a file descriptor: '%s'",
                                                   optarg);
                        o->ready_fd = (int)v;
                        break;
                case O_LOG_LEVEL:
                        if (fs_log_level_parse(optarg, &o->log_level) < 0)
                                return usage_error("--log-level: need error, warning, info or "
                                                   "debug, got '%s'",
                                                   optarg);
                        break;
                case O_FOREGROUND:
                        o->foreground = true;
                        break;
                case O_REQUIRE_LANDLOCK:
                        o->require_landlock = true;
                        break;
                case O_MIN_PROFILE:
                        o->min_profile = optarg;
                        break;
                case O_ALLOW_PROFILE:
                        o->allow_profile = optarg;
                        break;
                case O_PROFILE_DIR:
                        o->profile_dir = optarg;
                        break;
                case O_PYTHON_PRELOAD:
                        if (python_lib(pylib, sizeof(pylib)) < 0)
                                return usage_error("--python-preload: libforkserver-python.so not "
                                                   "found (beside forkserverd, in %s, or "
                                                   "$FORKSERVER_PYTHON_LIB)",
                                                   FSD_PYTHON_LIB);
                        if (setenv("FORKSERVER_PYTHON_PRELOAD", optarg, 1) < 0)
                                return 1;
                        optarg = pylib;
                        /* it is one more --preload */
                        __attribute__((fallthrough));
                case O_PRELOAD: {
                        char *abs;

                        if (o->npreload == FSD_MAX_PRELOAD)
                                return usage_error("--preload: at most %d", FSD_MAX_PRELOAD);
                        /* resolved now: the zygote works from / */
                        if (!(abs = realpath(optarg, NULL))) {
                                fprintf(stderr, "forkserverd: --preload %s: %s\n", optarg,
                                        strerror(errno));
                                return 1;
                        }
                        if (fsd_preload_name(abs, o->preload_name[o->npreload],
                                             sizeof(o->preload_name[0])) < 0)
                                return usage_error("--preload %s: bad library name", optarg);
                        for (size_t i = 0; i < o->npreload; i++)
                                if (strcmp(o->preload_name[i], o->preload_name[o->npreload]) == 0)
                                        return usage_error("--preload: two libraries named %s",
                                                           o->preload_name[i]);
                        o->preload[o->npreload++] = abs;
                        break;
                }
                case O_CUDA:
                        if (!optarg)
                                o->cuda = FSD_CUDA_ON;
                        else if (strcmp(optarg, "auto") == 0)
                                o->cuda = FSD_CUDA_AUTO;
                        else
                                return usage_error("--cuda takes no value but 'auto', got '%s'",
                                                   optarg);
                        break;
                case O_CUDA_DEVICES: {
                        char copy[256], *save;

                        snprintf(copy, sizeof(copy), "%s", optarg);
                        o->ncuda_devices = 0;
                        for (char *t = strtok_r(copy, ",", &save); t;
                             t = strtok_r(NULL, ",", &save)) {
                                long dev;

                                if (o->ncuda_devices == FS_ARRAY_SIZE(o->cuda_devices) ||
                                    fs_parse_long(t, 0, 1023, &dev) < 0)
                                        return usage_error("--cuda-devices: need up to 16 device "
                                                           "ordinals, got '%s'",
                                                           optarg);
                                for (size_t i = 0; i < o->ncuda_devices; i++)
                                        if (o->cuda_devices[i] == dev)
                                                return usage_error("--cuda-devices: %ld twice",
                                                                   dev);
                                o->cuda_devices[o->ncuda_devices++] = (int)dev;
                        }
                        if (!o->ncuda_devices)
                                return usage_error("--cuda-devices: empty list");
                        break;
                }
                case O_CUDA_QUOTA:
                case O_CUDA_CONN_QUOTA:
                        if (fs_parse_size(optarg, c == O_CUDA_QUOTA ? &o->cuda_quota
                                                                    : &o->cuda_conn_quota) < 0)
                                return usage_error(
                                    "--%s: not a size: '%s'",
                                    c == O_CUDA_QUOTA ? "cuda-quota" : "cuda-conn-quota", optarg);
                        break;
                case O_CUDA_RESERVE:
                        if (fs_parse_size(optarg, &o->cuda_reserve) < 0 ||
                            o->cuda_reserve >= UINT64_MAX)
                                return usage_error("--cuda-reserve: not a size: '%s'", optarg);
                        o->cuda_reserve_set = true;
                        break;
                case O_USER:
                        if (!*optarg)
                                return usage_error("%s", "--user: empty name");
                        o->user = optarg;
                        break;
                case O_ALLOW_ROOT_WORKERS:
                        o->allow_root_workers = true;
                        break;
                case 'h':
                        fputs(usage_text, stdout);
                        exit(0);
                case O_VERSION:
                        puts("forkserverd " FS_VERSION);
                        exit(0);
                default:
                        return usage_error("unknown option or missing argument");
                }
        }
        if (optind < argc)
                return usage_error("unexpected argument '%s'", argv[optind]);
        if (o->key_file && o->key_fd >= 0)
                return usage_error("%s", "give --key-file or --key-fd, not both");
        if (o->key_fd >= 0 && o->key_fd == o->ready_fd)
                return usage_error("%s", "--key-fd and --ready-fd must differ");
        if (o->ready_fd >= 0 && fcntl(o->ready_fd, F_GETFD) < 0)
                return usage_error("--ready-fd: fd %d is not open", o->ready_fd);
        return 0;
}

/* Without --foreground: the parent exits 0 once the daemon is ready, 1 if it failed. */
static int daemonize(int *ret_notify_fd)
{
        int p[2], devnull;
        pid_t pid;

        if (pipe2(p, O_CLOEXEC) < 0)
                return -errno;
        if ((pid = fork()) < 0)
                return -errno;
        if (pid > 0) {
                char c;
                ssize_t n;

                close(p[1]);
                do
                        n = read(p[0], &c, 1);
                while (n < 0 && errno == EINTR);
                _exit(n == 1 ? 0 : 1);
        }
        close(p[0]);
        if (setsid() < 0)
                return -errno;
        if ((devnull = open("/dev/null", O_RDWR | O_CLOEXEC)) >= 0) {
                dup3(devnull, STDIN_FILENO, 0);
                dup3(devnull, STDOUT_FILENO, 0);
                close(devnull);
        }
        *ret_notify_fd = p[1];
        return 0;
}

static void notify_ready(int *fd)
{
        if (*fd >= 0)
                (void)fs_write_all(*fd, "READY\n", 6);
        *fd = fs_close(*fd);
}

static void raise_nofile(void)
{
        struct rlimit rl;

        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
                rl.rlim_cur = rl.rlim_max;
                (void)setrlimit(RLIMIT_NOFILE, &rl);
        }
}

static int load_key(const struct fsd_options *o, struct fs_key **ret)
{
        const char *why = "";
        int r;

        if (o->key_fd >= 0) {
                r = fs_key_load_fd(o->key_fd, FS_KEY_FD_TIMEOUT_MS, ret, &why);
                close(o->key_fd);
                if (r < 0)
                        fs_log(FS_LOG_ERROR, "key fd %d %s", o->key_fd, why);
                return r;
        }
        r = fs_key_load_file(o->key_file, ret, &why);
        if (r < 0)
                fs_log(FS_LOG_ERROR, "key file %s %s", o->key_file, why);
        return r;
}

static int start_zygotes(struct fsd_server *s, const struct fsd_options *o)
{
        const struct fsd_sandbox *sb = &s->sandbox;
        bool min_ok = !sb->min || sb->min->zygote_safe;

        for (size_t i = 0; i < sb->n + 1 && s->nzyg < FSD_MAX_ZYGOTES; i++) {
                const struct fsd_profile *p = i == 0 ? NULL : &sb->profiles[i - 1];
                struct fsd_zygote *z = &s->zyg[s->nzyg];
                int r;

                if (p && !(p->zygote_safe && min_ok && (p->allowed || p == sb->dflt)))
                        continue;
                *z = (struct fsd_zygote){.io = FSD_IO_INIT,
                                         .io_exit = FSD_IO_INIT,
                                         .sandboxed = p,
                                         .fd = -1,
                                         .pidfd = -1};
                z->wait_tail = &z->wait;
                struct fsd_template_reply rep;

                z->tpl_index = (uint32_t)i;
                if ((r = fsd_template_request(&s->tpl, FSD_TPL_ZYGOTE, z->tpl_index)) < 0 ||
                    (r = fsd_template_reply(&s->tpl, false, &rep, &z->fd, &z->pidfd)) < 0) {
                        fs_log(FS_LOG_ERROR, "%s",
                               r == -EPIPE || !rep.why[0] ? "the template is gone" : rep.why);
                        return r;
                }
                z->pid = rep.pid;
                z->started_at = fs_now_ms();
                s->nzyg++;
        }
        return 0;
}

/* What every worker's Landlock domain keeps out of reach: the socket's directory (the
 * daemon's runtime directory), the key file, systemd's credentials. */
static int confine(struct fsd_server *s, const struct fsd_options *o)
{
        struct fsd_sandbox *sb = &s->sandbox;
        const char *creds = getenv("CREDENTIALS_DIRECTORY");
        char dir[FS_SOCKET_PATH_MAX];
        int r = 0;

        if (sb->landlock_abi == 0) {
                if (o->require_landlock) {
                        fs_log(FS_LOG_ERROR,
                               "--require-landlock: the kernel offers no Landlock "
                               "(Linux 5.13 or later with landlock in the lsm= list)");
                        return -EOPNOTSUPP;
                }
                fs_log(FS_LOG_WARNING,
                       "no Landlock in this kernel: workers of the same uid "
                       "can read and write each other's memory (/proc/PID/mem), signal each "
                       "other, the zygotes and this daemon, and open the socket directory "
                       "and the key file");
                return 0;
        }
        if (sb->landlock_abi < 6) {
                if (o->require_landlock) {
                        fs_log(FS_LOG_ERROR,
                               "--require-landlock: Landlock ABI %d lacks "
                               "signal and abstract-socket scoping (ABI 6, Linux 6.12)",
                               sb->landlock_abi);
                        return -EOPNOTSUPP;
                }
                fs_log(FS_LOG_WARNING,
                       "Landlock ABI %d: workers are kept from each other's "
                       "memory and from the socket directory, but can still signal "
                       "processes of their uid and reach abstract sockets (ABI 6, Linux 6.12, "
                       "scopes both)",
                       sb->landlock_abi);
        }
        if (fs_dirname(o->socket_path, dir, sizeof(dir)) == 0)
                r = fsd_sandbox_deny(sb, dir);
        if (r >= 0 && o->key_file)
                r = fsd_sandbox_deny(sb, o->key_file);
        if (r >= 0 && creds && creds[0] == '/')
                r = fsd_sandbox_deny(sb, creds);
        if (r < 0)
                return fs_log_errno(FS_LOG_ERROR, r, "landlock: path too long");
        fs_log(FS_LOG_INFO, "Landlock ABI %d: a domain per worker, without %s", sb->landlock_abi,
               dir);
        return 0;
}

static int start(struct fsd_server *s, struct fsd_options *o)
{
        const char *why = "";
        sigset_t sigs;
        int r;

        s->listen_fd = s->sig_fd = s->reserve_fd = -1;
        s->gpu.pidfd = s->gpu.fd = -1;
        s->gpu.io_exit = s->io_listen = s->io_signal = s->io_template = (struct fsd_io)FSD_IO_INIT;
        s->opt = o;
        s->start_ms = fs_now_ms();
        s->tpl = (struct fsd_template){.fd = -1, .pidfd = -1};
        s->closer =
            (struct fsd_closer){.fd = -1, .pidfd = -1, .io = FSD_IO_INIT, .io_exit = FSD_IO_INIT};
        fsd_dispatch_init(s);
        fsd_spawn_init(s);
        /* every helper (the template too) closes the loop's fd: none may watch ours */
        if ((r = fsd_loop_init(&s->loop)) < 0)
                return fs_log_errno(FS_LOG_ERROR, r, "epoll_create1");

        /* Not dumpable: no core, no ptrace or /proc/PID/mem by same-uid processes. */
        if (prctl(PR_SET_DUMPABLE, 0) < 0)
                return fs_log_errno(FS_LOG_ERROR, -errno, "PR_SET_DUMPABLE");
        raise_nofile();
        sigemptyset(&sigs);
        sigaddset(&sigs, SIGTERM);
        sigaddset(&sigs, SIGINT);
        sigaddset(&sigs, SIGHUP);
        sigaddset(&sigs, SIGPIPE);
        sigprocmask(SIG_BLOCK, &sigs, NULL);

        /* Profiles are compiled once, here, so that the zygote inherits them. */
        char err[512];
        if ((r = fsd_sandbox_init(&s->sandbox, o->profile_dir, o->allow_profile, o->min_profile,
                                  err, sizeof(err))) < 0) {
                fs_log(FS_LOG_ERROR, "%s", err);
                return r;
        }
        if ((r = confine(s, o)) < 0)
                return r;
        fsd_zygote_set_creds(s->switch_uids, o->allow_root_workers);
        fsd_zygote_set_prefork(o->npreload ? o->prefork : 0); /* fork mode needs --preload */
        /* The template: a copy of us as we are now, before the key and any client, from
         * which every zygote and broker comes, first ones and restarts. */
        if ((r = fsd_template_start(&s->tpl, s, err, sizeof(err))) < 0) {
                fs_log(FS_LOG_ERROR, "%s", err);
                return r;
        }
        /* The zygotes first: they must never see the key. One installs filters per worker;
         * one more for each built-in profile that a zygote can live under and that clients
         * may get, so that those workers inherit their filter instead. */
        if ((r = start_zygotes(s, o)) < 0)
                return r;
        /* The GPU broker too: it owns CUDA, which must never meet a fork of ours. */
        if (o->cuda != FSD_CUDA_OFF && (r = fsd_gpu_start(s, err, sizeof(err))) < 0) {
                if (o->cuda == FSD_CUDA_ON) {
                        fs_log(FS_LOG_ERROR, "--cuda: %s", err);
                        return r;
                }
                fs_log(FS_LOG_WARNING, "--cuda=auto: starting without GPU support: %s", err);
        }
        /* Only the zygotes needed CAP_SETUID and CAP_SETGID; from here on we hold nothing. */
        if ((r = fsd_privs_front_done()) < 0)
                return fs_log_errno(FS_LOG_ERROR, r, "dropping capabilities");
        /* The closer too: it is made before any client, and knows nothing. */
        if ((r = fsd_closer_start(&s->closer, err, sizeof(err))) < 0) {
                fs_log(FS_LOG_ERROR, "%s", err);
                return r;
        }
        if ((r = load_key(o, &s->key)) < 0)
                return r;
        fs_creds_pidns(s->pidns);
        if (!fs_creds_pidns_known(s->pidns))
                fs_log(FS_LOG_WARNING, "cannot read /proc/self/ns/pid: handshakes bind clients' "
                                       "uid and gid but not their pid");
        s->key_loaded_ms = fs_now_ms();
        if (!s->key->locked)
                fs_log(FS_LOG_WARNING, "cannot mlock the key page (RLIMIT_MEMLOCK?); "
                                       "it is still excluded from core dumps and forks");
        if (o->listen_fd >= 0) {
                /* systemd made it, but clients check its path as ours: so do we */
                if ((r = fsd_sock_check_ancestors(o->socket_path, &why)) < 0)
                        return fs_log_errno(FS_LOG_ERROR, r, "%s: %s", o->socket_path, why);
                s->listen_fd = o->listen_fd; /* systemd's: it stays when we stop */
                o->listen_fd = -1;
        } else if ((r = fsd_sock_listen(o->socket_path, o->n_allow_uid > 0, &s->listen_fd,
                                        &s->sock_dev, &s->sock_ino, &why)) < 0) {
                return fs_log_errno(FS_LOG_ERROR, r, "%s: %s", o->socket_path, why);
        } else {
                s->socket_ours = true;
        }
        sigdelset(&sigs, SIGPIPE);
        if ((s->sig_fd = signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK)) < 0)
                return fs_log_errno(FS_LOG_ERROR, -errno, "signalfd");
        s->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if ((r = fsd_front_attach(s)) < 0)
                return fs_log_errno(FS_LOG_ERROR, r, "epoll_ctl");
        for (unsigned i = 0; i < s->nzyg; i++)
                if ((r = fsd_zygote_attach(s, &s->zyg[i])) < 0)
                        return fs_log_errno(FS_LOG_ERROR, r, "epoll_ctl");
        return 0;
}

static void cleanup(struct fsd_server *s)
{
        fsd_template_stop(&s->tpl);
        fsd_zygotes_stop(s);
        fsd_gpu_stop(s);
        fsd_closer_stop(&s->closer, 1000);
        s->listen_fd = fs_close(s->listen_fd);
        s->sig_fd = fs_close(s->sig_fd);
        fsd_loop_fini(&s->loop);
        s->reserve_fd = fs_close(s->reserve_fd);
        fs_key_free(fs_take_ptr(&s->key));
        fsd_sandbox_free(&s->sandbox);
}

int main(int argc, char **argv)
{
        static struct fsd_server srv;
        static char socket_buf[FS_SOCKET_PATH_MAX], key_buf[4096];
        struct fsd_options o = {.key_fd = -1,
                                .ready_fd = -1,
                                .listen_fd = -1,
                                .max_workers = 1024,
                                .prefork = FSD_PREFORK_DEFAULT,
                                .max_pending = 64,
                                .max_connections = 16384,
                                .handshake_timeout_ms = 5000,
                                .log_level = FS_LOG_INFO};
        int notify_fd = -1, r;

        static char activated[FS_SOCKET_PATH_MAX];
        const char *why = "";

        if ((r = parse_args(argc, argv, &o)) != 0)
                return r;
        fs_log_init("forkserverd", o.log_level);
        /* Before anything else: --user decides whose defaults, files and socket these are. */
        char perr[512];

        if (fsd_privs_init(&o, &srv.switch_uids, perr, sizeof(perr)) < 0) {
                fs_log(FS_LOG_ERROR, "%s", perr);
                return 1;
        }
        if ((r = fsd_systemd_listen_fd(&o.listen_fd, activated, sizeof(activated), &why)) < 0) {
                fs_log(FS_LOG_ERROR, "socket activation: %s", why);
                return 1;
        }
        if (r > 0) {
                if (o.socket_path && strcmp(o.socket_path, activated) != 0) {
                        fs_log(FS_LOG_ERROR,
                               "--socket %s, but systemd passed a socket bound to "
                               "%s",
                               o.socket_path, activated);
                        return 1;
                }
                o.socket_path = activated;
        }
        if (!o.socket_path) {
                if (fs_default_socket(socket_buf, sizeof(socket_buf)) < 0)
                        return usage_error("%s", "default socket path is too long; use --socket");
                o.socket_path = socket_buf;
        }
        const char *creds = getenv("CREDENTIALS_DIRECTORY");

        /* systemd's LoadCredential=forkserver.key:PATH, checked like any key file */
        if (!o.key_file && o.key_fd < 0 && creds && *creds &&
            fs_format(key_buf, sizeof(key_buf), "%s/forkserver.key", creds) == 0 &&
            access(key_buf, F_OK) == 0)
                o.key_file = key_buf;
        if (!o.key_file && o.key_fd < 0) {
                if (fs_default_key(o.socket_path, key_buf, sizeof(key_buf)) < 0)
                        return usage_error("%s", "default key path is too long; use --key-file");
                o.key_file = key_buf;
        }
        if (!o.foreground && (r = daemonize(&notify_fd)) < 0) {
                fs_log_errno(FS_LOG_ERROR, r, "daemonize");
                return 1;
        }
        if (start(&srv, &o) < 0) {
                cleanup(&srv);
                for (size_t i = 0; i < o.npreload; i++)
                        free((char *)o.preload[i]);
                return 1; /* the ready fds close unwritten: start-up failed */
        }
        fs_log(FS_LOG_INFO, "listening on %s (zygote pid %d, %u zygote(s)); workers run as %s",
               o.socket_path, (int)srv.zyg[0].pid, srv.nzyg,
               srv.switch_uids ? "their clients" : "the daemon's uid");
        notify_ready(&o.ready_fd);
        notify_ready(&notify_fd);
        char state[FS_SOCKET_PATH_MAX + 64];

        (void)fs_format(state, sizeof(state), "READY=1\nMAINPID=%d\nSTATUS=listening on %s",
                        (int)getpid(), o.socket_path);
        if ((r = fsd_systemd_notify(state)) < 0)
                fs_log_errno(FS_LOG_WARNING, r, "sd_notify READY=1");
        r = fsd_loop_run(&srv);
        if (r < 0)
                srv.exit_code = 1;
        cleanup(&srv);
        for (size_t i = 0; i < o.npreload; i++)
                free((char *)o.preload[i]);
        fs_log(FS_LOG_INFO, "stopped");
        return srv.exit_code;
}
