#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/fdpass.h"
#include "common/util.h"
#include "forkserver/front/server.h"

void fsd_spawn_failed(struct fsd_server *s, enum fsd_fail why)
{
        s->stats.spawn_failures++;
        s->stats.fail[why]++;
}

/* Workers run as their clients: the request names the client's uid, gid and groups, as the
 * kernel gave them to us at accept. A root client gets a root worker only by option. */
static int root_refused(struct fsd_server *s, struct fsd_conn *c, uint32_t id)
{
        if (c->uid != 0 || s->opt->allow_root_workers)
                return 0;
        fsd_spawn_failed(s, FSD_FAIL_POLICY);
        fsd_conn_send_error(s, c, id, EPERM,
                            "SPAWN: workers of uid 0 (root) need a "
                            "server started with --allow-root-workers");
        return -EPERM;
}

/* The zygote's request, written afresh from what we checked (and the client's credentials),
 * never the client's datagram passed on: only fields we know of reach the zygote. Its GPU
 * buffers' fields come once they are leased. */
static void begin_request(struct fsd_server *s, struct fsd_conn *c, struct fs_msgw *w,
                          const struct fs_spawn *sp)
{
        fs_imsg_begin(w, s->zreq, sizeof(s->zreq), FS_I_SPAWN, 0);
        fs_msg_put_spawn(w, sp);
        if (s->switch_uids)
                fs_msg_put_cred(w, c->uid, c->gid, c->groups, c->ngroups);
}

/* The request goes to its zygote (or is answered, and what it holds given up). */
static void forward(struct fsd_server *s, struct fsd_conn *c, struct fsd_zygote *z,
                    struct fsd_inflight *e, uint8_t *msg, size_t len)
{
        int r;

        if ((r = fsd_zygote_submit(s, z, e, msg, len)) == 0) {
                c->inflight++;
                return;
        }
        fsd_gpu_abandon(s, e);
        fsd_closer_put(&s->closer, e->req_fds, e->nreq_fds);
        e->nreq_fds = 0;
        fsd_spawn_failed(s, FSD_FAIL_ZYGOTE);
        if (r == -EAGAIN) {
                fs_log_limited(FS_LOG_WARNING,
                               "conn %llu pid %d uid %u: the zygotes' queue is "
                               "full",
                               (unsigned long long)c->id, (int)c->pid, (unsigned)c->uid);
                fsd_conn_send_error(s, c, e->req_id, EAGAIN,
                                    "the zygotes are busy (%d requests "
                                    "wait); try again",
                                    fsd_zygote_queue(s));
        } else if (r == -EPIPE) {
                fsd_conn_send_error(s, c, e->req_id, EAGAIN,
                                    "the zygote is restarting; try "
                                    "again");
        } else {
                fs_log_errno(FS_LOG_ERROR, r, "sending a request to the zygote");
                fsd_conn_send_error(s, c, e->req_id, r, "zygote unreachable");
        }
}

/* GPU buffers: leased first, one broker round trip each, without waiting (gpu.c); then their
 * fds go along after the request's own, and a GPU and a UUID field for each end the request. */
static void gpu_ready(struct fsd_server *s, struct fsd_gpu_req *q, int r, const char *why)
{
        struct fsd_conn *c = q->conn;
        struct fs_msgw w;

        s->inflight--;
        if (r == 0) {
                /* each buffer as leased: its device, its size rounded up, its GPU's UUID */
                fs_msg_resume(&w, q->msg, q->len, q->cap);
                for (size_t i = 0; i < q->e.ngpu; i++) {
                        fs_msg_put_gpu(&w, q->e.gpu_buf[i].device, q->e.gpu_buf[i].size);
                        fs_msg_put_bytes(&w, FS_F_UUID, q->e.gpu_buf[i].uuid, 16);
                }
                if ((r = fs_msg_finish(&w)) > 0) {
                        q->len = (size_t)r;
                        r = 0;
                }
                if (r < 0) {
                        fsd_gpu_abandon(s, &q->e);
                        why = "no room for the GPU buffers";
                }
        }
        if (r == 0 && c) {
                forward(s, c, q->z, &q->e, q->msg, q->len);
        } else {
                fsd_closer_put(&s->closer, q->e.req_fds, q->e.nreq_fds);
                if (c) {
                        fsd_spawn_failed(s, FSD_FAIL_GPU);
                        fsd_conn_send_error(s, c, q->e.req_id, r < 0 ? -r : EIO, "SPAWN: %s",
                                            why ? why : "GPU buffers");
                }
        }
        explicit_bzero(q->msg, q->len);
        free(q);
}

/* A GPU field (u32 device, u64 size) and a UUID field for each leased buffer. */
#define GPU_FIELDS_LEN (4 + 12 + 4 + 16)

static void gpu_first(struct fsd_server *s, struct fsd_conn *c, struct fsd_zygote *z,
                      const struct fs_spawn *sp, struct fsd_inflight *e, uint8_t *msg, size_t len)
{
        size_t cap = len + sp->ngpu * GPU_FIELDS_LEN;
        struct fsd_gpu_req *q = calloc(1, sizeof(*q) + cap);
        char why[512];
        int r;

        if (!q) {
                fsd_closer_put(&s->closer, e->req_fds, e->nreq_fds);
                fsd_spawn_failed(s, FSD_FAIL_GPU);
                fsd_conn_send_error(s, c, e->req_id, ENOMEM, "SPAWN: out of memory");
                return;
        }
        q->conn = c;
        q->z = z;
        q->flags = sp->flags;
        q->nwant = sp->ngpu;
        memcpy(q->want, sp->gpu, sp->ngpu * sizeof(sp->gpu[0]));
        q->e = *e;
        q->len = len;
        q->cap = cap;
        memcpy(q->msg, msg, len);
        explicit_bzero(msg, len);
        s->inflight++; /* counted against --max-workers meanwhile */
        if ((r = fsd_gpu_request(s, q, why, sizeof(why))) < 0) {
                s->inflight--;
                fsd_closer_put(&s->closer, e->req_fds, e->nreq_fds);
                fsd_spawn_failed(s, FSD_FAIL_GPU);
                fsd_conn_send_error(s, c, e->req_id, -r, "SPAWN: %s", why);
                explicit_bzero(q->msg, q->len);
                free(q);
        }
}

/* Pointer storage for validating argv/envp; the front is single-threaded. */
static const char *spawn_ptrs[FS_SPAWN_PTRS];

void fsd_spawn_request(struct fsd_server *s, struct fsd_conn *c, uint32_t id,
                       struct fs_buf *payload, int *fds, size_t nfds)
{
        const struct fsd_profile *prof = s->sandbox.dflt;
        const char *why = "bad request";
        int64_t t0 = fs_now_us();
        struct fsd_inflight pre = {0};
        struct fsd_zygote *z = &s->zyg[0];
        struct fs_spawn sp;
        struct fs_msgw w;
        int r, zlen;

        if ((r = fs_proto_parse_spawn(payload, nfds, false, spawn_ptrs, FS_ARRAY_SIZE(spawn_ptrs),
                                      &sp, &why)) < 0) {
                s->stats.bad_requests++;
                fsd_spawn_failed(s, FSD_FAIL_BAD_REQUEST);
                fsd_conn_send_error(s, c, id, r, "SPAWN: %s", why);
                goto out;
        }
        if (nfds + sp.ngpu > FS_MAX_MSG_FDS) {
                fsd_spawn_failed(s, FSD_FAIL_BAD_REQUEST);
                fsd_conn_send_error(s, c, id, E2BIG,
                                    "SPAWN: at most %d fds and GPU buffers "
                                    "together",
                                    FS_MAX_MSG_FDS);
                goto out;
        }
        if (sp.profile) {
                prof = fsd_sandbox_find(&s->sandbox, sp.profile);
                if (!prof) {
                        fsd_spawn_failed(s, FSD_FAIL_POLICY);
                        fsd_conn_send_error(s, c, id, EINVAL, "SPAWN: unknown profile '%s'",
                                            sp.profile);
                        goto out;
                }
                if (!prof->allowed) {
                        fsd_spawn_failed(s, FSD_FAIL_POLICY);
                        fsd_conn_send_error(s, c, id, EPERM,
                                            "SPAWN: profile '%s' is not allowed "
                                            "by this server (--allow-profile)",
                                            sp.profile);
                        goto out;
                }
        }
        if (sp.entry) {
                size_t n = (size_t)(strchr(sp.entry, ':') - sp.entry);
                bool found = false;

                for (size_t i = 0; i < s->opt->npreload && !found; i++)
                        found = strlen(s->opt->preload_name[i]) == n &&
                                memcmp(s->opt->preload_name[i], sp.entry, n) == 0;
                if (!found) {
                        fsd_spawn_failed(s, FSD_FAIL_POLICY);
                        fsd_conn_send_error(s, c, id, EPERM,
                                            "SPAWN: '%.*s' is not a preloaded "
                                            "library (--preload)",
                                            (int)n, sp.entry);
                        goto out;
                }
        }
        /* A zygote already running under the profile gives the filter for free. */
        for (unsigned i = 1; i < s->nzyg; i++)
                if (s->zyg[i].sandboxed == prof && s->zyg[i].fd >= 0)
                        z = &s->zyg[i];
        if (s->nworkers + s->inflight >= s->opt->max_workers) {
                fsd_spawn_failed(s, FSD_FAIL_MAX_WORKERS);
                fs_log_limited(FS_LOG_WARNING, "conn %llu pid %d uid %u: worker limit reached",
                               (unsigned long long)c->id, (int)c->pid, (unsigned)c->uid);
                fsd_conn_send_error(s, c, id, EAGAIN, "worker limit reached (--max-workers %u)",
                                    s->opt->max_workers);
                goto out;
        }
        if (z->fd < 0) {
                fsd_spawn_failed(s, FSD_FAIL_ZYGOTE);
                fsd_conn_send_error(s, c, id, EAGAIN, "the zygote is restarting; try again");
                goto out;
        }
        if (s->switch_uids && root_refused(s, c, id) < 0)
                goto out;
        begin_request(s, c, &w, &sp);
        if (!sp.ngpu)
                zlen = fs_msg_finish(&w);
        else if (w.err || w.b.len + sp.ngpu * GPU_FIELDS_LEN > FS_MAX_MSG)
                zlen = -EMSGSIZE; /* refused before anything is leased */
        else
                zlen = (int)w.b.len; /* finished once its buffers are there */
        if (zlen < 0) {
                explicit_bzero(s->zreq, w.b.len);
                fsd_spawn_failed(s, FSD_FAIL_BAD_REQUEST);
                fsd_conn_send_error(s, c, id, E2BIG,
                                    "SPAWN: too large once the client's %u groups%s are "
                                    "added",
                                    c->ngroups, sp.ngpu ? " and its GPU buffers" : "");
                goto out;
        }

        /* Ours of the fds are kept until the zygote answers (it closes its copies first), so
         * that the last close of each is the closer's, never the zygote's. The channel sets
         * the request's id. */
        pre.conn = c;
        pre.uid = s->switch_uids ? c->uid : geteuid();
        pre.req_id = id;
        pre.flags = sp.flags;
        pre.t0_us = t0;
        memcpy(pre.req_fds, fds, nfds * sizeof(int));
        pre.nreq_fds = nfds;
        if (sp.ngpu)
                gpu_first(s, c, z, &sp, &pre, s->zreq, (size_t)zlen);
        else
                forward(s, c, z, &pre, s->zreq, (size_t)zlen);
        explicit_bzero(s->zreq, (size_t)zlen);
        return;
out:
        fsd_closer_put(&s->closer, fds, nfds);
}

static void count_failure(struct fsd_server *s, const struct fs_msg_error *er)
{
        fsd_spawn_failed(s, er->err == EMFILE || er->err == ENFILE ? FSD_FAIL_OUT_OF_FDS
                            : er->err == EAGAIN && er->step == FS_STEP_CLONE
                                ? FSD_FAIL_OUT_OF_PROCESSES
                                : FSD_FAIL_SETUP);
}

/* The zygote's ERROR, passed on with its STEP: a client tells a missing program (exec) from
 * a missing cwd (chdir) by it, as docs/PROTOCOL.md promises. */
static void send_setup_error(struct fsd_server *s, struct fsd_conn *c, uint32_t id,
                             const struct fs_msg_error *er)
{
        struct fs_msgw w;
        int n;

        fs_msg_begin_error(&w, s->tx, sizeof(s->tx), id, (int)er->err, "%s", er->reason);
        if (er->step)
                fs_msg_put_u32(&w, FS_F_STEP, er->step);
        if (er->pid)
                fs_msg_put_u32(&w, FS_F_PID, er->pid);
        if ((n = fs_msg_finish(&w)) > 0)
                (void)fsd_conn_send(s, c, s->tx, (size_t)n, NULL, 0);
}

static void complete(struct fsd_server *s, struct fsd_inflight *e, const uint8_t *msg, size_t len,
                     int pidfd, int chan, bool lost)
{
        struct fsd_conn *c = e->conn;
        const char *why = "malformed zygote reply";
        bool delivered = false; /* the client's copy of the channel is in flight or queued */
        struct fs_hdr h;
        struct fs_buf p;
        int r;

        if (c)
                c->inflight--;
        if ((r = fs_iproto_parse_hdr(msg, len, FS_ICHAN_ZYGOTE, FS_ISIDE_HELPER,
                                     (size_t)(pidfd >= 0) + (chan >= 0), &h, &p)) < 0 ||
            h.id != e->seq) {
                fs_log(FS_LOG_ERROR, "zygote reply out of order or malformed");
                goto fail;
        }
        if (h.type == FS_I_SPAWNED) {
                uint32_t pid;
                struct fsd_worker *w;
                struct fs_msgw mw;
                int n;

                if (fs_iproto_parse_spawned(&p, &pid, &why) < 0)
                        goto fail;
                fsd_pool_taken(s, (pid_t)pid); /* a pre-forked child serves it */
                if (lost) {
                        fsd_gpu_abandon(s, e);
                        (void)fsd_reap(s, -1, (pid_t)pid, e->uid, true);
                        fsd_spawn_failed(s, FSD_FAIL_OUT_OF_FDS);
                        fs_log_limited(FS_LOG_WARNING, "out of file descriptors: new worker "
                                                       "ended");
                        if (c)
                                fsd_conn_send_error(s, c, e->req_id, EMFILE,
                                                    "server is out of "
                                                    "file descriptors (RLIMIT_NOFILE)");
                        goto out;
                }
                if (pidfd < 0 || (chan >= 0) != !!(e->flags & FS_SPAWN_CHANNEL))
                        goto fail;
                w = fsd_worker_new(s, c, pidfd, (pid_t)pid, e->req_id, e->flags & FS_SPAWN_DETACH);
                if (!w) {
                        /* Cannot track it: end it now rather than lose it. */
                        (void)fsd_reap(s, pidfd, (pid_t)pid, e->uid, true);
                        pidfd = -1;
                        why = "out of memory";
                        r = -ENOMEM;
                        goto fail_reply;
                }
                pidfd = -1; /* the worker owns it now */
                w->uid = e->uid;
                w->ngpu = e->ngpu;
                memcpy(w->gpu, e->gpu, e->ngpu * sizeof(e->gpu[0]));
                s->stats.spawns++;
                s->stats.latency_us[s->stats.nlatency++ % FSD_LATENCY_SAMPLES] =
                    (uint32_t)(fs_now_us() - e->t0_us);
                if (!c) {
                        if (!w->detached)
                                fsd_worker_terminate(s, w);
                        goto out;
                }
                fs_msg_begin(&mw, s->tx, sizeof(s->tx), FS_MSG_SPAWNED, e->req_id);
                fs_msg_put_u64(&mw, FS_F_WORKER, w->id);
                fs_msg_put_u32(&mw, FS_F_PID, (uint32_t)w->pid);
                int out_fds[2 + FS_MAX_GPU] = {w->pidfd, chan};
                size_t nout = chan >= 0 ? 2 : 1;

                /* the client gets the worker's GPU buffers too when it asked, to share
                 * with it (and they stay charged to it until it is gone: gpu.c) */
                for (size_t i = 0; i < e->ngpu && (e->flags & FS_SPAWN_GPU_FDS); i++) {
                        fs_msg_put_gpu(&mw, e->gpu_buf[i].device, e->gpu_buf[i].size);
                        fs_msg_put_bytes(&mw, FS_F_UUID, e->gpu_buf[i].uuid, 16);
                        out_fds[nout++] = e->gpu_fd[i];
                }
                if ((n = fs_msg_finish(&mw)) > 0)
                        delivered = fsd_conn_send(s, c, s->tx, (size_t)n, out_fds, nout) == 0;
                fs_log(FS_LOG_DEBUG, "conn %llu: worker %llu pid %d spawned",
                       (unsigned long long)c->id, (unsigned long long)w->id, (int)w->pid);
                goto out;
        }
        if (h.type == FS_I_FAILED) {
                struct fs_msg_error er;

                if (fs_proto_parse_error(&p, &er, &why) < 0)
                        goto fail;
                if (er.pid)
                        fsd_pool_taken(s, (pid_t)er.pid);
                fsd_gpu_abandon(s, e);
                /* it failed before exec, and is exiting: reaped when it has (a client may
                 * stop it first, and that must not make us wait) */
                if (pidfd >= 0 || (lost && er.pid))
                        (void)fsd_reap(s, pidfd, (pid_t)er.pid, e->uid, true);
                pidfd = -1;
                count_failure(s, &er);
                if (c)
                        send_setup_error(s, c, e->req_id, &er);
                goto out;
        }
fail:
        r = -EIO;
        fsd_gpu_abandon(s, e);
        if (pidfd >= 0)
                (void)fsd_reap(s, pidfd, 0, e->uid, true);
        pidfd = -1;
fail_reply:
        fsd_gpu_abandon(s, e);
        fsd_spawn_failed(s, FSD_FAIL_ZYGOTE);
        if (c)
                fsd_conn_send_error(s, c, e->req_id, r, "spawn failed: %s", why);
out:
        fs_close(pidfd);
        /* The client has its copy, and the daemon keeps neither end; with none delivered,
         * ours is the last of an end into which the worker may have put fds already. */
        if (delivered)
                fs_close(chan);
        else
                fsd_closer_put1(&s->closer, chan);
        fs_close_many(e->gpu_fd, e->ngpu); /* the same for GPU buffers */
        e->ngpu = 0;
}

/* The zygote answered e, or never will (msg NULL). */
static void answered(struct fsd_server *s, struct fsd_inflight *e, const uint8_t *msg, size_t len,
                     int *fds, size_t nfds, bool lost, int err, const char *why)
{
        fsd_closer_put(&s->closer, e->req_fds, e->nreq_fds);
        e->nreq_fds = 0;
        if (msg && nfds <= 2) {
                complete(s, e, msg, len, nfds > 0 ? fds[0] : -1, nfds > 1 ? fds[1] : -1, lost);
                return;
        }
        fs_close_many(fds, nfds);
        fsd_gpu_abandon(s, e);
        if (!e->conn)
                return; /* nobody to tell: its connection is gone */
        e->conn->inflight--;
        fsd_spawn_failed(s, FSD_FAIL_ZYGOTE);
        fsd_conn_send_error(s, e->conn, e->req_id, err ? err : EIO, "%s",
                            why ? why : "zygote failed to answer");
}

void fsd_spawn_init(struct fsd_server *s)
{
        s->on_zygote_answer = answered;
        s->on_gpu_ready = gpu_ready;
}
