/*
 * Seccomp profiles, compiled once at start-up (libseccomp → BPF, exported through a memfd:
 * Debian's libseccomp 2.5 cannot export to memory) and installed in each worker with the raw
 * seccomp(2) call between clone and exec.
 *
 * Built in: "default" (everything a normal program needs; dangerous calls fail with EPERM),
 * "default-kill" (the same list, but a denied call kills the worker with SIGSYS), "strict"
 * (an allowlist for compute workers that talk over their fds; anything else kills), "none".
 * More come from --profile-dir (see profile.h for the format).
 */
#pragma once

#include <linux/filter.h>
#include <stdbool.h>
#include <stddef.h>

#include "common/proto.h"
#include "forkserver/sandbox/landlock.h"

#define FSD_MAX_PROFILES 64
#define FSD_MAX_DENY 4 /* the daemon's own paths kept from workers */

struct fsd_profile {
        char name[FS_MAX_PROFILE_NAME + 1];
        struct sock_fprog prog; /* len 0: no filter ("none") */
        bool allowed;           /* clients may ask for it */
        bool zygote_safe;       /* a zygote can work under it (built-in default profiles) */
        struct fsd_fs_rule *fs; /* Landlock rules of a profile file */
        size_t nfs;
};

struct fsd_sandbox {
        struct fsd_profile profiles[FSD_MAX_PROFILES];
        size_t n;
        const struct fsd_profile *dflt;        /* for requests that name none */
        const struct fsd_profile *min;         /* stacked under every worker's own; NULL: none */
        int landlock_abi;                      /* 0: none; workers then get no Landlock domain */
        struct fsd_fs_rule deny[FSD_MAX_DENY]; /* runtime directory, key, credentials */
        size_t ndeny;
};

/*
 * Builds every profile. allow: comma-separated names clients may request (NULL:
 * "default,strict"); min: the profile every worker gets in addition (NULL: none).
 * On failure writes a message into err.
 */
int fsd_sandbox_init(struct fsd_sandbox *sb, const char *profile_dir, const char *allow,
                     const char *min, char *err, size_t errlen);
void fsd_sandbox_free(struct fsd_sandbox *sb);
/* Keeps path (and what is under it) out of every worker's reach: -E2BIG beyond FSD_MAX_DENY. */
int fsd_sandbox_deny(struct fsd_sandbox *sb, const char *path);
const struct fsd_profile *fsd_sandbox_find(const struct fsd_sandbox *sb, const char *name);
