/*
 * The launching end of each helper's channel: forks a helper process (the template, the
 * closer; from the template, a zygote or the GPU broker) on a socketpair and waits for its
 * first message, READY or FAILED {REASON}. The helpers' own code is in their folders
 * (forkserver/zygote/, forkserver/broker/) and begins at their *_main.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* What runs in the child: never returns. sock is its end; front is the forking process. */
typedef void fsd_helper_main(void *arg, int sock, pid_t front);

/*
 * Forks a helper running fn(arg, ...) and waits up to 60 s for its first message. On READY,
 * returns 0 with its pid, a pidfd for it, the front's end of the socketpair, and the READY
 * message (header included) in ok[0..*ok_len) when ok is given. Otherwise the helper is
 * killed and reaped, and the reason (its own, for a FAILED) is in err, prefixed by what.
 */
int fsd_helper_start(const char *what, fsd_helper_main *fn, void *arg, uint8_t *ok, size_t okcap,
                     size_t *ok_len, pid_t *ret_pid, int *ret_pidfd, int *ret_sock, char *err,
                     size_t errlen);

/*
 * In the template (forkserver/front/template.h): helpers are made with CLONE_PARENT, children of
 * the front, which reaps them. One that failed to start is killed, and left for the front to
 * reap: fsd_helper_take_failed() gives its pid (0: none) and forgets it.
 */
void fsd_helper_as_sibling(void);
pid_t fsd_helper_take_failed(void);
/* Kills and reaps (or, as a sibling, leaves for the front) a helper that will not do. */
void fsd_helper_discard(pid_t pid);

struct fsd_zygote_args;
struct fsd_broker_args;

/* In the template: a zygote, and the front's end of its channel (its pid and a pidfd too). */
int fsd_launch_zygote(const struct fsd_zygote_args *a, pid_t *ret_pid, int *ret_pidfd,
                      int *ret_sock, char *err, size_t errlen);
/* In the template: the GPU broker, the front's end of its channel, and how many devices it
 * serves (its READY says). */
int fsd_launch_broker(const struct fsd_broker_args *a, pid_t *ret_pid, int *ret_pidfd,
                      int *ret_sock, unsigned *ret_ndev, char *err, size_t errlen);
