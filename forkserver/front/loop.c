#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/pidfd.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "common/util.h"
#include "forkserver/front/server.h"
#include "forkserver/front/systemd.h"

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
        fsd_gpu_cancel(s);
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
                fs_log(FS_LOG_WARNING,
                       "SIGHUP: the key came from --key-fd %d and cannot be "
                       "read again; keeping it",
                       s->opt->key_fd);
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
        struct fsd_server *s = fsd_server_of(l);
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
        struct fsd_server *s = fsd_server_of(l);
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

/* ---- strays: workers a zygote made and never reported (it died first) ---- */

static bool tracked(const struct fsd_server *s, pid_t pid)
{
        if (pid == s->tpl.pid || pid == s->gpu.pid || pid == s->closer.pid || fsd_reap_has(s, pid))
                return true;
        for (unsigned i = 0; i < s->nzyg; i++) {
                if (pid == s->zyg[i].pid)
                        return true;
                for (unsigned k = 0; k < s->zyg[i].nidle; k++)
                        if (pid == s->zyg[i].idle[k].pid)
                                return true;
        }
        for (const struct fsd_worker *w = s->orphans; w; w = w->next)
                if (pid == w->pid)
                        return true;
        for (const struct fsd_conn *c = s->conns; c; c = c->next)
                for (const struct fsd_worker *w = c->workers; w; w = w->next)
                        if (pid == w->pid)
                                return true;
        return false;
}

/* Our children that none of our books name. */
static size_t untracked_children(const struct fsd_server *s, pid_t *out, size_t cap)
{
        char path[64];
        size_t n = 0;
        FILE *f;
        int pid;

        (void)fs_format(path, sizeof(path), "/proc/self/task/%d/children", (int)getpid());
        if (!(f = fopen(path, "re")))
                return 0;
        while (n < cap && fscanf(f, "%d", &pid) == 1)
                if (!tracked(s, (pid_t)pid))
                        out[n++] = (pid_t)pid;
        fclose(f);
        return n;
}

static uid_t uid_of(pid_t pid)
{
        char path[64], line[128];
        unsigned uid = (unsigned)geteuid();
        FILE *f;

        (void)fs_format(path, sizeof(path), "/proc/%d/status", (int)pid);
        if (!(f = fopen(path, "re")))
                return (uid_t)uid;
        while (fgets(line, sizeof(line), f))
                if (sscanf(line, "Uid: %u", &uid) == 1)
                        break;
        fclose(f);
        return (uid_t)uid;
}

/* Every zygote has answered what it had been asked when the candidates were listed (or is
 * gone): a candidate still untracked was nobody's report. */
static bool zygotes_caught_up(const struct fsd_server *s)
{
        const struct fsd_strays *st = &s->strays;

        for (unsigned i = 0; i < s->nzyg; i++) {
                const struct fsd_zygote *z = &s->zyg[i];

                if (z->pid == st->zpid[i] && z->ring_len && z->ring[z->ring_head].seq <= st->seq[i])
                        return false;
        }
        return true;
}

static void on_strays(struct fsd_loop *l, struct fsd_timer *t, int64_t now)
{
        struct fsd_server *s = fsd_server_of(l);
        struct fsd_strays *st = &s->strays;

        if (!zygotes_caught_up(s)) {
                (void)fsd_timer_arm(l, t, now + 100, on_strays);
                return;
        }
        for (size_t i = 0; i < st->n; i++) {
                pid_t pid = st->pid[i];
                struct fsd_worker *w;
                int pidfd;

                if (tracked(s, pid) || (pidfd = (int)pidfd_open(pid, 0)) < 0)
                        continue;
                /* still our child? Listed a while ago, it may have been reaped since, and
                 * its pid be somebody else's now */
                siginfo_t si;

                if (waitid(P_PIDFD, (id_t)pidfd, &si, WEXITED | WNOHANG | WNOWAIT) < 0) {
                        fs_close(pidfd);
                        continue;
                }
                /* an orphan: SIGTERM now, SIGKILL after the grace, reaped on its exit */
                if (!(w = fsd_worker_new(s, NULL, pidfd, pid, 0, false))) {
                        (void)fsd_reap(s, pidfd, pid, uid_of(pid), true);
                        fs_log(FS_LOG_ERROR,
                               "worker pid %d, which no zygote reported, could "
                               "not be tracked: killed",
                               (int)pid);
                        continue;
                }
                w->uid = uid_of(pid);
                st->ended++;
                fs_log(FS_LOG_WARNING,
                       "worker pid %d was made by a zygote that died before "
                       "reporting it: ended",
                       (int)pid);
                fsd_worker_terminate(s, w);
        }
        st->n = 0;
}

static void zygote_gone(struct fsd_server *s)
{
        struct fsd_strays *st = &s->strays;

        /* listed again on a second loss before the check: the union, and the later seqs */
        pid_t more[FSD_MAX_STRAYS];
        size_t n = untracked_children(s, more, FSD_MAX_STRAYS);

        for (size_t i = 0; i < n && st->n < FSD_MAX_STRAYS; i++) {
                bool dup = false;

                for (size_t k = 0; k < st->n && !dup; k++)
                        dup = st->pid[k] == more[i];
                if (!dup)
                        st->pid[st->n++] = more[i];
        }
        for (unsigned i = 0; i < s->nzyg; i++) {
                st->seq[i] = s->zyg[i].seq;
                st->zpid[i] = s->zyg[i].pid;
        }
        if (st->n)
                (void)fsd_timer_arm(&s->loop, &st->check, fs_now_ms(), on_strays);
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

        s->on_zygote_gone = zygote_gone;
        if ((r = fsd_conn_attach(s)) < 0 ||
            (r = fsd_io_start(&s->loop, &s->io_signal, s->sig_fd, EPOLLIN, false, on_signal)) < 0 ||
            (r = fsd_io_start(&s->loop, &s->io_template, s->tpl.fd, EPOLLIN, false, on_template)) <
                0)
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
        fsd_reap_stop(s, 1000);
        fsd_closer_stop(&s->closer, 1000);
        (void)fs_log_limited_flush(INT64_MAX);
        if (s->listen_fd >= 0) {
                s->listen_fd = fs_close(s->listen_fd);
                remove_socket(s);
        }
        return 0;
}
