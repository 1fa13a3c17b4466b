#include "forkserver/zygote/child.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/proto.h"
#include "forkserver/sandbox/landlock.h"

/* Moves fd above floor unless it already is; -1 on failure. */
static int lift_child(int fd, int floor)
{
        return fd > floor ? fd : fcntl(fd, F_DUPFD_CLOEXEC, floor + 1);
}

/* The client's uid, gid and groups, then no capability in any set (the bounding set was
 * emptied at start-up where the daemon could). Raw syscalls: glibc's set*id wrappers would
 * try to signal the zygote's other threads (it has none) and are not async-signal-safe. The
 * switch clears the parent-death signal, so it comes first. */
static int creds_child(const struct fsd_child_plan *p, struct fsd_child_error *e)
{
        struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3};
        struct __user_cap_data_struct none[2] = {{0, 0, 0}, {0, 0, 0}};

        e->step = FS_STEP_CREDS;
#ifdef SYS_setresuid32 /* where the plain calls take 16-bit ids */
        if (p->set_creds && (syscall(SYS_setgroups32, p->ngroups, p->groups) < 0 ||
                             syscall(SYS_setresgid32, p->gid, p->gid, p->gid) < 0 ||
                             syscall(SYS_setresuid32, p->uid, p->uid, p->uid) < 0))
                return -1;
#else
        if (p->set_creds && (syscall(SYS_setgroups, p->ngroups, p->groups) < 0 ||
                             syscall(SYS_setresgid, p->gid, p->gid, p->gid) < 0 ||
                             syscall(SYS_setresuid, p->uid, p->uid, p->uid) < 0))
                return -1;
#endif
        if (p->drop_caps && (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 ||
                             syscall(SYS_capset, &h, none) < 0))
                return -1;
        return 0;
}

/* Everything both modes do before the program runs. Returns 0, or -1 with *e filled.
 * In fork mode (close_now) unwanted fds are closed; in exec mode exec closes them. */
static int setup_child(const struct fsd_child_plan *p, bool close_now, int *errfd,
                       struct fsd_child_error *e)
{
        uint64_t keep[(FS_MAX_CHILD_FD + 64) / 64] = {0};
        int src[FS_MAX_MSG_FDS];
        int maxt = 2, devnull;
        unsigned flag = close_now ? 0 : CLOSE_RANGE_CLOEXEC;

        if (creds_child(p, e) < 0)
                return -1;
        if (!(p->req->flags & FS_SPAWN_DETACH)) {
                /* The worker dies with the front; the getppid() check closes the race where
                 * the front died before the prctl. */
                e->step = FS_STEP_PARENT;
                if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
                        return -1;
                if (getppid() != p->front) {
                        errno = ESRCH;
                        return -1;
                }
        } else if (p->pdeathsig_set) {
                /* a detached worker forked ahead outlives the front (a uid switch clears the
                 * signal only where the ids change) */
                e->step = FS_STEP_PARENT;
                if (prctl(PR_SET_PDEATHSIG, 0) < 0)
                        return -1;
        }

        /* A domain of our own, made by this call: no sibling, zygote or front shares it. It
         * judges paths when they are opened, so what is left to do below is not affected. */
        if (p->landlock_fd >= 0) {
                e->step = FS_STEP_LANDLOCK;
                if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
                    fsd_landlock_restrict_child(p->landlock_fd) < 0)
                        return -1;
        }

        e->step = FS_STEP_FDS;
        for (size_t i = 0; i < p->nfds; i++) {
                if ((int)p->targets[i] > maxt)
                        maxt = (int)p->targets[i];
                keep[p->targets[i] / 64] |= 1ull << (p->targets[i] % 64);
        }
        /* Lift every source above the highest target so that no dup3 clobbers another. */
        if ((*errfd = lift_child(p->errpipe, maxt)) < 0) {
                *errfd = p->errpipe;
                return -1;
        }
        if ((devnull = lift_child(p->devnull, maxt)) < 0)
                return -1;
        for (size_t i = 0; i < p->nfds; i++)
                if ((src[i] = lift_child(p->fds[i], maxt)) < 0)
                        return -1;
        for (size_t i = 0; i < p->nfds; i++)
                if (dup3(src[i], (int)p->targets[i], 0) < 0)
                        return -1;
        for (int fd = 0; fd <= 2; fd++)
                if (!(keep[0] & (1ull << fd)) && !(p->null_stdio & (1u << fd)) &&
                    dup3(devnull, fd, 0) < 0)
                        return -1;
        /* Everything not asked for stays behind, even an fd a library leaked without
         * CLOEXEC; the error pipe goes last, at the very end. */
        for (int fd = 3; fd <= maxt; fd++) {
                int end = fd;

                if (keep[fd / 64] & (1ull << (fd % 64)))
                        continue;
                while (end + 1 <= maxt && !(keep[(end + 1) / 64] & (1ull << ((end + 1) % 64))))
                        end++;
                if (close_range((unsigned)fd, (unsigned)end, flag) < 0)
                        return -1;
                fd = end;
        }
        if ((*errfd > maxt + 1 &&
             close_range((unsigned)maxt + 1, (unsigned)*errfd - 1, flag) < 0) ||
            close_range((unsigned)*errfd + 1, ~0u, flag) < 0)
                return -1;

        if (p->req->flags & FS_SPAWN_NEWPGRP) {
                e->step = FS_STEP_PGRP;
                if (setpgid(0, 0) < 0)
                        return -1;
        }
        if (p->umask >= 0)
                umask((mode_t)p->umask);

        e->step = FS_STEP_RLIMIT;
        {
                struct rlimit no_core = {0, 0};
                bool core_given = false;

                for (size_t i = 0; i < p->req->nrlimits; i++) {
                        struct rlimit rl = {p->req->rlimits[i].soft, p->req->rlimits[i].hard};

                        core_given |= p->req->rlimits[i].resource == RLIMIT_CORE;
                        if (setrlimit((__rlimit_resource_t)p->req->rlimits[i].resource, &rl) < 0)
                                return -1;
                }
                if (!core_given && setrlimit(RLIMIT_CORE, &no_core) < 0)
                        return -1;
        }

        if (p->req->cwd) {
                e->step = FS_STEP_CHDIR;
                if (chdir(p->req->cwd) < 0)
                        return -1;
        }

        /* Last: from here on the filters judge every call we make. */
        e->step = FS_STEP_SECCOMP;
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
                return -1;
        for (size_t i = 0; i < p->nfilters; i++)
                if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, p->filters[i]) < 0)
                        return -1;
        return 0;
}

static __attribute__((noreturn)) void fail_child(int errfd, struct fsd_child_error *e)
{
        e->err = errno;
        (void)!write(errfd, e, sizeof(*e));
        _exit(127);
}

int fsd_child_exec(void *arg)
{
        const struct fsd_child_plan *p = arg;
        struct fsd_child_error e = {0, 0};
        int errfd = p->errpipe;
        sigset_t none;

        if (setup_child(p, false, &errfd, &e) < 0)
                fail_child(errfd, &e);
        e.step = FS_STEP_EXEC;
        sigemptyset(&none);
        if (sigprocmask(SIG_SETMASK, &none, NULL) < 0)
                fail_child(errfd, &e);
        execve(p->path, p->argv, p->envp);
        fail_child(errfd, &e);
}

int fsd_child_entry(void *arg)
{
        const struct fsd_child_plan *p = arg;
        struct fsd_child_error e = {0, 0};
        int errfd = p->errpipe, fds[FS_MAX_MSG_FDS + 1];
        struct forkserver_worker w;
        sigset_t none;

        if (setup_child(p, true, &errfd, &e) < 0)
                fail_child(errfd, &e);
        e.step = FS_STEP_ENTRY;
        sigemptyset(&none);
        if (sigprocmask(SIG_SETMASK, &none, NULL) < 0)
                fail_child(errfd, &e);
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
        close(errfd); /* EOF: the zygote may go on */
        int r = p->entry(&w);

        /* The worker's output is flushed; the zygote's atexit handlers and destructors
         * (OpenSSL's cleanup, say) are the zygote's business, not every worker's. */
        fflush(NULL);
        _exit(r & 0xff);
}
