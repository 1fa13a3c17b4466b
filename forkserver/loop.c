#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/pidfd.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "common/util.h"
#include "forkserver/server.h"
#include "forkserver/systemd.h"

static struct fsd_server *server_of(struct fsd_loop *l)
{
        return fsd_container_of(l, struct fsd_server, loop);
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
                fsd_io_stop(&s->loop, &s->io_listen);
                s->listen_fd = fs_close(s->listen_fd);
                remove_socket(s);
        }
        fsd_timer_disarm(&s->loop, &s->t_handshake);
        fsd_zygotes_hurry(s);
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

static void on_signal(struct fsd_loop *l, struct fsd_io *io, uint32_t events)
{
        struct fsd_server *s = server_of(l);
        struct signalfd_siginfo si;

        (void)io;
        (void)events;
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

/* The template answered: a helper made, or not. */
static void on_template(struct fsd_loop *l, struct fsd_io *io, uint32_t events)
{
        struct fsd_server *s = server_of(l);
        struct fsd_template_reply rep;
        int fd = -1, pidfd = -1, r;

        (void)events;
        while ((r = fsd_template_reply(&s->tpl, true, &rep, &fd, &pidfd)) != -EAGAIN) {
                if (r == -EPIPE || r == -EBADMSG || r == -ECONNRESET) {
                        fs_log(FS_LOG_ERROR, "the template is gone: no helper can be restarted");
                        fsd_io_stop(l, io);
                        fsd_template_stop(&s->tpl);
                        for (unsigned i = 0; i < s->nzyg; i++)
                                s->zyg[i].starting = false;
                        s->gpu.starting = false;
                        return;
                }
                if (rep.kind == FSD_TPL_BROKER)
                        fsd_gpu_made(s, &rep, r, fd, pidfd);
                else
                        fsd_zygote_made(s, &rep, r, fd, pidfd);
                fd = pidfd = -1;
        }
}

static bool finished(const struct fsd_server *s)
{
        return s->stopping && s->nworkers == s->nunkillable && s->inflight == 0;
}

static void on_log_flush(struct fsd_loop *l, struct fsd_timer *t, int64_t now)
{
        int64_t next = fs_log_limited_flush(now);

        if (next >= 0)
                (void)fsd_timer_arm(l, t, next, on_log_flush);
}

int fsd_front_attach(struct fsd_server *s)
{
        int r;

        if ((r = fsd_conn_attach(s)) < 0 ||
            (r = fsd_io_start(&s->loop, &s->io_signal, s->sig_fd, EPOLLIN, false, on_signal)) <
                    0 ||
            (r = fsd_io_start(&s->loop, &s->io_template, s->tpl.fd, EPOLLIN, false,
                              on_template)) < 0)
                return r;
        fsd_closer_attach(&s->closer, &s->loop);
        return 0;
}

int fsd_loop_run(struct fsd_server *s)
{
        while (!finished(s)) {
                int r;

                /* rate-limited log lines held back: flushed when their window ends */
                if (!fsd_timer_armed(&s->t_log))
                        on_log_flush(&s->loop, &s->t_log, fs_now_ms());
                if ((r = fsd_loop_turn(&s->loop, -1)) < 0)
                        return fs_log_errno(FS_LOG_ERROR, r, "epoll_wait");
                /* What this turn gave up goes to the closer in one message or a few. */
                fsd_closer_flush(&s->closer);
                fsd_conn_free_dead(s);
                fsd_worker_free_dead(s);
        }
        while (s->conns)
                fsd_conn_close(s, s->conns, "server stopped");
        fsd_conn_free_dead(s);
        fsd_worker_free_dead(s);
        fsd_io_stop(&s->loop, &s->io_template);
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
