/*
 * The zygote: the only process that creates workers. The template makes it (front/launch.c),
 * so it holds no key and no client's data; it takes the front's SPAWN requests, written from
 * what the front checked, with their fds, over a socketpair. Workers are created with
 * CLONE_PARENT, so they are the front's children: the front reaps them through their pidfds.
 *
 * A zygote first dlopens every --preload library (fork-mode entries come from them), refusing
 * one that fails to load or leaves a thread behind, and reports READY or FAILED {REASON} as
 * its first message. Its replies, in request order (docs/PROCESSES.md, "Internal messages"):
 * SPAWNED {PID} + pidfd, or FAILED {ERRNO, STEP, REASON[, PID]} + the pidfd of a child that
 * failed before exec.
 */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

#include "forkserver/sandbox/sandbox.h"

/*
 * What a zygote is made with: sb (compiled before); with sandboxed, the zygote puts itself
 * under that profile (and --min-profile) once, and its workers inherit the filter instead of
 * installing one each; it serves only requests for that profile.
 */
struct fsd_zygote_args {
        const struct fsd_sandbox *sb;
        const struct fsd_profile *sandboxed;
        const char *const *preload;
        size_t npreload;
};

/* The zygote's process, from its first instruction (arg: struct fsd_zygote_args; sock: its
 * end of the channel; front: the pid whose child it must be). Never returns. */
__attribute__((noreturn)) void fsd_zygote_main(void *arg, int sock, pid_t front);

/* Before it starts: whether workers run as the uid, gid and groups each request
 * names (CRED, which the front adds) and whether that uid may be 0. */
void fsd_zygote_set_creds(bool switch_uids, bool allow_root);

/* Before it starts: idle children a zygote with --preload keeps forked ahead, at most
 * (0: none; a fork-mode request then forks). */
void fsd_zygote_set_prefork(unsigned n);

#define FSD_MAX_PRELOAD 16
#define FSD_MAX_PREFORK 64 /* --prefork N at most: idle children per zygote */

/* LIBNAME of a --preload path: the file name without directory and without ".so". */
int fsd_preload_name(const char *path, char *buf, size_t size);
