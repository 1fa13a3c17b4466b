/*
 * Wire protocol (docs/PROTOCOL.md is the reference): one message per SOCK_SEQPACKET datagram,
 * a 16-byte header (magic, version, type, request id, payload length) and a payload of typed
 * fields (tag u16, length u16, value). Every parse goes through struct fs_buf.
 */
#pragma once

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

#define FS_PROTO_MAGIC 0x464b5356u /* "FKSV" */
#define FS_PROTO_VERSION 2         /* 2: the handshake binds the client's credentials */
#define FS_HDR_LEN 16
#define FS_MAX_MSG 65536  /* whole datagram */
#define FS_MAX_MSG_FDS 64 /* fds in one message */
#define FS_MAX_ARGV 4096
#define FS_MAX_ENVP 4096
#define FS_MAX_CHILD_FD 1023 /* highest fd number a worker may ask for */
#define FS_MAX_STATS 1024
#define FS_NONCE_LEN 32
#define FS_MAC_LEN 32
#define FS_PIDNS_LEN 16 /* a pid namespace: u64 device, u64 inode */

enum fs_msg_type {
        FS_MSG_HELLO = 1,
        FS_MSG_AUTH = 2,
        FS_MSG_AUTH_OK = 3,
        FS_MSG_AUTH_FAILED = 4,
        FS_MSG_ERROR = 5,
        FS_MSG_OK = 6,
        FS_MSG_PING = 7,
        FS_MSG_SPAWN = 8,
        FS_MSG_SPAWNED = 9,
        FS_MSG_EXITED = 10,
        FS_MSG_STATUS = 11,
        FS_MSG_STATUS_REPLY = 12,
        FS_MSG_STOP = 13,
        FS_MSG_DATA = 14, /* on a worker's channel: raw payload bytes */
        /* 15..19 are reserved: once the daemon's own messages, which now have a protocol of
         * their own (below); a client that sends one gets ERROR like for any server type */
        FS_MSG_MAX_ = 19,
};

enum fs_field_tag {
        FS_F_VERSION_MIN = 1, /* u16 */
        FS_F_VERSION_MAX = 2, /* u16 */
        FS_F_NONCE = 3,       /* 32 bytes */
        FS_F_MAC = 4,         /* 32 bytes */
        FS_F_VERSION = 5,     /* u16 */
        FS_F_ERRNO = 6,       /* u32, positive Linux errno */
        FS_F_REASON = 7,      /* string */
        FS_F_PATH = 8,        /* string */
        FS_F_ARG = 9,         /* string, repeated */
        FS_F_ENV = 10,        /* string, repeated */
        FS_F_CWD = 11,        /* string */
        FS_F_FD = 12,         /* u32, repeated: child fd number of each attached fd */
        FS_F_FLAGS = 13,      /* u32 */
        FS_F_WORKER = 14,     /* u64 */
        FS_F_PID = 15,        /* u32 */
        FS_F_CODE = 16,       /* u32: CLD_EXITED, CLD_KILLED or CLD_DUMPED */
        FS_F_STATUS = 17,     /* u32: exit code or signal number */
        FS_F_STAT = 18,       /* u64 value then string name, repeated */
        FS_F_STEP = 19,       /* u32: enum fs_spawn_step */
        FS_F_PROFILE = 20,    /* string */
        FS_F_RLIMIT = 21,     /* u32 resource, u64 soft, u64 hard; repeated */
        FS_F_UMASK = 22,      /* u32, 0..0777 */
        FS_F_ENTRY = 23,      /* string "LIBNAME:SYMBOL": fork mode */
        FS_F_ARGBYTES = 24,   /* bytes: the argument of a fork-mode entry */
        FS_F_GPU = 25,        /* u32 device, u64 size: a GPU buffer; repeated */
        FS_F_LEASE = 26,      /* u64: a GPU buffer's lease id (broker) */
        FS_F_UUID = 27,       /* 16 bytes: a GPU's UUID */
        FS_F_PIDNS = 28,      /* 16 bytes: the server's pid namespace (HELLO) */
        FS_F_BIND = 29,       /* u32: what the client's MAC binds (AUTH; FS_BIND_*) */
        /* the daemon's own messages only (FS_I_*) */
        FS_F_CRED = 30,    /* u32 uid, u32 gid, u32 groups...: front → zygote */
        FS_F_ROOM = 31,    /* u64: GPU_ALLOC: the most bytes it may take, rounded up */
        FS_F_RESERVE = 32, /* u64: GPU_ALLOC: device bytes to leave free (--cuda-reserve) */
        FS_F_MAX_ = FS_F_RESERVE,
};

enum fs_spawn_flags {
        FS_SPAWN_DETACH = 1u << 0,  /* survives its connection; no parent-death signal */
        FS_SPAWN_NEWPGRP = 1u << 1, /* the worker leads its own process group */
        FS_SPAWN_CHANNEL = 1u << 2, /* a socketpair: one end the worker's fd 3, one the client's */
        FS_SPAWN_GPU_FDS = 1u << 3, /* SPAWNED gives the client the GPU buffers' fds too */
        FS_SPAWN_KNOWN_FLAGS =
            FS_SPAWN_DETACH | FS_SPAWN_NEWPGRP | FS_SPAWN_CHANNEL | FS_SPAWN_GPU_FDS,
};

#define FS_MAX_RLIMITS 16
#define FS_MAX_GPU 8     /* GPU buffers in one spawn */
#define FS_CHANNEL_FD 3  /* the worker's end of its channel */
#define FS_MAX_ENTRY 192 /* "LIBNAME:SYMBOL" */
#define FS_MAX_PROFILE_NAME 32
#define FS_MAX_GROUPS 256 /* a client's supplementary groups (CRED) */

/* Where a spawn failed; reported in ERROR replies so a setup failure never looks like a crash. */
enum fs_spawn_step {
        FS_STEP_CLONE = 1,
        FS_STEP_PARENT = 2,
        FS_STEP_FDS = 3,
        FS_STEP_CHDIR = 4,
        FS_STEP_EXEC = 5,
        FS_STEP_RLIMIT = 6,
        FS_STEP_PGRP = 7,
        FS_STEP_SECCOMP = 8,
        FS_STEP_ENTRY = 9,
        FS_STEP_LANDLOCK = 10,
        FS_STEP_CREDS = 11, /* the switch to the client's uid, gids and no capabilities */
        FS_STEP_MAX_ = FS_STEP_CREDS,
};

struct fs_hdr {
        uint16_t version;
        uint16_t type;
        uint32_t id;
        uint32_t len;
};

/* Message writer: errors are sticky and reported once by fs_msg_finish(). */
struct fs_msgw {
        struct fs_buf b;
        int err;
};

void fs_msg_begin(struct fs_msgw *w, void *mem, size_t cap, uint16_t type, uint32_t id);
void fs_msg_put_u16(struct fs_msgw *w, uint16_t tag, uint16_t v);
void fs_msg_put_u32(struct fs_msgw *w, uint16_t tag, uint32_t v);
void fs_msg_put_u64(struct fs_msgw *w, uint16_t tag, uint64_t v);
void fs_msg_put_bytes(struct fs_msgw *w, uint16_t tag, const void *p, size_t n);
void fs_msg_put_str(struct fs_msgw *w, uint16_t tag, const char *s);
void fs_msg_put_stat(struct fs_msgw *w, const char *name, uint64_t v);
void fs_msg_put_rlimit(struct fs_msgw *w, uint32_t resource, uint64_t soft, uint64_t hard);
/* Patches the payload length; returns the datagram length or a negative errno. */
int fs_msg_finish(struct fs_msgw *w);

/* Checks the header of a whole datagram and returns a reader over its payload. */
int fs_proto_parse_hdr(const void *msg, size_t len, struct fs_hdr *ret, struct fs_buf *ret_payload);
/* Checks a header whose payload (len - FS_HDR_LEN bytes) lies elsewhere. */
int fs_proto_parse_hdr_only(const uint8_t hdr[FS_HDR_LEN], size_t len, struct fs_hdr *ret);
/* How many fds a message of this type may carry (SPAWN: as many as its FD fields). */
size_t fs_proto_max_fds(uint16_t type);
const char *fs_proto_type_name(uint16_t type);

struct fs_msg_hello {
        uint16_t version_min, version_max;
        const uint8_t *nonce;
        const uint8_t *pidns; /* FS_PIDNS_LEN bytes */
};

/* AUTH's BIND bits: what besides the uid and gid the client's MAC covers. */
enum fs_bind_flags {
        FS_BIND_PID = 1u << 0, /* the client's pid: both ends share the pid namespace */
        FS_BIND_KNOWN = FS_BIND_PID,
};

struct fs_msg_auth {
        uint16_t version;
        const uint8_t *nonce;
        const uint8_t *mac;
        uint32_t bind; /* FS_BIND_* */
};

struct fs_msg_error {
        uint32_t err;
        uint32_t step; /* 0 when absent */
        const char *reason;
        uint32_t pid; /* 0 when absent */
};

struct fs_gpu_buf {
        uint32_t device; /* index into the server's --cuda-devices */
        uint64_t size;
        uint8_t uuid[16]; /* the device's, where the message carries UUID fields */
};

/* SPAWNED: one GPU field per buffer fd attached after the pidfd (and the channel). */
struct fs_msg_spawned {
        uint64_t worker;
        uint32_t pid;
        size_t ngpu;
        struct fs_gpu_buf gpu[FS_MAX_GPU];
};

struct fs_msg_exited {
        uint64_t worker;
        uint32_t code;
        uint32_t status;
};

struct fs_rlimit {
        uint32_t resource; /* RLIMIT_* of Linux */
        uint64_t soft, hard;
};

struct fs_spawn {
        const char *path;   /* exec mode; NULL in fork mode */
        const char *entry;  /* fork mode: "LIBNAME:SYMBOL"; NULL in exec mode */
        const uint8_t *arg; /* fork mode: argument bytes */
        size_t arglen;
        const char *cwd;     /* NULL: the worker starts in / */
        const char *profile; /* NULL: server default */
        uint32_t flags;
        int32_t umask; /* -1: not given */
        size_t nrlimits;
        struct fs_rlimit rlimits[FS_MAX_RLIMITS];
        size_t argc, envc, nfds;
        const char **argv; /* NULL-terminated, in caller storage */
        const char **envp; /* NULL-terminated, in caller storage */
        uint32_t child_fd[FS_MAX_MSG_FDS];
        size_t ngpu;
        struct fs_gpu_buf gpu[FS_MAX_GPU]; /* sizes as asked; the server rounds them up */
        /* CRED, which only the front adds: the worker's uid, gid and groups */
        bool has_cred;
        uint32_t uid, gid;
        size_t ngroups;
        const uint8_t *groups; /* ngroups big-endian u32s */
};

/* Storage a spawn parse needs for its argv and envp pointer arrays. */
#define FS_SPAWN_PTRS (FS_MAX_ARGV + FS_MAX_ENVP + 4) /* + two entries the zygote may add */

/* Each returns 0, or -EBADMSG for a malformed payload (-EINVAL for a well-formed one that
 * asks for something invalid); *ret_why, when given, names the problem. */
int fs_proto_parse_hello(struct fs_buf *p, struct fs_msg_hello *ret, const char **ret_why);
int fs_proto_parse_auth(struct fs_buf *p, struct fs_msg_auth *ret, const char **ret_why);
int fs_proto_parse_auth_ok(struct fs_buf *p, const uint8_t **ret_mac, const char **ret_why);
int fs_proto_parse_error(struct fs_buf *p, struct fs_msg_error *ret, const char **ret_why);
int fs_proto_parse_spawned(struct fs_buf *p, struct fs_msg_spawned *ret, const char **ret_why);
int fs_proto_parse_exited(struct fs_buf *p, struct fs_msg_exited *ret, const char **ret_why);
int fs_proto_parse_empty(struct fs_buf *p, const char **ret_why);
/* nfds: the fds that came with it: one per FD field, plus one per GPU field when internal
 * (the front's SPAWN to its zygote, FS_I_SPAWN, whose GPU buffers are attached and whose
 * GPU fields each have a UUID field; only there may a CRED field be). */
int fs_proto_parse_spawn(struct fs_buf *p, size_t nfds, bool internal, const char **ptrs,
                         size_t nptrs, struct fs_spawn *ret, const char **ret_why);
/* Writes a request's fields as parsed, except its GPU buffers and CRED: the front's SPAWN to
 * its zygote is built afresh from what it checked, never the client's bytes passed on. */
void fs_msg_put_spawn(struct fs_msgw *w, const struct fs_spawn *sp);
void fs_msg_put_cred(struct fs_msgw *w, uint32_t uid, uint32_t gid, const uint32_t *groups,
                     size_t ngroups);

/*
 * The daemon's own channels (docs/PROCESSES.md, "Internal messages"): the front and its
 * zygotes, its GPU broker and its helpers' start-up. The same framing and fields, another
 * magic (no datagram of one protocol is ever taken for the other) and a type space of its
 * own, with a table of which side may send which type on which channel, and with how many
 * fds; fs_iproto_parse_hdr() refuses anything else.
 */
#define FS_IPROTO_MAGIC 0x464b5349u /* "FKSI" */
#define FS_IPROTO_VERSION 1

// clang-format off
#define FS_IMSG_TYPES(X)                                                         \
        /*  name        value channels             from    max fds */           \
        X(READY,        1,   FS_ICHAN_ANY,         HELPER, 0)                    \
        X(FAILED,       2,   FS_ICHAN_ANY,         HELPER, 1)                    \
        X(SPAWN,        3,   FS_ICHAN_ZYGOTE,      FRONT,  FS_MAX_MSG_FDS)       \
        X(SPAWNED,      4,   FS_ICHAN_ZYGOTE,      HELPER, 2)                    \
        X(SIGNAL,       5,   FS_ICHAN_ZYGOTE,      FRONT,  1)                    \
        X(POOL,         6,   FS_ICHAN_ZYGOTE,      HELPER, 1)                    \
        X(GPU_ALLOC,    7,   FS_ICHAN_BROKER,      FRONT,  0)                    \
        X(GPU_LEASE,    8,   FS_ICHAN_BROKER,      HELPER, 1)                    \
        X(GPU_FREE,     9,   FS_ICHAN_BROKER,      FRONT,  0)
// clang-format on

// clang-format off
enum fs_imsg_type {
#define FS_IMSG_ENUM_(name, value, chans, from, fds) FS_I_##name = value,
        FS_IMSG_TYPES(FS_IMSG_ENUM_)
#undef FS_IMSG_ENUM_
        FS_I_MAX_ = FS_I_GPU_FREE,
};
// clang-format on

/* The channels, as bits. */
enum fs_ichan {
        FS_ICHAN_ZYGOTE = 1u << 0,
        FS_ICHAN_BROKER = 1u << 1,
        FS_ICHAN_HELPER = 1u << 2, /* the template's and the closer's first message */
        FS_ICHAN_ANY = FS_ICHAN_ZYGOTE | FS_ICHAN_BROKER | FS_ICHAN_HELPER,
};

/* Who sends: the front, or the helper at the channel's other end. */
enum fs_iside {
        FS_ISIDE_FRONT = 1,
        FS_ISIDE_HELPER = 2,
};

void fs_imsg_begin(struct fs_msgw *w, void *mem, size_t cap, uint16_t type, uint32_t id);
/* FAILED {ERRNO = |err|, REASON}; STEP and PID may follow. */
void fs_imsg_begin_failed(struct fs_msgw *w, void *mem, size_t cap, uint32_t id, int err,
                          const char *fmt, ...) __attribute__((format(printf, 6, 7)));
void fs_imsg_begin_vfailed(struct fs_msgw *w, void *mem, size_t cap, uint32_t id, int err,
                           const char *fmt, va_list ap) __attribute__((format(printf, 6, 0)));
/* Continues a message whose first len bytes are in mem (a request that waited for its GPU
 * buffers gets their fields last). */
void fs_msg_resume(struct fs_msgw *w, void *mem, size_t len, size_t cap);
/* A finished message's id: a request to a zygote takes the channel's sequence number, known
 * once it is sent. */
void fs_msg_set_id(uint8_t *msg, size_t len, uint32_t id);
/* Checks an internal datagram: its magic, version and length, and that its type may travel
 * on chan (one FS_ICHAN_* bit) from that side with nfds fds. -EPROTO for another protocol's
 * datagram, -EBADMSG for anything else wrong. */
int fs_iproto_parse_hdr(const void *msg, size_t len, unsigned chan, enum fs_iside from, size_t nfds,
                        struct fs_hdr *ret, struct fs_buf *ret_payload);
const char *fs_iproto_type_name(uint16_t type);
/* SPAWNED from a zygote: the new worker's PID (the front gives it its WORKER id). */
int fs_iproto_parse_spawned(struct fs_buf *p, uint32_t *ret_pid, const char **ret_why);

/* SIGNAL (front → zygote): a signal for a worker, sent as uid; by pidfd (nfds 1) or, for a
 * child whose pidfd never reached the front, by PID (nfds 0). */
struct fs_msg_signal {
        uint32_t signo, uid, pid; /* pid 0: by the attached pidfd */
};
int fs_proto_parse_signal(struct fs_buf *p, size_t nfds, struct fs_msg_signal *ret,
                          const char **ret_why);
/* POOL (zygote → front): what became of one of the zygote's pre-forked idle children. */
enum fs_pool_event {
        FS_POOL_ADDED = 1, /* a new idle child, its pidfd attached: the front reaps it one day */
        FS_POOL_GONE = 2,  /* an idle child that ended or was let go, no fd: end and reap it */
};
struct fs_msg_pool {
        uint32_t pid, event; /* event: enum fs_pool_event */
};
/* nfds: how many fds came (ADDED may have lost its pidfd to a full fd table). */
int fs_proto_parse_pool(struct fs_buf *p, size_t nfds, struct fs_msg_pool *ret,
                        const char **ret_why);
/* GPU_LEASE from the broker. */
struct fs_msg_lease {
        uint64_t lease;
        struct fs_gpu_buf gpu; /* size rounded up; with the device's UUID */
};
int fs_proto_parse_lease(struct fs_buf *p, struct fs_msg_lease *ret, const char **ret_why);
/* GPU_ALLOC {GPU, ROOM, RESERVE} (room and reserve UINT64_MAX when absent: no quota, the
 * broker's default) and GPU_FREE {LEASE}. */
struct fs_msg_gpu_alloc {
        struct fs_gpu_buf gpu;
        uint64_t room, reserve;
};
int fs_proto_parse_gpu_alloc(struct fs_buf *p, struct fs_msg_gpu_alloc *ret, const char **ret_why);
int fs_proto_parse_gpu_free(struct fs_buf *p, uint64_t *ret_lease, const char **ret_why);
void fs_msg_put_gpu(struct fs_msgw *w, uint32_t device, uint64_t size);
/* Begins ERROR {ERRNO = |err|, REASON as printf formats it (at most 511 bytes)}; more fields
 * may follow before fs_msg_finish(). */
void fs_msg_begin_error(struct fs_msgw *w, void *mem, size_t cap, uint32_t id, int err,
                        const char *fmt, ...) __attribute__((format(printf, 6, 7)));
void fs_msg_begin_verror(struct fs_msgw *w, void *mem, size_t cap, uint32_t id, int err,
                         const char *fmt, va_list ap) __attribute__((format(printf, 6, 0)));
/* "LIBNAME:SYMBOL": a file-name-like library name and a C identifier. */
bool fs_proto_entry_ok(const char *e);
/* Calls fn for each STAT field; stops at the first negative return. */
int fs_proto_parse_status(struct fs_buf *p, int (*fn)(void *ud, const char *name, uint64_t v),
                          void *ud, const char **ret_why);
