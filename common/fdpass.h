/* One datagram plus SCM_RIGHTS fds over a SOCK_SEQPACKET socket. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include <sys/uio.h>

/* Sends buf with nfds fds attached (MSG_NOSIGNAL). 0 or a negative errno. */
int fs_fdpass_send(int sock, const void *buf, size_t len, const int *fds, size_t nfds, int flags);

/*
 * Receives one datagram into buf and up to maxfds fds (MSG_CMSG_CLOEXEC).
 * Returns its length (0 = peer closed) or a negative errno. A datagram larger than cap is
 * -EMSGSIZE; a truncated control message, a foreign cmsg or more than maxfds fds is
 * -EBADMSG; fds this process could not take (it is out of fds: the kernel drops them) make
 * it -EMFILE. On every error, each fd that arrived is already closed.
 */
int fs_fdpass_recv(int sock, void *buf, size_t cap, int *fds, size_t maxfds, size_t *ret_nfds,
                   int flags);

/*
 * For a receiver that must not close what it gets (a close can block: forkserver/front/closer.h):
 * one datagram and every fd that came with it, up to FS_SCM_MAX_FD (fds must have room for
 * that many, so that the kernel drops none in our name), checking nothing. *ret_flags gets
 * the message's flags (MSG_TRUNC, MSG_CTRUNC); *ret_foreign says whether a control message
 * other than SCM_RIGHTS came. The caller owns the fds in every case, errors included.
 */
#define FS_SCM_MAX_FD 253 /* the kernel's SCM_MAX_FD */
int fs_fdpass_recv_raw(int sock, void *buf, size_t cap, int *fds, size_t *ret_nfds, int *ret_flags,
                       bool *ret_foreign, int flags);

/* The same, except that fds lost for want of fd slots give the datagram (its length) with no
 * fds and *ret_lost set: the caller can still answer the message it could not take. */
int fs_fdpass_recv_lossy(int sock, void *buf, size_t cap, int *fds, size_t maxfds, size_t *ret_nfds,
                         bool *ret_lost, int flags);

/* The same over several buffers (a header and a payload, say). */
int fs_fdpass_sendv(int sock, const struct iovec *iov, size_t iovcnt, const int *fds, size_t nfds,
                    int flags);
int fs_fdpass_recvv(int sock, const struct iovec *iov, size_t iovcnt, int *fds, size_t maxfds,
                    size_t *ret_nfds, int flags);
