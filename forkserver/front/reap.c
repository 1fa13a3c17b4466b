/*
 * The one way the front ends a child it will not track: signalled now, reaped when its pidfd
 * says it exited, never waited for on the loop. A worker that failed before exec, one the
 * front could not take on, a stray, an idle child let go: each may be stopped or slow to die
 * (a client can SIGSTOP its own failed worker), and none of that may make the front wait.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/pidfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/util.h"
#include "forkserver/front/server.h"

#define BY_PID_POLL_MS 10 /* a child without a pidfd (we were out of fds): polled */
#define KILL_RETRY_MS 50  /* a SIGKILL relayed through a busy or restarting zygote: again */

struct fsd_reaping {
        struct fsd_io io;
        struct fsd_timer poll;
        struct fsd_reaping *next, **prev;
        pid_t pid;
        uid_t uid;
        int pidfd;
        bool kill_pending; /* SIGKILL not delivered yet: retried with the poll */
};

/* Reaped (true), or not yet. */
static bool try_reap(struct fsd_reaping *c, bool wait)
{
        siginfo_t si = {0};
        int r;

        do
                r = c->pidfd >= 0
                        ? waitid(P_PIDFD, (id_t)c->pidfd, &si, WEXITED | (wait ? 0 : WNOHANG))
                        : waitid(P_PID, (id_t)c->pid, &si, WEXITED | (wait ? 0 : WNOHANG));
        while (r < 0 && errno == EINTR);
        /* ECHILD: somebody reaped it already; nothing is left to wait for */
        return r < 0 || si.si_pid != 0;
}

static void done(struct fsd_server *s, struct fsd_reaping *c)
{
        fsd_io_stop(&s->loop, &c->io);
        fsd_timer_disarm(&s->loop, &c->poll);
        fs_close(c->pidfd);
        *c->prev = c->next;
        if (c->next)
                c->next->prev = c->prev;
        s->nreaping--;
        free(c);
}

static void on_exit_io(struct fsd_loop *l, struct fsd_io *io, uint32_t events)
{
        struct fsd_reaping *c = fsd_container_of(io, struct fsd_reaping, io);

        (void)events;
        if (try_reap(c, false))
                done(fsd_server_of(l), c);
}

/* SIGKILL, as uid; pending while the relay through a zygote could not take it. */
static void kill_now(struct fsd_server *s, struct fsd_reaping *c)
{
        int r = fsd_signal(s, c->pidfd, c->pid, c->uid, SIGKILL);

        c->kill_pending = r == -EAGAIN || r == -ENOTCONN;
        if (r < 0 && r != -ESRCH && !c->kill_pending)
                fs_log_errno(FS_LOG_ERROR, r, "cannot end pid %d", (int)c->pid);
}

static void on_poll(struct fsd_loop *l, struct fsd_timer *t, int64_t now)
{
        struct fsd_reaping *c = fsd_container_of(t, struct fsd_reaping, poll);
        struct fsd_server *s = fsd_server_of(l);

        if (try_reap(c, false)) {
                done(s, c);
                return;
        }
        if (c->kill_pending)
                kill_now(s, c);
        /* by pid, we poll for its end; with a pidfd, only a pending kill brings us back */
        if (c->pidfd < 0 || c->kill_pending)
                (void)fsd_timer_arm(l, t, now + (c->kill_pending ? KILL_RETRY_MS : BY_PID_POLL_MS),
                                    on_poll);
}

/* The pid a pidfd names (its fdinfo says), for the books: 0 when unknown. */
static pid_t pid_of(int pidfd)
{
        char path[64], line[128];
        pid_t pid = 0;
        FILE *f;
        int v;

        (void)fs_format(path, sizeof(path), "/proc/self/fdinfo/%d", pidfd);
        if (!(f = fopen(path, "re")))
                return 0;
        while (fgets(line, sizeof(line), f))
                if (sscanf(line, "Pid: %d", &v) == 1) {
                        pid = v > 0 ? (pid_t)v : 0;
                        break;
                }
        fclose(f);
        return pid;
}

bool fsd_reap_has(const struct fsd_server *s, pid_t pid)
{
        for (const struct fsd_reaping *c = s->reaping; c; c = c->next)
                if (c->pid == pid)
                        return true;
        return false;
}

int fsd_reap(struct fsd_server *s, int pidfd, pid_t pid, uid_t uid, bool kill_it)
{
        struct fsd_reaping *c;
        int r = 0;

        if (pidfd < 0 && pid <= 0)
                return -EINVAL;
        if (pid <= 0)
                pid = pid_of(pidfd);
        /* our child (CLONE_PARENT) and unreaped: its pid is its own until we reap it */
        if (pidfd < 0)
                pidfd = pidfd_open(pid, 0);
        if (!(c = calloc(1, sizeof(*c)))) {
                /* no memory for the books: ended, and reaped with the rest at exit or by init */
                if (kill_it)
                        (void)fsd_signal(s, pidfd, pid, uid, SIGKILL);
                fs_close(pidfd);
                return -ENOMEM;
        }
        c->io = (struct fsd_io)FSD_IO_INIT;
        c->pidfd = pidfd;
        c->pid = pid;
        c->uid = uid;
        if (kill_it)
                kill_now(s, c);
        if (try_reap(c, false)) {
                fs_close(pidfd);
                free(c);
                return r;
        }
        c->next = s->reaping;
        c->prev = &s->reaping;
        if (c->next)
                c->next->prev = &c->next;
        s->reaping = c;
        s->nreaping++;
        if (pidfd >= 0 && fsd_io_start(&s->loop, &c->io, pidfd, EPOLLIN, false, on_exit_io) < 0)
                pidfd = c->pidfd = fs_close(pidfd); /* by pid, then */
        if (pidfd < 0 || c->kill_pending)
                (void)fsd_timer_arm(
                    &s->loop, &c->poll,
                    fs_now_ms() + (c->kill_pending ? KILL_RETRY_MS : BY_PID_POLL_MS), on_poll);
        return r;
}

void fsd_reap_stop(struct fsd_server *s, int grace_ms)
{
        int64_t by = fs_now_ms() + grace_ms;

        /* whatever is left is killed (as we may still: the zygotes are gone), then gets what
         * is left of one grace for all, and then is left to init */
        for (struct fsd_reaping *c = s->reaping; c; c = c->next)
                if (c->pidfd >= 0)
                        (void)pidfd_send_signal(c->pidfd, SIGKILL, NULL, 0);
        while (s->reaping) {
                struct fsd_reaping *c = s->reaping;
                int64_t left = by - fs_now_ms();

                if (c->pidfd >= 0) {
                        struct pollfd pf = {.fd = c->pidfd, .events = POLLIN};

                        if (poll(&pf, 1, left > 0 ? (int)left : 0) == 1)
                                (void)try_reap(c, false);
                } else {
                        (void)try_reap(c, false);
                }
                done(s, c);
        }
}
