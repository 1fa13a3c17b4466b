/*
 * The front's books of the zygotes' pre-forked children (docs/PROCESSES.md, "Pre-forked
 * workers"). A zygote makes them with CLONE_PARENT, so they are our children, and it tells us
 * of each (POOL ADDED with a pidfd): nothing here waits for "any child", so each one is reaped
 * by its pidfd, whether it ends up serving a request (its SPAWNED or ERROR names it: it is a
 * worker from then on, tracked as any other), ends idle (POOL GONE), or outlives its zygote.
 */
#include <errno.h>
#include <signal.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "common/fdpass.h"
#include "common/util.h"
#include "forkserver/front/server.h"

static void drop(struct fsd_zygote *z, unsigned i)
{
        fs_close(z->idle[i].pidfd);
        z->idle[i] = z->idle[--z->nidle];
}

/* Signals and reaps an idle child; with wait false, one that has not exited yet is left
 * dying, for the next call. True when it was reaped (its pidfd is closed then). */
static bool end_child(struct fsd_idle *d, bool wait)
{
        siginfo_t si = {0};
        int r;

        if (!d->dying) {
                if (d->pidfd >= 0)
                        (void)pidfd_send_signal(d->pidfd, SIGKILL, NULL, 0);
                else
                        (void)kill(d->pid, SIGKILL); /* ours and unreaped: the pid is its own */
                d->dying = true;
        }
        do
                r = d->pidfd >= 0
                        ? waitid(P_PIDFD, (id_t)d->pidfd, &si, WEXITED | (wait ? 0 : WNOHANG))
                        : waitid(P_PID, (id_t)d->pid, &si, WEXITED | (wait ? 0 : WNOHANG));
        while (r < 0 && errno == EINTR);
        if (r == 0 && si.si_pid == 0)
                return false; /* not yet */
        d->pidfd = fs_close(d->pidfd);
        return true;
}

static bool end_one(struct fsd_zygote *z, unsigned i, bool wait)
{
        if (!end_child(&z->idle[i], wait))
                return false;
        drop(z, i);
        return true;
}

static void reap_dying(struct fsd_zygote *z)
{
        for (unsigned i = z->nidle; i-- > 0;)
                if (z->idle[i].dying)
                        (void)end_one(z, i, false);
}

bool fsd_pool_message(struct fsd_server *s, struct fsd_zygote *z, const uint8_t *msg, size_t len,
                      int *fds, size_t nfds, bool lost)
{
        const char *why = "malformed";
        struct fs_msg_pool m;
        struct fs_hdr h;
        struct fs_buf p;

        (void)s;
        if (fs_iproto_parse_hdr(msg, len, FS_ICHAN_ZYGOTE, FS_ISIDE_HELPER, nfds, &h, &p) < 0 ||
            h.type != FS_I_POOL)
                return false;
        if (fs_proto_parse_pool(&p, nfds, &m, &why) < 0) {
                fs_log_limited(FS_LOG_ERROR, "zygote pid %d: bad POOL message: %s", (int)z->pid,
                               why);
                fs_close_many(fds, nfds);
                return true;
        }
        reap_dying(z);
        if (m.event == FS_POOL_ADDED) {
                if (z->nidle == FSD_MAX_PREFORK) { /* no zygote of ours does this */
                        struct fsd_idle extra = {.pid = (pid_t)m.pid, .pidfd = nfds ? fds[0] : -1};

                        fs_log_limited(FS_LOG_ERROR,
                                       "zygote pid %d: more idle children than "
                                       "--prefork allows; ending pid %d",
                                       (int)z->pid, (int)m.pid);
                        (void)end_child(&extra, true);
                        return true;
                }
                z->idle[z->nidle++] =
                    (struct fsd_idle){.pid = (pid_t)m.pid, .pidfd = nfds ? fds[0] : -1};
                if (lost)
                        fs_log_limited(FS_LOG_WARNING,
                                       "out of file descriptors: idle child "
                                       "pid %d tracked by pid",
                                       (int)m.pid);
                return true;
        }
        for (unsigned i = 0; i < z->nidle; i++)
                if (z->idle[i].pid == (pid_t)m.pid) {
                        (void)end_one(z, i, false);
                        break;
                }
        return true;
}

void fsd_pool_taken(struct fsd_server *s, pid_t pid)
{
        for (unsigned k = 0; k < s->nzyg; k++) {
                struct fsd_zygote *z = &s->zyg[k];

                for (unsigned i = 0; i < z->nidle; i++)
                        if (z->idle[i].pid == pid) {
                                drop(z, i);
                                return;
                        }
        }
}

void fsd_pool_end(struct fsd_server *s, struct fsd_zygote *z)
{
        uint8_t msg[256];
        int fds[2];
        size_t nfds;
        bool lost;
        int n;

        /* what it said before it went: children it made that we have not heard of yet */
        while (z->fd >= 0 && (n = fs_fdpass_recv_lossy(z->fd, msg, sizeof(msg), fds, 2, &nfds,
                                                       &lost, MSG_DONTWAIT)) > 0)
                if (!fsd_pool_message(s, z, msg, (size_t)n, fds, nfds, lost))
                        fs_close_many(fds, nfds);
        while (z->nidle)
                (void)end_one(z, z->nidle - 1, true);
}

unsigned fsd_pool_idle(const struct fsd_server *s)
{
        unsigned n = 0;

        for (unsigned k = 0; k < s->nzyg; k++)
                for (unsigned i = 0; i < s->zyg[k].nidle; i++)
                        n += !s->zyg[k].idle[i].dying;
        return n;
}
