#include "forkserver/front/template.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/fdpass.h"
#include "common/proto.h"
#include "common/util.h"
#include "forkserver/broker/broker.h"
#include "forkserver/front/launch.h"
#include "forkserver/front/server.h"
#include "forkserver/zygote/zygote.h"

#define TEMPLATE_SOCK_FD 3

struct request {
        uint32_t kind, index;
};

static void serve(const struct fsd_server *s, int sock, const struct request *q)
{
        const struct fsd_options *o = s->opt;
        struct fsd_template_reply rep = {.kind = q->kind, .index = q->index};
        int fds[2] = {-1, -1}, r = -EINVAL;
        unsigned ndev = 0;
        pid_t pid = 0;

        snprintf(rep.why, sizeof(rep.why), "no such helper");
        if (q->kind == FSD_TPL_ZYGOTE && q->index <= s->sandbox.n) {
                const struct fsd_profile *p = q->index ? &s->sandbox.profiles[q->index - 1] : NULL;

                struct fsd_zygote_args a = {&s->sandbox, p, o->preload, o->npreload};

                r = fsd_launch_zygote(&a, &pid, &fds[1], &fds[0], rep.why, sizeof(rep.why));
        } else if (q->kind == FSD_TPL_BROKER) {
                struct fsd_broker_args a = {o->cuda_devices, o->ncuda_devices};

                r = fsd_launch_broker(&a, &pid, &fds[1], &fds[0], &ndev, rep.why, sizeof(rep.why));
        }
        rep.err = r < 0 ? r : 0;
        rep.pid = r < 0 ? fsd_helper_take_failed() : pid;
        rep.ndev = ndev;
        if (r >= 0)
                rep.why[0] = '\0';
        (void)fs_fdpass_send(sock, &rep, sizeof(rep), fds, r < 0 ? 0 : 2, 0);
        fs_close_many(fds, 2); /* the front has them now */
}

static __attribute__((noreturn)) void template_main(void *arg, int sock, pid_t front)
{
        const struct fsd_server *s = arg;
        uint8_t ok[64];
        struct fs_msgw w;
        int n;

        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != front)
                _exit(1);
        (void)prctl(PR_SET_NAME, "forkserverd-tpl");
        if (sock != TEMPLATE_SOCK_FD) {
                if (dup3(sock, TEMPLATE_SOCK_FD, O_CLOEXEC) < 0)
                        _exit(1);
                if (sock < TEMPLATE_SOCK_FD)
                        close(sock);
        }
        /* nothing of the front's: not the key fd, not the ready fd */
        if (close_range(TEMPLATE_SOCK_FD + 1, ~0u, 0) < 0)
                _exit(1);
        fsd_helper_as_sibling();
        fs_imsg_begin(&w, ok, sizeof(ok), FS_I_READY, 0);
        if ((n = fs_msg_finish(&w)) < 0 ||
            fs_fdpass_send(TEMPLATE_SOCK_FD, ok, (size_t)n, NULL, 0, 0) < 0)
                _exit(1);
        for (;;) {
                struct request q;
                ssize_t got = recv(TEMPLATE_SOCK_FD, &q, sizeof(q), 0);

                if (got < 0 && errno == EINTR)
                        continue;
                if (got <= 0)
                        _exit(0); /* the front is done */
                if (got == sizeof(q))
                        serve(s, TEMPLATE_SOCK_FD, &q);
        }
}

int fsd_template_start(struct fsd_template *t, struct fsd_server *s, char *err, size_t errlen)
{
        *t = (struct fsd_template){.fd = -1, .pidfd = -1};
        return fsd_helper_start("template", template_main, s, NULL, 0, NULL, &t->pid, &t->pidfd,
                                &t->fd, err, errlen);
}

int fsd_template_request(struct fsd_template *t, uint32_t kind, uint32_t index)
{
        struct request q = {kind, index};

        if (t->fd < 0)
                return -EPIPE;
        if (send(t->fd, &q, sizeof(q), MSG_DONTWAIT | MSG_NOSIGNAL) != sizeof(q))
                return errno == EWOULDBLOCK ? -EAGAIN : -errno;
        t->busy++;
        return 0;
}

int fsd_template_reply(struct fsd_template *t, bool dontwait, struct fsd_template_reply *ret,
                       int *ret_sock, int *ret_pidfd)
{
        int fds[2] = {-1, -1};
        size_t nfds = 0;
        int n;

        if (t->fd < 0)
                return -EPIPE;
        n = fs_fdpass_recv(t->fd, ret, sizeof(*ret), fds, 2, &nfds, dontwait ? MSG_DONTWAIT : 0);
        if (n == -EAGAIN)
                return n;
        if (n == 0)
                n = -EPIPE;
        if (n > 0 && ((size_t)n != sizeof(*ret) || (ret->err == 0 && nfds != 2) ||
                      (ret->err != 0 && nfds != 0)))
                n = -EBADMSG;
        if (n < 0) {
                fs_close_many(fds, nfds);
                return n;
        }
        t->busy--;
        ret->why[sizeof(ret->why) - 1] = '\0';
        if (ret->err != 0) {
                /* a helper that did not start, killed: ours to reap */
                int pfd = ret->pid > 0 ? pidfd_open(ret->pid, 0) : -1;

                (void)fs_pidfd_end(pfd, -1);
                return ret->err < 0 ? ret->err : -EIO;
        }
        *ret_sock = fds[0];
        *ret_pidfd = fds[1];
        return 0;
}

void fsd_template_stop(struct fsd_template *t)
{
        t->fd = fs_close(t->fd);
        if (t->pidfd >= 0) {
                /* it may be starting a helper: a bounded wait, then SIGKILL */
                t->pidfd = fs_pidfd_end(t->pidfd, 2000);
        }
        t->pid = 0;
}
