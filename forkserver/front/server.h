/* forkserverd's front: the state the event loop, connections, spawns and workers share. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

#include "common/auth.h"
#include "common/key.h"
#include "common/log.h"
#include "common/proto.h"
#include "forkserver/front/closer.h"
#include "forkserver/front/event.h"
#include "forkserver/front/template.h"
#include "forkserver/sandbox/sandbox.h"
#include "forkserver/zygote/zygote.h"

#define FSD_MAX_ALLOW_UID 64
#define FSD_MAX_WORKERS 65536
#define FSD_MAX_PENDING 4096
#define FSD_MAX_CONNS 65536         /* --max-connections at most */
#define FSD_ZYGOTE_INFLIGHT 32      /* spawn requests sent to a zygote and not answered */
#define FSD_ZYGOTE_QUEUE 1024       /* ... and waiting for room there, all zygotes together */
#define FSD_ZYGOTE_DEADLINE_MS 5000 /* a zygote slower than this to answer is killed */
#define FSD_STOP_DEADLINE_MS 1000   /* ... and when we are stopping */
#define FSD_PREFORK_DEFAULT 0       /* docs/BENCHMARKS.md, "Pre-forked workers", says why */
#define FSD_PREFORK_DEFAULT_STR "0"
#define FSD_KILL_GRACE_MS 1000 /* SIGTERM, then SIGKILL after this */
#define FSD_OUTQ_MAX 16384     /* queued replies per connection before it is cut */
#define FSD_READ_BATCH 32      /* requests read from one connection per wakeup */

struct fsd_options {
        const char *socket_path;
        const char *key_file;
        int key_fd;
        uid_t allow_uid[FSD_MAX_ALLOW_UID];
        size_t n_allow_uid;
        unsigned max_workers;
        unsigned max_pending;
        unsigned max_connections; /* authenticated ones */
        unsigned handshake_timeout_ms;
        int ready_fd;
        int listen_fd; /* from systemd (socket activation), or -1 */
        bool foreground;
        bool require_landlock; /* start-up fails without Landlock (or below ABI 6) */
        enum fs_log_level log_level;
        const char *profile_dir;
        const char *allow_profile;
        const char *min_profile;
        enum { FSD_CUDA_OFF, FSD_CUDA_ON, FSD_CUDA_AUTO } cuda;
        int cuda_devices[16]; /* CUDA ordinals; none given: all */
        size_t ncuda_devices;
        uint64_t cuda_quota;        /* bytes of GPU buffers in all; 0: no limit */
        uint64_t cuda_conn_quota;   /* ... per connection; 0: no limit */
        uint64_t cuda_reserve;      /* device bytes the broker keeps free (--cuda-reserve) */
        bool cuda_reserve_set;      /* ... given; else the broker's default per device */
        const char *preload[16];    /* absolute paths (FSD_MAX_PRELOAD) */
        char preload_name[16][128]; /* their LIBNAMEs */
        size_t npreload;
        const char *user;        /* --user: root drops to this user first */
        bool allow_root_workers; /* root clients may have root workers */
        unsigned prefork;        /* idle pre-forked children per fork-mode zygote, at most */
};

#define FSD_OUT_FDS 4 /* fds one reply to a client may carry */

/* A reply the client's socket had no room for; owns its fds. */
struct fsd_outmsg {
        struct fsd_outmsg *next;
        size_t len, nfds;
        int fds[FSD_OUT_FDS];
        uint8_t data[];
};

struct fsd_worker;
struct fsd_gpu_hold; /* gpu.c: the GPU buffers a client process holds fds of */

struct fsd_conn {
        struct fsd_io io;
        int fd;
        uint64_t id;
        uid_t uid;
        pid_t pid;
        gid_t gid;        /* SO_PEERCRED's, and SO_PEERGROUPS' ... */
        uint32_t ngroups; /* ... when workers run as their clients */
        gid_t groups[FS_MAX_GROUPS];
        bool authed;
        bool dead;        /* closed; freed after the current batch of events */
        bool reading;     /* EPOLLIN wanted */
        unsigned held;    /* requests of it waiting for room at a zygote: it is not read */
        int64_t deadline; /* handshake deadline (ms), while !authed */
        struct fs_auth_server auth;
        struct fsd_outmsg *outq, **outq_tail;
        size_t outq_len;
        struct fsd_worker *workers;
        unsigned inflight;  /* spawns at a zygote or waiting for one */
        uint64_t gpu_bytes; /* GPU buffers of its live workers, and its own copies of them */
        struct fsd_gpu_hold *gpu_hold; /* those copies (FS_SPAWN_GPU_FDS); NULL: none asked */
        struct fsd_conn *prev, *next;
};

/* A GPU buffer as the front keeps the books: the broker's lease, while its worker lives and,
 * when the client got a copy of its fd (hold), until that client is gone too. */
struct fsd_lease {
        uint64_t id, size, generation; /* generation: of the broker that made it */
        struct fsd_gpu_hold *hold;     /* the client holding a copy, or NULL */
};

struct fsd_worker {
        struct fsd_io io;      /* its pidfd */
        struct fsd_timer kill; /* SIGKILL after SIGTERM's grace */
        int pidfd;
        pid_t pid;
        uid_t uid; /* it runs as (its client's, when workers run as their clients) */
        uint64_t id;
        uint32_t req_id;
        bool detached;
        bool terminating;      /* SIGTERM sent */
        bool unkillable;       /* its SIGKILL could not be sent (no zygote to relay it) */
        struct fsd_conn *conn; /* NULL: orphaned (connection gone) */
        size_t ngpu;
        struct fsd_lease gpu[FS_MAX_GPU];
        struct fsd_worker *prev, *next;
};

struct fsd_inflight {
        int64_t t0_us; /* when the request arrived */
        size_t ngpu;   /* GPU buffers leased for it: given to the client with SPAWNED */
        int gpu_fd[FS_MAX_GPU];
        struct fsd_lease gpu[FS_MAX_GPU];
        struct fs_gpu_buf gpu_buf[FS_MAX_GPU];
        struct fsd_conn *conn;       /* NULL when the connection closed meanwhile */
        int req_fds[FS_MAX_MSG_FDS]; /* ours of the fds forwarded: to the closer on the answer */
        size_t nreq_fds;
        uid_t uid; /* the worker's, for signals (fsd_signal) */
        uint32_t req_id;
        uint32_t seq;
        uint32_t flags;
        int64_t deadline; /* the zygote answers by then, or is killed */
};

/* A request that found its zygote's ring full: sent when there is room, in arrival order, so
 * that the zygote's time is shared across connections (each has one waiting at most: it is
 * not read meanwhile). */
struct fsd_zwait {
        struct fsd_zwait *next;
        uid_t client; /* whose share of the queue it takes */
        struct fsd_inflight e;
        size_t len;
        uint8_t msg[];
};

#define FSD_MAX_ZYGOTES 3

/*
 * A zygote as the front sees it. The plain one (sandboxed == NULL) installs each worker's
 * filter between clone and exec; a sandboxed one runs under its profile's filter itself, so
 * its workers inherit it at no cost per spawn.
 */
struct fsd_zygote {
        struct fsd_io io;          /* its replies */
        struct fsd_io io_exit;     /* its pidfd */
        struct fsd_timer deadline; /* the oldest request's, while any is in flight */
        struct fsd_timer restart;  /* while it is gone */
        int fd, pidfd;
        pid_t pid;
        const struct fsd_profile *sandboxed;
        struct fsd_inflight ring[FSD_ZYGOTE_INFLIGHT];
        unsigned ring_head, ring_len;
        struct fsd_zwait *wait, **wait_tail; /* waiting for room in the ring */
        unsigned nwait;
        uint64_t killed; /* for missing a deadline */
        /* its pre-forked idle children (pool.c): our children, not workers, until one serves */
        struct fsd_idle {
                pid_t pid;
                int pidfd; /* -1: lost (we were out of fds); by pid then */
        } idle[FSD_MAX_PREFORK];
        unsigned nidle;
        uint32_t seq;
        uint32_t tpl_index; /* what the template makes it from (template.h) */
        bool starting;      /* asked of the template, not answered yet */
        int64_t restart_at, backoff_ms, started_at;
};

/* Why a spawn request did not give a worker. */
enum fsd_fail {
        FSD_FAIL_BAD_REQUEST,      /* malformed SPAWN */
        FSD_FAIL_POLICY,           /* profile or entry not allowed */
        FSD_FAIL_MAX_WORKERS,      /* --max-workers reached */
        FSD_FAIL_OUT_OF_FDS,       /* front or zygote out of fds */
        FSD_FAIL_OUT_OF_PROCESSES, /* clone: EAGAIN */
        FSD_FAIL_SETUP,            /* the child's set-up or exec failed (bad path, cwd, ...) */
        FSD_FAIL_ZYGOTE,           /* zygote gone or not answering */
        FSD_FAIL_GPU,              /* no broker, broker down, device memory or quota */
        FSD_FAIL_N_
};

#define FSD_LATENCY_SAMPLES 1024 /* spawn latencies kept for the percentiles */

struct fsd_stats {
        uint64_t spawns, spawn_failures, exits, auth_ok, auth_failed, peer_refused;
        uint64_t auth_pid_bound; /* of auth_ok: the client's pid was bound too */
        uint64_t bad_requests, connections;
        uint64_t fail[FSD_FAIL_N_];
        uint32_t latency_us[FSD_LATENCY_SAMPLES]; /* request in → SPAWNED out, a ring */
        uint64_t nlatency;
};

#define FSD_GPU_QUEUE 256 /* SPAWNs waiting for their GPU buffers, all connections together */

/*
 * A SPAWN waiting for its GPU buffers. gpu.c leases them one broker round trip at a time, for
 * one request at a time, in arrival order (so each request's quota check sees every earlier
 * one's charge); the request's connection is not read meanwhile. spawn.c gets it back through
 * on_gpu_ready and frees it.
 */
struct fsd_gpu_req {
        struct fsd_gpu_req *next;
        struct fsd_conn *conn; /* NULL once its connection closed */
        struct fsd_zygote *z;  /* where it goes next */
        uint32_t flags;
        size_t nwant;
        struct fs_gpu_buf want[FS_MAX_GPU];
        uint64_t room_conn, room_all, kept, asked, total;
        struct fsd_gpu_hold *hold;
        uint32_t alloc_id;     /* the GPU_ALLOC in flight */
        struct fsd_inflight e; /* spawn.c's; the leases are added to it */
        size_t len, cap;
        uint8_t msg[]; /* the request for the zygote, with room for UUIDs */
};

/* The gpu-broker as the front sees it (see broker.h). */
struct fsd_gpu {
        struct fsd_io io_exit;
        struct fsd_io io; /* its answers */
        struct fsd_timer restart;
        struct fsd_timer deadline;             /* the GPU_ALLOC in flight */
        struct fsd_gpu_req *reqs, **reqs_tail; /* the first is being served */
        unsigned nreqs;
        bool enabled; /* --cuda given and the broker started once */
        bool up;
        bool starting; /* asked of the template, not answered yet */
        pid_t pid;
        int pidfd, fd;
        unsigned ndev, restarts;
        uint32_t next_id;
        uint64_t generation;
        int64_t restart_at, backoff_ms, started_at;
        uint64_t leases, bytes;     /* held by live workers or by clients' copies */
        struct fsd_gpu_hold *holds; /* of closed connections, until their processes exit */
};

#define FSD_MAX_STRAYS 256

/* Children of ours that a zygote made and could not tell us of (it died or was killed while
 * making them): found once every zygote has answered what it was asked before the loss. */
struct fsd_strays {
        struct fsd_timer check;
        pid_t pid[FSD_MAX_STRAYS]; /* candidates: untracked children at the loss */
        size_t n;
        uint32_t seq[FSD_MAX_ZYGOTES]; /* each zygote's last request then, */
        pid_t zpid[FSD_MAX_ZYGOTES];   /* and which zygote that was */
        uint64_t ended;
};

struct fsd_server {
        const struct fsd_options *opt;
        struct fsd_sandbox sandbox;
        struct fs_key *key;
        uint8_t pidns[FS_PIDNS_LEN]; /* ours: the namespace SO_PEERCRED pids are counted in */
        int64_t key_loaded_ms;       /* fs_now_ms() when it was read, at start or on SIGHUP */
        uint64_t key_reloads;
        struct fsd_loop loop;
        int listen_fd, sig_fd, reserve_fd;
        bool socket_ours; /* we made it (not systemd): remove it when we stop */
        dev_t sock_dev;
        ino_t sock_ino;
        struct fsd_io io_listen, io_signal, io_template;
        struct fsd_timer t_handshake, t_log;
        struct fsd_closer closer; /* closes what peers passed us, off the loop */
        struct fsd_template tpl;  /* makes zygotes and brokers: forkserver/front/template.h */
        uint64_t zygote_restarts;
        struct fsd_zygote zyg[FSD_MAX_ZYGOTES];
        struct fsd_gpu gpu;
        unsigned nzyg;
        unsigned inflight; /* spawns at all zygotes, and waiting for one */
        unsigned nwait;    /* of them: waiting (FSD_ZYGOTE_QUEUE) */
        /* What the layers above transport and the zygote channels want to hear of. */
        void (*on_request)(struct fsd_server *s, struct fsd_conn *c, size_t len, int *fds,
                           size_t nfds, bool fds_lost);
        void (*on_conn_closed)(struct fsd_server *s, struct fsd_conn *c);
        /* a zygote died or was killed: it may leave children nobody knows of */
        void (*on_zygote_gone)(struct fsd_server *s);
        /* a request's GPU buffers are leased (r 0: into req->e) or cannot be (why says) */
        void (*on_gpu_ready)(struct fsd_server *s, struct fsd_gpu_req *req, int r, const char *why);
        struct fsd_strays strays;
        /* a zygote's answer to e (msg NULL: none will come; err and why say why) */
        void (*on_zygote_answer)(struct fsd_server *s, struct fsd_inflight *e, const uint8_t *msg,
                                 size_t len, int *fds, size_t nfds, bool lost, int err,
                                 const char *why);
        struct fsd_conn *pending; /* handshakes, oldest first */
        struct fsd_conn *pending_last;
        struct fsd_conn *conns; /* authenticated */
        struct fsd_conn *dead;  /* to free after the event batch */
        unsigned npending, nconns;
        struct fsd_worker *orphans;
        struct fsd_worker *dead_workers; /* reaped; freed after the event batch */
        unsigned nworkers;
        unsigned nunkillable; /* of them: left to die with us (parent-death signal) */
        uint64_t next_conn_id, next_worker_id;
        bool stopping;
        bool switch_uids; /* workers run as their clients (we hold CAP_SETUID, CAP_SETGID) */
        int exit_code;
        int64_t start_ms;
        struct fsd_stats stats;
        uint8_t rx[FS_MAX_MSG];
        uint8_t tx[FS_MAX_MSG];
        unsigned zygote_queue;       /* places waiting for the zygotes (0: FSD_ZYGOTE_QUEUE) */
        uint64_t evicted;            /* waiting requests given up to another uid's */
        uint8_t zreq[FS_MAX_MSG];    /* a request for a zygote, as spawn.c writes it */
        struct fsd_reaping *reaping; /* reap.c */
        unsigned nreaping;
};

static inline unsigned fsd_zygote_queue(const struct fsd_server *s)
{
        return s->zygote_queue && s->zygote_queue < FSD_ZYGOTE_QUEUE ? s->zygote_queue
                                                                     : FSD_ZYGOTE_QUEUE;
}

/* When a helper that died starts again: 100 ms after a first death, doubling to 10 s while
 * they go on; one that had run for 10 s counts as a first again (unless fresh is false). */
#define FSD_BACKOFF_MIN_MS 100
#define FSD_BACKOFF_MAX_MS 10000
static inline int64_t fsd_backoff(int64_t *backoff_ms, int64_t started_at, bool fresh, int64_t now)
{
        if (fresh && started_at && now - started_at >= FSD_BACKOFF_MAX_MS)
                *backoff_ms = 0;
        *backoff_ms = *backoff_ms ? *backoff_ms * 2 : FSD_BACKOFF_MIN_MS;
        if (*backoff_ms > FSD_BACKOFF_MAX_MS)
                *backoff_ms = FSD_BACKOFF_MAX_MS;
        return now + *backoff_ms;
}

/* The key added most often, counted in caller storage of more slots than keys added (open
 * addressing; a slot with n 0 is free): the peer holding most handshakes, the uid holding
 * most waiting requests. */
struct fsd_tally_slot {
        uint32_t key, n;
};
struct fsd_tally {
        struct fsd_tally_slot *t;
        size_t cap;
        uint32_t best, top; /* how often the top key was added, and which */
};

static inline void fsd_tally_start(struct fsd_tally *y, struct fsd_tally_slot *t, size_t cap)
{
        memset(t, 0, cap * sizeof(*t));
        *y = (struct fsd_tally){.t = t, .cap = cap};
}

/* key's slot: the one holding it, or the free one where it goes */
static inline struct fsd_tally_slot *fsd_tally_slot(const struct fsd_tally *y, uint32_t key)
{
        size_t h = (key * 2654435761u) % y->cap;

        while (y->t[h].n && y->t[h].key != key)
                h = (h + 1) % y->cap;
        return &y->t[h];
}

static inline void fsd_tally_add(struct fsd_tally *y, uint32_t key)
{
        struct fsd_tally_slot *t = fsd_tally_slot(y, key);

        t->key = key;
        if (++t->n > y->best) {
                y->best = t->n;
                y->top = key;
        }
}

/* How often key was added. */
static inline uint32_t fsd_tally_count(const struct fsd_tally *y, uint32_t key)
{
        return fsd_tally_slot(y, key)->n;
}

/* The server whose loop a handler was called from (every source is on s->loop). */
static inline struct fsd_server *fsd_server_of(struct fsd_loop *l)
{
        return fsd_container_of(l, struct fsd_server, loop);
}

/* loop.c: the front's top */
int fsd_loop_run(struct fsd_server *s);
void fsd_server_stop(struct fsd_server *s, const char *why);
/* Watches the listening socket, signals and the template (start-up). */
int fsd_front_attach(struct fsd_server *s);

/* conn.c: transport (accept, handshake, out-queue, send, close) */
int fsd_conn_attach(struct fsd_server *s); /* the listening socket */
void fsd_conn_close(struct fsd_server *s, struct fsd_conn *c, const char *why);
void fsd_conn_free_dead(struct fsd_server *s);
/* A request of c waits (held: +1) or no longer does (-1); c is not read while any does. */
void fsd_conn_hold(struct fsd_server *s, struct fsd_conn *c, int delta);
int fsd_conn_send(struct fsd_server *s, struct fsd_conn *c, const void *buf, size_t len,
                  const int *fds, size_t nfds);
void fsd_conn_send_error(struct fsd_server *s, struct fsd_conn *c, uint32_t id, int err,
                         const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* dispatch.c: what an authenticated client asks */
void fsd_dispatch_init(struct fsd_server *s);

/* zygotes.c: the front's end of each zygote's channel */
int fsd_zygote_attach(struct fsd_server *s, struct fsd_zygote *z);
/* Sends e's request (msg, len: its id is set here) or queues it; the channel owns e's fds
 * from then on, and answers through on_zygote_answer. -EAGAIN: no room (when the queue is
 * full, the uid holding most of it gives up its newest to a uid holding fewer), -EPIPE: the
 * zygote is gone; the caller keeps e then. */
int fsd_zygote_submit(struct fsd_server *s, struct fsd_zygote *z, const struct fsd_inflight *e,
                      uint8_t *msg, size_t len);
void fsd_zygote_forget_conn(struct fsd_server *s, struct fsd_conn *c);
/* The template made a zygote (or could not): fd and pidfd are its, or -1. */
void fsd_zygote_made(struct fsd_server *s, const struct fsd_template_reply *rep, int r, int fd,
                     int pidfd);
/* We are stopping: what is in flight gets FSD_STOP_DEADLINE_MS. */
void fsd_zygotes_hurry(struct fsd_server *s);
void fsd_zygotes_stop(struct fsd_server *s);
/* Sends sig to a worker running as uid, by pidfd (or pid, for a child whose pidfd never
 * reached us). A worker of another uid is signalled through a zygote (the plain one while
 * it lives), which may act as that uid: the front holds no capability. 0, or a negative
 * errno (-EAGAIN: the zygote's queue is full; -ENOTCONN: no zygote is left). */
int fsd_signal(struct fsd_server *s, int pidfd, pid_t pid, uid_t uid, int sig);

/* gpu.c */
int fsd_gpu_start(struct fsd_server *s, char *err, size_t errlen);
void fsd_gpu_stop(struct fsd_server *s);
/* The template made a broker (or could not). */
void fsd_gpu_made(struct fsd_server *s, const struct fsd_template_reply *rep, int r, int fd,
                  int pidfd);
/* Queues req for its GPU buffers (req->want); answers come through on_gpu_ready, perhaps
 * before this returns. A negative errno with why: refused at once, req still the caller's. */
int fsd_gpu_request(struct fsd_server *s, struct fsd_gpu_req *req, char *err, size_t errlen);
/* We are stopping: what waits for its buffers is answered ESHUTDOWN now. */
void fsd_gpu_cancel(struct fsd_server *s);
/* Gives back what e holds and uncharges it (the spawn failed after fsd_gpu_acquire). */
void fsd_gpu_abandon(struct fsd_server *s, struct fsd_inflight *e);
/* The worker's buffers are done with (it exited); those its client holds stay charged. */
void fsd_gpu_release_worker(struct fsd_server *s, struct fsd_worker *w);
/* The connection closed: its client's copies are uncharged once its process has exited. */
void fsd_gpu_conn_closed(struct fsd_server *s, struct fsd_conn *c);

/* reap.c: children the front ends and reaps without waiting (a failed or untrackable worker,
 * a stray, an idle child let go). With kill_it, SIGKILL first (as uid: fsd_signal). pidfd
 * (taken, -1: none, then by pid) is closed once it is reaped. */
struct fsd_reaping;
int fsd_reap(struct fsd_server *s, int pidfd, pid_t pid, uid_t uid, bool kill_it);
bool fsd_reap_has(const struct fsd_server *s, pid_t pid);
/* After the loop: each left gets up to grace_ms more, then is left to init. */
void fsd_reap_stop(struct fsd_server *s, int grace_ms);

/* spawn.c */
void fsd_spawn_init(struct fsd_server *s);
void fsd_spawn_failed(struct fsd_server *s, enum fsd_fail why);
/* A client's SPAWN: payload its fields (in s->rx, header checked), fds what came with it. */
void fsd_spawn_request(struct fsd_server *s, struct fsd_conn *c, uint32_t id,
                       struct fs_buf *payload, int *fds, size_t nfds);

/* pool.c: the zygotes' pre-forked children, as our books keep them */
/* A POOL message from z (true: it was one, and its fds are taken care of). */
bool fsd_pool_message(struct fsd_server *s, struct fsd_zygote *z, const uint8_t *msg, size_t len,
                      int *fds, size_t nfds, bool lost);
/* pid, a zygote's reply says, serves a request now: a worker, no longer idle. */
void fsd_pool_taken(struct fsd_server *s, pid_t pid);
/* z is gone or going: takes what it still said, then ends and reaps its idle children. */
void fsd_pool_end(struct fsd_server *s, struct fsd_zygote *z);
unsigned fsd_pool_idle(const struct fsd_server *s);

/* worker.c */
struct fsd_worker *fsd_worker_new(struct fsd_server *s, struct fsd_conn *c, int pidfd, pid_t pid,
                                  uint32_t req_id, bool detached);
void fsd_worker_terminate(struct fsd_server *s, struct fsd_worker *w);
void fsd_worker_orphan_all(struct fsd_server *s, struct fsd_conn *c);
void fsd_worker_terminate_all(struct fsd_server *s);
void fsd_worker_free_dead(struct fsd_server *s);
