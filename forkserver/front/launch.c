#include "forkserver/front/launch.h"

#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/fdpass.h"
#include "common/proto.h"
#include "common/util.h"
#include "forkserver/broker/broker.h"
#include "forkserver/zygote/zygote.h"

#define START_TIMEOUT_MS 60000 /* library constructors, cuInit: slow, but not forever */

static int await_start(const char *what, int sock, uint8_t *buf, size_t cap, size_t *len, char *err,
                       size_t errlen)
{
        struct pollfd pf = {.fd = sock, .events = POLLIN};
        struct fs_msg_error e;
        struct fs_hdr h;
        struct fs_buf p;
        int fds[2], n, r;
        size_t nfds;

        if ((r = poll(&pf, 1, START_TIMEOUT_MS)) <= 0) {
                snprintf(err, errlen, "the %s did not start within %d s", what,
                         START_TIMEOUT_MS / 1000);
                return r < 0 ? -errno : -ETIMEDOUT;
        }
        n = fs_fdpass_recv(sock, buf, cap, fds, 2, &nfds, 0);
        if (n > 0)
                fs_close_many(fds, nfds);
        if (n <= 0 || fs_iproto_parse_hdr(buf, (size_t)n, FS_ICHAN_HELPER, FS_ISIDE_HELPER, nfds,
                                          &h, &p) < 0) {
                snprintf(err, errlen, "the %s failed to start", what);
                return n < 0 ? n : -EIO;
        }
        if (h.type == FS_I_READY) {
                *len = (size_t)n;
                return 0;
        }
        if (h.type == FS_I_FAILED && fs_proto_parse_error(&p, &e, NULL) == 0) {
                snprintf(err, errlen, "%s", e.reason);
                return -(int)e.err;
        }
        snprintf(err, errlen, "the %s sent an unexpected first message", what);
        return -EPROTO;
}

static bool as_sibling;
static pid_t failed;

void fsd_helper_as_sibling(void)
{
        as_sibling = true;
}

pid_t fsd_helper_take_failed(void)
{
        pid_t p = failed;

        failed = 0;
        return p;
}

void fsd_helper_discard(pid_t pid)
{
        kill(pid, SIGKILL);
        if (as_sibling) {
                failed = pid; /* the front's child: the front reaps it */
                return;
        }
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
                ;
}

int fsd_helper_start(const char *what, fsd_helper_main *fn, void *arg, uint8_t *ok, size_t okcap,
                     size_t *ok_len, pid_t *ret_pid, int *ret_pidfd, int *ret_sock, char *err,
                     size_t errlen)
{
        uint8_t buf[1024];
        pid_t front = as_sibling ? getppid() : getpid(), pid;
        int sv[2], pidfd = -1, r;
        size_t len = 0;

        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
                r = -errno;
                snprintf(err, errlen, "socketpair: %s", strerror(-r));
                return r;
        }
        /* As a sibling: the child of our parent, the front, which is the one to reap it. */
        pid = as_sibling ? (pid_t)syscall(SYS_clone, CLONE_PARENT | SIGCHLD, 0, NULL, NULL, 0)
                         : fork();
        if (pid < 0) {
                r = -errno;
                snprintf(err, errlen, "fork: %s", strerror(-r));
                fs_close_many(sv, 2);
                return r;
        }
        if (pid == 0) {
                close(sv[0]);
                fn(arg, sv[1], front);
                _exit(1); /* not reached */
        }
        close(sv[1]);
        if ((pidfd = pidfd_open(pid, 0)) < 0) {
                r = -errno;
                snprintf(err, errlen, "pidfd_open: %s", strerror(-r));
        } else {
                r = await_start(what, sv[0], ok ? ok : buf, ok ? okcap : sizeof(buf), &len, err,
                                errlen);
        }
        if (r < 0) {
                fsd_helper_discard(pid);
                close(sv[0]);
                fs_close(pidfd);
                return r;
        }
        if (ok_len)
                *ok_len = len;
        *ret_pid = pid;
        *ret_pidfd = pidfd;
        *ret_sock = sv[0];
        return 0;
}

int fsd_launch_zygote(const struct fsd_zygote_args *a, pid_t *ret_pid, int *ret_pidfd,
                      int *ret_sock, char *err, size_t errlen)
{
        return fsd_helper_start("zygote", fsd_zygote_main, (void *)a, NULL, 0, NULL, ret_pid,
                                ret_pidfd, ret_sock, err, errlen);
}

#ifdef FS_HAVE_CUDA
static int take_devices(void *ud, const char *name, uint64_t v)
{
        if (strcmp(name, "devices") == 0)
                *(uint64_t *)ud = v;
        return 0;
}
#endif

int fsd_launch_broker(const struct fsd_broker_args *a, pid_t *ret_pid, int *ret_pidfd,
                      int *ret_sock, unsigned *ret_ndev, char *err, size_t errlen)
{
#ifndef FS_HAVE_CUDA
        (void)a, (void)ret_pid, (void)ret_pidfd, (void)ret_sock, (void)ret_ndev;
        snprintf(err, errlen, "this forkserverd was built without CUDA support (no cuda.h)");
        return -EOPNOTSUPP;
#else
        uint8_t ok[1024];
        uint64_t ndev = 0;
        struct fs_hdr h;
        struct fs_buf p;
        size_t len;
        int r;

        /* cuInit and the first contexts take seconds on real hardware: within the helper's
         * start-up bound */
        if ((r = fsd_helper_start("GPU broker", fsd_broker_main, (void *)a, ok, sizeof(ok), &len,
                                  ret_pid, ret_pidfd, ret_sock, err, errlen)) < 0)
                return r;
        if (fs_iproto_parse_hdr(ok, len, FS_ICHAN_BROKER, FS_ISIDE_HELPER, 0, &h, &p) < 0 ||
            h.type != FS_I_READY || fs_proto_parse_status(&p, take_devices, &ndev, NULL) < 0 ||
            ndev == 0 || ndev > FSD_MAX_GPUS) {
                snprintf(err, errlen, "the GPU broker sent an unexpected first message");
                fsd_helper_discard(*ret_pid);
                *ret_pidfd = fs_close(*ret_pidfd);
                *ret_sock = fs_close(*ret_sock);
                return -EPROTO;
        }
        *ret_ndev = (unsigned)ndev;
        return 0;
#endif
}
