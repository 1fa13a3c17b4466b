/*
 * libforkserver: the C client of forkserverd.
 *
 * A connection authenticates both ways with the shared key, then spawns workers. Requests
 * may be pipelined (forkserver_spawn_submit / forkserver_spawn_collect). Each worker comes
 * with a pidfd; its exit status arrives as an event on the connection. Workers end when
 * their connection closes, unless spawned with FORKSERVER_SPAWN_DETACH.
 *
 * Every function returning int returns 0 (or a documented non-negative value) on success and
 * a negative errno on failure. forkserver_error() then describes the last failure of that
 * connection, with the daemon's reason when it gave one. A connection is not thread-safe;
 * use one per thread. No function prints, exits or installs signal handlers.
 *
 * ABI rules (libforkserver.so.0, symbol version FORKSERVER_0.1; see forkserver(3)):
 * - The library exports the forkserver_* functions declared here and nothing else
 *   (client/libforkserver.map). A function is never removed or changed incompatibly within
 *   a soname; new ones go into a new symbol version node.
 * - Structs the caller fills in (forkserver_options, forkserver_spawn_args) end in reserved
 *   members. New members take the place of reserved ones, so the struct's size and the
 *   offsets of existing members never change, and the zero value of every member, old or
 *   new, means "the default". So always start from a zeroed struct: FORKSERVER_OPTIONS_INIT,
 *   FORKSERVER_SPAWN_ARGS_INIT, "= {0}" or designated initializers; a reserved member that is
 *   not zero is refused with -EINVAL (it would mean something to a newer library).
 * - Element structs passed in arrays (forkserver_fd_map, forkserver_rlimit,
 *   forkserver_gpu_request, forkserver_gpu_buf) never change. Structs the library fills in or
 *   hands out (forkserver_worker, forkserver_gpu_map) may grow only at their end; never
 *   allocate a forkserver_worker yourself.
 * - FORKSERVER_VERSION_* say which header a program was compiled with; forkserver_version()
 *   says which library it runs with. Within one major version (0.x: one minor version) a
 *   newer library runs programs built against an older header.
 */
#ifndef FORKSERVER_H
#define FORKSERVER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FORKSERVER_EXPORT __attribute__((visibility("default")))

#define FORKSERVER_VERSION_MAJOR 0
#define FORKSERVER_VERSION_MINOR 1
#define FORKSERVER_VERSION_PATCH 0
#define FORKSERVER_VERSION "0.1.0" /* MAJOR.MINOR.PATCH; meson.build checks it is the project's */
/* MAJOR, MINOR, PATCH as one comparable number: #if FORKSERVER_VERSION_NUMBER >= 0x000100 */
#define FORKSERVER_VERSION_NUMBER                                                                  \
        ((FORKSERVER_VERSION_MAJOR << 16) | (FORKSERVER_VERSION_MINOR << 8) |                      \
         FORKSERVER_VERSION_PATCH)

/* The version of the library this program runs with ("0.1.0"; static storage). */
FORKSERVER_EXPORT const char *forkserver_version(void);

struct forkserver;
struct forkserver_proc;
struct forkserver_key;

/*
 * Keys. A key is 32 bytes; files hold 32 raw bytes or 64 hex digits and must be regular
 * files owned by the caller with no group/other permission bits.
 * Errors: -ENOENT, -ELOOP (symlink), -EINVAL (not a regular file), -EPERM (owner or mode),
 * -EBADMSG (contents), -EBADF (fd not open), -ETIMEDOUT (fd not closed by its writer within
 * 5 s). *ret_why (optional) gets a static description.
 * A key lives in a locked page that a forked child sees as zeros (MADV_WIPEONFORK): after
 * fork(), load the key again in the child.
 */
FORKSERVER_EXPORT int forkserver_key_load_file(const char *path, struct forkserver_key **ret,
                                               const char **ret_why);
/* Reads until EOF; does not close fd. */
FORKSERVER_EXPORT int forkserver_key_load_fd(int fd, struct forkserver_key **ret,
                                             const char **ret_why);
FORKSERVER_EXPORT void forkserver_key_free(struct forkserver_key *key);

/*
 * Where to connect and with which key. The key is, in this order: key; else read from key_fd;
 * else loaded from key_file; else from the default key file (see forkctl(1)).
 * key_fd: a file descriptor above 0, read until end of file and not closed; 0 or -1: none.
 * A zeroed struct is therefore "all defaults". (key_fd 0 once meant standard input, and -1
 * none; -1 still means none. To read a key from standard input, load it with
 * forkserver_key_load_fd(0, ...) and pass it as key.)
 */
struct forkserver_options {
        const char *socket_path;          /* NULL: the default (see forkctl(1)) */
        const struct forkserver_key *key; /* NULL: load from key_fd / key_file / default;
                                             used during forkserver_connect only */
        const char *key_file;             /* NULL: the default */
        int key_fd;                       /* > 0: read the key from it; 0 or -1: none */
        int timeout_ms;                   /* handshake timeout; 0: 5000 */
        uid_t server_uid;                 /* a uid besides ours and root's that the server
                                             may run as (forkctl --server-uid); 0: none
                                             named, root being always accepted */
        uint64_t reserved[7];             /* must be zero (room for new members) */
};

#ifdef __cplusplus
#define FORKSERVER_OPTIONS_INIT                                                                    \
        {                                                                                          \
        } /* all zero, without -Wmissing-field-initializers */
#else
#define FORKSERVER_OPTIONS_INIT                                                                    \
        {                                                                                          \
                .socket_path = NULL                                                                \
        }
#endif

/*
 * Connects and authenticates. Before connecting, the socket's path must be one nobody else
 * can swap: every directory from / down to the socket's own belongs to root, to us or to
 * server_uid, and is not writable by group or others unless sticky (-EPERM otherwise). After
 * connecting, the listening socket must belong to us, root (socket activation) or server_uid
 * (-EACCES otherwise). The handshake binds our uid, gid and (where we share the server's pid
 * namespace) pid, so a relay between us and the server fails.
 * Errors: -ENOENT/-ECONNREFUSED (no server), -EACCES (the server refused the key, or could not
 * prove it holds the key and sees us: an impostor or a relay; or a listener of an unexpected
 * uid), -EPERM (uid not allowed, or a socket path others can swap), -ETIMEDOUT, -EPROTO (not
 * a forkserverd, or another protocol version), key-loading errors as above.
 * On failure *ret is NULL and ret_why (optional) gets a description valid until the next call
 * of this function in the same thread.
 */
FORKSERVER_EXPORT int forkserver_connect(const struct forkserver_options *opts,
                                         struct forkserver **ret, const char **ret_why);
/* Closes the connection: its undetached workers are ended by the server. Frees all workers. */
FORKSERVER_EXPORT void forkserver_close(struct forkserver *fs);
/* The last failure's description; "" if none. Valid until the next call on fs. */
FORKSERVER_EXPORT const char *forkserver_error(const struct forkserver *fs);
/* The connection's socket, for poll(); readable when events are waiting. */
FORKSERVER_EXPORT int forkserver_fd(const struct forkserver *fs);

#define FORKSERVER_SPAWN_DETACH 1u  /* outlives its connection; no parent-death signal */
#define FORKSERVER_SPAWN_NEWPGRP 2u /* the worker leads a new process group */
#define FORKSERVER_SPAWN_CHANNEL                                                                   \
        4u /* a private channel: the worker's fd 3, and the client's                               \
              end from forkserver_proc_channel() */
#define FORKSERVER_SPAWN_GPU_FDS                                                                   \
        8u /* the client gets its own copy of the worker's GPU buffers                             \
              (forkserver_proc_gpu); they stay charged to the                                      \
              connection until it is closed and this process exited */

struct forkserver_rlimit {
        int resource;        /* RLIMIT_NOFILE, RLIMIT_AS, RLIMIT_CPU, ... */
        uint64_t soft, hard; /* RLIM_INFINITY for none */
};

struct forkserver_fd_map {
        int child_fd; /* number in the worker, 0..1023 */
        int fd;       /* the caller's fd; it stays open in the caller */
};

struct forkserver_spawn_args {
        const char *path;                    /* exec mode: absolute path of the program */
        const char *entry;                   /* fork mode instead: "LIBNAME:SYMBOL" of a library the
                                                server preloaded (--preload /x/LIBNAME.so) */
        const void *arg;                     /* fork mode: argument bytes for the entry */
        size_t arglen;                       /* fork mode: at most 60,000 */
        const char *const *argv;             /* exec mode: NULL-terminated, argv[0] required */
        const char *const *envp;             /* NULL-terminated, or NULL for an empty environment */
        const char *cwd;                     /* absolute; NULL: "/" */
        const struct forkserver_fd_map *fds; /* stdio 0-2 not given become /dev/null */
        size_t nfds;                         /* at most 64 */
        unsigned flags;                      /* FORKSERVER_SPAWN_* */
        const char *profile;                 /* seccomp profile; NULL: the server's default */
        const struct forkserver_rlimit *rlimits;  /* applied in the worker; RLIMIT_CORE is 0 */
        size_t nrlimits;                          /* unless given here; at most 16 */
        int umask;                                /* 0: the default 022; else umask | 01000 */
        const struct forkserver_gpu_request *gpu; /* GPU buffers to give the worker (the */
        size_t ngpu;                              /* server needs --cuda); at most 8 */
        uint64_t reserved[8];                     /* must be zero (room for new members) */
};

#ifdef __cplusplus
#define FORKSERVER_SPAWN_ARGS_INIT                                                                 \
        {                                                                                          \
        }
#else
#define FORKSERVER_SPAWN_ARGS_INIT                                                                 \
        {                                                                                          \
                .path = NULL                                                                       \
        }
#endif

/* A GPU buffer to allocate for a worker: on the server's device number `device` (its
 * --cuda-devices, in order), at least size bytes (rounded up to the allocation granularity). */
struct forkserver_gpu_request {
        unsigned device;
        uint64_t size;
};

/* A GPU buffer: an fd for device memory exported by the server's GPU broker (never a bearer
 * handle: only who holds the fd can map it). */
struct forkserver_gpu_buf {
        int fd;
        unsigned device;  /* the server's device number */
        uint64_t size;    /* the allocation's size (rounded up) */
        uint8_t uuid[16]; /* the device's UUID: how a process finds it */
};

#define FORKSERVER_UMASK(m) (01000 | (m)) /* e.g. .umask = FORKSERVER_UMASK(077) */

/*
 * Spawns a worker and waits for the reply. Errors: the daemon's errno for a refused request
 * (-EINVAL, -E2BIG, -EAGAIN worker limit, -ENOENT/-EACCES/-ENOEXEC from exec, -EINVAL unknown
 * profile, -EPERM profile not allowed, -EPERM rlimit above the hard limit, ...), with its
 * reason in forkserver_error(); -EPIPE/-ECONNRESET when the connection is gone.
 * A worker whose profile kills it for a denied call exits by SIGSYS.
 */
FORKSERVER_EXPORT int forkserver_spawn(struct forkserver *fs,
                                       const struct forkserver_spawn_args *args,
                                       struct forkserver_proc **ret);
/*
 * The set-up step in which the worker of the last failed forkserver_spawn/_collect on fs
 * failed (the errno is its return value), or 0 when no worker was created: the request was
 * refused, or the failure was not the worker's. E.g. -ENOENT with FORKSERVER_STEP_EXEC is a
 * program that does not exist, with FORKSERVER_STEP_CHDIR a cwd that does not. The numbers
 * are the STEP field of docs/PROTOCOL.md.
 */
#define FORKSERVER_STEP_CLONE 1   /* creating the process */
#define FORKSERVER_STEP_PARENT 2  /* the parent-death signal */
#define FORKSERVER_STEP_FDS 3     /* placing the fds */
#define FORKSERVER_STEP_CHDIR 4   /* cwd */
#define FORKSERVER_STEP_EXEC 5    /* execve of path */
#define FORKSERVER_STEP_RLIMIT 6  /* rlimits */
#define FORKSERVER_STEP_PGRP 7    /* FORKSERVER_SPAWN_NEWPGRP */
#define FORKSERVER_STEP_SECCOMP 8 /* the profile */
#define FORKSERVER_STEP_ENTRY 9   /* fork mode: finding the entry */
FORKSERVER_EXPORT int forkserver_error_step(const struct forkserver *fs);

/* Pipelining: sends the request and returns a ticket without waiting. */
FORKSERVER_EXPORT int forkserver_spawn_submit(struct forkserver *fs,
                                              const struct forkserver_spawn_args *args,
                                              uint32_t *ret_ticket);
/* Waits for the reply to a ticket (in any order). Errors as forkserver_spawn; -ENOENT for an
 * unknown ticket. */
FORKSERVER_EXPORT int forkserver_spawn_collect(struct forkserver *fs, uint32_t ticket,
                                               struct forkserver_proc **ret);

/*
 * Exit status as waitpid() encodes it: use WIFEXITED, WEXITSTATUS, WIFSIGNALED, WTERMSIG.
 * forkserver_wait blocks; forkserver_poll returns 1 and the status if the worker has exited,
 * 0 if not (without blocking). forkserver_wait_any returns the earliest-exited worker not yet
 * returned by it (or by wait/poll), waiting at most timeout_ms (-1: forever); -ETIMEDOUT if
 * none, -ECHILD if no worker is running or unreported.
 */
FORKSERVER_EXPORT int forkserver_wait(struct forkserver *fs, struct forkserver_proc *w,
                                      int *ret_status);
FORKSERVER_EXPORT int forkserver_poll(struct forkserver *fs, struct forkserver_proc *w,
                                      int *ret_status);
FORKSERVER_EXPORT int forkserver_wait_any(struct forkserver *fs, int timeout_ms,
                                          struct forkserver_proc **ret);
/* Sends a signal through the worker's pidfd. -ESRCH if it has exited. */
FORKSERVER_EXPORT int forkserver_kill(struct forkserver *fs, struct forkserver_proc *w, int sig);
/* The worker's GPU buffers (the same memory it got), *ret pointing into w: their fds stay
 * open until forkserver_proc_free. Returns how many: 0 unless it was spawned with
 * FORKSERVER_SPAWN_GPU_FDS. */
FORKSERVER_EXPORT size_t forkserver_proc_gpu(const struct forkserver_proc *w,
                                             const struct forkserver_gpu_buf **ret);

/* The client's end of a worker's channel (FORKSERVER_SPAWN_CHANNEL), or -1; closed by
 * forkserver_proc_free unless taken with forkserver_proc_take_channel. */
FORKSERVER_EXPORT int forkserver_proc_channel(const struct forkserver_proc *w);
FORKSERVER_EXPORT int forkserver_proc_take_channel(struct forkserver_proc *w);

/* Forgets a worker and closes its pidfd; a running worker keeps running. */
FORKSERVER_EXPORT void forkserver_proc_free(struct forkserver *fs, struct forkserver_proc *w);

FORKSERVER_EXPORT pid_t forkserver_proc_pid(const struct forkserver_proc *w);
FORKSERVER_EXPORT int forkserver_proc_pidfd(const struct forkserver_proc *w);
FORKSERVER_EXPORT uint64_t forkserver_proc_id(const struct forkserver_proc *w);

/* Round trip to the daemon. */
FORKSERVER_EXPORT int forkserver_ping(struct forkserver *fs);
/* Calls fn(ud, name, value) for each counter the daemon reports (docs/PROTOCOL.md). */
FORKSERVER_EXPORT int forkserver_status(struct forkserver *fs,
                                        int (*fn)(void *ud, const char *name, uint64_t value),
                                        void *ud);
/* Asks the daemon to stop as on SIGTERM; returns once it has acknowledged. */
FORKSERVER_EXPORT int forkserver_stop(struct forkserver *fs);

/*
 * Channels: messages of bytes plus fds between a client and its worker, framed like the
 * control protocol (docs/PROTOCOL.md). Usable on both sides. At most
 * FORKSERVER_CHANNEL_MAX_BYTES bytes and FORKSERVER_CHANNEL_MAX_FDS fds per message; received
 * fds are close-on-exec.
 *
 * forkserver_channel_send: 0, -EMSGSIZE/-EINVAL beyond the limits, -EPIPE when the peer is
 * gone, -EAGAIN on a non-blocking socket that is full.
 * forkserver_channel_recv: the payload length (0 is an empty message), -EPIPE at EOF (the
 * peer is gone), -EMSGSIZE for a message larger than cap, -EBADMSG for a malformed message or
 * more fds than maxfds; on every error, each fd that arrived is closed.
 */
#define FORKSERVER_CHANNEL_MAX_BYTES (65536 - 16)
#define FORKSERVER_CHANNEL_MAX_FDS 64

FORKSERVER_EXPORT int forkserver_channel_send(int fd, const void *buf, size_t len, const int *fds,
                                              size_t nfds);
FORKSERVER_EXPORT int forkserver_channel_recv(int fd, void *buf, size_t cap, int *fds,
                                              size_t maxfds, size_t *ret_nfds);
/* In an exec-mode worker: its channel (from $FORKSERVER_CHANNEL_FD), or -1. */
FORKSERVER_EXPORT int forkserver_channel_fd(void);

/*
 * Fork mode. forkserverd --preload /path/LIBNAME.so loads the library into the zygote before
 * it listens; a request with entry "LIBNAME:SYMBOL" forks the zygote, and the child calls
 *
 *     int SYMBOL(const struct forkserver_worker *w);
 *
 * and exits with its return value (low 8 bits) after flushing stdio; atexit handlers and
 * library destructors belong to the zygote and do not run in workers. No exec: the child
 * starts with everything the library set up at load time. It has the fds, environment, rlimits and
 * profile of its request, like an exec-mode worker. The entry runs on a stack of 8 MiB, as a
 * main thread usually has (RLIMIT_STACK does not change it). The worker, and any thread it
 * starts, has no rseq area registered (sched_getcpu() still works).
 *
 * A preloaded library may export int forkserver_preload_init(char *err, size_t errlen): each
 * zygote calls it once, right after loading the library and before any worker; a nonzero
 * return stops the server's start-up with the message left in err. It must not start a
 * thread (the zygote checks).
 */
struct forkserver_worker {
        const void *arg; /* the request's argument bytes (not NUL-terminated) */
        size_t arglen;
        int channel_fd; /* the worker's end of its channel, or -1 */
        const int *fds; /* the fd numbers the request placed in this process */
        size_t nfds;
        const struct forkserver_gpu_buf *gpu; /* its GPU buffers (see forkserver_gpu_map) */
        size_t ngpu;
};

typedef int forkserver_entry_fn(const struct forkserver_worker *w);

/*
 * GPU buffers in a worker (or in the client that shares them). An exec-mode worker finds
 * its buffers in FORKSERVER_GPU_FDS=FD:UUID:SIZE,... (forkserver_gpu_from_env); a fork-mode
 * worker in w->gpu. forkserver_gpu_map loads the CUDA driver in this process (libcuda.so.1,
 * or $FORKSERVER_LIBCUDA), initializes it, imports the buffer's fd on the device with that
 * UUID and maps it read-write; the fd stays open (close it when no one else needs it).
 * CUDA and fork() do not mix: map in the process that uses the memory, never before a fork.
 * The driver is loaded once per process (any thread); each call makes the buffer's device
 * current only for its own duration (the caller's current context is restored), and write
 * and fill return once the data is on the device. Mapping (and forkserver_gpu_from_env)
 * marks the fd close-on-exec. Without CUDA support in this build: -EOPNOTSUPP. Errors:
 * -ENODEV (no driver or device), -EINVAL (not a buffer of this driver), -ENOMEM, -EBUSY
 * (the device's compute mode), -EIO; forkserver_gpu_error() then names the driver call and
 * its CUresult ("cuMemMap: CUDA_ERROR_INVALID_VALUE").
 */
struct forkserver_gpu_map {
        uint64_t dptr; /* the device address (a CUdeviceptr), valid in this process */
        uint64_t size;
        int device_; /* internal */
};

#define FORKSERVER_GPU_UUID_STR 41 /* "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" + NUL */

FORKSERVER_EXPORT int forkserver_gpu_from_env(struct forkserver_gpu_buf *out, size_t cap,
                                              size_t *ret_n);
FORKSERVER_EXPORT void forkserver_gpu_uuid_str(const uint8_t uuid[16],
                                               char out[FORKSERVER_GPU_UUID_STR]);
FORKSERVER_EXPORT int forkserver_gpu_map(const struct forkserver_gpu_buf *b,
                                         struct forkserver_gpu_map *ret);
FORKSERVER_EXPORT int forkserver_gpu_unmap(struct forkserver_gpu_map *m);
/* Copies between host memory and the mapped buffer, or fills it (cuMemcpy, cuMemsetD8). */
FORKSERVER_EXPORT int forkserver_gpu_write(const struct forkserver_gpu_map *m, uint64_t offset,
                                           const void *src, size_t n);
FORKSERVER_EXPORT int forkserver_gpu_read(const struct forkserver_gpu_map *m, uint64_t offset,
                                          void *dst, size_t n);
FORKSERVER_EXPORT int forkserver_gpu_fill(const struct forkserver_gpu_map *m, uint8_t byte);
/* The last GPU failure of this thread, described; "" if none. */
FORKSERVER_EXPORT const char *forkserver_gpu_error(void);

#ifdef __cplusplus
}
#endif
#endif
