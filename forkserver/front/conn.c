#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "common/fdpass.h"
#include "common/util.h"
#include "forkserver/front/server.h"

static void unlink_conn(struct fsd_conn **head, struct fsd_conn **last, struct fsd_conn *c)
{
        if (c->prev)
                c->prev->next = c->next;
        else
                *head = c->next;
        if (c->next)
                c->next->prev = c->prev;
        else if (last)
                *last = c->prev;
        c->prev = c->next = NULL;
}

/* Backpressure: no new requests while replies wait to be sent, or one waits for a zygote. */
static void set_events(struct fsd_server *s, struct fsd_conn *c)
{
        c->reading = !c->outq && !c->held;
        (void)fsd_io_update(&s->loop, &c->io, c->outq ? EPOLLOUT : c->reading ? EPOLLIN : 0);
}

void fsd_conn_hold(struct fsd_server *s, struct fsd_conn *c, int delta)
{
        c->held += (unsigned)delta;
        if (!c->dead)
                set_events(s, c);
}

static void free_outmsg(struct fsd_outmsg *m)
{
        fs_close_many(m->fds, m->nfds);
        free(m);
}

void fsd_conn_close(struct fsd_server *s, struct fsd_conn *c, const char *why)
{
        if (c->dead)
                return;
        c->dead = true;
        if (c->authed) {
                unlink_conn(&s->conns, NULL, c);
                s->nconns--;
        } else {
                unlink_conn(&s->pending, &s->pending_last, c);
                s->npending--;
        }
        fs_log(FS_LOG_DEBUG, "conn %llu (pid %d uid %u) closed: %s", (unsigned long long)c->id,
               (int)c->pid, (unsigned)c->uid, why);
        fsd_io_stop(&s->loop, &c->io);
        /* Whatever the peer queued in it goes with it: not a close for the loop to make. */
        fsd_closer_put1(&s->closer, c->fd);
        c->fd = -1;
        while (c->outq) {
                struct fsd_outmsg *m = c->outq;

                /* never sent: ours may be the last copies of a channel end */
                fsd_closer_put(&s->closer, m->fds, m->nfds);
                m->nfds = 0;

                c->outq = m->next;
                free_outmsg(m);
        }
        if (c->authed)
                s->on_conn_closed(s, c);
        c->next = s->dead;
        s->dead = c;
}

void fsd_conn_free_dead(struct fsd_server *s)
{
        while (s->dead) {
                struct fsd_conn *c = s->dead;

                s->dead = c->next;
                free(c);
        }
}

int fsd_conn_send(struct fsd_server *s, struct fsd_conn *c, const void *buf, size_t len,
                  const int *fds, size_t nfds)
{
        struct fsd_outmsg *m;
        int r;

        if (c->dead)
                return -EPIPE;
        if (!c->outq) {
                r = fs_fdpass_send(c->fd, buf, len, fds, nfds, MSG_DONTWAIT);
                if (r == 0)
                        return 0;
                if (r != -EAGAIN) {
                        fsd_conn_close(s, c, "send failed");
                        return r;
                }
        }
        if (c->outq_len >= FSD_OUTQ_MAX || nfds > FSD_OUT_FDS) {
                fsd_conn_close(s, c, "client does not read its replies");
                return -ENOBUFS;
        }
        if (!(m = malloc(sizeof(*m) + len))) {
                fsd_conn_close(s, c, "out of memory");
                return -ENOMEM;
        }
        m->next = NULL;
        m->len = len;
        m->nfds = 0;
        memcpy(m->data, buf, len);
        for (size_t i = 0; i < nfds; i++) {
                /* The caller keeps its fds; the queue owns copies until they are sent. */
                if ((m->fds[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 3)) < 0) {
                        r = -errno;
                        free_outmsg(m);
                        fsd_conn_close(s, c, "cannot queue fds");
                        return r;
                }
                m->nfds++;
        }
        if (!c->outq)
                c->outq_tail = &c->outq;
        *c->outq_tail = m;
        c->outq_tail = &m->next;
        c->outq_len++;
        set_events(s, c);
        return 0;
}

static void flush(struct fsd_server *s, struct fsd_conn *c)
{
        while (c->outq) {
                struct fsd_outmsg *m = c->outq;
                int r = fs_fdpass_send(c->fd, m->data, m->len, m->fds, m->nfds, MSG_DONTWAIT);

                if (r == -EAGAIN)
                        return;
                if (r < 0) {
                        fsd_conn_close(s, c, "send failed");
                        return;
                }
                c->outq = m->next;
                c->outq_len--;
                free_outmsg(m);
        }
        set_events(s, c);
}

void fsd_conn_send_error(struct fsd_server *s, struct fsd_conn *c, uint32_t id, int err,
                         const char *fmt, ...)
{
        struct fs_msgw w;
        va_list ap;
        int n;

        va_start(ap, fmt);
        fs_msg_begin_verror(&w, s->tx, sizeof(s->tx), id, err, fmt, ap);
        va_end(ap);
        if ((n = fs_msg_finish(&w)) > 0)
                (void)fsd_conn_send(s, c, s->tx, (size_t)n, NULL, 0);
}

static bool uid_allowed(const struct fsd_server *s, uid_t uid)
{
        if (uid == geteuid())
                return true;
        for (size_t i = 0; i < s->opt->n_allow_uid; i++)
                if (s->opt->allow_uid[i] == uid)
                        return true;
        return false;
}

/* Out of fds: free the reserve, take the connection, tell the client why, restore. */
static void refuse_no_fds(struct fsd_server *s)
{
        int fd;

        s->reserve_fd = fs_close(s->reserve_fd);
        fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0) {
                struct fs_msgw w;
                int n;

                fs_msg_begin_error(&w, s->tx, sizeof(s->tx), 0, EMFILE,
                                   "server is out of file descriptors");
                if ((n = fs_msg_finish(&w)) > 0)
                        (void)fs_fdpass_send(fd, s->tx, (size_t)n, NULL, 0, MSG_DONTWAIT);
                fsd_closer_put1(&s->closer, fd); /* it may hold what the peer sent */
                fd = -1;
        }
        s->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        fs_log_limited(FS_LOG_WARNING, "out of file descriptors: connection refused");
}

/* The client's supplementary groups as the kernel recorded them at connect(): its workers
 * get them. More than FS_MAX_GROUPS is refused rather than cut (a group may be there to
 * deny). */
static int peer_groups(struct fsd_server *s, struct fsd_conn *c)
{
        socklen_t gl = sizeof(c->groups);

        if (getsockopt(c->fd, SOL_SOCKET, SO_PEERGROUPS, c->groups, &gl) == 0) {
                c->ngroups = (uint32_t)(gl / sizeof(c->groups[0]));
                return 0;
        }
        if (errno == ERANGE) {
                fs_log_limited(FS_LOG_WARNING, "conn %llu pid %d uid %u: more than %d groups",
                               (unsigned long long)c->id, (int)c->pid, (unsigned)c->uid,
                               FS_MAX_GROUPS);
                fsd_conn_send_error(s, c, 0, E2BIG,
                                    "uid %u is in more than %d groups, which "
                                    "a worker cannot take over",
                                    (unsigned)c->uid, FS_MAX_GROUPS);
        } else {
                fs_log_limited(FS_LOG_WARNING, "SO_PEERGROUPS failed: %s", strerror(errno));
        }
        fsd_conn_close(s, c, "peer groups");
        return -1;
}

/* The uid holding most pending handshakes (by_uid), or the pid of that uid holding most. */
static uint32_t most_common(const struct fsd_server *s, bool by_uid, uint32_t uid)
{
        static struct fsd_tally_slot t[2 * FSD_MAX_PENDING + 2];
        struct fsd_tally y;

        fsd_tally_start(&y, t, FS_ARRAY_SIZE(t));
        for (const struct fsd_conn *c = s->pending; c; c = c->next)
                if (by_uid || c->uid == uid)
                        fsd_tally_add(&y, by_uid ? c->uid : (uint32_t)c->pid);
        return y.top;
}

static struct fsd_conn *pending_victim(struct fsd_server *s)
{
        uint32_t uid = most_common(s, true, 0), pid = most_common(s, false, uid);

        for (struct fsd_conn *c = s->pending; c; c = c->next)
                if (c->uid == uid && (uint32_t)c->pid == pid)
                        return c;
        return s->pending;
}

static void on_event(struct fsd_loop *l, struct fsd_io *io, uint32_t events);
static void on_handshake_timer(struct fsd_loop *l, struct fsd_timer *t, int64_t now);

static void accept_one(struct fsd_server *s, int fd)
{
        struct fs_creds cr;
        struct fsd_conn *c;
        int n;

        /* The kernel's word on who connected: the handshake binds it (common/auth.h). */
        if ((n = fs_creds_peer(fd, s->pidns, &cr)) < 0) {
                fs_log_limited(FS_LOG_WARNING, "SO_PEERCRED failed: %s", strerror(-n));
                fsd_closer_put1(&s->closer, fd);
                return;
        }
        if (!(c = calloc(1, sizeof(*c)))) {
                fsd_closer_put1(&s->closer, fd);
                return;
        }
        *c = (struct fsd_conn){.io = FSD_IO_INIT,
                               .fd = fd,
                               .id = ++s->next_conn_id,
                               .uid = cr.uid,
                               .pid = (pid_t)cr.pid,
                               .gid = cr.gid,
                               .reading = true,
                               .deadline = fs_now_ms() + s->opt->handshake_timeout_ms};
        s->stats.connections++;
        /* Linked first, so that every refusal below goes through fsd_conn_close. */
        c->prev = s->pending_last;
        if (s->pending_last)
                s->pending_last->next = c;
        else
                s->pending = c;
        s->pending_last = c;
        s->npending++;

        if (!uid_allowed(s, cr.uid)) {
                s->stats.peer_refused++;
                fs_log_limited(FS_LOG_WARNING, "conn %llu pid %d uid %u: uid not allowed",
                               (unsigned long long)c->id, (int)cr.pid, (unsigned)cr.uid);
                fsd_conn_send_error(s, c, 0, EPERM, "uid %u is not allowed by this server",
                                    (unsigned)cr.uid);
                fsd_conn_close(s, c, "uid not allowed");
                return;
        }
        if (s->switch_uids && peer_groups(s, c) < 0)
                return;
        if (s->nconns >= s->opt->max_connections) {
                fsd_conn_send_error(s, c, 0, EAGAIN, "too many connections (--max-connections %u)",
                                    s->opt->max_connections);
                fsd_conn_close(s, c, "too many connections");
                return;
        }
        /* Over the cap of pending handshakes, one goes: the oldest of whoever holds the most
         * (uid, then pid), so that a flood of idle connections, even of the same uid, cannot
         * lock out a client that completes its handshake promptly. */
        while (s->npending > s->opt->max_pending) {
                struct fsd_conn *old = pending_victim(s);

                fs_log_limited(FS_LOG_WARNING,
                               "conn %llu pid %d uid %u: cut, too many pending "
                               "handshakes",
                               (unsigned long long)old->id, (int)old->pid, (unsigned)old->uid);
                fsd_conn_send_error(s, old, 0, ETIMEDOUT, "too many pending handshakes");
                fsd_conn_close(s, old, "pending cap");
        }
        if (fsd_io_start(&s->loop, &c->io, fd, EPOLLIN, false, on_event) < 0) {
                fsd_conn_close(s, c, "epoll");
                return;
        }
        if (!fsd_timer_armed(&s->t_handshake))
                (void)fsd_timer_arm(&s->loop, &s->t_handshake, c->deadline, on_handshake_timer);
        if ((n = fs_auth_server_hello(&c->auth, &cr, s->tx, sizeof(s->tx))) < 0) {
                fsd_conn_close(s, c, "cannot build HELLO");
                return;
        }
        (void)fsd_conn_send(s, c, s->tx, (size_t)n, NULL, 0);
}

/* After the connections that sent something (a late source): a flood of connects cannot
 * push back clients that are already talking. */
static void on_listen(struct fsd_loop *l, struct fsd_io *io, uint32_t events)
{
        struct fsd_server *s = fsd_server_of(l);

        (void)io;
        (void)events;
        for (int i = 0; i < 16 && s->listen_fd >= 0; i++) {
                int fd = accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

                if (fd < 0) {
                        if (errno == EMFILE || errno == ENFILE)
                                refuse_no_fds(s);
                        else if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                                fs_log_limited(FS_LOG_WARNING, "accept: %s", strerror(errno));
                        return;
                }
                accept_one(s, fd);
        }
}

int fsd_conn_attach(struct fsd_server *s)
{
        return fsd_io_start(&s->loop, &s->io_listen, s->listen_fd, EPOLLIN, true, on_listen);
}

static void on_handshake_timer(struct fsd_loop *l, struct fsd_timer *t, int64_t now)
{
        struct fsd_server *s = fsd_server_of(l);

        while (s->pending && s->pending->deadline <= now) {
                struct fsd_conn *c = s->pending;

                fs_log_limited(FS_LOG_WARNING, "conn %llu pid %d uid %u: handshake timed out",
                               (unsigned long long)c->id, (int)c->pid, (unsigned)c->uid);
                fsd_conn_send_error(s, c, 0, ETIMEDOUT, "handshake timed out");
                fsd_conn_close(s, c, "handshake timeout");
        }
        if (s->pending)
                (void)fsd_timer_arm(l, t, s->pending->deadline, on_handshake_timer);
}

static void handshake(struct fsd_server *s, struct fsd_conn *c, size_t len, size_t nfds)
{
        const char *why = "";
        size_t out;
        int r;

        r = fs_auth_server_recv(&c->auth, s->key, s->rx, len, nfds, s->tx, sizeof(s->tx), &out,
                                &why);
        if (out > 0)
                (void)fsd_conn_send(s, c, s->tx, out, NULL, 0);
        if (c->dead)
                return;
        if (r < 0) {
                if (r == -EACCES)
                        s->stats.auth_failed++;
                else
                        s->stats.bad_requests++;
                fs_log_limited(FS_LOG_WARNING, "conn %llu pid %d uid %u: handshake refused: %s",
                               (unsigned long long)c->id, (int)c->pid, (unsigned)c->uid, why);
                fsd_conn_close(s, c, why);
                return;
        }
        if (s->nconns >= s->opt->max_connections) {
                fsd_conn_send_error(s, c, 0, EAGAIN, "too many connections (--max-connections %u)",
                                    s->opt->max_connections);
                fsd_conn_close(s, c, "too many connections");
                return;
        }
        s->stats.auth_ok++;
        if (c->auth.bound.flags & FS_BIND_PID)
                s->stats.auth_pid_bound++;
        unlink_conn(&s->pending, &s->pending_last, c);
        s->npending--;
        c->authed = true;
        c->next = s->conns;
        if (s->conns)
                s->conns->prev = c;
        s->conns = c;
        s->nconns++;
        fs_log(FS_LOG_DEBUG, "conn %llu pid %d uid %u gid %u authenticated (pid %sbound)",
               (unsigned long long)c->id, (int)c->pid, (unsigned)c->uid,
               (unsigned)c->auth.bound.gid, c->auth.bound.flags & FS_BIND_PID ? "" : "not ");
}

/*
 * fs_fdpass_recv_lossy's verdicts, without closing anything here: every fd that came goes to
 * the closer unless the message is good (then *ret_nfds of them are the caller's).
 */
static int receive(struct fsd_server *s, struct fsd_conn *c, int *fds, size_t *ret_nfds,
                   bool *ret_lost)
{
        size_t nfds;
        bool foreign;
        int flags, n = fs_fdpass_recv_raw(c->fd, s->rx, sizeof(s->rx), fds, &nfds, &flags, &foreign,
                                          MSG_DONTWAIT);

        *ret_nfds = 0;
        *ret_lost = false;
        if (n < 0)
                return n;
        if (flags & MSG_TRUNC)
                n = -EMSGSIZE;
        else if ((flags & MSG_CTRUNC) && !foreign && nfds < FS_SCM_MAX_FD)
                *ret_lost = true; /* we are out of fds: the kernel could not install them */
        else if (foreign || (flags & MSG_CTRUNC) || nfds > FS_MAX_MSG_FDS)
                n = -EBADMSG;
        if (n < 0 || *ret_lost) {
                fsd_closer_put(&s->closer, fds, nfds);
                return n;
        }
        *ret_nfds = nfds;
        return n;
}

static void on_event(struct fsd_loop *l, struct fsd_io *io, uint32_t events)
{
        struct fsd_conn *c = fsd_container_of(io, struct fsd_conn, io);
        struct fsd_server *s = fsd_server_of(l);
        int fds[FS_SCM_MAX_FD];

        if (c->dead)
                return;
        if (events & EPOLLOUT)
                flush(s, c);
        if (c->dead)
                return;
        if (!c->reading) {
                if (events & (EPOLLHUP | EPOLLERR))
                        fsd_conn_close(s, c, "peer closed");
                return;
        }
        for (int i = 0; i < FSD_READ_BATCH && c->reading && !c->dead; i++) {
                size_t nfds;
                bool lost;
                int n = receive(s, c, fds, &nfds, &lost);

                if (n == -EAGAIN)
                        return;
                if (n > 0 && lost && c->authed) {
                        s->on_request(s, c, (size_t)n, fds, 0, true);
                        continue;
                }
                if (n > 0 && lost)
                        n = -EBADMSG; /* a handshake message carries no fds */
                if (n == 0) {
                        fsd_conn_close(s, c, "peer closed");
                        return;
                }
                if (n < 0) {
                        s->stats.bad_requests++;
                        if (n == -EMSGSIZE || n == -EBADMSG) {
                                fs_log_limited(
                                    FS_LOG_WARNING, "conn %llu pid %d uid %u: %s",
                                    (unsigned long long)c->id, (int)c->pid, (unsigned)c->uid,
                                    n == -EMSGSIZE ? "oversized message" : "bad fd attachment");
                                fsd_conn_send_error(s, c, 0, n, "%s",
                                                    n == -EMSGSIZE
                                                        ? "message larger than 65536 bytes"
                                                        : "bad control data or too many fds");
                        }
                        fsd_conn_close(s, c, "receive error");
                        return;
                }
                if (!c->authed) {
                        fsd_closer_put(&s->closer, fds, nfds);
                        handshake(s, c, (size_t)n, nfds);
                } else {
                        s->on_request(s, c, (size_t)n, fds, nfds, false);
                }
        }
}
