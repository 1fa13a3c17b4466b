/* The front's side of the gpu-broker: start and restart it, lease buffers, keep the books.
 * The front never loads the driver; it forwards the broker's fds opaquely. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "common/fdpass.h"
#include "common/util.h"
#include "forkserver/broker.h"
#include "forkserver/server.h"

#define GPU_REPLY_TIMEOUT_MS 10000
#define GPU_BACKOFF_MIN_MS 100
#define GPU_BACKOFF_MAX_MS 10000

static struct fsd_server *server_of(struct fsd_loop *l)
{
        return fsd_container_of(l, struct fsd_server, loop);
}

static void on_exit_(struct fsd_loop *l, struct fsd_io *io, uint32_t events);

/* A broker we do not keep: a child of ours, so it is ours to reap. */
static void kill_reap(int pidfd)
{
        siginfo_t si;

        if (pidfd < 0)
                return;
        (void)pidfd_send_signal(pidfd, SIGKILL, NULL, 0);
        while (waitid(P_PIDFD, (id_t)pidfd, &si, WEXITED) < 0 && errno == EINTR)
                ;
        fs_close(pidfd);
}

/* The broker the template made is ours now. */
static int take(struct fsd_server *s, const struct fsd_template_reply *rep, int fd, int pidfd)
{
        struct fsd_gpu *g = &s->gpu;
        int r;

        g->fd = fd;
        g->pidfd = pidfd;
        g->pid = rep->pid;
        g->ndev = rep->ndev;
        if ((r = fsd_io_start(&s->loop, &g->io_exit, g->pidfd, EPOLLIN, false, on_exit_)) < 0) {
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
                snprintf(err, errlen, "%s", r == -EPIPE || r == -EAGAIN || !rep.why[0]
                                                    ? "the template is unreachable"
                                                    : rep.why);
                return r;
        }
        if ((r = take(s, &rep, fd, pidfd)) < 0) {
                snprintf(err, errlen, "epoll_ctl: %s", strerror(-r));
                fs_close(fd);
                kill_reap(pidfd);
        }
        return r;
}

/* Ends the broker: EOF on its socket, then its exit. */
void fsd_gpu_stop(struct fsd_server *s)
{
        struct fsd_gpu *g = &s->gpu;

        g->up = false;
        g->fd = fs_close(g->fd);
        if (g->pidfd >= 0) {
                siginfo_t si;
                struct pollfd pf = {.fd = g->pidfd, .events = POLLIN};

                if (poll(&pf, 1, 5000) != 1)
                        (void)pidfd_send_signal(g->pidfd, SIGKILL, NULL, 0);
                while (waitid(P_PIDFD, (id_t)g->pidfd, &si, WEXITED) < 0 && errno == EINTR)
                        ;
                fsd_io_stop(&s->loop, &g->io_exit);
                g->pidfd = fs_close(g->pidfd);
        }
        g->pid = 0;
}

/* Next attempt: 100 ms after the first failure, doubling to 10 s while they go on; a broker
 * that had run for 10 s or more counts as a first failure again. */
static void on_restart(struct fsd_loop *l, struct fsd_timer *t, int64_t now);

static void schedule_restart(struct fsd_server *s, int64_t now)
{
        struct fsd_gpu *g = &s->gpu;

        if (g->started_at && now - g->started_at >= GPU_BACKOFF_MAX_MS)
                g->backoff_ms = 0;
        g->started_at = 0;
        g->backoff_ms = g->backoff_ms ? g->backoff_ms * 2 : GPU_BACKOFF_MIN_MS;
        if (g->backoff_ms > GPU_BACKOFF_MAX_MS)
                g->backoff_ms = GPU_BACKOFF_MAX_MS;
        g->restart_at = now + g->backoff_ms;
        (void)fsd_timer_arm(&s->loop, &g->restart, g->restart_at, on_restart);
}

static void on_exit_(struct fsd_loop *l, struct fsd_io *io, uint32_t events)
{
        struct fsd_server *s = server_of(l);
        struct fsd_gpu *g = &s->gpu;
        siginfo_t si = {0};

        (void)events;
        if (g->pidfd < 0 || waitid(P_PIDFD, (id_t)g->pidfd, &si, WEXITED | WNOHANG) < 0 ||
            si.si_pid == 0)
                return;
        fsd_io_stop(l, io);
        g->pidfd = fs_close(g->pidfd);
        g->fd = fs_close(g->fd);
        g->up = false;
        g->pid = 0;
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
        struct fsd_server *s = server_of(l);
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
                kill_reap(pidfd);
                if (s->stopping || r == -ECANCELED)
                        return;
                schedule_restart(s, fs_now_ms());
                fs_log(FS_LOG_ERROR, "GPU broker restart failed: %s", rep->why[0] ? rep->why
                                                                                : strerror(-r));
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
        fs_msg_begin(&w, msg, sizeof(msg), FS_MSG_GPU_FREE, ++g->next_id);
        fs_msg_put_u64(&w, FS_F_LEASE, l->id);
        if ((n = fs_msg_finish(&w)) > 0)
                (void)fs_fdpass_send(g->fd, msg, (size_t)n, NULL, 0, 0);
}

/* One GPU_ALLOC round trip. The broker answers in order and fast (a cuMemCreate); the front
 * waits for it, bounded, rather than keep a second queue of half-made spawns. */
static int lease_one(struct fsd_server *s, const struct fs_gpu_buf *want, int *ret_fd,
                     struct fs_msg_lease *ret, char *why, size_t whylen)
{
        struct fsd_gpu *g = &s->gpu;
        uint8_t msg[1024];
        struct fs_msgw w;
        struct fs_hdr h;
        struct fs_buf p;
        struct pollfd pf = {.fd = g->fd, .events = POLLIN};
        uint32_t id = ++g->next_id;
        size_t nfds;
        int n, fd = -1;

        fs_msg_begin(&w, msg, sizeof(msg), FS_MSG_GPU_ALLOC, id);
        fs_msg_put_gpu(&w, want->device, want->size);
        if ((n = fs_msg_finish(&w)) < 0 || (n = fs_fdpass_send(g->fd, msg, (size_t)n, NULL, 0, 0)) < 0)
                goto lost;
        if ((n = poll(&pf, 1, GPU_REPLY_TIMEOUT_MS)) != 1) {
                n = n == 0 ? -ETIMEDOUT : -errno;
                goto lost;
        }
        if ((n = fs_fdpass_recv(g->fd, msg, sizeof(msg), &fd, 1, &nfds, 0)) <= 0)
                goto lost;
        if (fs_proto_parse_hdr(msg, (size_t)n, &h, &p) < 0 || h.id != id) {
                n = -EPROTO;
                goto lost;
        }
        if (h.type == FS_MSG_ERROR) {
                struct fs_msg_error e;

                fs_close_many(&fd, nfds);
                if (fs_proto_parse_error(&p, &e, NULL) < 0) {
                        n = -EPROTO;
                        goto lost;
                }
                snprintf(why, whylen, "%s", e.reason);
                return -(int)e.err;
        }
        if (h.type != FS_MSG_GPU_LEASE || nfds != 1 || fs_proto_parse_lease(&p, ret, NULL) < 0 ||
            ret->gpu.device != want->device || ret->gpu.size < want->size) {
                fs_close_many(&fd, nfds);
                n = -EPROTO;
                goto lost;
        }
        *ret_fd = fd;
        return 0;
lost:
        /* the broker cannot be trusted to be in step: restart it */
        fs_log_errno(FS_LOG_ERROR, n ? n : -EPIPE, "GPU broker");
        if (g->pidfd >= 0)
                (void)pidfd_send_signal(g->pidfd, SIGKILL, NULL, 0);
        g->up = false;
        snprintf(why, whylen, "the GPU broker failed; it is being restarted");
        return -EIO;
}

/* Leases obtained before a refusal go back (nothing was charged yet). */
static void give_back(struct fsd_server *s, struct fsd_inflight *e)
{
        for (size_t i = 0; i < e->ngpu; i++)
                send_free(s, &e->gpu[i]);
        fs_close_many(e->gpu_fd, e->ngpu);
        e->ngpu = 0;
}

int fsd_gpu_acquire(struct fsd_server *s, struct fsd_conn *c, const struct fs_spawn *sp,
                    struct fsd_inflight *e, char *why, size_t whylen)
{
        struct fsd_gpu *g = &s->gpu;
        uint64_t total = 0;
        int r = 0;

        e->ngpu = 0;
        if (!g->enabled) {
                snprintf(why, whylen, "this server has no GPU broker (start it with --cuda)");
                return -ENODEV;
        }
        if (!g->up) {
                snprintf(why, whylen, "the GPU broker is down; it is being restarted");
                return -EAGAIN;
        }
        for (size_t i = 0; i < sp->ngpu; i++)
                if (sp->gpu[i].device >= g->ndev) {
                        snprintf(why, whylen, "no GPU %u (this server has %u)", sp->gpu[i].device,
                                 g->ndev);
                        return -EINVAL;
                }
        for (size_t i = 0; i < sp->ngpu && r == 0; i++) {
                struct fs_msg_lease l;

                if ((r = lease_one(s, &sp->gpu[i], &e->gpu_fd[i], &l, why, whylen)) < 0)
                        break;
                e->gpu[i] = (struct fsd_lease){l.lease, l.gpu.size, g->generation};
                e->gpu_buf[i] = l.gpu;
                e->ngpu++;
                total += l.gpu.size;
        }
        if (r == 0 && s->opt->cuda_conn_quota && c->gpu_bytes + total > s->opt->cuda_conn_quota) {
                snprintf(why, whylen, "GPU quota of this connection exceeded (--cuda-conn-quota "
                         "%llu bytes; %llu held, %llu asked)",
                         (unsigned long long)s->opt->cuda_conn_quota,
                         (unsigned long long)c->gpu_bytes, (unsigned long long)total);
                r = -EDQUOT;
        } else if (r == 0 && s->opt->cuda_quota && g->bytes + total > s->opt->cuda_quota) {
                snprintf(why, whylen, "GPU quota of this server exceeded (--cuda-quota %llu "
                         "bytes; %llu held, %llu asked)", (unsigned long long)s->opt->cuda_quota,
                         (unsigned long long)g->bytes, (unsigned long long)total);
                r = -EDQUOT;
        }
        if (r < 0) {
                give_back(s, e);
                return r;
        }
        c->gpu_bytes += total;
        g->bytes += total;
        g->leases += e->ngpu;
        return 0;
}

static void uncharge(struct fsd_server *s, struct fsd_conn *c, const struct fsd_lease *l)
{
        if (c)
                c->gpu_bytes -= l->size;
        s->gpu.bytes -= l->size;
        s->gpu.leases--;
        send_free(s, l);
}

void fsd_gpu_abandon(struct fsd_server *s, struct fsd_inflight *e)
{
        for (size_t i = 0; i < e->ngpu; i++)
                uncharge(s, e->conn, &e->gpu[i]);
        fs_close_many(e->gpu_fd, e->ngpu);
        e->ngpu = 0;
}

void fsd_gpu_release_worker(struct fsd_server *s, struct fsd_worker *w)
{
        for (size_t i = 0; i < w->ngpu; i++)
                uncharge(s, w->conn, &w->gpu[i]);
        w->ngpu = 0;
}
