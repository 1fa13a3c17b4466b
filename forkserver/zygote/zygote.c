#include "forkserver/zygote/zygote.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#if __has_include(<sys/rseq.h>)
#include <sys/rseq.h>
#endif
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <ucontext.h>

#include "common/fdpass.h"
#include "common/proto.h"
#include "common/util.h"
#include "forkserver/sandbox/caps.h"
#include "forkserver/sandbox/landlock.h"
#include "forkserver/zygote/child.h"

#define ZYGOTE_SOCK_FD 3
/* A fork-mode worker runs its entry on this stack: a main thread's usual 8 MiB (only the pages
 * it touches cost anything), below a guard as wide as the kernel leaves below a main stack. */
#define CHILD_STACK_SIZE (8 << 20)
#define CHILD_STACK_GUARD (1 << 20)
#define LOOP_STACK_SIZE (256 * 1024)
#define OUT_SIZE 4096
#define ZYGOTE_UMASK 022 /* the workers' default: a worker asking for it needs no umask() */

struct preload {
        char name[128];
        void *handle;
};

/* Everything one spawn writes that its child reads, right above the child stack (which ends
 * where this begins). A clone() write-protects every private page of ours, and each page we
 * write afterwards costs a copy-on-write fault (and, on a machine with more than one CPU, a TLB
 * shootdown): keeping a spawn's writes in these few pages, and the rest in pages no child
 * gets (struct own), keeps that cost small. A fork-mode worker starts with its own copy of the
 * area, so what it reads stays put while we take the next request. */
struct spawn_area {
        int idle_sock; /* for idle_main: its end of the new child's socketpair */
        struct fsd_child_plan plan;
        struct fs_spawn sp;
        int fds[FS_MAX_MSG_FDS + 1];
        uint32_t targets[FS_MAX_MSG_FDS + 1];
        /* the request, then its argv and envp pointers right after its last byte */
        _Alignas(8) uint8_t data[FS_MAX_MSG + FS_SPAWN_PTRS * sizeof(char *) + 8];
        char gpu_env[FS_MAX_GPU * 80 + 32];
        gid_t groups[FS_MAX_GROUPS]; /* the client's, for the worker */
};

struct zygote {
        const struct fsd_sandbox *sb;
        const struct fsd_profile *sandboxed;
        struct preload preload[FSD_MAX_PRELOAD];
        size_t npreload;
        int sock;
        int devnull;
        unsigned null_stdio; /* which of our fds 0-2 are /dev/null (struct fsd_child_plan) */
        pid_t front;
        struct spawn_area *a; /* page-aligned; the child stack ends where it begins */
        struct {
                char name[128];
                void *fn;
        } entries[32]; /* dlsym() takes the loader's lock, a write: look each up once */
        unsigned nentries;
        struct own *own; /* what no child inherits; our loop's stack ends where it begins */
        /* [0]: the daemon's own denials alone (profiles without fs rules); [1 + i]: those and
         * profile i's rules */
        struct fsd_landlock ll[FSD_MAX_PROFILES + 1];
        bool holds_caps; /* any capability: each worker drops all */
        char name[16];   /* our process name, which workers have too */
};

/*
 * What only we use, in a mapping no child gets (MADV_WIPEONFORK: a child's copy is empty): our
 * messages, the state of the request being served, the pool's table, and the stack our loop
 * runs on (right below this). A clone write-protects every page a child shares with us, and the
 * first write to each afterwards is a page fault, a copy-on-write one while the child lives;
 * pages no child shares stay writable. So what we write for each request lands here, or in the
 * spawn area that the child needs anyway, and little elsewhere.
 */
struct own {
        uint8_t out[OUT_SIZE];
        int *req_fds;       /* the fds of the request being served ... */
        size_t nreq_fds;    /* ... until drop_request_fds */
        bool replied_error; /* this request's: our stack holds its text */
        struct pool {
                struct idle {
                        pid_t pid;
                        int pidfd; /* ours; the front has its own */
                        int sock;  /* our end of its socketpair */
                } kid[FSD_MAX_PREFORK];
                unsigned n, target;
                int64_t last_use_ms; /* the last fork-mode request */
        } pool;
};

/* Set by the front before it forks us (fsd_zygote_set_creds). */
static bool switch_uids, allow_root;

void fsd_zygote_set_creds(bool switch_uids_, bool allow_root_)
{
        switch_uids = switch_uids_;
        allow_root = allow_root_;
}

static const char *step_name(uint32_t step)
{
        switch (step) {
        case FS_STEP_CLONE:
                return "clone";
        case FS_STEP_PARENT:
                return "parent-death signal";
        case FS_STEP_FDS:
                return "fd set-up";
        case FS_STEP_CHDIR:
                return "chdir";
        case FS_STEP_EXEC:
                return "exec";
        case FS_STEP_RLIMIT:
                return "rlimit";
        case FS_STEP_PGRP:
                return "process group";
        case FS_STEP_SECCOMP:
                return "seccomp";
        case FS_STEP_ENTRY:
                return "entry";
        case FS_STEP_LANDLOCK:
                return "landlock";
        case FS_STEP_CREDS:
                return "switch to the client's credentials";
        default:
                return "spawn";
        }
}

/*
 * Closes our copies of the request's fds before we answer: the front holds its own until the
 * answer, so that ours is never the last reference (a close that can block: a socket with
 * SO_LINGER, forkserver/front/closer.h) and the last is the closer's.
 */
static void drop_request_fds(struct zygote *z)
{
        fs_close_many(z->own->req_fds, z->own->nreq_fds);
        z->own->nreq_fds = 0;
}

static int reply_error(struct zygote *z, uint32_t id, uint32_t step, int err, const char *what,
                       pid_t pid, int pidfd)
{
        struct fs_msgw w;
        int n;

        drop_request_fds(z);
        z->own->replied_error = true;
        fs_imsg_begin_failed(&w, z->own->out, OUT_SIZE, id, err, "%s%s%s: %s", step_name(step),
                             what ? " " : "", what ? what : "", strerror(err));
        fs_msg_put_u32(&w, FS_F_STEP, step);
        if (pid > 0)
                fs_msg_put_u32(&w, FS_F_PID, (uint32_t)pid);
        if ((n = fs_msg_finish(&w)) < 0)
                return n;
        return fs_fdpass_send(z->sock, z->own->out, (size_t)n, &pidfd, pidfd >= 0 ? 1 : 0, 0);
}

/* Finds SYMBOL of a preloaded LIBNAME for "LIBNAME:SYMBOL". */
static void *find_entry(struct zygote *z, const char *entry)
{
        const char *colon = strchr(entry, ':');
        size_t n = FS_ARRAY_SIZE(z->entries);
        void *fn = NULL;

        for (size_t i = 0; i < z->nentries && i < n; i++)
                if (strcmp(z->entries[i].name, entry) == 0)
                        return z->entries[i].fn;
        for (size_t i = 0; i < z->npreload && !fn; i++)
                if (strlen(z->preload[i].name) == (size_t)(colon - entry) &&
                    memcmp(z->preload[i].name, entry, (size_t)(colon - entry)) == 0)
                        fn = dlsym(z->preload[i].handle, colon + 1);
        if (fn && strlen(entry) < sizeof(z->entries[0].name)) {
                size_t slot = z->nentries++ % n;

                strcpy(z->entries[slot].name, entry);
                z->entries[slot].fn = fn;
        }
        return fn;
}

/* Drops NAME=... entries of envp (NULL-terminated) in place. */
static void env_drop(const char **envp, const char *name)
{
        size_t n = strlen(name), k = 0;

        for (size_t i = 0; envp[i]; i++)
                if (!(strncmp(envp[i], name, n) == 0 && envp[i][n] == '='))
                        envp[k++] = envp[i];
        envp[k] = NULL;
}

#define PROC_LIMITS "(out of processes: RLIMIT_NPROC, the pids cgroup or kernel.threads-max)"
#define NPROC_CLIENT "(the client's uid is at its RLIMIT_NPROC)"

static void plan_creds(struct zygote *z, const struct fs_spawn *sp, struct fsd_child_plan *plan)
{
        gid_t *groups = z->a->groups;

        plan->drop_caps = z->holds_caps;
        if (!sp->has_cred)
                return;
        for (size_t i = 0; i < sp->ngroups; i++)
                groups[i] = (gid_t)((uint32_t)sp->groups[4 * i] << 24 |
                                    (uint32_t)sp->groups[4 * i + 1] << 16 |
                                    (uint32_t)sp->groups[4 * i + 2] << 8 | sp->groups[4 * i + 3]);
        plan->set_creds = true;
        plan->uid = sp->uid;
        plan->gid = sp->gid;
        plan->groups = groups;
        plan->ngroups = sp->ngroups;
}

/* What a request asks for, worked out from its bytes in z->a: by us, and again by the idle
 * child that serves it, from its own copy. */
struct req {
        struct fs_hdr h;
        void *entry; /* fork mode */
        const struct fsd_profile *prof;
        size_t nfds; /* a->fds: the request's, its GPU buffers, the channel */
        struct forkserver_gpu_buf gpu[FS_MAX_GPU];
};

/* Parses the request (len bytes in z->a->data, nfds_in fds), fills a->fds, a->targets and the
 * environment. 0, or a positive errno with the step and what to say in *ret_step, *ret_what. */
static int read_request(struct zygote *z, size_t len, const int *fds_in, size_t nfds_in,
                        struct req *q, uint32_t *ret_step, const char **ret_what)
{
        struct spawn_area *a = z->a;
        struct fs_spawn *sp = &a->sp;
        uint32_t *targets = a->targets;
        struct fs_buf p;

        /* The front validated this already; parse it again all the same, bounds-checked. */
        const char **ptrs = (const char **)(a->data + ((len + 7) & ~(size_t)7));

        *q = (struct req){.nfds = nfds_in};
        *ret_what = NULL;
        if (fs_iproto_parse_hdr(a->data, len, FS_ICHAN_ZYGOTE, FS_ISIDE_FRONT, nfds_in, &q->h, &p) <
                0 ||
            q->h.type != FS_I_SPAWN ||
            fs_proto_parse_spawn(&p, nfds_in, true, ptrs, FS_SPAWN_PTRS, sp, NULL) < 0) {
                *ret_step = FS_STEP_CLONE;
                *ret_what = "request";
                return EBADMSG;
        }
        if (sp->entry && !(q->entry = find_entry(z, sp->entry))) {
                *ret_step = FS_STEP_ENTRY;
                *ret_what = sp->entry;
                return ENOENT;
        }
        /* the front's word on whom the worker runs as, and our own check of root */
        if (switch_uids != sp->has_cred || (sp->has_cred && sp->uid == 0 && !allow_root)) {
                *ret_step = FS_STEP_CREDS;
                *ret_what = "(uid plan)";
                return EPERM;
        }
        memcpy(a->fds, fds_in, nfds_in * sizeof(int));
        memcpy(targets, sp->child_fd, sp->nfds * sizeof(uint32_t));
        /* GPU buffers take the numbers just above every other fd of the worker */
        uint32_t base = (sp->flags & FS_SPAWN_CHANNEL) ? FS_CHANNEL_FD + 1 : 3;

        for (size_t i = 0; i < sp->nfds; i++)
                if (sp->child_fd[i] + 1 > base)
                        base = sp->child_fd[i] + 1;
        if (sp->ngpu && base + sp->ngpu - 1 > FS_MAX_CHILD_FD) {
                *ret_step = FS_STEP_FDS;
                *ret_what = "GPU buffers";
                return EMFILE;
        }
        for (size_t i = 0; i < sp->ngpu; i++) {
                targets[sp->nfds + i] = base + (uint32_t)i;
                q->gpu[i] = (struct forkserver_gpu_buf){
                    .fd = (int)(base + i), .device = sp->gpu[i].device, .size = sp->gpu[i].size};
                memcpy(q->gpu[i].uuid, sp->gpu[i].uuid, 16);
        }
        if (sp->ngpu && !sp->entry) { /* exec mode learns its buffers from the environment */
                size_t at = (size_t)snprintf(a->gpu_env, sizeof(a->gpu_env), "FORKSERVER_GPU_FDS=");

                for (size_t i = 0; i < sp->ngpu && at < sizeof(a->gpu_env); i++) {
                        char uuid[FS_GPU_UUID_STR];

                        fs_gpu_uuid_str(q->gpu[i].uuid, uuid);
                        at += (size_t)snprintf(a->gpu_env + at, sizeof(a->gpu_env) - at,
                                               "%s%d:%s:%llu", i ? "," : "", q->gpu[i].fd, uuid,
                                               (unsigned long long)q->gpu[i].size);
                }
                env_drop(sp->envp, "FORKSERVER_GPU_FDS");
                for (sp->envc = 0; sp->envp[sp->envc]; sp->envc++)
                        ;
                sp->envp[sp->envc++] = a->gpu_env;
                sp->envp[sp->envc] = NULL;
        }
        q->prof = sp->profile ? fsd_sandbox_find(z->sb, sp->profile) : z->sb->dflt;
        /* Our own filter is inherited: we serve only requests for it. */
        if (!q->prof || (z->sandboxed && q->prof != z->sandboxed)) {
                *ret_step = FS_STEP_SECCOMP;
                *ret_what = "profile";
                return q->prof ? EINVAL : ENOENT;
        }
        return 0;
}

/* The worker's end of its channel becomes its fd 3. */
static void add_channel(struct zygote *z, struct req *q, int chan)
{
        struct fs_spawn *sp = &z->a->sp;

        z->a->fds[q->nfds] = chan;
        z->a->targets[q->nfds++] = FS_CHANNEL_FD;
        if (!sp->entry) { /* exec mode learns its channel from the environment */
                env_drop(sp->envp, "FORKSERVER_CHANNEL_FD");
                for (sp->envc = 0; sp->envp[sp->envc]; sp->envc++)
                        ;
                sp->envp[sp->envc++] = "FORKSERVER_CHANNEL_FD=3";
                sp->envp[sp->envc] = NULL;
        }
}

static void make_plan(struct zygote *z, const struct req *q, int errpipe, int llfd, bool channel)
{
        struct fsd_child_plan *plan = &z->a->plan;
        const struct fs_spawn *sp = &z->a->sp;

        *plan = (struct fsd_child_plan){
            .req = sp,
            .path = sp->path,
            .argv = (char *const *)sp->argv,
            .envp = (char *const *)sp->envp,
            .fds = z->a->fds,
            .targets = z->a->targets,
            .nfds = q->nfds,
            .devnull = z->devnull,
            .null_stdio = z->null_stdio,
            .errpipe = errpipe,
            .landlock_fd = llfd,
            .front = z->front,
            .umask = sp->umask >= 0 && sp->umask != ZYGOTE_UMASK ? sp->umask : -1,
            .entry = (int (*)(const struct forkserver_worker *))q->entry,
            .channel = channel,
            .nreq = sp->nfds,
            .ngpu = sp->ngpu,
        };
        memcpy(plan->gpu, q->gpu, sp->ngpu * sizeof(q->gpu[0]));
        plan_creds(z, sp, plan);
        if (!z->sandboxed) {
                if (z->sb->min && z->sb->min != q->prof)
                        plan->filters[plan->nfilters++] = &z->sb->min->prog;
                if (q->prof->prog.len)
                        plan->filters[plan->nfilters++] = &q->prof->prog;
        }
}

static pid_t pool_take(struct zygote *z, const struct req *q, size_t len, int errpipe, int llfd,
                       int *ret_pidfd);

static int spawn_one(struct zygote *z, size_t len, const int *fds_in, size_t nfds_in)
{
        struct spawn_area *a = z->a;
        struct fs_spawn *sp = &a->sp;
        int chan[2] = {-1, -1}, out_fds[2];
        struct fsd_child_error ce;
        const char *what;
        struct fs_msgw w;
        struct req q;
        int errpipe[2], pidfd = -1, r, n;
        uint32_t step;
        pid_t pid;
        ssize_t got;

        if ((r = read_request(z, len, fds_in, nfds_in, &q, &step, &what)) != 0)
                return reply_error(z, q.h.id, step, r, what, 0, -1);
        if (sp->flags & FS_SPAWN_CHANNEL) {
                if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, chan) < 0)
                        return reply_error(z, q.h.id, FS_STEP_FDS, errno, "channel", 0, -1);
                add_channel(z, &q, chan[1]);
        }

        int llfd = -1;

        if (z->sb->landlock_abi > 0) {
                size_t k = q.prof->nfs ? (size_t)(q.prof - z->sb->profiles) + 1 : 0;
                char why[512];

                if ((r = fsd_landlock_prepare(&z->ll[k], z->sb->landlock_abi, z->sb->deny,
                                              z->sb->ndeny, q.prof->fs, q.prof->nfs, why,
                                              sizeof(why))) < 0) {
                        fs_close_many(chan, 2);
                        return reply_error(z, q.h.id, FS_STEP_LANDLOCK, -r, why, 0, -1);
                }
                llfd = z->ll[k].fd;
        }
        if (pipe2(errpipe, O_CLOEXEC) < 0) {
                r = errno;
                fs_close_many(chan, 2);
                return reply_error(z, q.h.id, FS_STEP_CLONE, r, NULL, 0, -1);
        }
        make_plan(z, &q, errpipe[1], llfd, chan[1] >= 0);
        /* Fork mode: an idle child forked ahead takes it, when there is one. Otherwise
         * posix_spawn's route: the child borrows our memory and we sleep until it execs,
         * so the cost does not grow with our size. CLONE_PARENT makes it the front's child.
         * In fork mode a copy of us runs the entry; we wait only for its set-up. */
        pid = q.entry ? pool_take(z, &q, len, errpipe[1], llfd, &pidfd) : 0;
        if (pid == 0)
                pid = fsd_clone(q.entry ? fsd_child_entry : fsd_child_exec, a,
                                CLONE_PARENT | CLONE_PIDFD | (q.entry ? 0 : CLONE_VM | CLONE_VFORK),
                                &a->plan, &pidfd);
        r = pid;
        errpipe[1] = fs_close(errpipe[1]);
        chan[1] = fs_close(chan[1]);
        if (pid < 0) {
                errpipe[0] = fs_close(errpipe[0]);
                chan[0] = fs_close(chan[0]);
                return reply_error(z, q.h.id, FS_STEP_CLONE, -r,
                                   r == -EAGAIN   ? PROC_LIMITS
                                   : r == -EMFILE ? "(zygote out of file descriptors)"
                                                  : NULL,
                                   0, -1);
        }
        do
                got = read(errpipe[0], &ce, sizeof(ce));
        while (got < 0 && errno == EINTR);
        errpipe[0] = fs_close(errpipe[0]);
        if (got == sizeof(ce)) {
                /* a uid switch passes RLIMIT_NPROC on to exec, which then fails */
                what = ce.step == FS_STEP_EXEC && ce.err == EAGAIN && sp->has_cred ? NPROC_CLIENT
                       : ce.step == FS_STEP_EXEC                                   ? sp->path
                       : ce.step == FS_STEP_CHDIR                                  ? sp->cwd
                                                                                   : NULL;

                r = reply_error(z, q.h.id, (uint32_t)ce.step, ce.err > 0 ? ce.err : EIO, what, pid,
                                pidfd);
                pidfd = fs_close(pidfd);
                chan[0] = fs_close(chan[0]);
                return r;
        }
        fs_imsg_begin(&w, z->own->out, OUT_SIZE, FS_I_SPAWNED, q.h.id);
        fs_msg_put_u32(&w, FS_F_PID, (uint32_t)pid);
        out_fds[0] = pidfd;
        out_fds[1] = chan[0];
        drop_request_fds(z); /* the worker has its own */
        if ((n = fs_msg_finish(&w)) < 0)
                r = n;
        else
                r = fs_fdpass_send(z->sock, z->own->out, (size_t)n, out_fds, chan[0] >= 0 ? 2 : 1,
                                   0);
        pidfd = fs_close(pidfd);
        chan[0] = fs_close(chan[0]); /* the front passes it on and keeps none */
        return r;
}

/*
 * Pre-forked children (--prefork N; docs/PROCESSES.md, "Pre-forked workers").
 *
 * A fork-mode zygote keeps up to N idle children, forked while it had nothing to do, each the
 * front's child (CLONE_PARENT) like any worker and told to the front (POOL ADDED, with a
 * pidfd), so that the front reaps it whatever becomes of it. An idle child holds its end of
 * a socketpair, /dev/null and stdio, nothing else; it blocks in recvmsg with every signal
 * blocked, and dies with the front (parent-death signal) or at EOF (this zygote gone, or the
 * pool shrinking). A fork-mode request, once we checked it and made its channel, error pipe
 * and Landlock ruleset, goes to one idle child whole: the request's bytes and fds and those
 * three. The child parses it as we did, from its own copy, and runs fsd_child_entry: set-up,
 * error pipe, entry, as a child forked on the spot would. We answer as for a fork, with its
 * pid and our pidfd for it. Each child serves one request; it was forked after we had wiped
 * the previous ones (forget(), scrub_stack()), so it holds nothing of any other.
 *
 * The pool adapts below N: it starts empty, grows by one each time a fork-mode request finds it
 * empty, and halves (down to one) after POOL_SHRINK_MS without a fork-mode request. A zygote
 * that serves no fork mode (exec only, or a profile nobody asks for) keeps none.
 */
#define POOL_SHRINK_MS 10000
#define IDLE_SOCK_FD 3 /* in an idle child: its socket ... */
#define IDLE_NULL_FD 4 /* ... and /dev/null */
#define HANDOFF_MAX_FDS (FS_MAX_MSG_FDS + 3)

static unsigned prefork_max;

void fsd_zygote_set_prefork(unsigned n)
{
        prefork_max = n < FSD_MAX_PREFORK ? n : FSD_MAX_PREFORK;
}

/* Ahead of a request's bytes, to its idle child. Its fds: the error pipe, the Landlock
 * ruleset when ll, then the request's own nfds, then the channel when it asks for one. */
struct handoff {
        uint32_t len;
        uint32_t nfds;
        uint32_t ll;
};

/* Tells the front of a child, new (with our pidfd for it) or gone. */
static int pool_report(struct zygote *z, pid_t pid, uint32_t event, int pidfd)
{
        struct fs_msgw w;
        int n;

        fs_imsg_begin(&w, z->own->out, OUT_SIZE, FS_I_POOL, 0);
        fs_msg_put_u32(&w, FS_F_PID, (uint32_t)pid);
        fs_msg_put_u32(&w, FS_F_STATUS, event);
        if ((n = fs_msg_finish(&w)) < 0)
                return n;
        return fs_fdpass_send(z->sock, z->own->out, (size_t)n, &pidfd, event == FS_POOL_ADDED, 0);
}

/* Lets idle child i go: EOF ends it, and the front reaps it. */
static int pool_drop(struct zygote *z, unsigned i)
{
        struct pool *pl = &z->own->pool;
        pid_t pid = pl->kid[i].pid;

        fs_close(pl->kid[i].sock);
        fs_close(pl->kid[i].pidfd);
        pl->kid[i] = pl->kid[--pl->n];
        return pool_report(z, pid, FS_POOL_GONE, -1);
}

static __attribute__((noreturn)) void idle_fail(int errfd, uint32_t step, int err)
{
        struct fsd_child_error e = {(int32_t)step, 0};

        fsd_child_fail(errfd, &e, -err);
}

/*
 * Wipes what our stack may still hold of a request (a formatted ERROR with its paths) before
 * a child takes a copy of it. Only after an error: every page we write is a copy-on-write fault
 * while idle children share it, the cost the pool exists to avoid.
 */
static __attribute__((noinline)) void scrub_stack(void)
{
        char junk[16384];

        explicit_bzero(junk, sizeof(junk));
        __asm__ volatile("" : : "r"(junk) : "memory");
}

/* An idle child: a copy of us, on a copy of the child stack. It waits for one request. */
static int idle_main(void *arg)
{
        struct zygote *z = arg;
        struct spawn_area *a = z->a;
        union {
                struct cmsghdr align;
                char buf[CMSG_SPACE(sizeof(int) * HANDOFF_MAX_FDS)];
        } ctl;
        struct handoff ho;
        struct iovec iov[2] = {{&ho, sizeof(ho)}, {a->data, FS_MAX_MSG}};
        struct msghdr mh = {.msg_iov = iov,
                            .msg_iovlen = 2,
                            .msg_control = ctl.buf,
                            .msg_controllen = sizeof(ctl.buf)};
        int fds[HANDOFF_MAX_FDS], sock, null, errfd, llfd = -1, r;
        size_t nfds = 0, base;
        const char *what;
        uint32_t step;
        struct req q;
        ssize_t n;

        /* Nothing of ours but the socket and /dev/null: not the front's socket, not the
         * other children's, not the rulesets. */
        /* (raw calls, and no write to *z: each page of code or of z touched now is a fault;
         * our copies of z->sock, z->devnull and z->ll name fds closed here, and z->own is empty
         * in a child: nothing below uses them) */
        if ((sock = (int)fsd_sys(SYS_fcntl, a->idle_sock, F_DUPFD_CLOEXEC, IDLE_NULL_FD + 1)) < 0 ||
            (null = (int)fsd_sys(SYS_fcntl, z->devnull, F_DUPFD_CLOEXEC, IDLE_NULL_FD + 1)) < 0 ||
            fsd_sys(SYS_dup3, sock, IDLE_SOCK_FD, O_CLOEXEC) < 0 ||
            fsd_sys(SYS_dup3, null, IDLE_NULL_FD, O_CLOEXEC) < 0 ||
            fsd_sys(SYS_close_range, IDLE_NULL_FD + 1, ~0u, 0) < 0)
                fsd_sys(SYS_exit_group, 127);
        /* dies with the front; signals stay blocked until fsd_child_entry resets them */
        if (fsd_sys(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL) < 0 || fsd_sys(SYS_getppid) != z->front)
                fsd_sys(SYS_exit_group, 0);
        (void)fsd_sys(SYS_prctl, PR_SET_NAME, "forkserverd-idl");
        do
                n = fsd_sys(SYS_recvmsg, IDLE_SOCK_FD, &mh, MSG_CMSG_CLOEXEC);
        while (n == -EINTR);
        if (n <= 0)
                _exit(0); /* let go, or the zygote is gone */
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
                size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);

                if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS ||
                    nfds + k > HANDOFF_MAX_FDS)
                        _exit(127);
                memcpy(fds + nfds, CMSG_DATA(c), k * sizeof(int));
                nfds += k;
        }
        if (nfds == 0)
                _exit(127);
        errfd = fds[0];
        base = 1 + (ho.ll ? 1 : 0);
        if ((mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || (size_t)n < sizeof(ho) ||
            (size_t)n - sizeof(ho) != ho.len || ho.nfds > FS_MAX_MSG_FDS || nfds < base + ho.nfds)
                idle_fail(errfd, FS_STEP_CLONE, EBADMSG);
        if (ho.ll)
                llfd = fds[1];
        if ((r = read_request(z, ho.len, fds + base, ho.nfds, &q, &step, &what)) != 0)
                idle_fail(errfd, step, r);
        if (nfds != base + ho.nfds + ((a->sp.flags & FS_SPAWN_CHANNEL) ? 1 : 0))
                idle_fail(errfd, FS_STEP_FDS, EBADMSG);
        if (a->sp.flags & FS_SPAWN_CHANNEL)
                add_channel(z, &q, fds[nfds - 1]);
        make_plan(z, &q, errfd, llfd, (a->sp.flags & FS_SPAWN_CHANNEL) != 0);
        a->plan.devnull = IDLE_NULL_FD;
        a->plan.pdeathsig_set = true;
        (void)fsd_sys(SYS_prctl, PR_SET_NAME, z->name); /* a worker, as if forked now */
        return fsd_child_entry(&a->plan);
}

/* Forks one idle child and tells the front. */
static int pool_add(struct zygote *z)
{
        struct pool *pl = &z->own->pool;
        int sv[2], pidfd = -1, r;
        pid_t pid;

        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
                return -errno;
        z->a->idle_sock = sv[1];
        pid = fsd_clone(idle_main, z->a, CLONE_PARENT | CLONE_PIDFD, z, &pidfd);
        r = pid;
        z->a->idle_sock = -1;
        fs_close(sv[1]);
        if (pid < 0) {
                fs_close(sv[0]);
                return r;
        }
        pl->kid[pl->n++] = (struct idle){.pid = pid, .pidfd = pidfd, .sock = sv[0]};
        return pool_report(z, pid, FS_POOL_ADDED, pidfd);
}

/* An idle child for this request, which it now has: its pid, and our pidfd for it in
 * *ret_pidfd; 0 when none could take it (we fork then). */
static pid_t pool_take(struct zygote *z, const struct req *q, size_t len, int errpipe, int llfd,
                       int *ret_pidfd)
{
        struct pool *pl = &z->own->pool;
        bool chan = z->a->sp.flags & FS_SPAWN_CHANNEL;
        struct handoff ho = {
            .len = (uint32_t)len, .nfds = (uint32_t)(q->nfds - chan), .ll = llfd >= 0};
        union {
                struct cmsghdr align;
                char buf[CMSG_SPACE(sizeof(int) * HANDOFF_MAX_FDS)];
        } ctl;
        struct iovec iov[2] = {{&ho, sizeof(ho)}, {z->a->data, len}};
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 2, .msg_control = ctl.buf};
        size_t nfds = 0;
        int *fds;

        if (!prefork_max)
                return 0;
        pl->last_use_ms = fs_now_ms();
        memset(&ctl, 0, sizeof(ctl));
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * (1 + (llfd >= 0) + q->nfds));
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);

        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * (1 + (llfd >= 0) + q->nfds));
        fds = (int *)CMSG_DATA(c);
        fds[nfds++] = errpipe;
        if (llfd >= 0)
                fds[nfds++] = llfd;
        memcpy(fds + nfds, z->a->fds, q->nfds * sizeof(int));
        while (pl->n > 0) {
                struct idle k = pl->kid[pl->n - 1];
                ssize_t n;

                do
                        n = sendmsg(k.sock, &mh, MSG_NOSIGNAL);
                while (n < 0 && errno == EINTR);
                if (n < 0) { /* it died: the next one */
                        if (pool_drop(z, pl->n - 1) == -EPIPE)
                                return 0;
                        continue;
                }
                fs_close(k.sock);
                pl->n--;
                *ret_pidfd = k.pidfd;
                return k.pid;
        }
        if (pl->target < prefork_max)
                pl->target++; /* it was empty: one more next time */
        return 0;
}

/*
 * Between requests: children that died are let go, the pool shrinks when fork mode has been
 * idle, and grows back to its target one fork at a time while no request waits (each fork
 * checks again). Returns once a request (or EOF) is there.
 */
static void pool_idle(struct zygote *z)
{
        struct pool *pl = &z->own->pool;

        for (;;) {
                struct pollfd pf[1 + FSD_MAX_PREFORK];
                int64_t now = fs_now_ms();
                bool grow = pl->n < pl->target;
                int timeout = -1;

                pf[0] = (struct pollfd){.fd = z->sock, .events = POLLIN | (grow ? POLLOUT : 0)};
                for (unsigned i = 0; i < pl->n; i++)
                        pf[1 + i] = (struct pollfd){.fd = pl->kid[i].pidfd, .events = POLLIN};
                if (!grow && pl->target > 1) {
                        int64_t due = pl->last_use_ms + POOL_SHRINK_MS;

                        timeout = due > now ? (int)(due - now) : 0;
                }
                if (poll(pf, 1 + pl->n, timeout) < 0) {
                        if (errno == EINTR)
                                continue;
                        return;
                }
                for (unsigned i = pl->n; i-- > 0;)
                        if (pf[1 + i].revents && pool_drop(z, i) == -EPIPE)
                                _exit(0);
                if (pf[0].revents & (POLLIN | POLLHUP | POLLERR))
                        return;
                now = fs_now_ms();
                if (!grow && pl->target > 1 && now >= pl->last_use_ms + POOL_SHRINK_MS) {
                        pl->target /= 2;
                        pl->last_use_ms = now;
                        while (pl->n > pl->target)
                                if (pool_drop(z, pl->n - 1) == -EPIPE)
                                        _exit(0);
                }
                if (grow && (pf[0].revents & POLLOUT)) {
                        int r = pool_add(z);

                        if (r == -EPIPE)
                                _exit(0);
                        if (r < 0) /* out of processes or fds: no pool for now */
                                pl->target = pl->n;
                }
        }
}

int fsd_preload_name(const char *path, char *buf, size_t size)
{
        const char *base = strrchr(path, '/');
        size_t n;

        base = base ? base + 1 : path;
        n = strlen(base);
        if (n > 3 && strcmp(base + n - 3, ".so") == 0)
                n -= 3;
        if (n == 0 || n >= size)
                return -EINVAL;
        memcpy(buf, base, n);
        buf[n] = '\0';
        return 0;
}

/* Loads the libraries; a failure is described in err. Runs before anything else is set up,
 * so constructors see a plain process. */
static int preload_all(struct zygote *z, const char *const *paths, size_t n, char *err,
                       size_t errlen)
{
        for (size_t i = 0; i < n; i++) {
                struct preload *p = &z->preload[z->npreload];

                if (fsd_preload_name(paths[i], p->name, sizeof(p->name)) < 0) {
                        snprintf(err, errlen, "--preload %s: bad library name", paths[i]);
                        return -EINVAL;
                }
                if (!(p->handle = dlopen(paths[i], RTLD_NOW | RTLD_LOCAL))) {
                        const char *e = dlerror();

                        snprintf(err, errlen, "--preload %s: %s", paths[i], e ? e : "cannot load");
                        return -ENOENT;
                }
                /* A library may ask to be set up here, once, before any worker. */
                int (*init)(char *, size_t);

                *(void **)&init = dlsym(p->handle, "forkserver_preload_init");
                if (init) {
                        char why[384] = "";

                        if (init(why, sizeof(why)) != 0) {
                                snprintf(err, errlen, "--preload %s: %s", paths[i],
                                         why[0] ? why : "forkserver_preload_init failed");
                                return -EINVAL;
                        }
                }
                /* fork() copies only the calling thread: a library thread would be missing,
                 * or hold a lock forever, in every worker. */
                if (fs_count_dir("/proc/self/task") != 1) {
                        snprintf(err, errlen,
                                 "--preload %s: the library started a thread; "
                                 "fork-mode workers need a single-threaded zygote",
                                 paths[i]);
                        return -EBUSY;
                }
                z->npreload++;
        }
        return 0;
}

struct sig_job {
        int pidfd; /* or, when -1, ... */
        pid_t pid; /* ... an unreaped child of the front's */
        uid_t uid;
        int signo;
};

/* The signaller, under CLONE_VM|CLONE_VFORK (raw syscalls only): it becomes the worker's uid,
 * which may signal the worker (neither the front nor we hold CAP_KILL), signals, exits. */
static int signal_child(void *arg)
{
        const struct sig_job *j = arg;
        long r;

#ifdef SYS_setresuid32
        r = syscall(SYS_setresuid32, j->uid, j->uid, j->uid);
#else
        r = syscall(SYS_setresuid, j->uid, j->uid, j->uid);
#endif
        if (r == 0)
                r = j->pidfd >= 0 ? syscall(SYS_pidfd_send_signal, j->pidfd, j->signo, NULL, 0)
                                  : syscall(SYS_kill, j->pid, j->signo);
        _exit(r == 0 ? 0 : 1);
}

/* SIGNAL from the front: no reply (the front's replies are SPAWN's, in order). */
static void signal_one(struct zygote *z, size_t len, const int *fds, size_t nfds)
{
        struct fs_msg_signal m;
        struct sig_job j;
        struct fs_hdr h;
        struct fs_buf p;
        pid_t pid;

        if (!switch_uids ||
            fs_iproto_parse_hdr(z->a->data, len, FS_ICHAN_ZYGOTE, FS_ISIDE_FRONT, nfds, &h, &p) <
                0 ||
            h.type != FS_I_SIGNAL || fs_proto_parse_signal(&p, nfds, &m, NULL) < 0 ||
            (m.uid == 0 && !allow_root))
                return;
        j = (struct sig_job){
            .pidfd = nfds ? fds[0] : -1, .pid = (pid_t)m.pid, .uid = m.uid, .signo = (int)m.signo};
        pid = fsd_clone(signal_child, z->a, CLONE_VM | CLONE_VFORK | SIGCHLD, &j, NULL);
        if (pid > 0)
                while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
                        ;
}

/*
 * glibc registers each thread's restartable-sequences area (rseq) with the kernel, which then
 * writes that area, in the thread's TLS page, whenever the thread was scheduled. After a clone
 * that page is shared with the child, so the writes were two copy-on-write faults a spawn, ours
 * and the child's. Nothing here uses rseq: we unregister it, and fork-mode workers have none,
 * nor do threads they start (glibc registers a new thread's only where its creator has one);
 * sched_getcpu() falls back to the vDSO, and rseq users (tcmalloc's per-CPU caches) to their
 * slower paths. Exec starts afresh.
 */
static void drop_rseq(void)
{
#if defined(RSEQ_SIG) && defined(__has_builtin)
#if __has_builtin(__builtin_thread_pointer)
        if (__rseq_size > 0) {
                void *area = (char *)__builtin_thread_pointer() + __rseq_offset;

                /* the length must be the one registered: 32 bytes, or __rseq_size rounded up to
                 * 32 where the kernel's features outgrow that (a failure only loses the saving) */
                if (syscall(SYS_rseq, area, 32, RSEQ_FLAG_UNREGISTER, RSEQ_SIG) < 0 &&
                    __rseq_size > 32)
                        (void)syscall(SYS_rseq, area, (__rseq_size + 31) & ~31u,
                                      RSEQ_FLAG_UNREGISTER, RSEQ_SIG);
        }
#endif
#endif
}

/* [guard][len bytes] of private memory, the guard PROT_NONE, advice given to the whole (only a
 * saving where it fails): the bytes after the guard, or NULL with errno. */
static uint8_t *map_guarded(size_t guard, size_t len, int flags, int advice)
{
        uint8_t *m = mmap(NULL, guard + len, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK | flags, -1, 0);

        if (m == MAP_FAILED)
                return NULL;
        if (mprotect(m, guard, PROT_NONE) < 0) {
                int e = errno;

                munmap(m, guard + len);
                errno = e;
                return NULL;
        }
        (void)madvise(m, guard + len, advice);
        return m + guard;
}

static int zygote_setup(struct zygote *z, int sock)
{
        struct sigaction dfl = {.sa_handler = SIG_DFL};
        uint64_t eff, prm;
        sigset_t all;
        uint8_t *mem;

        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != z->front)
                return -ESRCH;
        snprintf(z->name, sizeof(z->name), "forkserverd-%s", z->sandboxed ? "zys" : "zyg");
        (void)prctl(PR_SET_NAME, z->name);
        /* the front left us CAP_SETUID and CAP_SETGID when workers run as their clients,
         * nothing otherwise; whatever we hold, each worker drops */
        if (fsd_caps_get(&eff, &prm, NULL) < 0 ||
            (switch_uids && (eff & FSD_CAPS_SWITCH) != FSD_CAPS_SWITCH))
                return -EPERM;
        z->holds_caps = prm != 0;
        /* Nothing of the front's stays here: not the key fd, not the ready fd. */
        if (sock != ZYGOTE_SOCK_FD) {
                if (dup3(sock, ZYGOTE_SOCK_FD, O_CLOEXEC) < 0)
                        return -errno;
                if (sock < ZYGOTE_SOCK_FD)
                        close(sock);
        }
        if (close_range(ZYGOTE_SOCK_FD + 1, ~0u, 0) < 0)
                return -errno;
        z->sock = ZYGOTE_SOCK_FD;

        /* Workers start from default dispositions; the mask stays full here and is cleared
         * by each child just before exec. */
        sigfillset(&all);
        sigprocmask(SIG_SETMASK, &all, NULL);
        for (int sig = 1; sig < NSIG; sig++)
                if (sig != SIGKILL && sig != SIGSTOP)
                        (void)sigaction(sig, &dfl, NULL);
        if (chdir("/") < 0)
                return -errno;
        umask(ZYGOTE_UMASK);
        if ((z->devnull = open("/dev/null", O_RDWR | O_CLOEXEC)) < 0)
                return -errno;
        for (size_t i = 0; i < FS_ARRAY_SIZE(z->ll); i++)
                z->ll[i] = (struct fsd_landlock){.fd = -1};
        /* [guard][child stack][struct spawn_area]; small pages: a huge one would be zeroed
         * whole, and copied whole at a child's write */
        if (!(mem = map_guarded(CHILD_STACK_GUARD, CHILD_STACK_SIZE + sizeof(struct spawn_area),
                                MAP_NORESERVE, MADV_NOHUGEPAGE)))
                return -errno;
        z->a = (struct spawn_area *)(mem + CHILD_STACK_SIZE);
        /* [guard page][our loop's stack][struct own], none of it inherited (before 4.14,
         * children get copies, which they do not use) */
        if (!(mem = map_guarded(4096, LOOP_STACK_SIZE + sizeof(struct own), 0, MADV_WIPEONFORK)))
                return -errno;
        z->own = (struct own *)(mem + LOOP_STACK_SIZE);
        drop_rseq();
        fsd_child_init();
        return 0;
}

/* Our stdin and stdout become /dev/null, the workers' default, once the preloaded libraries
 * have had their say: a worker then has them without a dup3. Our stderr stays the daemon's,
 * for whatever a sanitizer may have to say. */
static int zygote_stdio(struct zygote *z)
{
        fflush(stdout);
        for (int fd = 0; fd <= 1; fd++) {
                if (dup3(z->devnull, fd, 0) < 0)
                        return -errno;
                z->null_stdio |= 1u << fd;
        }
        return 0;
}

/* Last: from here on this zygote and all its workers live under the filters. */
static int zygote_sandbox(struct zygote *z)
{
        if (!z->sandboxed)
                return 0;
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
                return -errno;
        if (z->sb->min && z->sb->min != z->sandboxed &&
            syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &z->sb->min->prog) < 0)
                return -errno;
        if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &z->sandboxed->prog) < 0)
                return -errno;
        return 0;
}

/* Wipes what a request left here: its bytes (argv, environment, entry bytes, paths) and what
 * was built from them. A fork-mode worker inherits our memory as it is when it is forked, so
 * it then carries its own request and nothing of any other. */
static void forget(struct zygote *z, size_t len)
{
        explicit_bzero(z->a->data, len);
        explicit_bzero(z->a->gpu_env, strnlen(z->a->gpu_env, sizeof(z->a->gpu_env)));
        explicit_bzero(z->a->groups, z->a->plan.ngroups * sizeof(gid_t)); /* plan_creds' */
        explicit_bzero(&z->a->plan, sizeof(z->a->plan));
        explicit_bzero(&z->a->sp, sizeof(z->a->sp));
}

/* The first message: READY, or FAILED with the reason start-up failed. */
static void report_start(struct zygote *z, int r, const char *err)
{
        uint8_t out[1024]; /* set-up may have failed before z->own was there */
        struct fs_msgw w;
        int n;

        if (r < 0)
                fs_imsg_begin_failed(&w, out, sizeof(out), 0, r, "%s", err);
        else
                fs_imsg_begin(&w, out, sizeof(out), FS_I_READY, 0);
        if ((n = fs_msg_finish(&w)) > 0)
                (void)fs_fdpass_send(z->sock, out, (size_t)n, NULL, 0, 0);
        if (r < 0)
                _exit(1);
}

/* Serves requests until the front closes its end. */
static __attribute__((noreturn)) void zygote_loop(struct zygote *z)
{
        int fds[FS_MAX_MSG_FDS];
        int r;

        for (;;) {
                size_t nfds;
                bool lost;

                if (prefork_max)
                        pool_idle(z); /* until a request is there */
                int n = fs_fdpass_recv_lossy(z->sock, z->a->data, FS_MAX_MSG, fds, FS_MAX_MSG_FDS,
                                             &nfds, &lost, 0);
                struct fs_hdr h;
                struct fs_buf p;

                if (n == 0)
                        _exit(0); /* the front closed its end: we are done */
                if (n > 0 &&
                    fs_iproto_parse_hdr(z->a->data, (size_t)n, FS_ICHAN_ZYGOTE, FS_ISIDE_FRONT,
                                        lost ? 0 : nfds, &h, &p) == 0 &&
                    h.type == FS_I_SIGNAL) {
                        signal_one(z, (size_t)n, fds, lost ? 0 : nfds);
                        fs_close_many(fds, lost ? 0 : nfds);
                        continue;
                }
                if (n > 0 && lost) {
                        /* the front waits for an answer to this sequence number */
                        (void)fs_iproto_parse_hdr(z->a->data, (size_t)n, FS_ICHAN_ZYGOTE,
                                                  FS_ISIDE_FRONT, 0, &h, &p);
                        forget(z, (size_t)n);
                        if (reply_error(z, h.id, FS_STEP_FDS, EMFILE,
                                        "(zygote out of file descriptors)", 0, -1) == -EPIPE)
                                _exit(0);
                        continue;
                }
                if (n < 0) {
                        if (n == -EBADMSG || n == -EMSGSIZE) {
                                forget(z, FS_MAX_MSG); /* however much of it arrived */
                                (void)reply_error(z, 0, FS_STEP_CLONE, -n, "request", 0, -1);
                                continue;
                        }
                        _exit(1);
                }
                z->own->req_fds = fds;
                z->own->nreq_fds = nfds;
                r = spawn_one(z, (size_t)n, fds, nfds);
                forget(z, (size_t)n);
                if (prefork_max && z->own->replied_error)
                        scrub_stack();
                z->own->replied_error = false;
                if (r < 0 && errno == EPIPE)
                        _exit(0);
                drop_request_fds(z);
        }
}

/* Sanitizers that track a thread's stack would lose it. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__) || defined(__SANITIZE_HWADDRESS__)
#define LOOP_ON_OWN_STACK 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) ||                         \
    __has_feature(memory_sanitizer) || __has_feature(hwaddress_sanitizer)
#define LOOP_ON_OWN_STACK 0
#endif
#endif
#ifndef LOOP_ON_OWN_STACK
#define LOOP_ON_OWN_STACK 1
#endif

static struct zygote *loop_zygote; /* makecontext passes ints only */

static void loop_start(void)
{
        zygote_loop(loop_zygote);
}

static __attribute__((noreturn)) void zygote_main(const struct fsd_sandbox *sb,
                                                  const struct fsd_profile *sandboxed,
                                                  const char *const *preload, size_t npreload,
                                                  int sock, pid_t front)
{
        static struct zygote z;
        char err[512] = "zygote set-up failed";
        int r;

        z.sb = sb;
        z.sandboxed = sandboxed;
        z.front = front;
        z.sock = sock;
        r = zygote_setup(&z, sock);
        if (r >= 0)
                r = preload_all(&z, preload, npreload, err, sizeof(err));
        if (r >= 0)
                r = zygote_stdio(&z);
        if (r >= 0)
                r = zygote_sandbox(&z);
        report_start(&z, r, err);
        /* The loop runs on the stack below z.own, which no child shares: the stack it left
         * holds only set-up, which children may share, and nothing writes it again. */
        if (LOOP_ON_OWN_STACK) {
                ucontext_t uc;

                if (getcontext(&uc) == 0) {
                        uc.uc_stack = (stack_t){.ss_sp = (uint8_t *)z.own - LOOP_STACK_SIZE,
                                                .ss_size = LOOP_STACK_SIZE};
                        uc.uc_link = NULL;
                        loop_zygote = &z;
                        makecontext(&uc, loop_start, 0);
                        setcontext(&uc);
                }
        }
        zygote_loop(&z);
}

void fsd_zygote_main(void *arg, int sock, pid_t front)
{
        const struct fsd_zygote_args *a = arg;

        zygote_main(a->sb, a->sandboxed, a->preload, a->npreload, sock, front);
}
