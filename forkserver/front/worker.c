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
#include "forkserver/front/server.h"

#define SIGNAL_RETRY_MS 20 /* a SIGKILL the zygote could not take yet is tried again */

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

static void on_exit_(struct fsd_loop *l, struct fsd_io *io, uint32_t events);

struct fsd_worker *fsd_worker_new(struct fsd_server *s, struct fsd_conn *c, int pidfd, pid_t pid,
                                  uint32_t req_id, bool detached)
{
        struct fsd_worker *w = calloc(1, sizeof(*w));

        if (!w)
                return NULL;
        *w = (struct fsd_worker){.io = FSD_IO_INIT,
                                 .pid = pid,
                                 .id = ++s->next_worker_id,
                                 .req_id = req_id,
                                 .detached = detached,
                                 .conn = c};
        w->pidfd = pidfd; /* ours from here on, unless we fail */
        if (fsd_io_start(&s->loop, &w->io, w->pidfd, EPOLLIN, false, on_exit_) < 0) {
                free(w);
                return NULL;
        }
        push_worker(list_of(s, w), w);
        s->nworkers++;
        return w;
}

static void on_exit_(struct fsd_loop *l, struct fsd_io *io, uint32_t events)
{
        struct fsd_worker *w = fsd_container_of(io, struct fsd_worker, io);
        struct fsd_server *s = fsd_server_of(l);
        siginfo_t si = {0};

        (void)events;
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
        fsd_io_stop(&s->loop, &w->io);
        fsd_timer_disarm(&s->loop, &w->kill);
        w->pidfd = fs_close(w->pidfd);
        /* Freed after the current batch of events, which may still name it. */
        w->next = s->dead_workers;
        s->dead_workers = w;
        s->nworkers--;
        if (w->unkillable)
                s->nunkillable--;
}

/* SIGKILL after the grace; a zygote that cannot take it yet (its queue is full) gets it
 * again soon; one nobody can send (no zygote left) is left to our parent-death signal. */
static void on_kill(struct fsd_loop *l, struct fsd_timer *t, int64_t now)
{
        struct fsd_worker *w = fsd_container_of(t, struct fsd_worker, kill);
        struct fsd_server *s = fsd_server_of(l);
        int r = fsd_signal(s, w->pidfd, w->pid, w->uid, SIGKILL);

        if (r == -EAGAIN) {
                (void)fsd_timer_arm(l, t, now + SIGNAL_RETRY_MS, on_kill);
                return;
        }
        if (r < 0 && r != -ESRCH && !w->unkillable) {
                fs_log_errno(FS_LOG_ERROR, r, "cannot end worker %llu pid %d",
                             (unsigned long long)w->id, (int)w->pid);
                w->unkillable = true;
                s->nunkillable++;
        }
}

void fsd_worker_terminate(struct fsd_server *s, struct fsd_worker *w)
{
        if (w->terminating)
                return;
        w->terminating = true;
        (void)fsd_signal(s, w->pidfd, w->pid, w->uid, SIGTERM);
        if (fsd_timer_arm(&s->loop, &w->kill, fs_now_ms() + FSD_KILL_GRACE_MS, on_kill) < 0)
                on_kill(&s->loop, &w->kill, fs_now_ms()); /* no memory for a timer: now */
}

void fsd_worker_orphan_all(struct fsd_server *s, struct fsd_conn *c)
{
        while (c->workers) {
                struct fsd_worker *w = c->workers;

                unlink_worker(s, w);
                w->conn = NULL;
                push_worker(&s->orphans, w);
                if (!w->detached)
                        fsd_worker_terminate(s, w);
        }
}

void fsd_worker_terminate_all(struct fsd_server *s)
{
        for (struct fsd_conn *c = s->conns; c; c = c->next)
                for (struct fsd_worker *w = c->workers; w; w = w->next)
                        fsd_worker_terminate(s, w);
        for (struct fsd_worker *w = s->orphans; w; w = w->next)
                fsd_worker_terminate(s, w);
}

void fsd_worker_free_dead(struct fsd_server *s)
{
        while (s->dead_workers) {
                struct fsd_worker *w = s->dead_workers;

                s->dead_workers = w->next;
                free(w);
        }
}
