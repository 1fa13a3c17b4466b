/*
 * The template: a copy of the front made before the key is read and before any client
 * connects, which makes every zygote and GPU broker, first ones and restarts alike. A helper
 * forked from the front later would carry what the front held by then (connections, nonces,
 * the last request's argv and environment); one made from the template holds only what the
 * front had at start-up. The template makes them with CLONE_PARENT, so that they (and the
 * workers a zygote makes with CLONE_PARENT in turn) are the front's children, and passes the
 * front their socket and pidfd. It holds what the zygotes hold (CAP_SETUID and CAP_SETGID
 * when workers run as their clients), no key, and no fd but its socket.
 *
 * Requests are served one at a time; a helper's start-up (library constructors, cuInit)
 * takes the template's time, never the front's.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct fsd_server;

enum fsd_template_kind {
        FSD_TPL_ZYGOTE = 1, /* index: 0 the plain zygote, 1 + i one under profile i */
        FSD_TPL_BROKER = 2,
};

struct fsd_template_reply {
        uint32_t kind, index;
        int32_t err;   /* 0, or a negative errno with why */
        int32_t pid;   /* the helper; when err, one left for the front to reap (0: none) */
        uint32_t ndev; /* a broker's devices */
        char why[480];
};

struct fsd_template {
        int fd, pidfd;
        pid_t pid;
        unsigned busy; /* requests sent and not answered yet */
};

/* Forks the template from s as it is now (before the key and any client). */
int fsd_template_start(struct fsd_template *t, struct fsd_server *s, char *err, size_t errlen);
/* Asks for a helper without waiting (-EAGAIN: try again later). */
int fsd_template_request(struct fsd_template *t, uint32_t kind, uint32_t index);
/*
 * Takes one reply (with dontwait, -EAGAIN when none is there). On success *ret_sock and
 * *ret_pidfd are the helper's; when the reply is an error a helper left behind is reaped here.
 */
int fsd_template_reply(struct fsd_template *t, bool dontwait, struct fsd_template_reply *ret,
                       int *ret_sock, int *ret_pidfd);
/* Ends the template (EOF on its socket) and reaps it. */
void fsd_template_stop(struct fsd_template *t);
