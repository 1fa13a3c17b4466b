#include "forkserver/zygote.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "common/fdpass.h"
#include "common/proto.h"
#include "common/util.h"
#include "forkserver/child.h"
#include "forkserver/helper.h"
#include "forkserver/landlock.h"
#include "forkserver/privs.h"

#define ZYGOTE_SOCK_FD 3
#define CHILD_STACK_SIZE (128 * 1024)
#define ZYGOTE_UMASK 022 /* the workers' default: a worker asking for it needs no umask() */

struct preload {
        char name[128];
        void *handle;
};

/* Everything one spawn writes, right above the child stack. A clone() write-protects every
 * private page of ours, and each page we write afterwards costs a copy-on-write fault (and, on
 * a machine with more than one CPU, a TLB shootdown): keeping a spawn's writes in these few
 * pages, and our replies in a page the workers never get (MADV_WIPEONFORK), keeps that cost
 * small. A fork-mode worker starts with its own copy of the area, so what it reads stays
 * put while we take the next request. */
struct spawn_area {
        uint8_t stack_end[64]; /* the child stack's top: glibc's clone() stores fn and arg here,
                                * in a page we write anyway */
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
        struct spawn_area *a; /* page-aligned; the child stack ends in a->stack_end */
        struct {
                char name[128];
                void *fn;
        } entries[32]; /* dlsym() takes the loader's lock, a write: look each up once */
        unsigned nentries;
        uint8_t *out;         /* OUT_SIZE bytes for our messages, not inherited */
        int *req_fds;         /* the fds of the request being served ... */
        size_t nreq_fds;      /* ... until drop_request_fds */
        /* [0]: the daemon's own denials alone (profiles without fs rules); [1 + i]: those and
         * profile i's rules */
        struct fsd_landlock ll[FSD_MAX_PROFILES + 1];
        bool holds_caps;      /* any capability: each worker drops all */
};

/* Set by the front before it forks us (fsd_zygote_set_creds). */
static bool switch_uids, allow_root;

void fsd_zygote_set_creds(bool switch_uids_, bool allow_root_)
{
        switch_uids = switch_uids_;
        allow_root = allow_root_;
}

#define OUT_SIZE 4096

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
 * SO_LINGER, forkserver/closer.h) and the last is the closer's.
 */
static void drop_request_fds(struct zygote *z)
{
        fs_close_many(z->req_fds, z->nreq_fds);
        z->nreq_fds = 0;
}

static int reply_error(struct zygote *z, uint32_t id, uint32_t step, int err, const char *what,
                       pid_t pid, int pidfd)
{
        struct fs_msgw w;
        int n;

        drop_request_fds(z);
        fs_msg_begin_error(&w, z->out, OUT_SIZE, id, err, "%s%s%s: %s", step_name(step),
                           what ? " " : "", what ? what : "", strerror(err));
        fs_msg_put_u32(&w, FS_F_STEP, step);
        if (pid > 0)
                fs_msg_put_u32(&w, FS_F_PID, (uint32_t)pid);
        if ((n = fs_msg_finish(&w)) < 0)
                return n;
        return fs_fdpass_send(z->sock, z->out, (size_t)n, &pidfd, pidfd >= 0 ? 1 : 0, 0);
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

static int spawn_one(struct zygote *z, size_t len, const int *fds_in, size_t nfds_in)
{
        struct spawn_area *a = z->a;
        struct fsd_child_plan *plan = &a->plan;
        struct fs_spawn *sp = &a->sp;
        int *fds = a->fds, chan[2] = {-1, -1}, out_fds[2];
        uint32_t *targets = a->targets;
        void *entry = NULL;
        size_t nfds = nfds_in;
        struct forkserver_gpu_buf gpu[FS_MAX_GPU];
        struct fsd_child_error ce;
        struct fs_hdr h;
        struct fs_buf p;
        struct fs_msgw w;
        int errpipe[2], pidfd = -1, r, n;
        pid_t pid;
        ssize_t got;

        /* The front validated this already; parse it again all the same, bounds-checked. */
        const char **ptrs = (const char **)(a->data + ((len + 7) & ~(size_t)7));

        if ((r = fs_proto_parse_hdr(a->data, len, &h, &p)) < 0 || h.type != FS_MSG_SPAWN ||
            (r = fs_proto_parse_spawn(&p, nfds, true, ptrs, FS_SPAWN_PTRS, sp, NULL)) < 0)
                return reply_error(z, h.id, FS_STEP_CLONE, EBADMSG, "request", 0, -1);
        if (sp->entry && !(entry = find_entry(z, sp->entry)))
                return reply_error(z, h.id, FS_STEP_ENTRY, ENOENT, sp->entry, 0, -1);
        /* the front's word on whom the worker runs as, and our own check of root */
        if (switch_uids != sp->has_cred || (sp->has_cred && sp->uid == 0 && !allow_root))
                return reply_error(z, h.id, FS_STEP_CREDS, EPERM, "(uid plan)", 0, -1);
        memcpy(fds, fds_in, nfds * sizeof(int));
        memcpy(targets, sp->child_fd, sp->nfds * sizeof(uint32_t));
        /* GPU buffers take the numbers just above every other fd of the worker */
        uint32_t base = (sp->flags & FS_SPAWN_CHANNEL) ? FS_CHANNEL_FD + 1 : 3;

        for (size_t i = 0; i < sp->nfds; i++)
                if (sp->child_fd[i] + 1 > base)
                        base = sp->child_fd[i] + 1;
        if (sp->ngpu && base + sp->ngpu - 1 > FS_MAX_CHILD_FD)
                return reply_error(z, h.id, FS_STEP_FDS, EMFILE, "GPU buffers", 0, -1);
        for (size_t i = 0; i < sp->ngpu; i++) {
                targets[sp->nfds + i] = base + (uint32_t)i;
                gpu[i] = (struct forkserver_gpu_buf){.fd = (int)(base + i),
                                                     .device = sp->gpu[i].device,
                                                     .size = sp->gpu[i].size};
                memcpy(gpu[i].uuid, sp->gpu[i].uuid, 16);
        }
        if (sp->ngpu && !sp->entry) { /* exec mode learns its buffers from the environment */
                size_t at = (size_t)snprintf(a->gpu_env, sizeof(a->gpu_env), "FORKSERVER_GPU_FDS=");

                for (size_t i = 0; i < sp->ngpu && at < sizeof(a->gpu_env); i++) {
                        char uuid[FS_GPU_UUID_STR];

                        fs_gpu_uuid_str(gpu[i].uuid, uuid);
                        at += (size_t)snprintf(a->gpu_env + at, sizeof(a->gpu_env) - at,
                                               "%s%d:%s:%llu", i ? "," : "", gpu[i].fd, uuid,
                                               (unsigned long long)gpu[i].size);
                }
                env_drop(sp->envp, "FORKSERVER_GPU_FDS");
                for (sp->envc = 0; sp->envp[sp->envc]; sp->envc++)
                        ;
                sp->envp[sp->envc++] = a->gpu_env;
                sp->envp[sp->envc] = NULL;
        }
        if (sp->flags & FS_SPAWN_CHANNEL) {
                if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, chan) < 0)
                        return reply_error(z, h.id, FS_STEP_FDS, errno, "channel", 0, -1);
                fds[nfds] = chan[1];
                targets[nfds++] = FS_CHANNEL_FD;
                if (!sp->entry) { /* exec mode learns its channel from the environment */
                        env_drop(sp->envp, "FORKSERVER_CHANNEL_FD");
                        for (sp->envc = 0; sp->envp[sp->envc]; sp->envc++)
                                ;
                        sp->envp[sp->envc++] = "FORKSERVER_CHANNEL_FD=3";
                        sp->envp[sp->envc] = NULL;
                }
        }

        const struct fsd_profile *prof = sp->profile ? fsd_sandbox_find(z->sb, sp->profile)
                                                     : z->sb->dflt;

        int llfd = -1;

        if (prof && z->sb->landlock_abi > 0) {
                size_t k = prof->nfs ? (size_t)(prof - z->sb->profiles) + 1 : 0;
                char why[512];

                if ((r = fsd_landlock_prepare(&z->ll[k], z->sb->landlock_abi, z->sb->deny,
                                              z->sb->ndeny, prof->fs, prof->nfs, why,
                                              sizeof(why))) < 0) {
                        fs_close_many(chan, 2);
                        return reply_error(z, h.id, FS_STEP_LANDLOCK, -r, why, 0, -1);
                }
                llfd = z->ll[k].fd;
        }
        if (!prof || pipe2(errpipe, O_CLOEXEC) < 0) {
                r = prof ? errno : ENOENT;
                fs_close_many(chan, 2);
                return reply_error(z, h.id, prof ? FS_STEP_CLONE : FS_STEP_SECCOMP, r,
                                   prof ? NULL : "profile", 0, -1);
        }
        *plan = (struct fsd_child_plan){
                .path = sp->path,
                .argv = (char *const *)sp->argv,
                .envp = (char *const *)sp->envp,
                .cwd = sp->cwd,
                .fds = fds,
                .targets = targets,
                .nfds = nfds,
                .devnull = z->devnull,
                .null_stdio = z->null_stdio,
                .errpipe = errpipe[1],
                .landlock_fd = llfd,
                .front = z->front,
                .detached = sp->flags & FS_SPAWN_DETACH,
                .newpgrp = sp->flags & FS_SPAWN_NEWPGRP,
                .umask = sp->umask >= 0 && sp->umask != ZYGOTE_UMASK ? sp->umask : -1,
                .rlimits = sp->rlimits,
                .nrlimits = sp->nrlimits,
                .entry = (int (*)(const struct forkserver_worker *))entry,
                .arg = sp->arg,
                .arglen = sp->arglen,
                .channel = chan[1] >= 0,
                .nreq = sp->nfds,
                .ngpu = sp->ngpu,
        };
        memcpy(plan->gpu, gpu, sp->ngpu * sizeof(gpu[0]));
        plan_creds(z, sp, plan);
        if (z->sandboxed) {
                /* Our own filter is inherited: nothing to install per worker. */
                if (prof != z->sandboxed) {
                        fs_close_many(errpipe, 2);
                        fs_close_many(chan, 2);
                        return reply_error(z, h.id, FS_STEP_SECCOMP, EINVAL, "profile", 0, -1);
                }
        } else {
                if (z->sb->min && z->sb->min != prof)
                        plan->filters[plan->nfilters++] = &z->sb->min->prog;
                if (prof->prog.len)
                        plan->filters[plan->nfilters++] = &prof->prog;
        }
        /* posix_spawn's route: the child borrows our memory and we sleep until it execs,
         * so the cost does not grow with our size. CLONE_PARENT makes it the front's child.
         * In fork mode a copy of us runs the entry; we wait only for its set-up. */
        pid = clone(entry ? fsd_child_entry : fsd_child_exec, a->stack_end + sizeof(a->stack_end),
                    CLONE_PARENT | CLONE_PIDFD | (entry ? 0 : CLONE_VM | CLONE_VFORK), plan,
                    &pidfd);
        r = -errno;
        errpipe[1] = fs_close(errpipe[1]);
        chan[1] = fs_close(chan[1]);
        if (pid < 0) {
                errpipe[0] = fs_close(errpipe[0]);
                chan[0] = fs_close(chan[0]);
                return reply_error(z, h.id, FS_STEP_CLONE, -r, r == -EAGAIN ? PROC_LIMITS
                                   : r == -EMFILE ? "(zygote out of file descriptors)" : NULL,
                                   0, -1);
        }
        do
                got = read(errpipe[0], &ce, sizeof(ce));
        while (got < 0 && errno == EINTR);
        errpipe[0] = fs_close(errpipe[0]);
        if (got == sizeof(ce)) {
                /* a uid switch passes RLIMIT_NPROC on to exec, which then fails */
                const char *what = ce.step == FS_STEP_EXEC && ce.err == EAGAIN && sp->has_cred
                                           ? NPROC_CLIENT
                                   : ce.step == FS_STEP_EXEC  ? sp->path
                                   : ce.step == FS_STEP_CHDIR ? sp->cwd
                                                              : NULL;

                r = reply_error(z, h.id, (uint32_t)ce.step, ce.err > 0 ? ce.err : EIO, what, pid,
                                pidfd);
                pidfd = fs_close(pidfd);
                chan[0] = fs_close(chan[0]);
                return r;
        }
        fs_msg_begin(&w, z->out, OUT_SIZE, FS_MSG_SPAWNED, h.id);
        fs_msg_put_u64(&w, FS_F_WORKER, 0);
        fs_msg_put_u32(&w, FS_F_PID, (uint32_t)pid);
        out_fds[0] = pidfd;
        out_fds[1] = chan[0];
        drop_request_fds(z); /* the worker has its own */
        if ((n = fs_msg_finish(&w)) < 0)
                r = n;
        else
                r = fs_fdpass_send(z->sock, z->out, (size_t)n, out_fds, chan[0] >= 0 ? 2 : 1, 0);
        pidfd = fs_close(pidfd);
        chan[0] = fs_close(chan[0]); /* the front passes it on and keeps none */
        return r;
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
                        snprintf(err, errlen, "--preload %s: the library started a thread; "
                                 "fork-mode workers need a single-threaded zygote", paths[i]);
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

        if (!switch_uids || fs_proto_parse_hdr(z->a->data, len, &h, &p) < 0 ||
            fs_proto_parse_signal(&p, nfds, &m, NULL) < 0 || (m.uid == 0 && !allow_root))
                return;
        j = (struct sig_job){.pidfd = nfds ? fds[0] : -1, .pid = (pid_t)m.pid, .uid = m.uid,
                             .signo = (int)m.signo};
        pid = clone(signal_child, z->a->stack_end + sizeof(z->a->stack_end),
                    CLONE_VM | CLONE_VFORK | SIGCHLD, &j);
        if (pid > 0)
                while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
                        ;
}

static int zygote_setup(struct zygote *z, int sock)
{
        struct sigaction dfl = {.sa_handler = SIG_DFL};
        uint64_t eff, prm;
        sigset_t all;
        uint8_t *stack;

        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != z->front)
                return -ESRCH;
        (void)prctl(PR_SET_NAME, z->sandboxed ? "forkserverd-zys" : "forkserverd-zyg");
        /* the front left us CAP_SETUID and CAP_SETGID when workers run as their clients,
         * nothing otherwise; whatever we hold, each worker drops */
        if (fsd_caps_get(&eff, &prm) < 0 ||
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
        /* [guard page][child stack][struct spawn_area] */
        stack = mmap(NULL, CHILD_STACK_SIZE + sizeof(struct spawn_area), PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
        if (stack == MAP_FAILED)
                return -errno;
        (void)mprotect(stack, 4096, PROT_NONE);
        z->a = (struct spawn_area *)(stack + CHILD_STACK_SIZE);
        z->out = mmap(NULL, OUT_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (z->out == MAP_FAILED)
                return -errno;
        (void)madvise(z->out, OUT_SIZE, MADV_WIPEONFORK); /* only a saving: before 4.14, none */
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
        explicit_bzero(&z->a->plan, sizeof(z->a->plan));
        explicit_bzero(&z->a->sp, sizeof(z->a->sp));
}

/* The first message: OK, or ERROR with the reason start-up failed. */
static void report_start(struct zygote *z, int r, const char *err)
{
        uint8_t out[1024]; /* set-up may have failed before z->out was there */
        struct fs_msgw w;
        int n;

        if (r < 0)
                fs_msg_begin_error(&w, out, sizeof(out), 0, r, "%s", err);
        else
                fs_msg_begin(&w, out, sizeof(out), FS_MSG_OK, 0);
        if ((n = fs_msg_finish(&w)) > 0)
                (void)fs_fdpass_send(z->sock, out, (size_t)n, NULL, 0, 0);
        if (r < 0)
                _exit(1);
}

static __attribute__((noreturn)) void zygote_main(const struct fsd_sandbox *sb,
                                                  const struct fsd_profile *sandboxed,
                                                  const char *const *preload, size_t npreload,
                                                  int sock, pid_t front)
{
        static struct zygote z;
        int fds[FS_MAX_MSG_FDS];
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
        for (;;) {
                size_t nfds;
                bool lost;
                int n = fs_fdpass_recv_lossy(z.sock, z.a->data, FS_MAX_MSG, fds, FS_MAX_MSG_FDS,
                                             &nfds, &lost, 0);
                struct fs_hdr h;

                if (n == 0)
                        _exit(0); /* the front closed its end: we are done */
                if (n > 0 && fs_proto_parse_hdr_only(z.a->data, (size_t)n, &h) == 0 &&
                    h.type == FS_MSG_SIGNAL) {
                        signal_one(&z, (size_t)n, fds, lost ? 0 : nfds);
                        fs_close_many(fds, lost ? 0 : nfds);
                        continue;
                }
                if (n > 0 && lost) {
                        /* the front waits for an answer to this sequence number */
                        h.id = 0;
                        (void)fs_proto_parse_hdr_only(z.a->data, (size_t)n, &h);
                        forget(&z, (size_t)n);
                        if (reply_error(&z, h.id, FS_STEP_FDS, EMFILE,
                                        "(zygote out of file descriptors)", 0, -1) == -EPIPE)
                                _exit(0);
                        continue;
                }
                if (n < 0) {
                        if (n == -EBADMSG || n == -EMSGSIZE) {
                                forget(&z, FS_MAX_MSG); /* however much of it arrived */
                                (void)reply_error(&z, 0, FS_STEP_CLONE, -n, "request", 0, -1);
                                continue;
                        }
                        _exit(1);
                }
                z.req_fds = fds;
                z.nreq_fds = nfds;
                r = spawn_one(&z, (size_t)n, fds, nfds);
                forget(&z, (size_t)n);
                if (r < 0 && errno == EPIPE)
                        _exit(0);
                drop_request_fds(&z);
        }
}

struct zygote_args {
        const struct fsd_sandbox *sb;
        const struct fsd_profile *sandboxed;
        const char *const *preload;
        size_t npreload;
};

static void zygote_entry(void *arg, int sock, pid_t front)
{
        const struct zygote_args *a = arg;

        zygote_main(a->sb, a->sandboxed, a->preload, a->npreload, sock, front);
}

int fsd_zygote_start(const struct fsd_sandbox *sb, const struct fsd_profile *sandboxed,
                     const char *const *preload, size_t npreload, pid_t *ret_pid, int *ret_pidfd,
                     int *ret_sock, char *err, size_t errlen)
{
        struct zygote_args a = {sb, sandboxed, preload, npreload};

        return fsd_helper_start("zygote", zygote_entry, &a, NULL, 0, NULL, ret_pid, ret_pidfd,
                                ret_sock, err, errlen);
}
