/*
 * A Landlock domain per worker (docs/SECURITY.md, "Landlock").
 *
 * A zygote builds one ruleset per filesystem policy, before it forks, and each worker calls
 * landlock_restrict_self() on it between clone and exec: every call makes a new domain, so
 * siblings are in different domains and neither can ptrace, open /proc/PID/mem of, or (ABI 6)
 * signal the other, the front or a zygote.
 *
 * Landlock only grants. To keep a path P out of reach while the rest of the filesystem stays
 * usable, the policy grants everything on each sibling of each directory along the way from /
 * down to P, and nothing on those directories themselves (a right granted on a directory holds
 * for everything under it, P included). What that misses: those directories cannot be listed,
 * nor entries made or removed directly in them; entries created there after the ruleset was
 * built are out of reach. The zygote watches the directories it listed and builds the ruleset
 * again when one changed, so a worker sees what existed when it was spawned.
 *
 * The kernel ABI is defined here: Debian 12's linux/landlock.h predates ABI 3.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define FSD_LANDLOCK_FS_EXECUTE (1ull << 0)
#define FSD_LANDLOCK_FS_WRITE_FILE (1ull << 1)
#define FSD_LANDLOCK_FS_READ_FILE (1ull << 2)
#define FSD_LANDLOCK_FS_READ_DIR (1ull << 3)
#define FSD_LANDLOCK_FS_ABI1 ((1ull << 13) - 1)      /* EXECUTE .. MAKE_SYM */
#define FSD_LANDLOCK_FS_REFER (1ull << 13)           /* ABI 2 */
#define FSD_LANDLOCK_FS_TRUNCATE (1ull << 14)        /* ABI 3 */
#define FSD_LANDLOCK_FS_IOCTL_DEV (1ull << 15)       /* ABI 5 */
#define FSD_LANDLOCK_SCOPE_ABSTRACT_UNIX (1ull << 0) /* ABI 6 */
#define FSD_LANDLOCK_SCOPE_SIGNAL (1ull << 1)        /* ABI 6 */

/* Rights that apply to files (the rest are about directories). */
#define FSD_LANDLOCK_FS_FILE                                                                       \
        (FSD_LANDLOCK_FS_EXECUTE | FSD_LANDLOCK_FS_WRITE_FILE | FSD_LANDLOCK_FS_READ_FILE |        \
         FSD_LANDLOCK_FS_TRUNCATE | FSD_LANDLOCK_FS_IOCTL_DEV)

#define FSD_MAX_FS_RULES 32            /* per profile file */
#define FSD_FS_PATH_MAX 512            /* a path in a rule */
#define FSD_LANDLOCK_MAX_DIRS 16       /* directories listed (and watched) for one policy */
#define FSD_LANDLOCK_MAX_ENTRIES 16384 /* entries of one such directory */

enum fsd_fs_access {
        FSD_FS_DENY = 0, /* nothing, beyond what a rule for a path inside grants */
        FSD_FS_RO = 1,   /* read files, list directories, execute */
        FSD_FS_RW = 2,   /* everything */
};

struct fsd_fs_rule {
        uint8_t access; /* enum fsd_fs_access */
        char path[FSD_FS_PATH_MAX];
};

/* The ABI level this kernel offers, 0 when none (disabled, or older than 5.13). */
int fsd_landlock_abi(void);

/* A built policy: its ruleset fd, and the directories it listed with their mtimes. */
struct fsd_landlock {
        int fd; /* -1: not built */
        size_t ndirs;
        struct {
                int fd; /* O_PATH */
                struct timespec mtime;
        } dirs[FSD_LANDLOCK_MAX_DIRS];
        bool volatile_; /* a listed directory changed within the clock's resolution of the
                         * listing: build again next time whatever the mtimes say */
};

/*
 * Builds (or, when a listed directory changed since, builds again) the ruleset for abi with
 * the rules a (the daemon's own denials) and b (a profile's rules). Rules for paths that do
 * not exist are skipped. Returns 0, or -errno with a message in err.
 */
int fsd_landlock_prepare(struct fsd_landlock *ll, int abi, const struct fsd_fs_rule *a, size_t na,
                         const struct fsd_fs_rule *b, size_t nb, char *err, size_t errlen);
void fsd_landlock_free(struct fsd_landlock *ll);
