/*
 * Seccomp profile files: one profile per file NAME.profile, a line per rule:
 *
 *     # comment
 *     default allow|kill|errno NAME     action for every syscall not listed (required, once)
 *     allow SYSCALL...                  these run
 *     kill SYSCALL...                   these kill the worker (SIGSYS)
 *     errno NAME SYSCALL...             these fail with errno NAME (EPERM, ENOSYS, ...) or 1..4095
 *     fs ro|rw|deny PATH...             Landlock: what the worker may do under these absolute
 *                                       paths (read, everything, nothing); the rest of the
 *                                       filesystem stays as it is (landlock.h)
 *
 * Syscall names are the kernel's for this architecture. A syscall or a path may appear once.
 * Errors name file:line and the offending token.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "forkserver/sandbox/landlock.h"

#define FSD_MAX_RULES 512
#define FSD_PROFILE_MAX_BYTES 65536

enum fsd_action_kind {
        FSD_ACT_ALLOW = 1,
        FSD_ACT_KILL = 2,
        FSD_ACT_ERRNO = 3,
};

struct fsd_action {
        uint8_t kind; /* enum fsd_action_kind */
        uint16_t err; /* FSD_ACT_ERRNO */
};

struct fsd_rule {
        int nr; /* syscall number */
        struct fsd_action act;
};

struct fsd_profile_src {
        struct fsd_action dflt;
        size_t nrules;
        struct fsd_rule rules[FSD_MAX_RULES];
        size_t nfs;
        struct fsd_fs_rule fs[FSD_MAX_FS_RULES];
};

/* Parses text (not NUL-terminated) into out. On error writes "file:line: ..." into err. */
int fsd_profile_parse(const char *text, size_t len, const char *file, struct fsd_profile_src *out,
                      char *err, size_t errlen);

/* Resolves an errno name (EPERM) or number (1..4095); -EINVAL if neither. */
int fsd_errno_parse(const char *s);

/* Profile names: 1..32 of [a-z0-9_-]. */
int fsd_profile_name_ok(const char *name, size_t len);
