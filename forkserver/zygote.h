/*
 * The zygote: the only process that creates workers. It is forked before the key is read,
 * holds no key and no client's data, and takes already-validated SPAWN requests (with their
 * fds) from the front over a socketpair. Workers are created with CLONE_PARENT, so they are
 * the front's children: the front reaps them through their pidfds.
 *
 * A zygote first dlopens every --preload library (fork-mode entries come from them), refusing
 * one that fails to load or leaves a thread behind, and reports OK or ERROR {REASON} as its
 * first message. Zygote → front replies, in request order: SPAWNED {PID} + pidfd, or
 * ERROR {ERRNO, STEP, REASON[, PID]} + the pidfd of a child that failed before exec.
 */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

#include "forkserver/sandbox.h"

/*
 * Forks a zygote, which keeps sb (compiled before). With sandboxed, the zygote puts itself
 * under that profile (and --min-profile) once, and its workers inherit the filter instead of
 * installing one each; it serves only requests for that profile. Returns its pid, a pidfd for
 * it and the front's end of the socketpair.
 */
int fsd_zygote_start(const struct fsd_sandbox *sb, const struct fsd_profile *sandboxed,
                     const char *const *preload, size_t npreload, pid_t *ret_pid, int *ret_pidfd,
                     int *ret_sock, char *err, size_t errlen);

/* Before fsd_zygote_start: whether workers run as the uid, gid and groups each request
 * names (CRED, which the front adds) and whether that uid may be 0. */
void fsd_zygote_set_creds(bool switch_uids, bool allow_root);

/* Before fsd_zygote_start: idle children a zygote with --preload keeps forked ahead, at most
 * (0: none; a fork-mode request then forks). */
void fsd_zygote_set_prefork(unsigned n);

#define FSD_MAX_PRELOAD 16

/* LIBNAME of a --preload path: the file name without directory and without ".so". */
int fsd_preload_name(const char *path, char *buf, size_t size);
