/* libforkserver: connection, handshake, requests and events (see forkserver.h). */
#include "client/forkserver.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "common/auth.h"
#include "common/creds.h"
#include "common/dirtrust.h"
#include "common/fdpass.h"
#include "common/key.h"
#include "common/paths.h"
#include "common/proto.h"
#include "common/util.h"

#define DEFAULT_TIMEOUT_MS 5000

/* The ABI of the caller-filled structs is frozen (forkserver.h): new members take reserved
 * room. These catch a member added beside it instead. */
#if defined(__x86_64__) || defined(__aarch64__)
_Static_assert(sizeof(struct forkserver_options) == 96, "forkserver_options changed size");
_Static_assert(sizeof(struct forkserver_spawn_args) == 192, "forkserver_spawn_args changed size");
#endif

struct forkserver_key {
        struct fs_key k; /* a forkserver_key is an fs_key page */
};

struct forkserver_proc {
        struct forkserver_proc *prev, *next;
        uint64_t id;
        pid_t pid;
        int pidfd;
        int channel; /* the client's end of the worker's channel, or -1 */
        size_t ngpu;
        struct forkserver_gpu_buf gpu[FS_MAX_GPU];
        bool exited, reported;
        int status;
        uint64_t exit_seq; /* order of exit events, for forkserver_wait_any */
};

/* A reply read while waiting for another one. */
struct stash {
        struct stash *next;
        uint32_t id;
        uint16_t type;
        int err;
        uint32_t step; /* ERROR: the worker's set-up step, 0 when none */
        struct forkserver_proc *worker;
        size_t len;
        uint8_t payload[]; /* ERROR: reason string; STATUS_REPLY: the payload */
};

struct forkserver {
        int fd;
        struct fs_key *own_key;
        const struct fs_key *key;
        uint32_t next_id;
        uint64_t exits; /* exit events seen */
        int dead;       /* connection-level failure, sticky */
        int err_step;   /* forkserver_error_step() */
        struct forkserver_proc *workers;
        struct stash *stash;
        char err[512];
        uint8_t buf[FS_MAX_MSG]; /* received messages */
        uint8_t tx[FS_MAX_MSG];  /* a request being sent: replies read meanwhile go to buf */
};

static int set_err(struct forkserver *fs, int r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int set_err(struct forkserver *fs, int r, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(fs->err, sizeof(fs->err), fmt, ap);
        va_end(ap);
        return r;
}

static int die(struct forkserver *fs, int r, const char *what)
{
        if (!fs->dead) {
                fs->dead = r;
                set_err(fs, r, "%s: %s", what, strerror(-r));
        }
        return fs->dead;
}

static bool all_zero(const uint64_t *v, size_t n)
{
        for (size_t i = 0; i < n; i++)
                if (v[i])
                        return false;
        return true;
}

const char *forkserver_version(void)
{
        return FORKSERVER_VERSION;
}

/* ---- keys ---- */

int forkserver_key_load_file(const char *path, struct forkserver_key **ret, const char **ret_why)
{
        return fs_key_load_file(path, (struct fs_key **)ret, ret_why);
}

int forkserver_key_load_fd(int fd, struct forkserver_key **ret, const char **ret_why)
{
        return fs_key_load_fd(fd, FS_KEY_FD_TIMEOUT_MS, (struct fs_key **)ret, ret_why);
}

void forkserver_key_free(struct forkserver_key *key)
{
        fs_key_free((struct fs_key *)key);
}

/* ---- messages ---- */

static int wait_fd(int fd, short events, int timeout_ms)
{
        struct pollfd p = {.fd = fd, .events = events};
        int r;

        do
                r = poll(&p, 1, timeout_ms);
        while (r < 0 && errno == EINTR);
        if (r < 0)
                return -errno;
        return r == 0 ? -ETIMEDOUT : p.revents;
}

static int wait_status(uint32_t code, uint32_t st)
{
        switch (code) {
        case CLD_EXITED:
                return (int)(st & 0xff) << 8;
        case CLD_DUMPED:
                return (int)(st & 0x7f) | 0x80;
        default:
                return (int)(st & 0x7f);
        }
}

static struct forkserver_proc *find_worker(struct forkserver *fs, uint64_t id)
{
        for (struct forkserver_proc *w = fs->workers; w; w = w->next)
                if (w->id == id)
                        return w;
        return NULL;
}

static int stash_push(struct forkserver *fs, uint32_t id, uint16_t type, int err, uint32_t step,
                      struct forkserver_proc *w, const void *payload, size_t len)
{
        struct stash *s = malloc(sizeof(*s) + len + 1);
        struct stash **tail = &fs->stash;

        if (!s)
                return -ENOMEM;
        *s = (struct stash){
            .id = id, .type = type, .err = err, .step = step, .worker = w, .len = len};
        if (len)
                memcpy(s->payload, payload, len);
        s->payload[len] = '\0';
        while (*tail)
                tail = &(*tail)->next;
        *tail = s;
        return 0;
}

/* Reads and files one message. */
static int pump_one(struct forkserver *fs, int flags)
{
        const char *why = "bad message";
        struct fs_hdr h;
        struct fs_buf p;
        int fds[2 + FS_MAX_GPU];
        size_t nfds = 0;
        int n, r;

        if (fs->dead)
                return fs->dead;
        n = fs_fdpass_recv(fs->fd, fs->buf, sizeof(fs->buf), fds, FS_ARRAY_SIZE(fds), &nfds, flags);
        if (n == -EAGAIN)
                return n;
        if (n == 0)
                return die(fs, -ECONNRESET, "server closed the connection");
        if (n < 0)
                return die(fs, n, "receive");
        if ((r = fs_proto_parse_hdr(fs->buf, (size_t)n, &h, &p)) < 0)
                goto bad;
        if (nfds > 0 && h.type != FS_MSG_SPAWNED) {
                r = -EBADMSG;
                goto bad;
        }
        switch (h.type) {
        case FS_MSG_SPAWNED: {
                struct fs_msg_spawned m;
                struct forkserver_proc *w;

                /* fds: the pidfd, the channel if asked for, one per GPU buffer */
                if ((r = fs_proto_parse_spawned(&p, &m, &why)) < 0 || nfds < 1 + m.ngpu ||
                    nfds > 2 + m.ngpu) {
                        r = -EBADMSG;
                        goto bad;
                }
                if (!(w = calloc(1, sizeof(*w)))) {
                        fs_close_many(fds, nfds);
                        return die(fs, -ENOMEM, "spawn reply");
                }
                bool chan = nfds == 2 + m.ngpu;

                *w = (struct forkserver_proc){.id = m.worker,
                                              .pid = (pid_t)m.pid,
                                              .pidfd = fds[0],
                                              .channel = chan ? fds[1] : -1,
                                              .ngpu = m.ngpu,
                                              .next = fs->workers};
                for (size_t i = 0; i < m.ngpu; i++) {
                        w->gpu[i] = (struct forkserver_gpu_buf){.fd = fds[1 + chan + i],
                                                                .device = m.gpu[i].device,
                                                                .size = m.gpu[i].size};
                        memcpy(w->gpu[i].uuid, m.gpu[i].uuid, 16);
                }
                if (fs->workers)
                        fs->workers->prev = w;
                fs->workers = w;
                return stash_push(fs, h.id, h.type, 0, 0, w, NULL, 0);
        }
        case FS_MSG_EXITED: {
                struct fs_msg_exited m;
                struct forkserver_proc *w;

                if ((r = fs_proto_parse_exited(&p, &m, &why)) < 0)
                        goto bad;
                if ((w = find_worker(fs, m.worker))) {
                        w->exited = true;
                        w->status = wait_status(m.code, m.status);
                        w->exit_seq = ++fs->exits;
                }
                return 0;
        }
        case FS_MSG_ERROR: {
                struct fs_msg_error m;

                if ((r = fs_proto_parse_error(&p, &m, &why)) < 0)
                        goto bad;
                if (h.id == 0) { /* about the connection itself */
                        fs->dead = -(int)m.err;
                        return set_err(fs, fs->dead, "server: %s", m.reason);
                }
                return stash_push(fs, h.id, h.type, -(int)m.err, m.step, NULL, m.reason,
                                  strlen(m.reason));
        }
        case FS_MSG_OK:
                if ((r = fs_proto_parse_empty(&p, &why)) < 0)
                        goto bad;
                return stash_push(fs, h.id, h.type, 0, 0, NULL, NULL, 0);
        case FS_MSG_STATUS_REPLY:
                return stash_push(fs, h.id, h.type, 0, 0, NULL, p.data, p.len);
        default:
                r = -EPROTO;
                why = "unexpected message type";
                goto bad;
        }
bad:
        fs_close_many(fds, nfds);
        fs->dead = r < 0 ? r : -EPROTO;
        return set_err(fs, fs->dead, "protocol error from server: %s", why);
}

/* Reads everything already waiting, without blocking. */
static int pump_ready(struct forkserver *fs)
{
        int r;

        while ((r = pump_one(fs, MSG_DONTWAIT)) >= 0)
                ;
        return r == -EAGAIN ? 0 : r;
}

static int send_msg(struct forkserver *fs, const void *buf, size_t len, const int *fds, size_t nfds)
{
        for (;;) {
                int r = fs_fdpass_send(fs->fd, buf, len, fds, nfds, MSG_DONTWAIT);

                if (r != -EAGAIN)
                        return r < 0 ? die(fs, r, "send") : 0;
                /* The server stops reading while its replies to us pile up: read them. */
                r = wait_fd(fs->fd, POLLIN | POLLOUT, -1);
                if (r < 0)
                        return die(fs, r, "poll");
                if ((r & POLLIN) && (r = pump_ready(fs)) < 0)
                        return r;
        }
}

static struct stash *take_reply(struct forkserver *fs, uint32_t id)
{
        for (struct stash **s = &fs->stash; *s; s = &(*s)->next)
                if ((*s)->id == id) {
                        struct stash *found = *s;

                        *s = found->next;
                        return found;
                }
        return NULL;
}

static int wait_reply(struct forkserver *fs, uint32_t id, struct stash **ret)
{
        for (;;) {
                int r;

                if ((*ret = take_reply(fs, id)))
                        return 0;
                if ((r = pump_one(fs, 0)) < 0 && r != -EAGAIN)
                        return r;
        }
}

static uint32_t new_id(struct forkserver *fs)
{
        if (++fs->next_id == 0)
                fs->next_id = 1;
        return fs->next_id;
}

/* Sends an empty request and waits for its reply. */
static int simple_request(struct forkserver *fs, uint16_t type, uint16_t want, struct stash **ret)
{
        struct fs_msgw w;
        struct stash *s;
        uint32_t id = new_id(fs);
        uint8_t msg[FS_HDR_LEN];
        int r;

        fs->err[0] = '\0';
        fs_msg_begin(&w, msg, sizeof(msg), type, id);
        if ((r = fs_msg_finish(&w)) < 0 || (r = send_msg(fs, msg, (size_t)r, NULL, 0)) < 0 ||
            (r = wait_reply(fs, id, &s)) < 0)
                return r;
        if (s->type == FS_MSG_ERROR) {
                r = set_err(fs, s->err, "%s", (const char *)s->payload);
                free(s);
                return r;
        }
        if (s->type != want) {
                free(s);
                return die(fs, -EPROTO, "unexpected reply");
        }
        if (ret)
                *ret = s;
        else
                free(s);
        return 0;
}

/* ---- connection ---- */

static int recv_handshake(int fd, uint8_t *buf, size_t cap, int64_t deadline)
{
        int64_t left = deadline - fs_now_ms();
        size_t nfds;
        int fds[1], r;

        if ((r = wait_fd(fd, POLLIN, left > 0 ? (int)left : 0)) < 0)
                return r;
        r = fs_fdpass_recv(fd, buf, cap, fds, 1, &nfds, MSG_DONTWAIT);
        if (r > 0 && nfds > 0) {
                fs_close_many(fds, nfds);
                return -EBADMSG;
        }
        return r == 0 ? -ECONNRESET : r;
}

/* Nobody but root, us or the server's uid may be able to swap the socket's path. */
static int check_path(const char *path, uid_t server_uid, char *err, size_t errlen)
{
        const uid_t trusted[] = {0, geteuid(), server_uid}; /* server_uid 0: root again */
        char bad[512], named[48] = "";
        int r;

        if ((r = fs_dirtrust_check(path, trusted, FS_ARRAY_SIZE(trusted), bad, sizeof(bad))) >= 0)
                return 0;
        if (r == -ENOENT) {
                (void)fs_format(err, errlen, "cannot connect to %s: %s", path, bad);
                return r;
        }
        if (server_uid != 0)
                snprintf(named, sizeof(named), ", uid %u (the server uid named)",
                         (unsigned)server_uid);
        /* fs_format: a reason cut short is still a reason */
        (void)fs_format(err, errlen,
                        "refusing to connect to %s: its path can be swapped by others: %s "
                        "(each directory on the way must belong to root, uid %u (ours)%s, and "
                        "not be writable by group or others unless sticky)",
                        path, bad, (unsigned)geteuid(), named);
        return r;
}

/* The listening socket's owner (SO_PEERCRED of a connected client: the credentials of whoever
 * called listen()) must be us, root (socket activation) or the uid the caller named. */
static int check_listener(int fd, const char *path, uid_t server_uid, char *err, size_t errlen)
{
        const uint8_t none[FS_PIDNS_LEN] = {0};
        struct fs_creds l;
        char named[48] = "";
        int r;

        if ((r = fs_creds_peer(fd, none, &l)) < 0) {
                snprintf(err, errlen, "cannot get the credentials of %s: %s", path, strerror(-r));
                return r;
        }
        if (l.uid == geteuid() || l.uid == 0 || (server_uid != 0 && l.uid == server_uid))
                return 0;
        if (server_uid != 0)
                snprintf(named, sizeof(named), " or %u (the server uid named)",
                         (unsigned)server_uid);
        snprintf(err, errlen,
                 "refusing the server on %s: its listening socket belongs to uid %u; expected "
                 "uid %u (ours), 0 (root)%s",
                 path, (unsigned)l.uid, (unsigned)geteuid(), named);
        return -EACCES;
}

int forkserver_connect(const struct forkserver_options *opts, struct forkserver **ret,
                       const char **ret_why)
{
        static __thread char why_buf[512];
        const struct forkserver_options none = FORKSERVER_OPTIONS_INIT;
        const struct forkserver_options *o = opts ? opts : &none;
        struct stat st;
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        char path[FS_SOCKET_PATH_MAX], keypath[4096];
        const char *why = "", *what = "connect";
        struct fs_auth_client ac;
        struct fs_creds self;
        struct forkserver *fs;
        int64_t deadline;
        int r, n;

        *ret = NULL;
        if (!(fs = calloc(1, sizeof(*fs))))
                return -ENOMEM;
        fs->fd = -1;
        deadline = fs_now_ms() + (o->timeout_ms > 0 ? o->timeout_ms : DEFAULT_TIMEOUT_MS);

        if (o->socket_path) {
                if (strlen(o->socket_path) >= sizeof(path)) {
                        r = -ENAMETOOLONG;
                        why = "socket path too long";
                        goto fail;
                }
                strcpy(path, o->socket_path);
        } else if ((r = fs_default_socket(path, sizeof(path))) < 0) {
                why = "default socket path too long";
                goto fail;
        }
        if (!all_zero(o->reserved, FS_ARRAY_SIZE(o->reserved))) {
                r = -EINVAL;
                why = "options: reserved members must be zero (use FORKSERVER_OPTIONS_INIT)";
                goto fail;
        }
        /* No socket, no server: say so, rather than fail on the key file beside it. */
        if (lstat(path, &st) < 0 && errno == ENOENT) {
                r = -ENOENT;
                snprintf(why_buf, sizeof(why_buf), "no server: socket %s does not exist", path);
                why = why_buf;
                what = NULL;
                goto fail;
        }
        if (o->key) {
                fs->key = (const struct fs_key *)o->key;
        } else {
                what = "key";
                if (o->key_fd > 0) {
                        r = fs_key_load_fd(o->key_fd, FS_KEY_FD_TIMEOUT_MS, &fs->own_key, &why);
                } else {
                        const char *kp = o->key_file;

                        if (!kp) {
                                if ((r = fs_default_key(path, keypath, sizeof(keypath))) < 0)
                                        goto fail;
                                kp = keypath;
                        }
                        r = fs_key_load_file(kp, &fs->own_key, &why);
                        if (r < 0) {
                                (void)fs_format(why_buf, sizeof(why_buf), "key file %s %s", kp,
                                                why);
                                why = why_buf;
                                what = NULL;
                        }
                }
                if (r < 0)
                        goto fail;
                fs->key = fs->own_key;
        }

        what = NULL;
        if ((r = check_path(path, o->server_uid, why_buf, sizeof(why_buf))) < 0) {
                why = why_buf;
                goto fail;
        }
        strcpy(sa.sun_path, path);
        fs->fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        if (fs->fd < 0 || connect(fs->fd, (const struct sockaddr *)&sa, sizeof(sa)) < 0) {
                r = -errno;
                snprintf(why_buf, sizeof(why_buf), "cannot connect to %s: %s", path, strerror(-r));
                why = why_buf;
                goto fail;
        }
        if ((r = check_listener(fs->fd, path, o->server_uid, why_buf, sizeof(why_buf))) < 0) {
                why = why_buf;
                goto fail;
        }
        what = "handshake";
        if ((n = recv_handshake(fs->fd, fs->buf, sizeof(fs->buf), deadline)) < 0) {
                r = n;
                why = strerror(-r);
                goto fail;
        }
        fs_creds_self(&self);
        r = fs_auth_client_hello(&ac, fs->key, &self, fs->buf, (size_t)n, fs->buf, sizeof(fs->buf),
                                 &why);
        if (r < 0)
                goto fail;
        if ((r = fs_fdpass_send(fs->fd, fs->buf, (size_t)r, NULL, 0, 0)) < 0) {
                why = strerror(-r);
                goto fail;
        }
        if ((n = recv_handshake(fs->fd, fs->buf, sizeof(fs->buf), deadline)) < 0) {
                r = n;
                why = strerror(-r);
                goto fail;
        }
        if ((r = fs_auth_client_finish(&ac, fs->key, fs->buf, (size_t)n, &why)) < 0)
                goto fail;
        *ret = fs;
        return 0;
fail:
        if (what) {
                snprintf(why_buf, sizeof(why_buf), "%s: %s", what, why);
                why = why_buf;
        } else if (why != why_buf) {
                snprintf(why_buf, sizeof(why_buf), "%s", why);
                why = why_buf;
        }
        if (ret_why)
                *ret_why = why;
        forkserver_close(fs);
        return r;
}

void forkserver_close(struct forkserver *fs)
{
        if (!fs)
                return;
        fs->fd = fs_close(fs->fd);
        while (fs->workers)
                forkserver_proc_free(fs, fs->workers);
        while (fs->stash) {
                struct stash *s = fs->stash;

                fs->stash = s->next;
                free(s);
        }
        fs_key_free(fs->own_key);
        free(fs);
}

const char *forkserver_error(const struct forkserver *fs)
{
        return fs->err;
}

int forkserver_fd(const struct forkserver *fs)
{
        return fs->fd;
}

int forkserver_error_step(const struct forkserver *fs)
{
        return fs->err_step;
}

/* ---- spawning ---- */

int forkserver_spawn_submit(struct forkserver *fs, const struct forkserver_spawn_args *a,
                            uint32_t *ret_ticket)
{
        int fds[FS_MAX_MSG_FDS];
        struct fs_msgw w;
        uint32_t id;
        int n;

        fs->err[0] = '\0';
        fs->err_step = 0;
        if (fs->dead)
                return fs->dead;
        if (a && !all_zero(a->reserved, FS_ARRAY_SIZE(a->reserved)))
                return set_err(fs, -EINVAL,
                               "spawn: reserved members must be zero (use "
                               "FORKSERVER_SPAWN_ARGS_INIT)");
        if (!a || (!a->path == !a->entry))
                return set_err(fs, -EINVAL, "spawn: give path (exec mode) or entry (fork mode)");
        if (a->path && (!a->argv || !a->argv[0]))
                return set_err(fs, -EINVAL, "spawn: exec mode needs argv[0]");
        if (a->entry && (a->argv || a->arglen > 60000 || (a->arglen && !a->arg)))
                return set_err(fs, -EINVAL,
                               "spawn: fork mode takes arg/arglen (at most 60,000 "
                               "bytes), not argv");
        if (a->nfds > FS_MAX_MSG_FDS)
                return set_err(fs, -EINVAL, "spawn: at most %d fds", FS_MAX_MSG_FDS);
        if (a->nrlimits > FS_MAX_RLIMITS || (a->nrlimits && !a->rlimits))
                return set_err(fs, -EINVAL, "spawn: at most %d rlimits", FS_MAX_RLIMITS);
        if (a->ngpu > FS_MAX_GPU || (a->ngpu && !a->gpu) || a->nfds + a->ngpu > FS_MAX_MSG_FDS)
                return set_err(fs, -EINVAL,
                               "spawn: at most %d GPU buffers, and %d fds and GPU "
                               "buffers together",
                               FS_MAX_GPU, FS_MAX_MSG_FDS);
        for (size_t i = 0; i < a->ngpu; i++)
                if (a->gpu[i].size == 0)
                        return set_err(fs, -EINVAL, "spawn: a GPU buffer of size 0");
        if (a->umask && (a->umask & ~01777) != 0)
                return set_err(fs, -EINVAL, "spawn: bad umask (use FORKSERVER_UMASK)");
        id = new_id(fs);
        fs_msg_begin(&w, fs->tx, sizeof(fs->tx), FS_MSG_SPAWN, id);
        if (a->path) {
                fs_msg_put_str(&w, FS_F_PATH, a->path);
                for (size_t i = 0; a->argv[i]; i++)
                        fs_msg_put_str(&w, FS_F_ARG, a->argv[i]);
        } else {
                fs_msg_put_str(&w, FS_F_ENTRY, a->entry);
                if (a->arglen)
                        fs_msg_put_bytes(&w, FS_F_ARGBYTES, a->arg, a->arglen);
        }
        for (size_t i = 0; a->envp && a->envp[i]; i++)
                fs_msg_put_str(&w, FS_F_ENV, a->envp[i]);
        if (a->cwd)
                fs_msg_put_str(&w, FS_F_CWD, a->cwd);
        for (size_t i = 0; i < a->nfds; i++) {
                fs_msg_put_u32(&w, FS_F_FD, (uint32_t)a->fds[i].child_fd);
                fds[i] = a->fds[i].fd;
        }
        if (a->flags)
                fs_msg_put_u32(&w, FS_F_FLAGS, a->flags);
        if (a->profile)
                fs_msg_put_str(&w, FS_F_PROFILE, a->profile);
        for (size_t i = 0; i < a->nrlimits; i++)
                fs_msg_put_rlimit(&w, (uint32_t)a->rlimits[i].resource, a->rlimits[i].soft,
                                  a->rlimits[i].hard);
        if (a->umask)
                fs_msg_put_u32(&w, FS_F_UMASK, (uint32_t)a->umask & 0777);
        for (size_t i = 0; i < a->ngpu; i++)
                fs_msg_put_gpu(&w, a->gpu[i].device, a->gpu[i].size);
        if ((n = fs_msg_finish(&w)) < 0)
                return set_err(fs, n, "spawn: request larger than %d bytes", FS_MAX_MSG);
        if ((n = send_msg(fs, fs->tx, (size_t)n, fds, a->nfds)) < 0)
                return n;
        *ret_ticket = id;
        return 0;
}

int forkserver_spawn_collect(struct forkserver *fs, uint32_t ticket, struct forkserver_proc **ret)
{
        struct stash *s;
        int r;

        *ret = NULL;
        fs->err_step = 0;
        if ((r = wait_reply(fs, ticket, &s)) < 0)
                return r;
        if (s->type == FS_MSG_ERROR) {
                fs->err_step = (int)s->step;
                r = set_err(fs, s->err, "%s", (const char *)s->payload);
        } else if (s->type != FS_MSG_SPAWNED) {
                r = die(fs, -EPROTO, "unexpected reply to SPAWN");
        } else {
                *ret = s->worker;
                r = 0;
        }
        free(s);
        return r;
}

int forkserver_spawn(struct forkserver *fs, const struct forkserver_spawn_args *a,
                     struct forkserver_proc **ret)
{
        uint32_t t;
        int r;

        *ret = NULL;
        if ((r = forkserver_spawn_submit(fs, a, &t)) < 0)
                return r;
        return forkserver_spawn_collect(fs, t, ret);
}

/* ---- workers ---- */

int forkserver_wait(struct forkserver *fs, struct forkserver_proc *w, int *ret_status)
{
        int r;

        while (!w->exited)
                if ((r = pump_one(fs, 0)) < 0 && r != -EAGAIN)
                        return r;
        w->reported = true;
        *ret_status = w->status;
        return 0;
}

int forkserver_poll(struct forkserver *fs, struct forkserver_proc *w, int *ret_status)
{
        int r;

        if (!w->exited && (r = pump_ready(fs)) < 0)
                return r;
        if (!w->exited)
                return 0;
        w->reported = true;
        *ret_status = w->status;
        return 1;
}

int forkserver_wait_any(struct forkserver *fs, int timeout_ms, struct forkserver_proc **ret)
{
        int64_t deadline = timeout_ms >= 0 ? fs_now_ms() + timeout_ms : -1;

        *ret = NULL;
        for (;;) {
                struct forkserver_proc *first = NULL;
                bool running = false;
                int r;

                /* the earliest exit first, so that none waits behind later ones */
                for (struct forkserver_proc *w = fs->workers; w; w = w->next) {
                        if (w->exited && !w->reported && (!first || w->exit_seq < first->exit_seq))
                                first = w;
                        running |= !w->exited;
                }
                if (first) {
                        first->reported = true;
                        *ret = first;
                        return 0;
                }
                if (!running)
                        return -ECHILD;
                if (deadline >= 0) {
                        int64_t left = deadline - fs_now_ms();

                        r = wait_fd(fs->fd, POLLIN, left > 0 ? (int)left : 0);
                        if (r < 0)
                                return r;
                }
                if ((r = pump_one(fs, 0)) < 0 && r != -EAGAIN)
                        return r;
        }
}

int forkserver_kill(struct forkserver *fs, struct forkserver_proc *w, int sig)
{
        (void)fs;
        if (w->exited)
                return -ESRCH;
        return pidfd_send_signal(w->pidfd, sig, NULL, 0) < 0 ? -errno : 0;
}

void forkserver_proc_free(struct forkserver *fs, struct forkserver_proc *w)
{
        if (!w)
                return;
        if (w->prev)
                w->prev->next = w->next;
        else
                fs->workers = w->next;
        if (w->next)
                w->next->prev = w->prev;
        /* A reply still stashed for it must not point at freed memory. */
        for (struct stash *s = fs->stash; s; s = s->next)
                if (s->worker == w)
                        s->worker = NULL;
        fs_close(w->pidfd);
        fs_close(w->channel);
        for (size_t i = 0; i < w->ngpu; i++)
                fs_close(w->gpu[i].fd);
        free(w);
}

size_t forkserver_proc_gpu(const struct forkserver_proc *w, const struct forkserver_gpu_buf **ret)
{
        *ret = w->gpu;
        return w->ngpu;
}

int forkserver_proc_channel(const struct forkserver_proc *w)
{
        return w->channel;
}

int forkserver_proc_take_channel(struct forkserver_proc *w)
{
        return fs_take_fd(&w->channel);
}

/* ---- channels ---- */

int forkserver_channel_send(int fd, const void *buf, size_t len, const int *fds, size_t nfds)
{
        uint8_t hdr[FS_HDR_LEN];
        struct fs_msgw w;
        struct iovec iov[2];
        int r;

        if (len > FORKSERVER_CHANNEL_MAX_BYTES || nfds > FORKSERVER_CHANNEL_MAX_FDS)
                return -EMSGSIZE;
        if ((len && !buf) || (nfds && !fds))
                return -EINVAL;
        fs_msg_begin(&w, hdr, sizeof(hdr), FS_MSG_DATA, 0);
        if ((r = fs_msg_finish(&w)) < 0 || fs_buf_patch_u32(&w.b, 12, (uint32_t)len) < 0)
                return -EINVAL;
        iov[0] = (struct iovec){hdr, sizeof(hdr)};
        iov[1] = (struct iovec){(void *)buf, len};
        return fs_fdpass_sendv(fd, iov, 2, fds, nfds, 0);
}

int forkserver_channel_recv(int fd, void *buf, size_t cap, int *fds, size_t maxfds,
                            size_t *ret_nfds)
{
        uint8_t hdr[FS_HDR_LEN];
        struct iovec iov[2] = {{hdr, sizeof(hdr)}, {buf, cap}};
        struct fs_hdr h;
        size_t nfds;
        int n;

        *ret_nfds = 0;
        if (maxfds > FORKSERVER_CHANNEL_MAX_FDS)
                maxfds = FORKSERVER_CHANNEL_MAX_FDS;
        n = fs_fdpass_recvv(fd, iov, 2, fds, maxfds, &nfds, 0);
        if (n == 0)
                return -EPIPE; /* the peer is gone */
        if (n < 0)
                return n;
        /* The header is checked on its own bytes; the payload stays where it landed. */
        if ((size_t)n < sizeof(hdr) || fs_proto_parse_hdr_only(hdr, (size_t)n, &h) < 0 ||
            h.type != FS_MSG_DATA) {
                fs_close_many(fds, nfds);
                return -EBADMSG;
        }
        *ret_nfds = nfds;
        return n - (int)sizeof(hdr);
}

int forkserver_channel_fd(void)
{
        const char *e = getenv("FORKSERVER_CHANNEL_FD");
        long v;

        if (!e || fs_parse_long(e, 0, INT32_MAX, &v) < 0 || fcntl((int)v, F_GETFD) < 0)
                return -1;
        return (int)v;
}

pid_t forkserver_proc_pid(const struct forkserver_proc *w)
{
        return w->pid;
}

int forkserver_proc_pidfd(const struct forkserver_proc *w)
{
        return w->pidfd;
}

uint64_t forkserver_proc_id(const struct forkserver_proc *w)
{
        return w->id;
}

/* ---- control ---- */

int forkserver_ping(struct forkserver *fs)
{
        return simple_request(fs, FS_MSG_PING, FS_MSG_OK, NULL);
}

int forkserver_stop(struct forkserver *fs)
{
        return simple_request(fs, FS_MSG_STOP, FS_MSG_OK, NULL);
}

int forkserver_status(struct forkserver *fs, int (*fn)(void *, const char *, uint64_t), void *ud)
{
        const char *why = "bad status reply";
        struct stash *s;
        struct fs_buf p;
        int r;

        if ((r = simple_request(fs, FS_MSG_STATUS, FS_MSG_STATUS_REPLY, &s)) < 0)
                return r;
        fs_buf_init_reader(&p, s->payload, s->len);
        r = fs_proto_parse_status(&p, fn, ud, &why);
        free(s);
        if (r == -EBADMSG)
                return die(fs, r, why);
        return r;
}
