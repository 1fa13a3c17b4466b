#include "forkserver/zygote.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <sys/syscall.h>

#include "common/fdpass.h"
#include "common/proto.h"
#include "common/util.h"
#include "forkserver/child.h"

#define ZYGOTE_SOCK_FD 3
#define CHILD_STACK_SIZE (128 * 1024)

struct zygote {
        const struct fsd_sandbox *sb;
        const struct fsd_profile *sandboxed;
        int sock;
        int devnull;
        pid_t front;
        uint8_t *stack_top;
        uint8_t buf[FS_MAX_MSG];
        uint8_t out[4096];
        const char *ptrs[FS_SPAWN_PTRS];
};

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
        default:
                return "spawn";
        }
}

static int reply_error(struct zygote *z, uint32_t id, uint32_t step, int err, const char *what,
                       pid_t pid, int pidfd)
{
        char reason[512];
        struct fs_msgw w;
        int n;

        snprintf(reason, sizeof(reason), "%s%s%s: %s", step_name(step), what ? " " : "",
                 what ? what : "", strerror(err));
        fs_msg_begin(&w, z->out, sizeof(z->out), FS_MSG_ERROR, id);
        fs_msg_put_u32(&w, FS_F_ERRNO, (uint32_t)err);
        fs_msg_put_u32(&w, FS_F_STEP, step);
        fs_msg_put_str(&w, FS_F_REASON, reason);
        if (pid > 0)
                fs_msg_put_u32(&w, FS_F_PID, (uint32_t)pid);
        if ((n = fs_msg_finish(&w)) < 0)
                return n;
        return fs_fdpass_send(z->sock, z->out, (size_t)n, &pidfd, pidfd >= 0 ? 1 : 0, 0);
}

static int spawn_one(struct zygote *z, size_t len, const int *fds, size_t nfds)
{
        struct fsd_child_plan plan;
        struct fsd_child_error ce;
        struct fs_spawn sp;
        struct fs_hdr h;
        struct fs_buf p;
        struct fs_msgw w;
        int errpipe[2], pidfd = -1, r, n;
        pid_t pid;
        ssize_t got;

        /* The front validated this already; parse it again all the same, bounds-checked. */
        if ((r = fs_proto_parse_hdr(z->buf, len, &h, &p)) < 0 || h.type != FS_MSG_SPAWN ||
            (r = fs_proto_parse_spawn(&p, nfds, z->ptrs, FS_ARRAY_SIZE(z->ptrs), &sp, NULL)) < 0)
                return reply_error(z, h.id, FS_STEP_CLONE, EBADMSG, "request", 0, -1);

        const struct fsd_profile *prof = sp.profile ? fsd_sandbox_find(z->sb, sp.profile)
                                                    : z->sb->dflt;

        if (!prof)
                return reply_error(z, h.id, FS_STEP_SECCOMP, ENOENT, "profile", 0, -1);
        if (pipe2(errpipe, O_CLOEXEC) < 0)
                return reply_error(z, h.id, FS_STEP_CLONE, errno, NULL, 0, -1);
        plan = (struct fsd_child_plan){
                .path = sp.path,
                .argv = (char *const *)sp.argv,
                .envp = (char *const *)sp.envp,
                .cwd = sp.cwd,
                .fds = fds,
                .targets = sp.child_fd,
                .nfds = sp.nfds,
                .devnull = z->devnull,
                .errpipe = errpipe[1],
                .front = z->front,
                .detached = sp.flags & FS_SPAWN_DETACH,
                .newpgrp = sp.flags & FS_SPAWN_NEWPGRP,
                .umask = sp.umask >= 0 ? sp.umask : 022,
                .rlimits = sp.rlimits,
                .nrlimits = sp.nrlimits,
        };
        if (z->sandboxed) {
                /* Our own filter is inherited: nothing to install per worker. */
                if (prof != z->sandboxed) {
                        fs_close_many(errpipe, 2);
                        return reply_error(z, h.id, FS_STEP_SECCOMP, EINVAL, "profile", 0, -1);
                }
        } else {
                if (z->sb->min && z->sb->min != prof)
                        plan.filters[plan.nfilters++] = &z->sb->min->prog;
                if (prof->prog.len)
                        plan.filters[plan.nfilters++] = &prof->prog;
        }
        /* posix_spawn's route: the child borrows our memory and we sleep until it execs,
         * so the cost does not grow with our size. CLONE_PARENT makes it the front's child. */
        pid = clone(fsd_child_exec, z->stack_top,
                    CLONE_VM | CLONE_VFORK | CLONE_PARENT | CLONE_PIDFD, &plan, &pidfd);
        r = -errno;
        errpipe[1] = fs_close(errpipe[1]);
        if (pid < 0) {
                errpipe[0] = fs_close(errpipe[0]);
                return reply_error(z, h.id, FS_STEP_CLONE, -r, NULL, 0, -1);
        }
        do
                got = read(errpipe[0], &ce, sizeof(ce));
        while (got < 0 && errno == EINTR);
        errpipe[0] = fs_close(errpipe[0]);
        if (got == sizeof(ce)) {
                const char *what = ce.step == FS_STEP_EXEC ? sp.path
                                   : ce.step == FS_STEP_CHDIR ? sp.cwd
                                                              : NULL;

                r = reply_error(z, h.id, (uint32_t)ce.step, ce.err > 0 ? ce.err : EIO, what, pid,
                                pidfd);
                pidfd = fs_close(pidfd);
                return r;
        }
        fs_msg_begin(&w, z->out, sizeof(z->out), FS_MSG_SPAWNED, h.id);
        fs_msg_put_u64(&w, FS_F_WORKER, 0);
        fs_msg_put_u32(&w, FS_F_PID, (uint32_t)pid);
        if ((n = fs_msg_finish(&w)) < 0)
                r = n;
        else
                r = fs_fdpass_send(z->sock, z->out, (size_t)n, &pidfd, 1, 0);
        pidfd = fs_close(pidfd);
        return r;
}

static int zygote_setup(struct zygote *z, int sock)
{
        struct sigaction dfl = {.sa_handler = SIG_DFL};
        sigset_t all;
        uint8_t *stack;

        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != z->front)
                return -ESRCH;
        (void)prctl(PR_SET_NAME, z->sandboxed ? "forkserverd-zys" : "forkserverd-zyg");
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
        if ((z->devnull = open("/dev/null", O_RDWR | O_CLOEXEC)) < 0)
                return -errno;
        stack = mmap(NULL, CHILD_STACK_SIZE, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
        if (stack == MAP_FAILED)
                return -errno;
        (void)mprotect(stack, 4096, PROT_NONE); /* guard page */
        z->stack_top = stack + CHILD_STACK_SIZE;
        if (z->sandboxed) {
                /* Last: from here on this zygote and all its workers live under the filters. */
                if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
                        return -errno;
                if (z->sb->min && z->sb->min != z->sandboxed &&
                    syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &z->sb->min->prog) < 0)
                        return -errno;
                if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &z->sandboxed->prog) < 0)
                        return -errno;
        }
        return 0;
}

static __attribute__((noreturn)) void zygote_main(const struct fsd_sandbox *sb,
                                                  const struct fsd_profile *sandboxed, int sock,
                                                  pid_t front)
{
        static struct zygote z;
        int fds[FS_MAX_MSG_FDS];

        z.sb = sb;
        z.sandboxed = sandboxed;
        z.front = front;
        if (zygote_setup(&z, sock) < 0)
                _exit(1);
        for (;;) {
                size_t nfds;
                int n = fs_fdpass_recv(z.sock, z.buf, sizeof(z.buf), fds, FS_MAX_MSG_FDS, &nfds,
                                       0);

                if (n == 0)
                        _exit(0); /* the front closed its end: we are done */
                if (n < 0) {
                        if (n == -EBADMSG || n == -EMSGSIZE) {
                                (void)reply_error(&z, 0, FS_STEP_CLONE, -n, "request", 0, -1);
                                continue;
                        }
                        _exit(1);
                }
                if (spawn_one(&z, (size_t)n, fds, nfds) < 0 && errno == EPIPE)
                        _exit(0);
                fs_close_many(fds, nfds);
        }
}

int fsd_zygote_start(const struct fsd_sandbox *sb, const struct fsd_profile *sandboxed,
                     pid_t *ret_pid, int *ret_pidfd, int *ret_sock)
{
        pid_t front = getpid(), pid;
        int sv[2], pidfd;

        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
                return -errno;
        pid = fork();
        if (pid < 0) {
                int r = -errno;

                fs_close_many(sv, 2);
                return r;
        }
        if (pid == 0) {
                close(sv[0]);
                zygote_main(sb, sandboxed, sv[1], front);
        }
        close(sv[1]);
        pidfd = pidfd_open(pid, 0);
        if (pidfd < 0) {
                int r = -errno;

                kill(pid, SIGKILL);
                close(sv[0]);
                return r;
        }
        *ret_pid = pid;
        *ret_pidfd = pidfd;
        *ret_sock = sv[0];
        return 0;
}
