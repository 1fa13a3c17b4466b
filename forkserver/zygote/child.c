#include "forkserver/zygote/child.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/proto.h"

#ifndef __NR_landlock_restrict_self
#define __NR_landlock_restrict_self 446 /* Linux 5.13, on every architecture */
#endif

#if defined(__GLIBC__) && __has_include(<sys/single_threaded.h>)
#include <sys/single_threaded.h>
#define STREAMS_KNOWN 1
#endif

#if defined(__x86_64__)
/* long fsd_clone_raw(unsigned long flags, void *stack, int *pidfd, int (*fn)(void *), void *arg):
 * the clone system call (flags, stack, parent_tid: the pidfd), with fn and arg kept in
 * registers it preserves; the child, on its stack, calls fn(arg) and exits with its value. */
__asm__(".pushsection .text\n"
        ".globl fsd_clone_raw\n"
        ".hidden fsd_clone_raw\n"
        ".type fsd_clone_raw, @function\n"
        ".p2align 4\n"
        "fsd_clone_raw:\n"
        "        .cfi_startproc\n"
        "        push %r12\n"
        "        .cfi_adjust_cfa_offset 8\n"
        "        push %r13\n"
        "        .cfi_adjust_cfa_offset 8\n"
        "        mov %rcx, %r12\n"
        "        mov %r8, %r13\n"
        "        xor %r10d, %r10d\n" /* child_tid */
        "        xor %r8d, %r8d\n"   /* tls */
        "        mov $56, %eax\n"    /* SYS_clone */
        "        syscall\n"
        "        test %rax, %rax\n"
        "        jz 1f\n"
        "        pop %r13\n"
        "        .cfi_adjust_cfa_offset -8\n"
        "        pop %r12\n"
        "        .cfi_adjust_cfa_offset -8\n"
        "        ret\n"
        "1:      .cfi_undefined rip\n" /* the child: no frame above this one */
        "        xor %ebp, %ebp\n"
        "        mov %r13, %rdi\n"
        "        call *%r12\n"
        "        mov %eax, %edi\n"
        "        mov $231, %eax\n" /* SYS_exit_group */
        "        syscall\n"
        "        hlt\n"
        "        .cfi_endproc\n"
        ".size fsd_clone_raw, . - fsd_clone_raw\n"
        ".popsection\n");

long fsd_clone_raw(unsigned long flags, void *stack, int *pidfd, int (*fn)(void *), void *arg);

pid_t fsd_clone(int (*fn)(void *), void *stack_top, unsigned long flags, void *arg, int *pidfd)
{
        return (pid_t)fsd_clone_raw(flags, stack_top, pidfd, fn, arg);
}
#else
pid_t fsd_clone(int (*fn)(void *), void *stack_top, unsigned long flags, void *arg, int *pidfd)
{
        pid_t pid = clone(fn, stack_top, (int)flags, arg, pidfd);

        return pid < 0 ? -errno : pid;
}
#endif

/* glibc's list of open streams (exported, though in no header); NULL: not known. */
static FILE *const *stream_list;

void fsd_child_init(void)
{
#ifdef STREAMS_KNOWN
        stream_list = dlsym(RTLD_DEFAULT, "_IO_list_all");
#endif
}

/* Whether a stream may hold output: fflush(NULL) takes libc's stream lock and walks the list
 * on pages a worker has not touched yet, four page faults, for nothing when the entry wrote no
 * buffered output (as most workers that talk over their channel or fds do). With threads about,
 * or a stream in wide mode, we do not look. */
static bool output_pending(void)
{
#ifdef STREAMS_KNOWN
        if (!stream_list || !__libc_single_threaded)
                return true;
        for (const FILE *f = *stream_list; f; f = f->_chain)
                if (f->_mode > 0 || f->_IO_write_ptr > f->_IO_write_base)
                        return true;
        return false;
#else
        return true;
#endif
}

/* Moves fd above floor unless it already is: the fd, or -errno. */
static int lift_child(int fd, int floor)
{
        return fd > floor ? fd : (int)fsd_sys(SYS_fcntl, fd, F_DUPFD_CLOEXEC, floor + 1);
}

/* The client's uid, gid and groups, then no capability in any set (the bounding set was
 * emptied at start-up where the daemon could). glibc's set*id wrappers would try to signal the
 * zygote's other threads (it has none) and are not async-signal-safe. The switch clears the
 * parent-death signal, so it comes first. */
static long creds_child(const struct fsd_child_plan *p, struct fsd_child_error *e)
{
        struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3};
        struct __user_cap_data_struct none[2] = {{0, 0, 0}, {0, 0, 0}};
        long r;

        e->step = FS_STEP_CREDS;
#ifdef SYS_setresuid32 /* where the plain calls take 16-bit ids */
        if (p->set_creds && ((r = fsd_sys(SYS_setgroups32, p->ngroups, p->groups)) < 0 ||
                             (r = fsd_sys(SYS_setresgid32, p->gid, p->gid, p->gid)) < 0 ||
                             (r = fsd_sys(SYS_setresuid32, p->uid, p->uid, p->uid)) < 0))
                return r;
#else
        if (p->set_creds && ((r = fsd_sys(SYS_setgroups, p->ngroups, p->groups)) < 0 ||
                             (r = fsd_sys(SYS_setresgid, p->gid, p->gid, p->gid)) < 0 ||
                             (r = fsd_sys(SYS_setresuid, p->uid, p->uid, p->uid)) < 0))
                return r;
#endif
        if (p->drop_caps &&
            ((r = fsd_sys(SYS_prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)) < 0 ||
             (r = fsd_sys(SYS_capset, &h, none)) < 0))
                return r;
        return 0;
}

/* Everything both modes do before the program runs. Returns 0, or -errno with e->step set.
 * In fork mode (close_now) unwanted fds are closed; in exec mode exec closes them. */
static long setup_child(const struct fsd_child_plan *p, bool close_now, int *errfd,
                        struct fsd_child_error *e)
{
        uint64_t keep[(FS_MAX_CHILD_FD + 64) / 64] = {0};
        int src[FS_MAX_MSG_FDS];
        int maxt = 2, devnull;
        unsigned flag = close_now ? 0 : CLOSE_RANGE_CLOEXEC;
        long r;

        if ((r = creds_child(p, e)) < 0)
                return r;
        if (!(p->req->flags & FS_SPAWN_DETACH)) {
                /* The worker dies with the front; the getppid() check closes the race where
                 * the front died before the prctl. */
                e->step = FS_STEP_PARENT;
                if ((r = fsd_sys(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL)) < 0)
                        return r;
                if (fsd_sys(SYS_getppid) != p->front)
                        return -ESRCH;
        } else if (p->pdeathsig_set) {
                /* a detached worker forked ahead outlives the front (a uid switch clears the
                 * signal only where the ids change) */
                e->step = FS_STEP_PARENT;
                if ((r = fsd_sys(SYS_prctl, PR_SET_PDEATHSIG, 0)) < 0)
                        return r;
        }

        /* A domain of our own, made by this call: no sibling, zygote or front shares it. It
         * judges paths when they are opened, so what is left to do below is not affected. */
        if (p->landlock_fd >= 0) {
                e->step = FS_STEP_LANDLOCK;
                if ((r = fsd_sys(SYS_prctl, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) < 0 ||
                    (r = fsd_sys(__NR_landlock_restrict_self, p->landlock_fd, 0)) < 0)
                        return r;
        }

        e->step = FS_STEP_FDS;
        for (size_t i = 0; i < p->nfds; i++) {
                if ((int)p->targets[i] > maxt)
                        maxt = (int)p->targets[i];
                keep[p->targets[i] / 64] |= 1ull << (p->targets[i] % 64);
        }
        /* Lift every source above the highest target so that no dup3 clobbers another. */
        if ((r = lift_child(p->errpipe, maxt)) < 0)
                return r;
        *errfd = (int)r;
        if ((r = devnull = lift_child(p->devnull, maxt)) < 0)
                return r;
        for (size_t i = 0; i < p->nfds; i++)
                if ((r = src[i] = lift_child(p->fds[i], maxt)) < 0)
                        return r;
        for (size_t i = 0; i < p->nfds; i++)
                if ((r = fsd_sys(SYS_dup3, src[i], p->targets[i], 0)) < 0)
                        return r;
        for (int fd = 0; fd <= 2; fd++)
                if (!(keep[0] & (1ull << fd)) && !(p->null_stdio & (1u << fd)) &&
                    (r = fsd_sys(SYS_dup3, devnull, fd, 0)) < 0)
                        return r;
        /* Everything not asked for stays behind, even an fd a library leaked without
         * CLOEXEC; the error pipe goes last, at the very end. */
        for (int fd = 3; fd <= maxt; fd++) {
                int end = fd;

                if (keep[fd / 64] & (1ull << (fd % 64)))
                        continue;
                while (end + 1 <= maxt && !(keep[(end + 1) / 64] & (1ull << ((end + 1) % 64))))
                        end++;
                if ((r = fsd_sys(SYS_close_range, fd, end, flag)) < 0)
                        return r;
                fd = end;
        }
        if ((*errfd > maxt + 1 && (r = fsd_sys(SYS_close_range, maxt + 1, *errfd - 1, flag)) < 0) ||
            (r = fsd_sys(SYS_close_range, *errfd + 1, ~0u, flag)) < 0)
                return r;

        if (p->req->flags & FS_SPAWN_NEWPGRP) {
                e->step = FS_STEP_PGRP;
                if ((r = fsd_sys(SYS_setpgid, 0, 0)) < 0)
                        return r;
        }
        if (p->umask >= 0)
                (void)fsd_sys(SYS_umask, p->umask);

        e->step = FS_STEP_RLIMIT;
        {
                struct rlimit64 no_core = {0, 0};
                bool core_given = false;

                for (size_t i = 0; i < p->req->nrlimits; i++) {
                        struct rlimit64 rl = {p->req->rlimits[i].soft, p->req->rlimits[i].hard};

                        core_given |= p->req->rlimits[i].resource == RLIMIT_CORE;
                        if ((r = fsd_sys(SYS_prlimit64, 0, p->req->rlimits[i].resource, &rl,
                                         NULL)) < 0)
                                return r;
                }
                if (!core_given && (r = fsd_sys(SYS_prlimit64, 0, RLIMIT_CORE, &no_core, NULL)) < 0)
                        return r;
        }

        if (p->req->cwd) {
                e->step = FS_STEP_CHDIR;
                if ((r = fsd_sys(SYS_chdir, p->req->cwd)) < 0)
                        return r;
        }

        /* Last: from here on the filters judge every call we make. */
        e->step = FS_STEP_SECCOMP;
        if ((r = fsd_sys(SYS_prctl, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) < 0)
                return r;
        for (size_t i = 0; i < p->nfilters; i++)
                if ((r = fsd_sys(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, p->filters[i])) < 0)
                        return r;
        return 0;
}

void fsd_child_fail(int errfd, struct fsd_child_error *e, long r)
{
        e->err = (int32_t)-r;
        (void)fsd_sys(SYS_write, errfd, e, sizeof(*e));
        for (;;)
                (void)fsd_sys(SYS_exit_group, 127);
}

/* Every signal unblocked, as the zygote's are not. */
static long unblock_all(void)
{
        uint64_t none = 0; /* the kernel's sigset_t: 64 signals but on MIPS */

        return fsd_sys(SYS_rt_sigprocmask, SIG_SETMASK, &none, NULL, sizeof(none));
}

int fsd_child_exec(void *arg)
{
        const struct fsd_child_plan *p = arg;
        struct fsd_child_error e = {0, 0};
        int errfd = p->errpipe;
        long r;

        if ((r = setup_child(p, false, &errfd, &e)) < 0)
                fsd_child_fail(errfd, &e, r);
        e.step = FS_STEP_EXEC;
        if ((r = unblock_all()) < 0)
                fsd_child_fail(errfd, &e, r);
        r = fsd_sys(SYS_execve, p->path, p->argv, p->envp);
        fsd_child_fail(errfd, &e, r);
}

int fsd_child_entry(void *arg)
{
        const struct fsd_child_plan *p = arg;
        struct fsd_child_error e = {0, 0};
        int errfd = p->errpipe, fds[FS_MAX_MSG_FDS + 1];
        struct forkserver_worker w;
        long r;

        if ((r = setup_child(p, true, &errfd, &e)) < 0)
                fsd_child_fail(errfd, &e, r);
        e.step = FS_STEP_ENTRY;
        if ((r = unblock_all()) < 0)
                fsd_child_fail(errfd, &e, r);
        for (size_t i = 0; i < p->nfds; i++)
                fds[i] = (int)p->targets[i];
        w = (struct forkserver_worker){.arg = p->req->arg,
                                       .arglen = p->req->arglen,
                                       .channel_fd = p->channel ? FS_CHANNEL_FD : -1,
                                       .fds = fds,
                                       .nfds = p->nreq,
                                       .gpu = p->gpu,
                                       .ngpu = p->ngpu};
        environ = (char **)p->envp;
        (void)fsd_sys(SYS_close, errfd); /* EOF: the zygote may go on */
        int code = p->entry(&w);

        /* The worker's output is flushed; the zygote's atexit handlers and destructors
         * (OpenSSL's cleanup, say) are the zygote's business, not every worker's. */
        if (output_pending())
                fflush(NULL);
        for (;;)
                (void)fsd_sys(SYS_exit_group, code & 0xff);
}
