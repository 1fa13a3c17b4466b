#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/fdpass.h"
#include "common/util.h"
#include "forkserver/server.h"

#define SIGNAL_RETRY_MS 20 /* a SIGKILL the zygote could not take yet is tried again */

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
        fs_msg_begin(&m, buf, sizeof(buf), FS_MSG_SIGNAL, 0);
        fs_msg_put_u32(&m, FS_F_STATUS, (uint32_t)sig);
        fs_msg_put_cred(&m, uid, 0, NULL, 0);
        if (pidfd < 0)
                fs_msg_put_u32(&m, FS_F_PID, (uint32_t)pid);
        if ((n = fs_msg_finish(&m)) < 0)
                return n;
        /* never waits: a zygote that does not read now gets it again later, or not at all */
        return fs_fdpass_send(z->fd, buf, (size_t)n, &pidfd, pidfd >= 0 ? 1 : 0, MSG_DONTWAIT);
}

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
                                 .req_id = req_id, .detached = detached, .conn = c};
        w->pidfd = pidfd; /* ours from here on, unless we fail */
        if (fsd_epoll_add(s, w->pidfd, EPOLLIN, &w->src) < 0) {
                free(w);
                return NULL;
        }
        push_worker(list_of(s, w), w);
        s->nworkers++;
        return w;
}

void fsd_worker_event(struct fsd_server *s, struct fsd_worker *w)
{
        siginfo_t si = {0};

        if (w->pidfd < 0)
                return; /* reaped earlier in this batch of events */
        if (waitid(P_PIDFD, (id_t)w->pidfd, &si, WEXITED | WNOHANG) < 0) {
                if (errno == EINTR || errno == EAGAIN)
                        return;
                fs_log_errno(FS_LOG_ERROR, -errno, "waitid on worker %llu pid %d",
                             (unsigned long long)w->id, (int)w->pid);
        } else if (si.si_pid == 0) {
                return; /* not yet */
        }
        s->stats.exits++;
        if (w->conn && si.si_pid) {
                struct fs_msgw m;
                int n;

                fs_msg_begin(&m, s->tx, sizeof(s->tx), FS_MSG_EXITED, w->req_id);
                fs_msg_put_u64(&m, FS_F_WORKER, w->id);
                fs_msg_put_u32(&m, FS_F_CODE, (uint32_t)si.si_code);
                fs_msg_put_u32(&m, FS_F_STATUS, (uint32_t)si.si_status);
                if ((n = fs_msg_finish(&m)) > 0)
                        (void)fsd_conn_send(s, w->conn, s->tx, (size_t)n, NULL, 0);
        }
        fsd_gpu_release_worker(s, w);
        fs_log(FS_LOG_DEBUG, "worker %llu pid %d exited (code %d status %d)",
               (unsigned long long)w->id, (int)w->pid, si.si_code, si.si_status);
        unlink_worker(s, w);
        (void)epoll_ctl(s->epfd, EPOLL_CTL_DEL, w->pidfd, NULL);
        w->pidfd = fs_close(w->pidfd);
        /* Freed after the current batch of events, which may still name it. */
        w->next = s->dead_workers;
        s->dead_workers = w;
        s->nworkers--;
        if (w->unkillable)
                s->nunkillable--;
}

void fsd_worker_terminate(struct fsd_server *s, struct fsd_worker *w, int64_t now)
{
        if (w->kill_at)
                return;
        (void)fsd_signal(s, w->pidfd, w->pid, w->uid, SIGTERM);
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

static void tick_list(struct fsd_server *s, struct fsd_worker *w, int64_t now, int64_t *next)
{
        for (; w; w = w->next) {
                if (!w->kill_at)
                        continue;
                if (w->kill_at <= now) {
                        int r = fsd_signal(s, w->pidfd, w->pid, w->uid, SIGKILL);

                        /* sent, the exit event follows; or the zygote's queue was full; or
                         * nobody can send it (the zygote is gone): not waited for then */
                        w->kill_at = r == -EAGAIN ? now + SIGNAL_RETRY_MS : INT64_MAX;
                        if (r < 0 && r != -EAGAIN && r != -ESRCH && !w->unkillable) {
                                fs_log_errno(FS_LOG_ERROR, r, "cannot end worker %llu pid %d",
                                             (unsigned long long)w->id, (int)w->pid);
                                w->unkillable = true;
                                s->nunkillable++;
                        }
                }
                if (w->kill_at != INT64_MAX && (*next < 0 || w->kill_at < *next)) {
                        *next = w->kill_at;
                }
        }
}

void fsd_worker_tick(struct fsd_server *s, int64_t now, int64_t *next)
{
        tick_list(s, s->orphans, now, next);
        if (s->stopping)
                for (struct fsd_conn *c = s->conns; c; c = c->next)
                        tick_list(s, c->workers, now, next);
}

void fsd_worker_free_dead(struct fsd_server *s)
{
        while (s->dead_workers) {
                struct fsd_worker *w = s->dead_workers;

                s->dead_workers = w->next;
                free(w);
        }
}
