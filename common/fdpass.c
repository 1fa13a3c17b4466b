#include "common/fdpass.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>

#include "common/proto.h"
#include "common/util.h"

#define CMSG_FDS_SPACE CMSG_SPACE(sizeof(int) * FS_MAX_MSG_FDS)

int fs_fdpass_send(int sock, const void *buf, size_t len, const int *fds, size_t nfds, int flags)
{
        struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};

        return fs_fdpass_sendv(sock, &iov, 1, fds, nfds, flags);
}

int fs_fdpass_sendv(int sock, const struct iovec *iov, size_t iovcnt, const int *fds, size_t nfds,
                    int flags)
{
        union {
                struct cmsghdr align;
                char buf[CMSG_FDS_SPACE];
        } ctl;
        struct msghdr mh = {.msg_iov = (struct iovec *)iov, .msg_iovlen = iovcnt};
        size_t len = 0;
        ssize_t n;

        for (size_t i = 0; i < iovcnt; i++)
                len += iov[i].iov_len;
        if (nfds > FS_MAX_MSG_FDS)
                return -EINVAL;
        if (nfds > 0) {
                struct cmsghdr *c;

                memset(&ctl, 0, sizeof(ctl));
                mh.msg_control = ctl.buf;
                mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
                c = CMSG_FIRSTHDR(&mh);
                c->cmsg_level = SOL_SOCKET;
                c->cmsg_type = SCM_RIGHTS;
                c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
                memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
        }
        do
                n = sendmsg(sock, &mh, MSG_NOSIGNAL | flags);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return -errno;
        return (size_t)n == len ? 0 : -EMSGSIZE;
}

/* ret_lost NULL: fds this process could not take make the datagram -EMFILE. */
static int recv_core(int sock, const struct iovec *iov, size_t iovcnt, int *fds, size_t maxfds,
                     size_t *ret_nfds, bool *ret_lost, int flags)
{
        union {
                struct cmsghdr align;
                char buf[CMSG_FDS_SPACE];
        } ctl;
        struct msghdr mh = {.msg_iov = (struct iovec *)iov,
                            .msg_iovlen = iovcnt,
                            .msg_control = ctl.buf,
                            .msg_controllen = sizeof(ctl.buf)};
        size_t nfds = 0, arrived = 0;
        bool foreign = false;
        ssize_t n;

        *ret_nfds = 0;
        if (ret_lost)
                *ret_lost = false;
        do
                n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC | flags);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return -errno;

        /* Collect every fd that arrived first, so that all of them are closed on any error. */
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
                if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) {
                        foreign = true;
                        continue;
                }
                size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                const unsigned char *data = CMSG_DATA(c);

                arrived += k;
                for (size_t i = 0; i < k; i++) {
                        int fd;

                        memcpy(&fd, data + i * sizeof(int), sizeof(int));
                        if (nfds < maxfds)
                                fds[nfds++] = fd;
                        else {
                                fs_close(fd);
                                foreign = true; /* too many */
                        }
                }
        }
        if (mh.msg_flags & MSG_TRUNC) {
                fs_close_many(fds, nfds);
                return -EMSGSIZE;
        }
        /* The kernel fills the control buffer unless installing an fd fails (this process
         * is out of fds): fewer fds than room for them, and MSG_CTRUNC, means exactly that. */
        if ((mh.msg_flags & MSG_CTRUNC) && !foreign && arrived < FS_MAX_MSG_FDS) {
                fs_close_many(fds, nfds);
                if (!ret_lost)
                        return -EMFILE;
                *ret_lost = true;
                return (int)n;
        }
        if (foreign || (mh.msg_flags & MSG_CTRUNC)) {
                fs_close_many(fds, nfds);
                return -EBADMSG;
        }
        *ret_nfds = nfds;
        return (int)n;
}

int fs_fdpass_recv_raw(int sock, void *buf, size_t cap, int *fds, size_t *ret_nfds, int *ret_flags,
                       bool *ret_foreign, int flags)
{
        union {
                struct cmsghdr align;
                char buf[CMSG_SPACE(sizeof(int) * FS_SCM_MAX_FD)];
        } ctl;
        struct iovec iov = {.iov_base = buf, .iov_len = cap};
        struct msghdr mh = {.msg_iov = &iov,
                            .msg_iovlen = 1,
                            .msg_control = ctl.buf,
                            .msg_controllen = sizeof(ctl.buf)};
        size_t nfds = 0;
        ssize_t n;

        *ret_nfds = 0;
        *ret_flags = 0;
        *ret_foreign = false;
        do
                n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC | flags);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return -errno;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
                if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) {
                        *ret_foreign = true;
                        continue;
                }
                size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);

                for (size_t i = 0; i < k && nfds < FS_SCM_MAX_FD; i++)
                        memcpy(&fds[nfds++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        }
        *ret_nfds = nfds;
        *ret_flags = mh.msg_flags;
        return (int)n;
}

int fs_fdpass_recv(int sock, void *buf, size_t cap, int *fds, size_t maxfds, size_t *ret_nfds,
                   int flags)
{
        struct iovec iov = {.iov_base = buf, .iov_len = cap};

        return recv_core(sock, &iov, 1, fds, maxfds, ret_nfds, NULL, flags);
}

int fs_fdpass_recv_lossy(int sock, void *buf, size_t cap, int *fds, size_t maxfds, size_t *ret_nfds,
                         bool *ret_lost, int flags)
{
        struct iovec iov = {.iov_base = buf, .iov_len = cap};

        return recv_core(sock, &iov, 1, fds, maxfds, ret_nfds, ret_lost, flags);
}

int fs_fdpass_recvv(int sock, const struct iovec *iov, size_t iovcnt, int *fds, size_t maxfds,
                    size_t *ret_nfds, int flags)
{
        return recv_core(sock, iov, iovcnt, fds, maxfds, ret_nfds, NULL, flags);
}
