/* forkserverd's front: the state the event loop, connections, spawns and workers share. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/auth.h"
#include "common/key.h"
#include "common/log.h"
#include "common/proto.h"
#include "forkserver/closer.h"
#include "forkserver/sandbox.h"
#include "forkserver/template.h"

#define FSD_MAX_ALLOW_UID 64
#define FSD_MAX_WORKERS 65536
#define FSD_MAX_PENDING 4096
#define FSD_MAX_CONNS 65536 /* --max-connections at most */
#define FSD_ZYGOTE_INFLIGHT 32     /* spawn requests queued at the zygote */
#define FSD_KILL_GRACE_MS 1000     /* SIGTERM, then SIGKILL after this */
#define FSD_OUTQ_MAX 16384         /* queued replies per connection before it is cut */
#define FSD_READ_BATCH 32          /* requests read from one connection per wakeup */
#define FSD_MAX_PREFORK 64         /* --prefork N at most: idle children per zygote */
#define FSD_PREFORK_DEFAULT 0      /* docs/BENCHMARKS.md, "Pre-forked workers", says why */
#define FSD_PREFORK_DEFAULT_STR "0"

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
        int listen_fd;                 /* from systemd (socket activation), or -1 */
        bool foreground;
        bool require_landlock; /* start-up fails without Landlock (or below ABI 6) */
        enum fs_log_level log_level;
        const char *profile_dir;
        const char *allow_profile;
        const char *min_profile;
        enum { FSD_CUDA_OFF, FSD_CUDA_ON, FSD_CUDA_AUTO } cuda;
        int cuda_devices[16];          /* CUDA ordinals; none given: all */
        size_t ncuda_devices;
        uint64_t cuda_quota;           /* bytes of GPU buffers in all; 0: no limit */
        uint64_t cuda_conn_quota;      /* ... per connection; 0: no limit */
        const char *preload[16];       /* absolute paths (FSD_MAX_PRELOAD) */
        char preload_name[16][128];    /* their LIBNAMEs */
        size_t npreload;
        const char *user;              /* --user: root drops to this user first */
        bool allow_root_workers;       /* root clients may have root workers */
        unsigned prefork;              /* idle pre-forked children per fork-mode zygote, at most */
};

enum fsd_src_kind {
        FSD_SRC_LISTEN = 1,
        FSD_SRC_SIGNAL,
        FSD_SRC_ZYGOTE,
        FSD_SRC_ZYGOTE_EXIT,
        FSD_SRC_CONN,
        FSD_SRC_WORKER,
        FSD_SRC_BROKER_EXIT,
        FSD_SRC_CLOSER,      /* its socket is writable again */
        FSD_SRC_CLOSER_EXIT, /* its pidfd */
        FSD_SRC_TEMPLATE,    /* a helper made, or the template gone */
};

/* First member of everything registered with epoll. */
struct fsd_source {
        enum fsd_src_kind kind;
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

struct fsd_conn {
        struct fsd_source src;
        int fd;
        uint64_t id;
        uid_t uid;
        pid_t pid;
        gid_t gid;         /* SO_PEERCRED's, and SO_PEERGROUPS' ... */
        uint32_t ngroups;  /* ... when workers run as their clients */
        gid_t groups[FS_MAX_GROUPS];
        bool authed;
        bool dead;        /* closed; freed after the current batch of events */
        bool reading;     /* EPOLLIN wanted */
        int64_t deadline; /* handshake deadline (ms), while !authed */
        struct fs_auth_server auth;
        struct fsd_outmsg *outq, **outq_tail;
        size_t outq_len;
        struct fsd_worker *workers;
        unsigned inflight; /* spawns at the zygote */
        uint64_t gpu_bytes; /* GPU buffers of its live workers */
        struct fsd_conn *prev, *next;
};

/* A GPU buffer as the front keeps the books: the broker's lease, while its worker lives. */
struct fsd_lease {
        uint64_t id, size, generation; /* generation: of the broker that made it */
};

struct fsd_worker {
        struct fsd_source src;
        int pidfd;
        pid_t pid;
        uid_t uid; /* it runs as (its client's, when workers run as their clients) */
        uint64_t id;
        uint32_t req_id;
        bool detached;
        int64_t kill_at; /* SIGKILL deadline after SIGTERM; 0: none */
        bool unkillable; /* its SIGKILL could not be sent (no zygote to relay it) */
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
        struct fsd_conn *conn; /* NULL when the connection closed meanwhile */
        int req_fds[FS_MAX_MSG_FDS]; /* ours of the fds forwarded: to the closer on the answer */
        size_t nreq_fds;
        uid_t uid;             /* the worker's, for signals (fsd_signal) */
        uint32_t req_id;
        uint32_t seq;
        uint32_t flags;
};

#define FSD_MAX_ZYGOTES 3

/*
 * A zygote as the front sees it. The plain one (sandboxed == NULL) installs each worker's
 * filter between clone and exec; a sandboxed one runs under its profile's filter itself, so
 * its workers inherit it at no cost per spawn.
 */
struct fsd_zygote {
        struct fsd_source src;      /* FSD_SRC_ZYGOTE: its replies */
        struct fsd_source src_exit; /* FSD_SRC_ZYGOTE_EXIT: its pidfd */
        int fd, pidfd;
        pid_t pid;
        const struct fsd_profile *sandboxed;
        struct fsd_inflight ring[FSD_ZYGOTE_INFLIGHT];
        unsigned ring_head, ring_len;
        uint32_t seq;
        uint32_t tpl_index;         /* what the template makes it from (template.h) */
        bool starting;              /* asked of the template, not answered yet */
        int64_t restart_at, backoff_ms, started_at;
        /* its pre-forked idle children (pool.c): our children, not workers, until one serves */
        struct fsd_idle {
                pid_t pid;
                int pidfd;  /* -1: lost (we were out of fds); by pid then */
                bool dying; /* let go and signalled, not reaped yet */
        } idle[FSD_MAX_PREFORK];
        unsigned nidle;
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

/* The gpu-broker as the front sees it (see broker.h). */
struct fsd_gpu {
        struct fsd_source src_exit;
        bool enabled; /* --cuda given and the broker started once */
        bool up;
        pid_t pid;
        int pidfd, fd;
        unsigned ndev, restarts;
        uint32_t next_id;
        uint64_t generation;
        int64_t restart_at, backoff_ms, started_at;
        uint64_t leases, bytes; /* held by live workers */
};

struct fsd_server {
        const struct fsd_options *opt;
        struct fsd_sandbox sandbox;
        struct fs_key *key;
        uint8_t pidns[FS_PIDNS_LEN]; /* ours: the namespace SO_PEERCRED pids are counted in */
        int64_t key_loaded_ms; /* fs_now_ms() when it was read, at start or on SIGHUP */
        uint64_t key_reloads;
        int epfd, listen_fd, sig_fd, reserve_fd;
        bool socket_ours; /* we made it (not systemd): remove it when we stop */
        dev_t sock_dev;
        ino_t sock_ino;
        struct fsd_source src_listen, src_signal, src_closer, src_closer_exit;
        struct fsd_closer closer; /* closes what peers passed us, off the loop */
        struct fsd_template tpl;  /* makes zygotes and brokers: forkserver/template.h */
        struct fsd_source src_template;
        uint64_t zygote_restarts;
        struct fsd_zygote zyg[FSD_MAX_ZYGOTES];
        struct fsd_gpu gpu;
        unsigned nzyg;
        unsigned inflight; /* spawns at all zygotes */
        struct fsd_conn *pending; /* handshakes, oldest first */
        struct fsd_conn *pending_last;
        struct fsd_conn *conns;   /* authenticated */
        struct fsd_conn *dead;    /* to free after the event batch */
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
};

#define fsd_container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

/* loop.c */
int fsd_loop_run(struct fsd_server *s);
void fsd_server_stop(struct fsd_server *s, const char *why);
void fsd_zygotes_stop(struct fsd_server *s);
int fsd_epoll_add(struct fsd_server *s, int fd, uint32_t events, struct fsd_source *src);

/* conn.c */
void fsd_conn_accept(struct fsd_server *s);
void fsd_conn_event(struct fsd_server *s, struct fsd_conn *c, uint32_t events);
void fsd_conn_close(struct fsd_server *s, struct fsd_conn *c, const char *why);
void fsd_conn_expire(struct fsd_server *s, int64_t now);
void fsd_conn_free_dead(struct fsd_server *s);
int fsd_conn_send(struct fsd_server *s, struct fsd_conn *c, const void *buf, size_t len,
                  const int *fds, size_t nfds);
void fsd_conn_send_error(struct fsd_server *s, struct fsd_conn *c, uint32_t id, int err,
                         const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* gpu.c */
int fsd_gpu_start(struct fsd_server *s, char *err, size_t errlen);
void fsd_gpu_stop(struct fsd_server *s);
void fsd_gpu_exited(struct fsd_server *s);
void fsd_gpu_tick(struct fsd_server *s, int64_t now, int64_t *next);
/* Leases every buffer sp asks for, into e (its fds and books); 0, or a negative errno with
 * the reason in why (nothing held then). */
int fsd_gpu_acquire(struct fsd_server *s, struct fsd_conn *c, const struct fs_spawn *sp,
                    struct fsd_inflight *e, char *why, size_t whylen);
/* Gives back what e holds and uncharges it (the spawn failed after fsd_gpu_acquire). */
void fsd_gpu_abandon(struct fsd_server *s, struct fsd_inflight *e);
/* The worker's buffers are done with (it exited). */
void fsd_gpu_release_worker(struct fsd_server *s, struct fsd_worker *w);

/* spawn.c */
void fsd_spawn_failed(struct fsd_server *s, enum fsd_fail why);
/* msg is the whole datagram (forwarded to a zygote), payload its already-checked fields. */
void fsd_spawn_request(struct fsd_server *s, struct fsd_conn *c, uint32_t id, uint8_t *msg,
                       size_t len, struct fs_buf *payload, int *fds, size_t nfds);
void fsd_spawn_complete(struct fsd_server *s, struct fsd_zygote *z, bool block);
void fsd_spawn_forget_conn(struct fsd_server *s, struct fsd_conn *c);

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
void fsd_worker_event(struct fsd_server *s, struct fsd_worker *w);
void fsd_worker_terminate(struct fsd_server *s, struct fsd_worker *w, int64_t now);
void fsd_worker_orphan_all(struct fsd_server *s, struct fsd_conn *c);
void fsd_worker_tick(struct fsd_server *s, int64_t now, int64_t *next_deadline);
void fsd_worker_terminate_all(struct fsd_server *s);
void fsd_worker_free_dead(struct fsd_server *s);
/* Sends sig to a worker running as uid, by pidfd (or pid, for a child whose pidfd never
 * reached us). A worker of another uid is signalled through a zygote (the plain one while
 * it lives), which may act as that uid: the front holds no capability. 0, or a negative
 * errno (-EAGAIN: the zygote's queue is full; -ENOTCONN: no zygote is left). */
int fsd_signal(struct fsd_server *s, int pidfd, pid_t pid, uid_t uid, int sig);
