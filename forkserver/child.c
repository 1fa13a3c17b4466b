#include "forkserver/child.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/proto.h"

/* Moves fd above floor unless it already is; -1 on failure. */
static int lift_child(int fd, int floor)
{
        return fd > floor ? fd : fcntl(fd, F_DUPFD_CLOEXEC, floor + 1);
}

int fsd_child_exec(void *arg)
{
        const struct fsd_child_plan *p = arg;
        uint64_t keep[(FS_MAX_CHILD_FD + 64) / 64] = {0};
        int src[FS_MAX_MSG_FDS];
        struct fsd_child_error e = {0, 0};
        int maxt = 2, errfd = p->errpipe, devnull;
        sigset_t none;

        if (!p->detached) {
                /* The worker dies with the front; the getppid() check closes the race where
                 * the front died before the prctl. */
                if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0) {
                        e.step = FS_STEP_PARENT;
                        goto fail;
                }
                if (getppid() != p->front) {
                        e.step = FS_STEP_PARENT;
                        errno = ESRCH;
                        goto fail;
                }
        }

        e.step = FS_STEP_FDS;
        for (size_t i = 0; i < p->nfds; i++) {
                if ((int)p->targets[i] > maxt)
                        maxt = (int)p->targets[i];
                keep[p->targets[i] / 64] |= 1ull << (p->targets[i] % 64);
        }
        /* Lift every source above the highest target so that no dup3 clobbers another. */
        if ((errfd = lift_child(errfd, maxt)) < 0) {
                errfd = p->errpipe;
                goto fail;
        }
        if ((devnull = lift_child(p->devnull, maxt)) < 0)
                goto fail;
        for (size_t i = 0; i < p->nfds; i++)
                if ((src[i] = lift_child(p->fds[i], maxt)) < 0)
                        goto fail;
        for (size_t i = 0; i < p->nfds; i++)
                if (dup3(src[i], (int)p->targets[i], 0) < 0)
                        goto fail;
        for (int fd = 0; fd <= 2; fd++)
                if (!(keep[0] & (1ull << fd)) && dup3(devnull, fd, 0) < 0)
                        goto fail;
        /* Everything not asked for stays behind at exec, even an fd a library leaked without
         * CLOEXEC. */
        for (int fd = 3; fd <= maxt; fd++) {
                int end = fd;

                if (keep[fd / 64] & (1ull << (fd % 64)))
                        continue;
                while (end + 1 <= maxt && !(keep[(end + 1) / 64] & (1ull << ((end + 1) % 64))))
                        end++;
                if (close_range((unsigned)fd, (unsigned)end, CLOSE_RANGE_CLOEXEC) < 0)
                        goto fail;
                fd = end;
        }
        if (close_range((unsigned)maxt + 1, ~0u, CLOSE_RANGE_CLOEXEC) < 0)
                goto fail;

        if (p->newpgrp) {
                e.step = FS_STEP_PGRP;
                if (setpgid(0, 0) < 0)
                        goto fail;
        }
        umask((mode_t)p->umask);

        e.step = FS_STEP_RLIMIT;
        {
                struct rlimit no_core = {0, 0};
                bool core_given = false;

                for (size_t i = 0; i < p->nrlimits; i++) {
                        struct rlimit rl = {p->rlimits[i].soft, p->rlimits[i].hard};

                        core_given |= p->rlimits[i].resource == RLIMIT_CORE;
                        if (setrlimit((__rlimit_resource_t)p->rlimits[i].resource, &rl) < 0)
                                goto fail;
                }
                if (!core_given && setrlimit(RLIMIT_CORE, &no_core) < 0)
                        goto fail;
        }

        if (p->cwd) {
                e.step = FS_STEP_CHDIR;
                if (chdir(p->cwd) < 0)
                        goto fail;
        }

        /* Last before exec: from here on the filters judge every call we make. */
        e.step = FS_STEP_SECCOMP;
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
                goto fail;
        for (size_t i = 0; i < p->nfilters; i++)
                if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, p->filters[i]) < 0)
                        goto fail;

        e.step = FS_STEP_EXEC;
        sigemptyset(&none);
        if (sigprocmask(SIG_SETMASK, &none, NULL) < 0)
                goto fail;
        execve(p->path, p->argv, p->envp);
fail:
        e.err = errno;
        (void)!write(errfd, &e, sizeof(e));
        _exit(127);
}
