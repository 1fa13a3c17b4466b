/*
 * The closer: a helper process that closes, for the front, the fds peers gave it.
 *
 * Closing the last reference to a file can block: a TCP socket with SO_LINGER and unsent
 * data waits out its linger time, a FUSE file waits for its daemon's answer, and a Unix
 * socket that still has fds queued in it closes those on the way. Any peer can pass such an
 * fd (before authenticating, too), and a connection socket holds whatever its peer queued.
 * So the front never closes a file it did not make and might hold the last reference to:
 * it hands it to the closer over a socketpair (SCM_RIGHTS, never blocking) and closes its own
 * copy, which the message in flight keeps from being the last. The closer closes each in a
 * thread of its own when the others are busy, so one stuck close holds up no other.
 *
 * The closer is made before the key is read and before any client connects, and holds
 * nothing but the fds it is closing.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "forkserver/front/event.h"

#define FSD_CLOSER_PENDING 4096 /* fds the front holds while the closer's socket is full */

struct fsd_closer {
        int fd, pidfd; /* -1: none (closes happen here, as before) */
        pid_t pid;
        struct fsd_loop *loop; /* NULL until attached, and after the loop */
        struct fsd_io io;      /* EPOLLOUT on its socket while fds wait */
        struct fsd_io io_exit; /* its pidfd */
        bool unreleased;       /* fds sent, and no 'C' yet (closer.c) */
        size_t n;
        int pending[FSD_CLOSER_PENDING];
        uint64_t handed, closed_here; /* counters for STATUS */
};

/* Starts the closer; on failure writes why into err. */
int fsd_closer_start(struct fsd_closer *cl, char *err, size_t errlen);
/* From now on a full socket is waited for on the loop, and its death is noticed there. */
void fsd_closer_attach(struct fsd_closer *cl, struct fsd_loop *l);
/* Takes fds (n of them, -1 entries skipped) to be closed off the loop. */
void fsd_closer_put(struct fsd_closer *cl, const int *fds, size_t n);
static inline void fsd_closer_put1(struct fsd_closer *cl, int fd)
{
        fsd_closer_put(cl, &fd, 1);
}
/* Sends what waits; call once per loop turn. */
void fsd_closer_flush(struct fsd_closer *cl);
/* At exit: hands over what waits, lets the closer finish for at most timeout_ms, reaps it. */
void fsd_closer_stop(struct fsd_closer *cl, int timeout_ms);
