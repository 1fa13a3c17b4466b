/* The front's side of the gpu-broker: start and restart it, lease buffers, keep the books.
 * The front never loads the driver; it forwards the broker's fds opaquely.
 *
 * The books follow the memory: device memory lives while any process holds an fd or a
 * mapping of it, so a lease stays charged to its connection until every process it was
 * handed to is gone: its worker (by its pidfd) and, when the client asked for a copy
 * (FS_SPAWN_GPU_FDS), the client: its connection closed and its process (a pidfd from
 * SO_PEERPIDFD) exited. See docs/GPU.md, "Quotas and books". */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "common/fdpass.h"
#include "common/util.h"
#include "forkserver/broker/broker.h"
#include "forkserver/front/server.h"

#define GPU_REPLY_TIMEOUT_MS 10000

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77 /* Linux 6.5 */
#endif

struct fsd_gpu_hold {
        struct fsd_io io;      /* its pidfd, once the connection closed */
        int pidfd;             /* the client process's, or -1 when it had gone already */
        struct fsd_conn *conn; /* NULL once closed */
        bool gone;             /* connection closed and process exited */
        unsigned refs;         /* leases of live (or coming) workers that name it */
        size_t n, cap;
        struct fsd_lease *kept; /* leases whose workers are gone: charged for its copies */
        uint64_t kept_bytes;
        struct fsd_gpu_hold *prev, *next; /* in s->gpu.holds, once the connection closed */
};

static void hold_free(struct fsd_server *s, struct fsd_gpu_hold *h)
{
        fsd_io_stop(&s->loop, &h->io);
        if (h->prev)
                h->prev->next = h->next;
        else if (s->gpu.holds == h)
                s->gpu.holds = h->next;
        if (h->next)
                h->next->prev = h->prev;
        fs_close(h->pidfd);
        free(h->kept);
        free(h);
}

static void hold_maybe_free(struct fsd_server *s, struct fsd_gpu_hold *h)
{
        if (h->gone && h->refs == 0 && h->n == 0)
                hold_free(s, h);
}

static void on_exit_(struct fsd_loop *l, struct fsd_io *io, uint32_t events);
static void on_answer(struct fsd_loop *l, struct fsd_io *io, uint32_t events);
static void fail_reqs(struct fsd_server *s, int err, const char *why);

/* The broker the template made is ours now. */
static int take(struct fsd_server *s, const struct fsd_template_reply *rep, int fd, int pidfd)
{
        struct fsd_gpu *g = &s->gpu;
        int r;

        g->fd = fd;
        g->pidfd = pidfd;
        g->pid = rep->pid;
        g->ndev = rep->ndev;
        if ((r = fsd_io_start(&s->loop, &g->io_exit, g->pidfd, EPOLLIN, false, on_exit_)) < 0 ||
            (r = fsd_io_start(&s->loop, &g->io, g->fd, EPOLLIN, false, on_answer)) < 0) {
                fsd_io_stop(&s->loop, &g->io_exit);
                g->fd = g->pidfd = -1; /* the caller's again */
                g->pid = 0;
                return r;
        }
        g->enabled = g->up = true;
        g->generation++;
        g->started_at = fs_now_ms();
        return 0;
}

/* At start-up, before any client: waits for the template's answer. */
int fsd_gpu_start(struct fsd_server *s, char *err, size_t errlen)
{
        struct fsd_template_reply rep;
        int fd = -1, pidfd = -1, r;

        /* From the template, never from us: a broker forked now would hold our clients'
         * state. */
        if ((r = fsd_template_request(&s->tpl, FSD_TPL_BROKER, 0)) < 0 ||
            (r = fsd_template_reply(&s->tpl, false, &rep, &fd, &pidfd)) < 0) {
                snprintf(err, errlen, "%s",
                         r == -EPIPE || r == -EAGAIN || !rep.why[0] ? "the template is unreachable"
                                                                    : rep.why);
                return r;
        }
        if ((r = take(s, &rep, fd, pidfd)) < 0) {
                snprintf(err, errlen, "epoll_ctl: %s", strerror(-r));
                fs_close(fd);
                (void)fs_pidfd_end(pidfd, 0); /* ours to reap */
        }
        return r;
}

/* Ends the broker: EOF on its socket, then its exit. */
void fsd_gpu_stop(struct fsd_server *s)
{
        struct fsd_gpu *g = &s->gpu;

        g->up = false;
        fail_reqs(s, ESHUTDOWN, "server is stopping");
        fsd_io_stop(&s->loop, &g->io);
        g->fd = fs_close(g->fd);
        fsd_io_stop(&s->loop, &g->io_exit);
        g->pidfd = fs_pidfd_end(g->pidfd, 5000); /* EOF ends it */
        g->pid = 0;
        /* the server ends: the copies' books go with it */
        while (s->stopping && g->holds)
                hold_free(s, g->holds);
}

/* Next attempt: after fsd_backoff's wait. */
static void on_restart(struct fsd_loop *l, struct fsd_timer *t, int64_t now);

static void schedule_restart(struct fsd_server *s, int64_t now)
{
        struct fsd_gpu *g = &s->gpu;

        g->restart_at = fsd_backoff(&g->backoff_ms, g->started_at, true, now);
        g->started_at = 0;
        (void)fsd_timer_arm(&s->loop, &g->restart, g->restart_at, on_restart);
}

static void on_exit_(struct fsd_loop *l, struct fsd_io *io, uint32_t events)
{
        struct fsd_server *s = fsd_server_of(l);
        struct fsd_gpu *g = &s->gpu;
        siginfo_t si = {0};

        (void)events;
        if (g->pidfd < 0 || waitid(P_PIDFD, (id_t)g->pidfd, &si, WEXITED | WNOHANG) < 0 ||
            si.si_pid == 0)
                return;
        fsd_io_stop(l, io);
        fsd_io_stop(l, &g->io);
        g->pidfd = fs_close(g->pidfd);
        g->fd = fs_close(g->fd);
        g->up = false;
        g->pid = 0;
        fail_reqs(s, EAGAIN, "the GPU broker is down; it is being restarted");
        if (s->stopping)
                return;
        schedule_restart(s, fs_now_ms());
        fs_log(FS_LOG_ERROR, "GPU broker exited (code %d, status %d); restarting in %lld ms",
               si.si_code, si.si_status, (long long)g->backoff_ms);
}

/* A new broker is asked of the template; its start-up (cuInit) takes the template's time,
 * and its answer comes to the loop (fsd_gpu_made). */
static void on_restart(struct fsd_loop *l, struct fsd_timer *t, int64_t now)
{
        struct fsd_server *s = fsd_server_of(l);
        struct fsd_gpu *g = &s->gpu;

        if (!g->enabled || g->up || g->starting || s->stopping)
                return;
        if (s->tpl.busy) { /* it makes one helper at a time */
                (void)fsd_timer_arm(l, t, now + 100, on_restart);
                return;
        }
        if (fsd_template_request(&s->tpl, FSD_TPL_BROKER, 0) == 0)
                g->starting = true;
        else
                schedule_restart(s, now);
}

void fsd_gpu_made(struct fsd_server *s, const struct fsd_template_reply *rep, int r, int fd,
                  int pidfd)
{
        struct fsd_gpu *g = &s->gpu;

        g->starting = false;
        if (r == 0 && !s->stopping && !g->up)
                r = take(s, rep, fd, pidfd);
        else if (r == 0)
                r = -ECANCELED;
        if (r < 0) {
                fs_close(fd);
                (void)fs_pidfd_end(pidfd, 0); /* ours to reap */
                if (s->stopping || r == -ECANCELED)
                        return;
                schedule_restart(s, fs_now_ms());
                fs_log(FS_LOG_ERROR, "GPU broker restart failed: %s",
                       rep->why[0] ? rep->why : strerror(-r));
                return;
        }
        g->restarts++;
        fs_log(FS_LOG_WARNING, "GPU broker restarted (pid %d)", (int)g->pid);
}

static void send_free(struct fsd_server *s, const struct fsd_lease *l)
{
        struct fsd_gpu *g = &s->gpu;
        uint8_t msg[64];
        struct fs_msgw w;
        int n;

        /* a lease of an earlier broker died with it */
        if (!g->up || l->generation != g->generation)
                return;
        fs_imsg_begin(&w, msg, sizeof(msg), FS_I_GPU_FREE, ++g->next_id);
        fs_msg_put_u64(&w, FS_F_LEASE, l->id);
        /* never waits: a broker whose socket is full is stuck, and its deadline ends it */
        if ((n = fs_msg_finish(&w)) > 0 &&
            (n = fs_fdpass_send(g->fd, msg, (size_t)n, NULL, 0, MSG_DONTWAIT)) < 0)
                fs_log_errno(FS_LOG_WARNING, n, "GPU_FREE to the broker");
}

/* The broker cannot be trusted to be in step: it is killed, and restarted on its exit. */
static void broker_lost(struct fsd_server *s, int err)
{
        struct fsd_gpu *g = &s->gpu;

        fs_log_errno(FS_LOG_ERROR, err ? err : -EPIPE, "GPU broker");
        if (g->pidfd >= 0)
                (void)pidfd_send_signal(g->pidfd, SIGKILL, NULL, 0);
        fsd_io_stop(&s->loop, &g->io);
        fsd_timer_disarm(&s->loop, &g->deadline);
        g->up = false;
}

static void on_deadline(struct fsd_loop *l, struct fsd_timer *t, int64_t now);

/* One GPU_ALLOC, without waiting: its answer comes to on_answer. */
static int send_alloc(struct fsd_server *s, const struct fs_gpu_buf *want, uint64_t room,
                      uint32_t *ret_id)
{
        struct fsd_gpu *g = &s->gpu;
        uint8_t msg[256];
        struct fs_msgw w;
        int n;

        *ret_id = ++g->next_id;
        fs_imsg_begin(&w, msg, sizeof(msg), FS_I_GPU_ALLOC, *ret_id);
        fs_msg_put_gpu(&w, want->device, want->size);
        if (room != UINT64_MAX)
                fs_msg_put_u64(&w, FS_F_ROOM, room);
        if (s->opt->cuda_reserve_set)
                fs_msg_put_u64(&w, FS_F_RESERVE, s->opt->cuda_reserve);
        /* one request in flight at a time: the socket has room, or the broker is stuck */
        if ((n = fs_msg_finish(&w)) < 0 ||
            (n = fs_fdpass_send(g->fd, msg, (size_t)n, NULL, 0, MSG_DONTWAIT)) < 0)
                return n;
        return fsd_timer_arm(&s->loop, &g->deadline, fs_now_ms() + GPU_REPLY_TIMEOUT_MS,
                             on_deadline);
}

static void give_back(struct fsd_server *s, struct fsd_inflight *e)
{
        for (size_t i = 0; i < e->ngpu; i++) {
                send_free(s, &e->gpu[i]);
                if (e->gpu[i].hold)
                        e->gpu[i].hold->refs--;
        }
        fs_close_many(e->gpu_fd, e->ngpu);
        e->ngpu = 0;
}

/* The record of what c's client process holds copies of: made on its first request with
 * FS_SPAWN_GPU_FDS, with a pidfd for the process that connected (SO_PEERPIDFD names it
 * without a race on its pid being reused). */
static int get_hold(struct fsd_conn *c, struct fsd_gpu_hold **ret, char *err, size_t errlen)
{
        struct fsd_gpu_hold *h;
        socklen_t len = sizeof(int);
        int pidfd = -1;

        if (c->gpu_hold) {
                *ret = c->gpu_hold;
                return 0;
        }
        if (getsockopt(c->fd, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len) < 0) {
                pidfd = -1;
                if (errno == ENOPROTOOPT && c->pid > 0) /* before Linux 6.5: by its pid */
                        pidfd = pidfd_open(c->pid, 0);
                else if (errno == ESRCH || errno == EINVAL)
                        errno = 0; /* it has gone: the connection's end is all to wait for */
                if (pidfd < 0 && errno != 0) {
                        snprintf(err, errlen,
                                 "the server cannot follow this client's process "
                                 "(pid %d), so it cannot give it the GPU buffers' fds; ask "
                                 "without FORKSERVER_SPAWN_GPU_FDS",
                                 (int)c->pid);
                        return -EPERM;
                }
        }
        if (!(h = calloc(1, sizeof(*h)))) {
                fs_close(pidfd);
                snprintf(err, errlen, "out of memory");
                return -ENOMEM;
        }
        h->io = (struct fsd_io)FSD_IO_INIT;
        h->pidfd = pidfd;
        h->conn = c;
        c->gpu_hold = h;
        *ret = h;
        return 0;
}

/* Room a quota leaves: UINT64_MAX for none. */
static uint64_t room_of(uint64_t quota, uint64_t held)
{
        return !quota ? UINT64_MAX : held >= quota ? 0 : quota - held;
}

/* Why q is refused: the connection's quota (conn) or the server's, asked bytes over it. */
static void quota_why(const struct fsd_server *s, const struct fsd_gpu_req *q, bool conn,
                      uint64_t asked, const char *detail, char *err, size_t errlen)
{
        const char *which = conn ? "connection" : "server";
        uint64_t quota = conn ? s->opt->cuda_conn_quota : s->opt->cuda_quota;
        uint64_t held = conn && q->conn ? q->conn->gpu_bytes : s->gpu.bytes, kept = q->kept;
        char copies[128] = "";

        if (kept)
                snprintf(copies, sizeof(copies),
                         ", %llu of them by copies this client holds of "
                         "exited workers' buffers",
                         (unsigned long long)kept);
        snprintf(err, errlen,
                 "GPU quota of this %s exceeded (--cuda-%squota %llu bytes; %llu "
                 "held%s; %llu asked)%s%s",
                 which, which[0] == 'c' ? "conn-" : "", (unsigned long long)quota,
                 (unsigned long long)held, copies, (unsigned long long)asked, detail ? ": " : "",
                 detail ? detail : "");
}

static void serve(struct fsd_server *s);

/* The head request is done with (r 0: all its buffers leased): charged, or given back. */
static void finish(struct fsd_server *s, int r, const char *why)
{
        struct fsd_gpu *g = &s->gpu;
        struct fsd_gpu_req *q = g->reqs;
        char qwhy[512];

        fsd_timer_disarm(&s->loop, &g->deadline);
        g->reqs = q->next;
        if (!g->reqs)
                g->reqs_tail = &g->reqs;
        g->nreqs--;
        if (q->conn)
                fsd_conn_hold(s, q->conn, -1);
        /* the broker checked the rounded sizes against ROOM: this only catches a broker out
         * of step with us */
        if (r == 0 && q->conn && (q->total > q->room_conn || q->total > q->room_all)) {
                quota_why(s, q, q->total > q->room_conn, q->total, NULL, qwhy, sizeof(qwhy));
                r = -EDQUOT;
                why = qwhy;
        }
        if (r == 0 && !q->conn) {
                r = -ECONNRESET;
                why = "connection closed";
        }
        if (r < 0) {
                give_back(s, &q->e);
        } else {
                q->conn->gpu_bytes += q->total;
                g->bytes += q->total;
                g->leases += q->e.ngpu;
        }
        s->on_gpu_ready(s, q, r, why);
}

/* The next buffer of the head request, or its end. */
static void step(struct fsd_server *s)
{
        struct fsd_gpu_req *q = s->gpu.reqs;
        uint64_t room = q->room_conn < q->room_all ? q->room_conn : q->room_all;
        int r;

        if (q->e.ngpu == q->nwant) {
                finish(s, 0, NULL);
                return;
        }
        if (room != UINT64_MAX)
                room -= q->total;
        if ((r = send_alloc(s, &q->want[q->e.ngpu], room, &q->alloc_id)) < 0) {
                broker_lost(s, r);
                finish(s, -EIO, "the GPU broker failed; it is being restarted");
        }
}

/* The head request's turn: the quotas first, before the broker allocates anything (here
 * with the sizes asked, by the broker with each size rounded up: ROOM). */
static bool start(struct fsd_server *s)
{
        struct fsd_gpu *g = &s->gpu;
        const struct fsd_options *o = s->opt;
        struct fsd_gpu_req *q = g->reqs;
        struct fsd_conn *c = q->conn;
        char why[512];
        int r;

        if (!c) {
                finish(s, -ECONNRESET, "connection closed");
                return false;
        }
        if (!g->up) {
                finish(s, -EAGAIN, "the GPU broker is down; it is being restarted");
                return false;
        }
        q->kept = c->gpu_hold ? c->gpu_hold->kept_bytes : 0;
        q->room_conn = room_of(o->cuda_conn_quota, c->gpu_bytes);
        q->room_all = room_of(o->cuda_quota, g->bytes);
        if (q->asked > q->room_conn || q->asked > q->room_all) {
                quota_why(s, q, q->asked > q->room_conn, q->asked, NULL, why, sizeof(why));
                finish(s, -EDQUOT, why);
                return false;
        }
        if ((q->flags & FS_SPAWN_GPU_FDS) && (r = get_hold(c, &q->hold, why, sizeof(why))) < 0) {
                finish(s, r, why);
                return false;
        }
        step(s);
        return true;
}

/* Serves requests from the head on, until one waits for the broker or none is left. */
static void serve(struct fsd_server *s)
{
        while (s->gpu.reqs && !fsd_timer_armed(&s->gpu.deadline)) {
                struct fsd_gpu_req *q = s->gpu.reqs;

                if (start(s) && s->gpu.reqs == q)
                        return; /* waits for the broker */
        }
}

int fsd_gpu_request(struct fsd_server *s, struct fsd_gpu_req *q, char *err, size_t errlen)
{
        struct fsd_gpu *g = &s->gpu;

        if (!g->enabled) {
                snprintf(err, errlen, "this server has no GPU broker (start it with --cuda)");
                return -ENODEV;
        }
        if (!g->up) {
                snprintf(err, errlen, "the GPU broker is down; it is being restarted");
                return -EAGAIN;
        }
        q->asked = 0;
        for (size_t i = 0; i < q->nwant; i++) {
                if (q->want[i].device >= g->ndev) {
                        snprintf(err, errlen, "no GPU %u (this server has %u)", q->want[i].device,
                                 g->ndev);
                        return -EINVAL;
                }
                q->asked = q->want[i].size > UINT64_MAX - q->asked ? UINT64_MAX
                                                                   : q->asked + q->want[i].size;
        }
        if (g->nreqs >= FSD_GPU_QUEUE) {
                snprintf(err, errlen, "the GPU broker is busy (%d requests wait); try again",
                         FSD_GPU_QUEUE);
                return -EAGAIN;
        }
        q->next = NULL;
        q->e.ngpu = 0;
        q->total = 0;
        q->hold = NULL;
        if (!g->reqs_tail)
                g->reqs_tail = &g->reqs;
        *g->reqs_tail = q;
        g->reqs_tail = &q->next;
        g->nreqs++;
        fsd_conn_hold(s, q->conn, +1);
        serve(s);
        return 0;
}

/* The broker's answer to the GPU_ALLOC in flight. */
static void on_answer(struct fsd_loop *l, struct fsd_io *io, uint32_t events)
{
        struct fsd_server *s = fsd_server_of(l);
        struct fsd_gpu *g = &s->gpu;
        struct fsd_gpu_req *q = g->reqs;
        struct fs_msg_lease ls;
        uint8_t msg[1024];
        struct fs_hdr h;
        struct fs_buf p;
        size_t nfds = 0;
        int n, fd = -1;

        (void)io;
        (void)events;
        n = fs_fdpass_recv(g->fd, msg, sizeof(msg), &fd, 1, &nfds, MSG_DONTWAIT);
        if (n == -EAGAIN || n == -EINTR)
                return;
        bool waiting = q && fsd_timer_armed(&g->deadline);

        if (n <= 0 || !waiting ||
            fs_iproto_parse_hdr(msg, (size_t)n, FS_ICHAN_BROKER, FS_ISIDE_HELPER, nfds, &h, &p) <
                0 ||
            h.id != q->alloc_id) {
                fs_close_many(&fd, nfds);
                broker_lost(s, n < 0 ? n : -EPROTO);
                if (waiting)
                        finish(s, -EIO, "the GPU broker failed; it is being restarted");
                serve(s);
                return;
        }
        fsd_timer_disarm(&s->loop, &g->deadline);
        if (h.type == FS_I_FAILED) {
                struct fs_msg_error e;
                char why[512];

                fs_close_many(&fd, nfds);
                if (fs_proto_parse_error(&p, &e, NULL) < 0) {
                        broker_lost(s, -EPROTO);
                        finish(s, -EIO, "the GPU broker failed; it is being restarted");
                } else if (e.err == EDQUOT) {
                        quota_why(s, q, q->room_conn <= q->room_all, q->asked, e.reason, why,
                                  sizeof(why));
                        finish(s, -EDQUOT, why);
                } else {
                        snprintf(why, sizeof(why), "%s", e.reason);
                        finish(s, -(int)e.err, why);
                }
                serve(s);
                return;
        }
        size_t i = q->e.ngpu;

        if (h.type != FS_I_GPU_LEASE || nfds != 1 || fs_proto_parse_lease(&p, &ls, NULL) < 0 ||
            ls.gpu.device != q->want[i].device || ls.gpu.size < q->want[i].size) {
                fs_close_many(&fd, nfds);
                broker_lost(s, -EPROTO);
                finish(s, -EIO, "the GPU broker failed; it is being restarted");
                serve(s);
                return;
        }
        q->e.gpu_fd[i] = fd;
        q->e.gpu[i] = (struct fsd_lease){ls.lease, ls.gpu.size, g->generation, q->hold};
        if (q->hold)
                q->hold->refs++;
        q->e.gpu_buf[i] = ls.gpu;
        q->e.ngpu++;
        q->total += ls.gpu.size;
        step(s);
        serve(s);
}

/* The broker did not answer in time: it is killed and restarted. */
static void on_deadline(struct fsd_loop *l, struct fsd_timer *t, int64_t now)
{
        struct fsd_server *s = fsd_server_of(l);

        (void)t;
        (void)now;
        if (!s->gpu.reqs)
                return;
        broker_lost(s, -ETIMEDOUT);
        finish(s, -EIO, "the GPU broker did not answer in time; it is being restarted");
        serve(s);
}

/* Every request waiting is answered (the broker is gone, or we stop). */
static void fail_reqs(struct fsd_server *s, int err, const char *why)
{
        fsd_timer_disarm(&s->loop, &s->gpu.deadline);
        while (s->gpu.reqs)
                finish(s, -err, why);
}

static void uncharge(struct fsd_server *s, struct fsd_conn *c, const struct fsd_lease *l)
{
        if (c)
                c->gpu_bytes -= l->size;
        s->gpu.bytes -= l->size;
        s->gpu.leases--;
        send_free(s, l);
}

/* A lease that names hold has lost its worker (or never had one): charged on while the
 * client may hold its copy, uncharged once it is gone. */
static void drop_worker_ref(struct fsd_server *s, struct fsd_conn *c, const struct fsd_lease *l,
                            bool client_has_it)
{
        struct fsd_gpu_hold *h = l->hold;

        if (!h) {
                uncharge(s, c, l);
                return;
        }
        h->refs--;
        if (client_has_it && !h->gone) {
                if (h->n == h->cap) {
                        size_t cap = h->cap ? h->cap * 2 : 8;
                        struct fsd_lease *k = realloc(h->kept, cap * sizeof(*k));

                        if (!k) {
                                /* cannot remember it: it stays charged for good, which
                                 * errs on the side of the device */
                                fs_log(FS_LOG_ERROR,
                                       "out of memory: a GPU lease of %llu bytes "
                                       "stays charged",
                                       (unsigned long long)l->size);
                                return;
                        }
                        h->kept = k;
                        h->cap = cap;
                }
                h->kept[h->n++] = *l;
                h->kept_bytes += l->size;
                return;
        }
        uncharge(s, c, l);
        hold_maybe_free(s, h);
}

void fsd_gpu_abandon(struct fsd_server *s, struct fsd_inflight *e)
{
        /* no SPAWNED reached the client: it has no copy */
        for (size_t i = 0; i < e->ngpu; i++)
                drop_worker_ref(s, e->conn, &e->gpu[i], false);
        fs_close_many(e->gpu_fd, e->ngpu);
        e->ngpu = 0;
}

void fsd_gpu_release_worker(struct fsd_server *s, struct fsd_worker *w)
{
        for (size_t i = 0; i < w->ngpu; i++)
                drop_worker_ref(s, w->conn, &w->gpu[i], true);
        w->ngpu = 0;
}

/* Connection closed and process exited: no copy is left with the client. */
static void hold_gone(struct fsd_server *s, struct fsd_gpu_hold *h)
{
        h->gone = true;
        for (size_t i = 0; i < h->n; i++)
                uncharge(s, NULL, &h->kept[i]);
        h->n = 0;
        h->kept_bytes = 0;
        fsd_io_stop(&s->loop, &h->io);
        h->pidfd = fs_close(h->pidfd);
        hold_maybe_free(s, h);
}

/* The client process exited after its connection closed. */
static void on_hold_exit(struct fsd_loop *l, struct fsd_io *io, uint32_t events)
{
        (void)events;
        hold_gone(fsd_server_of(l), fsd_container_of(io, struct fsd_gpu_hold, io));
}

void fsd_gpu_conn_closed(struct fsd_server *s, struct fsd_conn *c)
{
        struct fsd_gpu_hold *h = c->gpu_hold;
        struct pollfd pf;
        int r;

        for (struct fsd_gpu_req *q = s->gpu.reqs; q; q = q->next)
                if (q->conn == c)
                        q->conn = NULL; /* its leases are given back when it is done */
        if (!h)
                return;
        c->gpu_hold = NULL;
        h->conn = NULL;
        h->next = s->gpu.holds;
        if (h->next)
                h->next->prev = h;
        s->gpu.holds = h;
        pf = (struct pollfd){.fd = h->pidfd, .events = POLLIN};
        if (h->pidfd < 0 || poll(&pf, 1, 0) != 0) {
                hold_gone(s, h);
                return;
        }
        if ((r = fsd_io_start(&s->loop, &h->io, h->pidfd, EPOLLIN, false, on_hold_exit)) < 0)
                fs_log_errno(FS_LOG_ERROR, r,
                             "watching a client that holds GPU buffers (they "
                             "stay charged)");
}

void fsd_gpu_cancel(struct fsd_server *s)
{
        fail_reqs(s, ESHUTDOWN, "server is stopping");
}
