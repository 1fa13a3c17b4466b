/*
 * The zygote: the only process that creates workers. It is forked before the key is read,
 * holds no key and no client's data, and takes already-validated SPAWN requests (with their
 * fds) from the front over a socketpair. Workers are created with CLONE_PARENT, so they are
 * the front's children: the front reaps them through their pidfds.
 *
 * Zygote → front replies, in request order: SPAWNED {PID} + pidfd, or
 * ERROR {ERRNO, STEP, REASON[, PID]} + the pidfd of a child that failed before exec.
 */
#pragma once

#include <sys/types.h>

#include "forkserver/sandbox.h"

/*
 * Forks a zygote, which keeps sb (compiled before). With sandboxed, the zygote puts itself
 * under that profile (and --min-profile) once, and its workers inherit the filter instead of
 * installing one each; it serves only requests for that profile. Returns its pid, a pidfd for
 * it and the front's end of the socketpair.
 */
int fsd_zygote_start(const struct fsd_sandbox *sb, const struct fsd_profile *sandboxed,
                     pid_t *ret_pid, int *ret_pidfd, int *ret_sock);
