#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/pidfd.h>
#include <sys/wait.h>

#include "common/util.h"
#include "forkserver/child.h"
#include "forkserver/server.h"

static struct fsd_worker **list_of(struct fsd_server *s, struct fsd_worker *w)
{
        return w->conn ? &w->conn->workers : &s->orphans;
}

static void unlink_worker(struct fsd_server *s, struct fsd_worker *w)
{
        if (w->prev)
                w->prev->next = w->next;
        else
                *list_of(s, w) = w->next;
        if (w->next)
                w->next->prev = w->prev;
        w->prev = w->next = NULL;
}

static void push_worker(struct fsd_worker **head, struct fsd_worker *w)
{
        w->prev = NULL;
        w->next = *head;
        if (*head)
                (*head)->prev = w;
        *head = w;
}

struct fsd_worker *fsd_worker_new(struct fsd_server *s, struct fsd_conn *c, int pidfd, pid_t pid,
                                  uint32_t req_id, bool detached)
{
        struct fsd_worker *w = calloc(1, sizeof(*w));

        if (!w)
                return NULL;
        *w = (struct fsd_worker){.src.kind = FSD_SRC_WORKER, .pid = pid, .id = ++s->next_worker_id,
                                 .req_id = req_id, .detached = detached, .conn = c,
                                 .setup_fd = -1, .chan_fd = -1};
        w->pidfd = pidfd; /* ours from here on, unless we fail */
        if (fsd_epoll_add(s, w->pidfd, EPOLLIN, &w->src) < 0) {
                free(w);
                return NULL;
        }
        push_worker(list_of(s, w), w);
        s->nworkers++;
        return w;
}

void fsd_worker_announce(struct fsd_server *s, struct fsd_worker *w)
{
        int fds[2] = {w->pidfd, w->chan_fd}, n;
        struct fs_msgw m;

        s->stats.spawns++;
        if (w->conn) {
                fs_msg_begin(&m, s->tx, sizeof(s->tx), FS_MSG_SPAWNED, w->req_id);
                fs_msg_put_u64(&m, FS_F_WORKER, w->id);
                fs_msg_put_u32(&m, FS_F_PID, (uint32_t)w->pid);
                if ((n = fs_msg_finish(&m)) > 0)
                        (void)fsd_conn_send(s, w->conn, s->tx, (size_t)n, fds,
                                            w->chan_fd >= 0 ? 2 : 1);
                fs_log(FS_LOG_DEBUG, "conn %llu: worker %llu pid %d spawned",
                       (unsigned long long)w->conn->id, (unsigned long long)w->id, (int)w->pid);
        }
        w->chan_fd = fs_close(w->chan_fd); /* the client has its copy; we keep no end */
}

void fsd_worker_setup_event(struct fsd_server *s, struct fsd_worker *w)
{
        struct fsd_child_error ce;
        ssize_t n;

        if (w->setup_fd < 0)
                return;
        do
                n = read(w->setup_fd, &ce, sizeof(ce));
        while (n < 0 && errno == EINTR);
        if (n < 0 && errno == EAGAIN)
                return;
        (void)epoll_ctl(s->epfd, EPOLL_CTL_DEL, w->setup_fd, NULL);
        w->setup_fd = fs_close(w->setup_fd);
        if (n == 0) {
                fsd_worker_announce(s, w);
                return;
        }
        /* A set-up failure is an error for the request, never an exit of a worker. */
        w->failed = true;
        w->chan_fd = fs_close(w->chan_fd);
        s->stats.spawn_failures++;
        if (w->conn) {
                if (n == sizeof(ce))
                        fsd_conn_send_error(s, w->conn, w->req_id, ce.err > 0 ? -ce.err : -EIO,
                                            "%s: %s", fs_proto_step_name((uint32_t)ce.step),
                                            strerror(ce.err > 0 ? ce.err : EIO));
                else
                        fsd_conn_send_error(s, w->conn, w->req_id, EIO,
                                            "the worker died during set-up");
        }
}

void fsd_worker_event(struct fsd_server *s, struct fsd_worker *w)
{
        siginfo_t si = {0};

        if (w->pidfd < 0)
                return; /* reaped earlier in this batch of events */
        /* its set-up outcome first, so that SPAWNED (or ERROR) precedes any exit event */
        fsd_worker_setup_event(s, w);
        if (waitid(P_PIDFD, (id_t)w->pidfd, &si, WEXITED | WNOHANG) < 0) {
                if (errno == EINTR || errno == EAGAIN)
                        return;
                fs_log_errno(FS_LOG_ERROR, -errno, "waitid on worker %llu pid %d",
                             (unsigned long long)w->id, (int)w->pid);
        } else if (si.si_pid == 0) {
                return; /* not yet */
        }
        s->stats.exits++;
        if (w->conn && si.si_pid && !w->failed) {
                struct fs_msgw m;
                int n;

                fs_msg_begin(&m, s->tx, sizeof(s->tx), FS_MSG_EXITED, w->req_id);
                fs_msg_put_u64(&m, FS_F_WORKER, w->id);
                fs_msg_put_u32(&m, FS_F_CODE, (uint32_t)si.si_code);
                fs_msg_put_u32(&m, FS_F_STATUS, (uint32_t)si.si_status);
                if ((n = fs_msg_finish(&m)) > 0)
                        (void)fsd_conn_send(s, w->conn, s->tx, (size_t)n, NULL, 0);
        }
        fs_log(FS_LOG_DEBUG, "worker %llu pid %d exited (code %d status %d)",
               (unsigned long long)w->id, (int)w->pid, si.si_code, si.si_status);
        unlink_worker(s, w);
        (void)epoll_ctl(s->epfd, EPOLL_CTL_DEL, w->pidfd, NULL);
        w->pidfd = fs_close(w->pidfd);
        w->chan_fd = fs_close(w->chan_fd);
        /* Another event of this batch may still name it (its set-up pipe): free it later. */
        w->next = s->dead_workers;
        s->dead_workers = w;
        s->nworkers--;
}

void fsd_worker_terminate(struct fsd_server *s, struct fsd_worker *w, int64_t now)
{
        if (w->kill_at)
                return;
        (void)pidfd_send_signal(w->pidfd, SIGTERM, NULL, 0);
        w->kill_at = now + FSD_KILL_GRACE_MS;
}

void fsd_worker_orphan_all(struct fsd_server *s, struct fsd_conn *c)
{
        int64_t now = fs_now_ms();

        while (c->workers) {
                struct fsd_worker *w = c->workers;

                unlink_worker(s, w);
                w->conn = NULL;
                push_worker(&s->orphans, w);
                if (!w->detached)
                        fsd_worker_terminate(s, w, now);
        }
}

void fsd_worker_terminate_all(struct fsd_server *s)
{
        int64_t now = fs_now_ms();

        for (struct fsd_conn *c = s->conns; c; c = c->next)
                for (struct fsd_worker *w = c->workers; w; w = w->next)
                        fsd_worker_terminate(s, w, now);
        for (struct fsd_worker *w = s->orphans; w; w = w->next)
                fsd_worker_terminate(s, w, now);
}

static void tick_list(struct fsd_worker *w, int64_t now, int64_t *next)
{
        for (; w; w = w->next) {
                if (!w->kill_at)
                        continue;
                if (w->kill_at <= now) {
                        (void)pidfd_send_signal(w->pidfd, SIGKILL, NULL, 0);
                        w->kill_at = INT64_MAX; /* sent; the exit event follows */
                } else if (*next < 0 || w->kill_at < *next) {
                        *next = w->kill_at;
                }
        }
}

void fsd_worker_tick(struct fsd_server *s, int64_t now, int64_t *next)
{
        tick_list(s->orphans, now, next);
        if (s->stopping)
                for (struct fsd_conn *c = s->conns; c; c = c->next)
                        tick_list(c->workers, now, next);
}

void fsd_worker_free_dead(struct fsd_server *s)
{
        while (s->dead_workers) {
                struct fsd_worker *w = s->dead_workers;

                s->dead_workers = w->next;
                free(w);
        }
}
