#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/pidfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "common/util.h"
#include "forkserver/server.h"
#include "forkserver/systemd.h"

#define MAX_EVENTS 64

int fsd_epoll_add(struct fsd_server *s, int fd, uint32_t events, struct fsd_source *src)
{
        struct epoll_event ev = {.events = events, .data.ptr = src};

        return epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

/* Removes the socket file if it is still the one we bound (a successor may own the path). */
static void remove_socket(struct fsd_server *s)
{
        struct stat st;

        if (s->socket_ours && lstat(s->opt->socket_path, &st) == 0 && st.st_dev == s->sock_dev &&
            st.st_ino == s->sock_ino)
                (void)unlink(s->opt->socket_path);
}

void fsd_server_stop(struct fsd_server *s, const char *why)
{
        if (s->stopping)
                return;
        s->stopping = true;
        fs_log(FS_LOG_INFO, "stopping (%s): ending %u worker(s)", why, s->nworkers);
        (void)fsd_systemd_notify("STOPPING=1");
        if (s->listen_fd >= 0) {
                s->listen_fd = fs_close(s->listen_fd);
                remove_socket(s);
        }
        while (s->pending)
                fsd_conn_close(s, s->pending, "server stopping");
        fsd_worker_terminate_all(s);
}

/* SIGHUP: the key file again, for rotation without a restart. Only a handshake's AUTH
 * uses the key, so new connections (and pending ones) get the new key while authenticated
 * connections and their workers are untouched. A key that does not load (missing, wrong
 * owner or mode, bad contents) is refused with a log line and the old one kept. A key that
 * came over --key-fd cannot be read again. */
static void reload_key(struct fsd_server *s)
{
        const char *why = "";
        struct fs_key *k;
        int r;

        if (!s->opt->key_file) {
                fs_log(FS_LOG_WARNING, "SIGHUP: the key came from --key-fd %d and cannot be "
                       "read again; keeping it", s->opt->key_fd);
                return;
        }
        if ((r = fs_key_load_file(s->opt->key_file, &k, &why)) < 0) {
                fs_log(FS_LOG_ERROR, "SIGHUP: key file %s %s; keeping the old key",
                       s->opt->key_file, why);
                return;
        }
        fs_key_free(s->key);
        s->key = k;
        s->key_loaded_ms = fs_now_ms();
        s->key_reloads++;
        fs_log(FS_LOG_INFO, "SIGHUP: key reloaded from %s; new connections use it",
               s->opt->key_file);
}

static void on_signal(struct fsd_server *s)
{
        struct signalfd_siginfo si;

        while (read(s->sig_fd, &si, sizeof(si)) == sizeof(si)) {
                switch (si.ssi_signo) {
                case SIGTERM:
                case SIGINT:
                        fsd_server_stop(s, si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT");
                        break;
                case SIGHUP:
                        reload_key(s);
                        break;
                default:
                        break;
                }
        }
}

static void on_zygote_exit(struct fsd_server *s, struct fsd_zygote *z)
{
        siginfo_t si = {0};

        if (waitid(P_PIDFD, (id_t)z->pidfd, &si, WEXITED | WNOHANG) < 0 || si.si_pid == 0)
                return;
        epoll_ctl(s->epfd, EPOLL_CTL_DEL, z->pidfd, NULL);
        z->pidfd = fs_close(z->pidfd);
        z->pid = 0;
        if (!s->stopping) {
                int64_t now = fs_now_ms();

                /* 100 ms after a first death, doubling to 10 s while they go on; one that
                 * had run for 10 s counts as a first again */
                if (z->started_at && now - z->started_at >= 10000)
                        z->backoff_ms = 0;
                z->backoff_ms = z->backoff_ms ? z->backoff_ms * 2 : 100;
                if (z->backoff_ms > 10000)
                        z->backoff_ms = 10000;
                z->restart_at = now + z->backoff_ms;
                fs_log(FS_LOG_ERROR, "zygote%s%s exited unexpectedly (code %d, status %d); "
                       "a new one in %lld ms, from the template",
                       z->sandboxed ? " for profile " : "", z->sandboxed ? z->sandboxed->name : "",
                       si.si_code, si.si_status, (long long)z->backoff_ms);
        }
        /* Requests it never answered fail now. */
        while (z->ring_len)
                fsd_spawn_complete(s, z, false);
        fsd_pool_end(s, z); /* and its idle children end */
}

/* Zygotes due for a restart are asked of the template, one at a time. */
static void zygotes_tick(struct fsd_server *s, int64_t now, int64_t *next)
{
        for (unsigned i = 0; i < s->nzyg && !s->stopping; i++) {
                struct fsd_zygote *z = &s->zyg[i];

                if (z->pidfd >= 0 || z->starting)
                        continue;
                if (now < z->restart_at || s->tpl.busy) {
                        int64_t at = now < z->restart_at ? z->restart_at : now + 100;

                        if (*next < 0 || at < *next)
                                *next = at;
                        continue;
                }
                if (fsd_template_request(&s->tpl, FSD_TPL_ZYGOTE, z->tpl_index) == 0)
                        z->starting = true;
                else
                        z->restart_at = now + 1000;
        }
}

/* The template answered: a zygote back, or not yet. */
static void on_template(struct fsd_server *s)
{
        struct fsd_template_reply rep;
        int fd = -1, pidfd = -1, r;

        while ((r = fsd_template_reply(&s->tpl, true, &rep, &fd, &pidfd)) != -EAGAIN) {
                struct fsd_zygote *z = NULL;

                if (r == -EPIPE || r == -EBADMSG || r == -ECONNRESET) {
                        fs_log(FS_LOG_ERROR, "the template is gone: no helper can be restarted");
                        (void)epoll_ctl(s->epfd, EPOLL_CTL_DEL, s->tpl.fd, NULL);
                        fsd_template_stop(&s->tpl);
                        for (unsigned i = 0; i < s->nzyg; i++)
                                s->zyg[i].starting = false;
                        return;
                }
                for (unsigned i = 0; i < s->nzyg && !z; i++)
                        if (s->zyg[i].starting && s->zyg[i].tpl_index == rep.index &&
                            rep.kind == FSD_TPL_ZYGOTE)
                                z = &s->zyg[i];
                if (!z) { /* not asked for (or no longer wanted) */
                        fs_close(fd);
                        fs_close(pidfd);
                        continue;
                }
                z->starting = false;
                if (r < 0 || s->stopping) {
                        if (r < 0)
                                fs_log(FS_LOG_ERROR, "zygote restart failed: %s", rep.why);
                        fs_close(fd);
                        if (pidfd >= 0) {
                                siginfo_t si;

                                (void)pidfd_send_signal(pidfd, SIGKILL, NULL, 0);
                                while (waitid(P_PIDFD, (id_t)pidfd, &si, WEXITED) < 0 &&
                                       errno == EINTR)
                                        ;
                                fs_close(pidfd);
                        }
                        z->backoff_ms = z->backoff_ms ? z->backoff_ms * 2 : 100;
                        if (z->backoff_ms > 10000)
                                z->backoff_ms = 10000;
                        z->restart_at = fs_now_ms() + z->backoff_ms;
                        continue;
                }
                z->fd = fd;
                z->pidfd = pidfd;
                z->pid = rep.pid;
                z->seq = 0;
                z->ring_head = z->ring_len = 0;
                z->started_at = fs_now_ms();
                if (fsd_epoll_add(s, z->fd, EPOLLIN, &z->src) < 0 ||
                    fsd_epoll_add(s, z->pidfd, EPOLLIN, &z->src_exit) < 0)
                        fs_log(FS_LOG_ERROR, "epoll_ctl: the new zygote is not watched");
                s->zygote_restarts++;
                fs_log(FS_LOG_WARNING, "zygote%s%s restarted (pid %d)",
                       z->sandboxed ? " for profile " : "", z->sandboxed ? z->sandboxed->name : "",
                       (int)z->pid);
        }
}

static bool finished(const struct fsd_server *s)
{
        return s->stopping && s->nworkers == s->nunkillable && s->inflight == 0;
}

/* Shuts the zygotes down and waits for them: their socket's EOF ends them. */
void fsd_zygotes_stop(struct fsd_server *s)
{
        for (unsigned i = 0; i < s->nzyg; i++) {
                struct fsd_zygote *z = &s->zyg[i];
                siginfo_t si;

                /* half-closed: what it says of its idle children meanwhile is still read */
                if (z->fd >= 0)
                        (void)shutdown(z->fd, SHUT_WR);
                if (z->pidfd >= 0) {
                        struct pollfd pf = {.fd = z->pidfd, .events = POLLIN};

                        /* EOF ends it; one stuck (in a close, say) gets a second, then KILL */
                        if (poll(&pf, 1, 1000) != 1)
                                (void)pidfd_send_signal(z->pidfd, SIGKILL, NULL, 0);
                        while (waitid(P_PIDFD, (id_t)z->pidfd, &si, WEXITED) < 0 &&
                               errno == EINTR)
                                ;
                        z->pidfd = fs_close(z->pidfd);
                }
                fsd_pool_end(s, z);
                z->fd = fs_close(z->fd);
        }
}

int fsd_loop_run(struct fsd_server *s)
{
        struct epoll_event ev[MAX_EVENTS];

        while (!finished(s)) {
                int64_t now = fs_now_ms(), next = -1;
                int timeout = -1, n;

                fsd_conn_expire(s, now);
                fsd_worker_tick(s, now, &next);
                zygotes_tick(s, now, &next);
                fsd_gpu_tick(s, now, &next);
                if (s->pending && (next < 0 || s->pending->deadline < next))
                        next = s->pending->deadline;
                int64_t flush = fs_log_limited_flush(now);

                if (flush >= 0 && (next < 0 || flush < next))
                        next = flush;
                if (next >= 0)
                        timeout = next > now ? (int)(next - now) : 0;
                if (finished(s))
                        break;
                n = epoll_wait(s->epfd, ev, MAX_EVENTS, timeout);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return fs_log_errno(FS_LOG_ERROR, -errno, "epoll_wait");
                }
                bool accept = false;

                for (int i = 0; i < n; i++) {
                        struct fsd_source *src = ev[i].data.ptr;

                        switch (src->kind) {
                        case FSD_SRC_LISTEN:
                                accept = true; /* after those who sent something */
                                break;
                        case FSD_SRC_SIGNAL:
                                on_signal(s);
                                break;
                        case FSD_SRC_ZYGOTE: {
                                struct fsd_zygote *z = fsd_container_of(src, struct fsd_zygote, src);

                                if (z->fd >= 0)
                                        fsd_spawn_complete(s, z, false);
                                break;
                        }
                        case FSD_SRC_ZYGOTE_EXIT:
                                on_zygote_exit(s, fsd_container_of(src, struct fsd_zygote,
                                                                   src_exit));
                                break;
                        case FSD_SRC_CONN:
                                fsd_conn_event(s, (struct fsd_conn *)src, ev[i].events);
                                break;
                        case FSD_SRC_WORKER:
                                fsd_worker_event(s, (struct fsd_worker *)src);
                                break;
                        case FSD_SRC_BROKER_EXIT:
                                fsd_gpu_exited(s);
                                break;
                        case FSD_SRC_CLOSER:
                                break; /* flushed below */
                        case FSD_SRC_TEMPLATE:
                                on_template(s);
                                break;
                        case FSD_SRC_CLOSER_EXIT:
                                fs_log(FS_LOG_ERROR, "the closer died: passed fds are closed "
                                       "by the front itself from now on");
                                fsd_closer_died(&s->closer);
                                break;
                        }
                }
                if (accept && s->listen_fd >= 0)
                        fsd_conn_accept(s);
                /* What this turn gave up goes to the closer in one message or a few. */
                fsd_closer_flush(&s->closer);
                fsd_conn_free_dead(s);
                fsd_worker_free_dead(s);
        }
        while (s->conns)
                fsd_conn_close(s, s->conns, "server stopped");
        fsd_conn_free_dead(s);
        fsd_worker_free_dead(s);
        if (s->tpl.fd >= 0)
                (void)epoll_ctl(s->epfd, EPOLL_CTL_DEL, s->tpl.fd, NULL);
        fsd_template_stop(&s->tpl);
        fsd_zygotes_stop(s);
        fsd_gpu_stop(s);
        fsd_closer_stop(&s->closer, 1000);
        (void)fs_log_limited_flush(INT64_MAX);
        if (s->listen_fd >= 0) {
                s->listen_fd = fs_close(s->listen_fd);
                remove_socket(s);
        }
        return 0;
}
