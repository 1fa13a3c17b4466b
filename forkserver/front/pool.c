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
#include <unistd.h>

#include "common/fdpass.h"
#include "common/util.h"
#include "forkserver/front/server.h"

static void drop(struct fsd_zygote *z, unsigned i)
{
        fs_close(z->idle[i].pidfd);
        z->idle[i] = z->idle[--z->nidle];
}

/* An idle child let go or gone: it is the reaper's (killed first), out of our books. */
static void end_one(struct fsd_server *s, struct fsd_zygote *z, unsigned i)
{
        struct fsd_idle d = z->idle[i];

        z->idle[i] = z->idle[--z->nidle];
        (void)fsd_reap(s, d.pidfd, d.pid, geteuid(), true);
}

bool fsd_pool_message(struct fsd_server *s, struct fsd_zygote *z, const uint8_t *msg, size_t len,
                      int *fds, size_t nfds, bool lost)
{
        const char *why = "malformed";
        struct fs_msg_pool m;
        struct fs_hdr h;
        struct fs_buf p;

        if (fs_iproto_parse_hdr(msg, len, FS_ICHAN_ZYGOTE, FS_ISIDE_HELPER, nfds, &h, &p) < 0 ||
            h.type != FS_I_POOL)
                return false;
        if (fs_proto_parse_pool(&p, nfds, &m, &why) < 0) {
                fs_log_limited(FS_LOG_ERROR, "zygote pid %d: bad POOL message: %s", (int)z->pid,
                               why);
                fs_close_many(fds, nfds);
                return true;
        }
        if (m.event == FS_POOL_ADDED) {
                if (z->nidle == FSD_MAX_PREFORK) { /* no zygote of ours does this */
                        fs_log_limited(FS_LOG_ERROR,
                                       "zygote pid %d: more idle children than "
                                       "--prefork allows; ending pid %d",
                                       (int)z->pid, (int)m.pid);
                        (void)fsd_reap(s, nfds ? fds[0] : -1, (pid_t)m.pid, geteuid(), true);
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
                        end_one(s, z, i);
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
                end_one(s, z, z->nidle - 1);
}

unsigned fsd_pool_idle(const struct fsd_server *s)
{
        unsigned n = 0;

        for (unsigned k = 0; k < s->nzyg; k++)
                for (unsigned i = 0; i < s->zyg[k].nidle; i++)
                        n++;
        return n;
}
