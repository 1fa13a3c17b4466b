/* What an authenticated client asks: SPAWN, PING, STOP, STATUS. Transport (conn.c) hands
 * each request here; the connection's end reaches the spawns and workers from here too. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/util.h"
#include "forkserver/front/server.h"

static const char *const fail_names[FSD_FAIL_N_] = {
    [FSD_FAIL_BAD_REQUEST] = "bad_request",
    [FSD_FAIL_POLICY] = "policy",
    [FSD_FAIL_MAX_WORKERS] = "max_workers",
    [FSD_FAIL_OUT_OF_FDS] = "out_of_fds",
    [FSD_FAIL_OUT_OF_PROCESSES] = "out_of_processes",
    [FSD_FAIL_SETUP] = "setup",
    [FSD_FAIL_ZYGOTE] = "zygote",
    [FSD_FAIL_GPU] = "gpu",
};

static int cmp_u32(const void *a, const void *b)
{
        uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

        return (x > y) - (x < y);
}

/* Percentiles of the last FSD_LATENCY_SAMPLES spawns (nearest rank). */
static void put_latency(struct fs_msgw *w, const struct fsd_stats *st)
{
        static const struct {
                const char *name;
                unsigned permille;
        } q[] = {{"p50", 500}, {"p90", 900}, {"p99", 990}, {"max", 1000}};
        static uint32_t sorted[FSD_LATENCY_SAMPLES];
        size_t n = st->nlatency < FSD_LATENCY_SAMPLES ? (size_t)st->nlatency : FSD_LATENCY_SAMPLES;

        fs_msg_put_stat(w, "spawn_latency_us.samples", n);
        if (!n)
                return;
        memcpy(sorted, st->latency_us, n * sizeof(sorted[0]));
        qsort(sorted, n, sizeof(sorted[0]), cmp_u32);
        for (size_t i = 0; i < FS_ARRAY_SIZE(q); i++) {
                char name[48];
                size_t rank = (n * q[i].permille + 999) / 1000;

                snprintf(name, sizeof(name), "spawn_latency_us.%s", q[i].name);
                fs_msg_put_stat(w, name, sorted[rank ? rank - 1 : 0]);
        }
}

/* Each connection's peer and live workers; the first FSD_STATUS_CONNS only (one datagram). */
#define FSD_STATUS_CONNS 256

static void put_connections(struct fsd_server *s, struct fs_msgw *w)
{
        unsigned listed = 0;

        for (struct fsd_conn *c = s->conns; c && listed < FSD_STATUS_CONNS; c = c->next) {
                char name[64];
                uint64_t nw = 0;

                if (c->dead)
                        continue;
                for (struct fsd_worker *k = c->workers; k; k = k->next)
                        nw++;
                snprintf(name, sizeof(name), "connection.%llu.uid", (unsigned long long)c->id);
                fs_msg_put_stat(w, name, c->uid);
                snprintf(name, sizeof(name), "connection.%llu.pid", (unsigned long long)c->id);
                fs_msg_put_stat(w, name, (uint64_t)c->pid);
                snprintf(name, sizeof(name), "connection.%llu.workers", (unsigned long long)c->id);
                fs_msg_put_stat(w, name, nw);
                listed++;
        }
        fs_msg_put_stat(w, "connections_listed", listed);
}

static int put_status(struct fsd_server *s, uint32_t id)
{
        const struct fsd_stats *st = &s->stats;
        struct fs_msgw w;

        fs_msg_begin(&w, s->tx, sizeof(s->tx), FS_MSG_STATUS_REPLY, id);
        fs_msg_put_stat(&w, "pid", (uint64_t)getpid());
        fs_msg_put_stat(&w, "zygote_pid", (uint64_t)s->zyg[0].pid);
        fs_msg_put_stat(&w, "zygotes", s->nzyg);
        fs_msg_put_stat(&w, "zygote_restarts", s->zygote_restarts);
        uint64_t killed = 0, ringed = 0;

        for (unsigned i = 0; i < s->nzyg; i++) {
                killed += s->zyg[i].killed;
                ringed += s->zyg[i].ring_len;
        }
        fs_msg_put_stat(&w, "zygote_kills", killed); /* for missing a deadline */
        fs_msg_put_stat(&w, "zygote_inflight", ringed);
        fs_msg_put_stat(&w, "zygote_waiting", s->nwait);
        fs_msg_put_stat(&w, "zygote_evicted", s->evicted);
        fs_msg_put_stat(&w, "zygote_strays_ended", s->strays.ended);
        fs_msg_put_stat(&w, "prefork.max", s->opt->prefork);
        fs_msg_put_stat(&w, "prefork.idle", fsd_pool_idle(s)); /* not counted in workers */
        fs_msg_put_stat(&w, "uptime_ms", (uint64_t)(fs_now_ms() - s->start_ms));
        fs_msg_put_stat(&w, "protocol_version", FS_PROTO_VERSION);
        fs_msg_put_stat(&w, "landlock_abi", (uint64_t)s->sandbox.landlock_abi);
        fs_msg_put_stat(&w, "closer.handed", s->closer.handed);
        fs_msg_put_stat(&w, "closer.closed_by_front", s->closer.closed_here);
        fs_msg_put_stat(&w, "closer.pending", s->closer.n);
        fs_msg_put_stat(&w, "version", FS_VERSION_NUMBER); /* MAJOR << 16 | MINOR << 8 | PATCH */
        fs_msg_put_stat(&w, "key_age_ms", (uint64_t)(fs_now_ms() - s->key_loaded_ms));
        fs_msg_put_stat(&w, "key_reloads", s->key_reloads);
        /* 1 daemon: workers run as the daemon's uid; 2 client: as their clients' */
        fs_msg_put_stat(&w, "workers_run_as", s->switch_uids ? 2 : 1);
        fs_msg_put_stat(&w, "root_workers_allowed", s->switch_uids && s->opt->allow_root_workers);
        fs_msg_put_stat(&w, "workers", s->nworkers);
        fs_msg_put_stat(&w, "max_workers", s->opt->max_workers);
        fs_msg_put_stat(&w, "connections", s->nconns);
        fs_msg_put_stat(&w, "pending_handshakes", s->npending);
        fs_msg_put_stat(&w, "connections_total", st->connections);
        fs_msg_put_stat(&w, "auth_ok", st->auth_ok);
        fs_msg_put_stat(&w, "auth_failed", st->auth_failed);
        fs_msg_put_stat(&w, "auth_pid_bound", st->auth_pid_bound);
        fs_msg_put_stat(&w, "peer_refused", st->peer_refused);
        fs_msg_put_stat(&w, "bad_requests", st->bad_requests);
        fs_msg_put_stat(&w, "spawns", st->spawns);
        fs_msg_put_stat(&w, "spawn_failures", st->spawn_failures);
        fs_msg_put_stat(&w, "exits", st->exits);
        for (size_t i = 0; i < FSD_FAIL_N_; i++) {
                char name[64];

                snprintf(name, sizeof(name), "spawn_failures_by_cause.%s", fail_names[i]);
                fs_msg_put_stat(&w, name, st->fail[i]);
        }
        put_latency(&w, st);
        put_connections(s, &w);
        fs_msg_put_stat(&w, "gpu_broker.enabled", s->gpu.enabled);
        fs_msg_put_stat(&w, "gpu_broker.up", s->gpu.up);
        fs_msg_put_stat(&w, "gpu_broker.pid", (uint64_t)s->gpu.pid);
        fs_msg_put_stat(&w, "gpu_broker.devices", s->gpu.enabled ? s->gpu.ndev : 0);
        fs_msg_put_stat(&w, "gpu_broker.restarts", s->gpu.restarts);
        fs_msg_put_stat(&w, "gpu_broker.leases", s->gpu.leases);
        fs_msg_put_stat(&w, "gpu_broker.bytes", s->gpu.bytes);
        /* less the one fs_count_dir opens to count them */
        fs_msg_put_stat(&w, "open_fds", (uint64_t)(fs_count_dir("/proc/self/fd") - 1));
        return fs_msg_finish(&w);
}

static void refuse_lost_fds(struct fsd_server *s, struct fsd_conn *c, size_t len);

static void request(struct fsd_server *s, struct fsd_conn *c, size_t len, int *fds, size_t nfds,
                    bool lost)
{
        const char *why = NULL;
        struct fs_hdr h;
        struct fs_buf p;
        struct fs_msgw w;
        int r;

        if (lost) {
                refuse_lost_fds(s, c, len);
                return;
        }
        if ((r = fs_proto_parse_hdr(s->rx, len, &h, &p)) < 0) {
                s->stats.bad_requests++;
                fsd_closer_put(&s->closer, fds, nfds);
                fsd_conn_send_error(s, c, 0, r, "%s",
                                    r == -EPROTO ? "bad magic or version"
                                                 : "malformed message header");
                fsd_conn_close(s, c, "malformed header");
                return;
        }
        if (nfds > 0 && h.type != FS_MSG_SPAWN) {
                s->stats.bad_requests++;
                fsd_closer_put(&s->closer, fds, nfds);
                fsd_conn_send_error(s, c, h.id, EBADMSG, "%s carries no fds",
                                    fs_proto_type_name(h.type));
                return;
        }
        switch (h.type) {
        case FS_MSG_SPAWN:
                if (s->stopping) {
                        fsd_closer_put(&s->closer, fds, nfds);
                        fsd_conn_send_error(s, c, h.id, ESHUTDOWN, "server is stopping");
                        return;
                }
                fsd_spawn_request(s, c, h.id, &p, fds, nfds);
                explicit_bzero(s->rx, len); /* what it asked went on in a request of ours */
                return;
        case FS_MSG_PING:
        case FS_MSG_STOP:
                if ((r = fs_proto_parse_empty(&p, &why)) < 0)
                        break;
                fs_msg_begin(&w, s->tx, sizeof(s->tx), FS_MSG_OK, h.id);
                if ((r = fs_msg_finish(&w)) > 0)
                        (void)fsd_conn_send(s, c, s->tx, (size_t)r, NULL, 0);
                if (h.type == FS_MSG_STOP) {
                        fs_log(FS_LOG_INFO, "stop requested by conn %llu pid %d uid %u",
                               (unsigned long long)c->id, (int)c->pid, (unsigned)c->uid);
                        fsd_server_stop(s, "stop request");
                }
                return;
        case FS_MSG_STATUS:
                if ((r = fs_proto_parse_empty(&p, &why)) < 0)
                        break;
                if ((r = put_status(s, h.id)) > 0)
                        (void)fsd_conn_send(s, c, s->tx, (size_t)r, NULL, 0);
                return;
        default:
                r = -EBADMSG;
                why = "message type not accepted from clients";
                break;
        }
        s->stats.bad_requests++;
        fsd_conn_send_error(s, c, h.id, r, "%s: %s", fs_proto_type_name(h.type),
                            why ? why : "bad request");
}

/* The kernel could not give us the fds that came with a request: we are out of fds. The
 * request is answered, not dropped, and the connection (and its workers) lives on. */
static void refuse_lost_fds(struct fsd_server *s, struct fsd_conn *c, size_t len)
{
        struct fs_hdr h;
        uint32_t id = 0;

        if (fs_proto_parse_hdr_only(s->rx, len, &h) == 0)
                id = h.id;
        fsd_spawn_failed(s, FSD_FAIL_OUT_OF_FDS);
        fs_log_limited(FS_LOG_WARNING,
                       "conn %llu pid %d uid %u: out of file descriptors, "
                       "request refused",
                       (unsigned long long)c->id, (int)c->pid, (unsigned)c->uid);
        fsd_conn_send_error(s, c, id, EMFILE,
                            "server is out of file descriptors "
                            "(RLIMIT_NOFILE): the fds sent with the request were dropped");
}

static void conn_closed(struct fsd_server *s, struct fsd_conn *c)
{
        fsd_zygote_forget_conn(s, c);
        fsd_worker_orphan_all(s, c);
        fsd_gpu_conn_closed(s, c);
}

void fsd_dispatch_init(struct fsd_server *s)
{
        s->on_request = request;
        s->on_conn_closed = conn_closed;
}
