/*
 * The front's end of each zygote's channel: requests out, answers in, the zygote's life.
 *
 * Nothing here waits. A request is sent with MSG_DONTWAIT while the zygote has fewer than
 * FSD_ZYGOTE_INFLIGHT unanswered (so that its answers always fit in the socket buffer and
 * neither side can block the other); beyond that it waits in arrival order, its connection
 * unread meanwhile, up to FSD_ZYGOTE_QUEUE for all zygotes; beyond that it is refused. The
 * oldest request in flight carries a deadline, counted from when it was sent or from the
 * zygote's last answer, whichever is later: a zygote that answers nothing for that long
 * (stopped, looping) is killed, its requests answered, and a new one made from the template
 * after a back-off.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "common/fdpass.h"
#include "common/util.h"
#include "forkserver/front/server.h"

#define TEMPLATE_BUSY_RETRY_MS 100

static const char *zname(const struct fsd_zygote *z)
{
        return z->sandboxed ? z->sandboxed->name : "(plain)";
}

static void answer(struct fsd_server *s, struct fsd_inflight *e, int err, const char *why)
{
        s->on_zygote_answer(s, e, NULL, 0, NULL, 0, false, err, why);
}

/* ---- deadlines ---- */

static void on_deadline(struct fsd_loop *l, struct fsd_timer *t, int64_t now);

static void arm_deadline(struct fsd_server *s, struct fsd_zygote *z)
{
        if (!z->ring_len) {
                fsd_timer_disarm(&s->loop, &z->deadline);
                return;
        }
        (void)fsd_timer_arm(&s->loop, &z->deadline, z->ring[z->ring_head].deadline, on_deadline);
}

static struct fsd_inflight *ring_push(struct fsd_zygote *z)
{
        return &z->ring[(z->ring_head + z->ring_len++) % FSD_ZYGOTE_INFLIGHT];
}

static struct fsd_inflight ring_pop(struct fsd_server *s, struct fsd_zygote *z)
{
        struct fsd_inflight e = z->ring[z->ring_head];

        z->ring_head = (z->ring_head + 1) % FSD_ZYGOTE_INFLIGHT;
        z->ring_len--;
        s->inflight--;
        return e;
}

/* The request's fds as sent: the client's, then the GPU buffers'. */
static size_t request_fds(const struct fsd_inflight *e, int *fds)
{
        memcpy(fds, e->req_fds, e->nreq_fds * sizeof(int));
        memcpy(fds + e->nreq_fds, e->gpu_fd, e->ngpu * sizeof(int));
        return e->nreq_fds + e->ngpu;
}

static int send_now(struct fsd_server *s, struct fsd_zygote *z, const struct fsd_inflight *e,
                    uint8_t *msg, size_t len)
{
        int fds[FS_MAX_MSG_FDS + FS_MAX_GPU];
        size_t nfds = request_fds(e, fds);
        struct fsd_inflight *slot;
        int r;

        fs_msg_set_id(msg, len, z->seq + 1); /* our sequence number: answers come in order */
        if ((r = fs_fdpass_send(z->fd, msg, len, fds, nfds, MSG_DONTWAIT)) < 0)
                return r;
        /* the zygote keeps nothing of a request once it answered, so neither do we */
        explicit_bzero(msg, len);
        z->seq++;
        slot = ring_push(z);
        *slot = *e;
        slot->seq = z->seq;
        slot->deadline =
            fs_now_ms() + (s->stopping ? FSD_STOP_DEADLINE_MS : FSD_ZYGOTE_DEADLINE_MS);
        if (z->ring_len == 1)
                arm_deadline(s, z);
        return 0;
}

static void unwait(struct fsd_server *s, struct fsd_zygote *z, struct fsd_zwait *w)
{
        z->wait = w->next;
        if (!z->wait)
                z->wait_tail = &z->wait;
        z->nwait--;
        s->nwait--;
        if (w->e.conn)
                fsd_conn_hold(s, w->e.conn, -1);
}

/* Room in the ring: what waits goes, oldest first. */
static void send_waiting(struct fsd_server *s, struct fsd_zygote *z)
{
        while (z->wait && z->fd >= 0 && z->ring_len < FSD_ZYGOTE_INFLIGHT) {
                struct fsd_zwait *w = z->wait;
                int r = 0;

                if (w->e.conn && (r = send_now(s, z, &w->e, w->msg, w->len)) == -EAGAIN)
                        return; /* the socket is full: its answers make room */
                unwait(s, z, w);
                if (!w->e.conn || r < 0) {
                        s->inflight--;
                        if (r < 0)
                                fs_log_errno(FS_LOG_ERROR, r, "sending a request to zygote %s",
                                             zname(z));
                        answer(s, &w->e, r < 0 ? -r : ECONNRESET,
                               r < 0 ? "zygote unreachable" : "connection closed");
                }
                explicit_bzero(w->msg, w->len);
                free(w);
        }
}

/* How many requests each client uid has waiting in the front, all zygotes together. */
static void count_waiting(const struct fsd_server *s, struct fsd_tally *y)
{
        static struct fsd_tally_slot t[2 * FSD_ZYGOTE_QUEUE + 1];

        fsd_tally_start(y, t, FS_ARRAY_SIZE(t));
        for (unsigned k = 0; k < s->nzyg; k++)
                for (const struct fsd_zwait *w = s->zyg[k].wait; w; w = w->next)
                        fsd_tally_add(y, (uint32_t)w->client);
}

/*
 * The queue is full. A tenant alone may fill it, but may not keep others out: the uid with
 * the most waiting requests gives up its newest to one of a uid that holds fewer (as with
 * pending handshakes), answered EAGAIN. True when a place was made for newcomer.
 */
static bool make_room(struct fsd_server *s, uid_t newcomer)
{
        struct fsd_zwait **victim = NULL, *w;
        struct fsd_zygote *vz = NULL;
        struct fsd_tally y;
        uid_t top;

        count_waiting(s, &y);
        top = (uid_t)y.top;
        if (y.best <= fsd_tally_count(&y, (uint32_t)newcomer) + 1 || top == newcomer)
                return false;
        for (unsigned k = 0; k < s->nzyg; k++) /* its newest: the last in the lists */
                for (struct fsd_zwait **p = &s->zyg[k].wait; *p; p = &(*p)->next)
                        if ((*p)->client == top &&
                            (!victim || (*p)->e.t0_us >= (*victim)->e.t0_us)) {
                                victim = p;
                                vz = &s->zyg[k];
                        }
        if (!victim)
                return false;
        w = *victim;
        *victim = w->next;
        if (vz->wait_tail == &w->next)
                vz->wait_tail = victim;
        vz->nwait--;
        s->nwait--;
        s->evicted++;
        if (w->e.conn)
                fsd_conn_hold(s, w->e.conn, -1);
        s->inflight--;
        answer(s, &w->e, EAGAIN,
               "the zygotes are busy, and this uid holds most of their queue; "
               "try again");
        explicit_bzero(w->msg, w->len);
        free(w);
        return true;
}

int fsd_zygote_submit(struct fsd_server *s, struct fsd_zygote *z, const struct fsd_inflight *e,
                      uint8_t *msg, size_t len)
{
        struct fsd_zwait *w;
        int r;

        if (z->fd < 0)
                return -EPIPE;
        if (!z->wait && z->ring_len < FSD_ZYGOTE_INFLIGHT) {
                r = send_now(s, z, e, msg, len);
                if (r == 0)
                        s->inflight++;
                if (r != -EAGAIN)
                        return r;
        }
        if (s->nwait >= fsd_zygote_queue(s) && !make_room(s, e->conn->uid))
                return -EAGAIN;
        if (!(w = malloc(sizeof(*w) + len)))
                return -EAGAIN;
        w->next = NULL;
        w->client = e->conn->uid;
        w->e = *e;
        w->len = len;
        memcpy(w->msg, msg, len);
        explicit_bzero(msg, len);
        *z->wait_tail = w;
        z->wait_tail = &w->next;
        z->nwait++;
        s->nwait++;
        s->inflight++;
        fsd_conn_hold(s, e->conn, +1);
        return 0;
}

void fsd_zygote_forget_conn(struct fsd_server *s, struct fsd_conn *c)
{
        for (unsigned k = 0; k < s->nzyg && c->inflight; k++) {
                struct fsd_zygote *z = &s->zyg[k];

                for (unsigned i = 0; i < z->ring_len && c->inflight; i++) {
                        struct fsd_inflight *e = &z->ring[(z->ring_head + i) % FSD_ZYGOTE_INFLIGHT];

                        if (e->conn == c) {
                                e->conn = NULL;
                                c->inflight--;
                        }
                }
                for (struct fsd_zwait *w = z->wait; w && c->inflight; w = w->next)
                        if (w->e.conn == c) {
                                w->e.conn = NULL;
                                c->inflight--;
                        }
        }
}

/* Every request in flight and waiting is answered: none will come from this zygote. */
static void fail_all(struct fsd_server *s, struct fsd_zygote *z, int err, const char *why)
{
        while (z->ring_len) {
                struct fsd_inflight e = ring_pop(s, z);

                answer(s, &e, err, why);
        }
        fsd_timer_disarm(&s->loop, &z->deadline);
        while (z->wait) {
                struct fsd_zwait *w = z->wait;

                unwait(s, z, w);
                s->inflight--;
                answer(s, &w->e, EAGAIN, "the zygote is restarting; try again");
                explicit_bzero(w->msg, w->len);
                free(w);
        }
}

/* Its socket is no use any more (EOF, an error, or it was killed). */
static void disconnect(struct fsd_server *s, struct fsd_zygote *z)
{
        fsd_io_stop(&s->loop, &z->io);
        z->fd = fs_close(z->fd);
}

static void on_deadline(struct fsd_loop *l, struct fsd_timer *t, int64_t now)
{
        struct fsd_zygote *z = fsd_container_of(t, struct fsd_zygote, deadline);
        struct fsd_server *s = fsd_server_of(l);

        if (!z->ring_len)
                return;
        if (z->ring[z->ring_head].deadline > now) {
                arm_deadline(s, z);
                return;
        }
        fs_log(FS_LOG_ERROR,
               "zygote %s (pid %d) did not answer in time: killed, its %u "
               "request(s) failed",
               zname(z), (int)z->pid, z->ring_len + z->nwait);
        z->killed++;
        if (z->pidfd >= 0)
                (void)pidfd_send_signal(z->pidfd, SIGKILL, NULL, 0);
        fsd_pool_end(s, z); /* its idle children too */
        disconnect(s, z);
        fail_all(s, z, ETIMEDOUT, "the zygote did not answer in time");
        /* its exit (pidfd) schedules the new one */
}

/* ---- answers ---- */

/* What the zygote said, as far as it is there: answers, and news of its idle children. */
static void drain(struct fsd_server *s, struct fsd_zygote *z, unsigned max)
{
        for (unsigned i = 0; i < max && z->fd >= 0; i++) {
                uint8_t msg[1024]; /* zygote replies are small; a larger one is an error */
                int fds[2] = {-1, -1};
                size_t nfds = 0;
                bool lost = false;
                int n = fs_fdpass_recv_lossy(z->fd, msg, sizeof(msg), fds, 2, &nfds, &lost,
                                             MSG_DONTWAIT);

                if (n == -EAGAIN || n == -EINTR)
                        break;
                if (n <= 0) {
                        disconnect(s, z);
                        fail_all(s, z, EIO, "zygote failed to answer");
                        break;
                }
                /* news of its pre-forked children, between the answers */
                if (fsd_pool_message(s, z, msg, (size_t)n, fds, nfds, lost))
                        continue;
                if (z->ring_len == 0) {
                        fs_close_many(fds, nfds);
                        fs_log(FS_LOG_ERROR, "unexpected reply from zygote %s", zname(z));
                        continue;
                }
                struct fsd_inflight e = ring_pop(s, z);

                /* it makes progress: the next one's deadline counts from now (a zygote that
                 * takes its time per fork, a large one, is not killed for its queue) */
                if (z->ring_len) {
                        struct fsd_inflight *next = &z->ring[z->ring_head];
                        int64_t by = fs_now_ms() +
                                     (s->stopping ? FSD_STOP_DEADLINE_MS : FSD_ZYGOTE_DEADLINE_MS);

                        if (next->deadline < by)
                                next->deadline = by;
                }
                arm_deadline(s, z);
                s->on_zygote_answer(s, &e, msg, (size_t)n, fds, nfds, lost, 0, NULL);
        }
}

static void on_reply(struct fsd_loop *l, struct fsd_io *io, uint32_t events)
{
        struct fsd_zygote *z = fsd_container_of(io, struct fsd_zygote, io);
        struct fsd_server *s = fsd_server_of(l);

        (void)events;
        /* a bounded batch: the ring holds FSD_ZYGOTE_INFLIGHT at most (and idle children
         * FSD_MAX_PREFORK) */
        drain(s, z, FSD_ZYGOTE_INFLIGHT + FSD_MAX_PREFORK);
        send_waiting(s, z);
}

/* ---- its life ---- */

static void on_restart(struct fsd_loop *l, struct fsd_timer *t, int64_t now);

static void schedule(struct fsd_server *s, struct fsd_zygote *z, int64_t now, bool failed)
{
        z->restart_at = fsd_backoff(&z->backoff_ms, z->started_at, !failed, now);
        (void)fsd_timer_arm(&s->loop, &z->restart, z->restart_at, on_restart);
}

static void on_exit_(struct fsd_loop *l, struct fsd_io *io, uint32_t events)
{
        struct fsd_zygote *z = fsd_container_of(io, struct fsd_zygote, io_exit);
        struct fsd_server *s = fsd_server_of(l);
        siginfo_t si = {0};

        (void)events;
        if (waitid(P_PIDFD, (id_t)z->pidfd, &si, WEXITED | WNOHANG) < 0 || si.si_pid == 0)
                return;
        fsd_io_stop(&s->loop, &z->io_exit);
        z->pidfd = fs_close(z->pidfd);
        z->pid = 0;
        /* the answers it sent before it died are answers: workers made */
        drain(s, z, ~0u);
        fsd_pool_end(s, z); /* and its idle children end */
        disconnect(s, z);
        fail_all(s, z, EIO, "zygote failed to answer");
        s->on_zygote_gone(s);
        if (s->stopping)
                return;
        schedule(s, z, fs_now_ms(), false);
        fs_log(FS_LOG_ERROR,
               "zygote %s exited unexpectedly (code %d, status %d); a new one "
               "in %lld ms, from the template",
               zname(z), si.si_code, si.si_status, (long long)z->backoff_ms);
}

static void on_restart(struct fsd_loop *l, struct fsd_timer *t, int64_t now)
{
        struct fsd_zygote *z = fsd_container_of(t, struct fsd_zygote, restart);
        struct fsd_server *s = fsd_server_of(l);

        if (z->pidfd >= 0 || z->starting || s->stopping)
                return;
        /* the template makes one helper at a time */
        if (s->tpl.busy) {
                (void)fsd_timer_arm(&s->loop, t, now + TEMPLATE_BUSY_RETRY_MS, on_restart);
                return;
        }
        if (fsd_template_request(&s->tpl, FSD_TPL_ZYGOTE, z->tpl_index) == 0)
                z->starting = true;
        else
                (void)fsd_timer_arm(&s->loop, t, now + 1000, on_restart);
}

int fsd_zygote_attach(struct fsd_server *s, struct fsd_zygote *z)
{
        int r;

        if (!z->wait_tail)
                z->wait_tail = &z->wait;
        if ((r = fsd_io_start(&s->loop, &z->io, z->fd, EPOLLIN, false, on_reply)) < 0 ||
            (r = fsd_io_start(&s->loop, &z->io_exit, z->pidfd, EPOLLIN, false, on_exit_)) < 0)
                return r;
        return 0;
}

void fsd_zygote_made(struct fsd_server *s, const struct fsd_template_reply *rep, int r, int fd,
                     int pidfd)
{
        struct fsd_zygote *z = NULL;

        for (unsigned i = 0; i < s->nzyg && !z; i++)
                if (s->zyg[i].starting && s->zyg[i].tpl_index == rep->index)
                        z = &s->zyg[i];
        if (!z) { /* not asked for (or no longer wanted) */
                fs_close(fd);
                (void)fs_pidfd_end(pidfd, 0);
                return;
        }
        z->starting = false;
        if (r < 0 || s->stopping) {
                if (r < 0)
                        fs_log(FS_LOG_ERROR, "zygote %s restart failed: %s", zname(z), rep->why);
                fs_close(fd);
                (void)fs_pidfd_end(pidfd, 0); /* a child of ours: it dies fast */
                if (!s->stopping)
                        schedule(s, z, fs_now_ms(), true);
                return;
        }
        z->fd = fd;
        z->pidfd = pidfd;
        z->pid = rep->pid;
        z->seq = 0;
        z->ring_head = z->ring_len = 0;
        z->started_at = fs_now_ms();
        if (fsd_zygote_attach(s, z) < 0)
                fs_log(FS_LOG_ERROR, "epoll_ctl: the new zygote is not watched");
        s->zygote_restarts++;
        fs_log(FS_LOG_WARNING, "zygote %s restarted (pid %d)", zname(z), (int)z->pid);
}

void fsd_zygotes_hurry(struct fsd_server *s)
{
        int64_t by = fs_now_ms() + FSD_STOP_DEADLINE_MS;

        for (unsigned i = 0; i < s->nzyg; i++) {
                struct fsd_zygote *z = &s->zyg[i];

                for (unsigned k = 0; k < z->ring_len; k++) {
                        struct fsd_inflight *e = &z->ring[(z->ring_head + k) % FSD_ZYGOTE_INFLIGHT];

                        if (e->deadline > by)
                                e->deadline = by;
                }
                arm_deadline(s, z);
                fsd_timer_disarm(&s->loop, &z->restart);
        }
}

/* Shuts the zygotes down and waits for them: their socket's EOF ends them; those still
 * there after a second (stuck in a close, say, or stopped) are killed. */
void fsd_zygotes_stop(struct fsd_server *s)
{
        int64_t by = fs_now_ms() + 1000;

        for (unsigned i = 0; i < s->nzyg; i++) {
                struct fsd_zygote *z = &s->zyg[i];

                fsd_io_stop(&s->loop, &z->io);
                fsd_io_stop(&s->loop, &z->io_exit);
                fsd_timer_disarm(&s->loop, &z->deadline);
                fsd_timer_disarm(&s->loop, &z->restart);
                /* half-closed: what it says of its idle children meanwhile is still read */
                if (z->fd >= 0)
                        (void)shutdown(z->fd, SHUT_WR);
        }
        for (unsigned i = 0; i < s->nzyg; i++) {
                struct fsd_zygote *z = &s->zyg[i];
                int64_t left = by - fs_now_ms();

                z->pidfd = fs_pidfd_end(z->pidfd, left > 1 ? (int)left : 1);
                fsd_pool_end(s, z);
                z->fd = fs_close(z->fd);
        }
}

int fsd_signal(struct fsd_server *s, int pidfd, pid_t pid, uid_t uid, int sig)
{
        struct fsd_zygote *z = NULL;
        uint8_t buf[128];
        struct fs_msgw m;
        int n;

        if ((pidfd >= 0 ? pidfd_send_signal(pidfd, sig, NULL, 0) : kill(pid, sig)) == 0)
                return 0;
        if (errno != EPERM || !s->switch_uids || uid == geteuid())
                return -errno;
        /* the plain zygote, or any other still there (all may act as any uid) */
        for (unsigned i = 0; i < s->nzyg && !z; i++)
                if (s->zyg[i].fd >= 0)
                        z = &s->zyg[i];
        if (!z)
                return -ENOTCONN;
        fs_imsg_begin(&m, buf, sizeof(buf), FS_I_SIGNAL, 0);
        fs_msg_put_u32(&m, FS_F_STATUS, (uint32_t)sig);
        fs_msg_put_cred(&m, uid, 0, NULL, 0);
        if (pidfd < 0)
                fs_msg_put_u32(&m, FS_F_PID, (uint32_t)pid);
        if ((n = fs_msg_finish(&m)) < 0)
                return n;
        /* never waits: a zygote that does not read now gets it again later, or not at all */
        return fs_fdpass_send(z->fd, buf, (size_t)n, &pidfd, pidfd >= 0 ? 1 : 0, MSG_DONTWAIT);
}
