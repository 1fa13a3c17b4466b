#include "forkserver/sandbox/landlock.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/util.h"

#ifndef __NR_landlock_create_ruleset
#define __NR_landlock_create_ruleset 444
#define __NR_landlock_add_rule 445
#endif

#define CREATE_RULESET_VERSION (1u << 0)
#define RULE_PATH_BENEATH 1
#define VOLATILE_NS (50 * 1000 * 1000ll) /* well above the coarse clock's tick */

struct ruleset_attr {
        uint64_t handled_access_fs;
        uint64_t handled_access_net; /* ABI 4; zero: not handled */
        uint64_t scoped;             /* ABI 6 */
};

struct path_beneath_attr {
        uint64_t allowed_access;
        int32_t parent_fd;
} __attribute__((packed));

int fsd_landlock_abi(void)
{
        long v = syscall(__NR_landlock_create_ruleset, NULL, 0, CREATE_RULESET_VERSION);

        return v < 0 ? 0 : (int)v;
}

static uint64_t handled_fs(int abi)
{
        uint64_t r = FSD_LANDLOCK_FS_ABI1;

        if (abi >= 2)
                r |= FSD_LANDLOCK_FS_REFER;
        if (abi >= 3)
                r |= FSD_LANDLOCK_FS_TRUNCATE;
        if (abi >= 5)
                r |= FSD_LANDLOCK_FS_IOCTL_DEV;
        return r;
}

/* One build: the rules, resolved, and where the ruleset goes. */
struct build {
        struct fsd_landlock *ll;
        int rs;
        uint64_t all;
        size_t n;
        struct {
                char path[PATH_MAX];
                uint8_t access;
        } rule[2 * FSD_MAX_FS_RULES + 8];
        char *err;
        size_t errlen;
};

static __attribute__((format(printf, 3, 4))) int failf(struct build *b, int r, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(b->err, b->errlen, fmt, ap);
        va_end(ap);
        return r;
}

static uint64_t rights(const struct build *b, uint8_t access)
{
        if (access == FSD_FS_RW)
                return b->all;
        if (access == FSD_FS_RO)
                return FSD_LANDLOCK_FS_READ_FILE | FSD_LANDLOCK_FS_READ_DIR |
                       FSD_LANDLOCK_FS_EXECUTE;
        return 0;
}

/* Is p strictly inside dir? */
static bool inside(const char *dir, const char *p)
{
        size_t n = strlen(dir);

        if (n == 1)
                return p[0] == '/' && p[1] != '\0';
        return strncmp(p, dir, n) == 0 && p[n] == '/';
}

static int listed(const struct build *b, const char *path)
{
        for (size_t i = 0; i < b->n; i++)
                if (strcmp(b->rule[i].path, path) == 0)
                        return (int)i;
        return -1;
}

/* A tree granted access must be carved when a listed path inside it is to get less. */
static bool must_carve(const struct build *b, const char *path, uint8_t access)
{
        for (size_t i = 0; i < b->n; i++)
                if (b->rule[i].access < access && inside(path, b->rule[i].path))
                        return true;
        return false;
}

static int grant(struct build *b, int fd, bool dir, uint64_t access, const char *path)
{
        struct path_beneath_attr pb = {
            .allowed_access = access & (dir ? ~0ull : FSD_LANDLOCK_FS_FILE), .parent_fd = fd};

        if (pb.allowed_access == 0)
                return 0;
        if (syscall(__NR_landlock_add_rule, b->rs, RULE_PATH_BENEATH, &pb, 0) < 0)
                return failf(b, -errno, "rule for %s: %s", path, strerror(errno));
        return 0;
}

static int grant_path(struct build *b, const char *path, uint8_t access);

/* Grants access on every entry of dir but the listed ones. Not on dir itself: listing it
 * (READ_DIR) would be granted under it too, down to the paths kept away. */
static int walk(struct build *b, const char *dir, uint8_t access)
{
        struct fsd_landlock *ll = b->ll;
        size_t count = 0;
        struct stat st;
        DIR *d;
        int dfd, r = 0;

        if (ll->ndirs == FSD_LANDLOCK_MAX_DIRS)
                return failf(b, -E2BIG, "more than %d directories to list", FSD_LANDLOCK_MAX_DIRS);
        dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0)
                return failf(b, -errno, "%s: %s", dir, strerror(errno));
        if (fstat(dfd, &st) < 0) {
                r = failf(b, -errno, "%s: %s", dir, strerror(errno));
                close(dfd);
                return r;
        }
        if ((ll->dirs[ll->ndirs].fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0) {
                r = failf(b, -errno, "%s: %s", dir, strerror(errno));
                close(dfd);
                return r;
        }
        ll->dirs[ll->ndirs++].mtime = st.st_mtim;
        if (!(d = fdopendir(dfd))) {
                r = failf(b, -errno, "%s: %s", dir, strerror(errno));
                close(dfd);
                return r;
        }
        for (struct dirent *e; r >= 0 && (e = readdir(d));) {
                char path[PATH_MAX];
                int fd;

                if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                        continue;
                if (++count > FSD_LANDLOCK_MAX_ENTRIES) {
                        r = failf(b, -E2BIG, "more than %d entries in %s", FSD_LANDLOCK_MAX_ENTRIES,
                                  dir);
                        break;
                }
                if (fs_format(path, sizeof(path), "%s/%s", strcmp(dir, "/") ? dir : "", e->d_name) <
                        0 ||
                    listed(b, path) >= 0)
                        continue; /* a listed path gets its own rule */
                /* A symbolic link is not followed: its target is judged where it lies. */
                fd = openat(dirfd(d), e->d_name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
                if (fd < 0)
                        continue; /* gone meanwhile */
                if (fstat(fd, &st) < 0 || S_ISLNK(st.st_mode)) {
                        close(fd);
                        continue;
                }
                if (S_ISDIR(st.st_mode) && must_carve(b, path, access))
                        r = walk(b, path, access);
                else
                        r = grant(b, fd, S_ISDIR(st.st_mode), rights(b, access), path);
                close(fd);
        }
        closedir(d);
        return r;
}

static int grant_path(struct build *b, const char *path, uint8_t access)
{
        fs_autoclose int fd = -1;
        struct stat st;

        if (must_carve(b, path, access))
                return walk(b, path, access);
        fd = open(path, O_PATH | O_CLOEXEC);
        if (fd < 0 || fstat(fd, &st) < 0)
                return errno == ENOENT ? 0 : failf(b, -errno, "%s: %s", path, strerror(errno));
        return grant(b, fd, S_ISDIR(st.st_mode), rights(b, access), path);
}

static int add_rules(struct build *b, const struct fsd_fs_rule *r, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                char real[PATH_MAX];
                int k;

                if (!realpath(r[i].path, real)) {
                        if (errno == ENOENT || errno == ENOTDIR)
                                continue; /* nothing there to grant or keep away */
                        return failf(b, -errno, "%s: %s", r[i].path, strerror(errno));
                }
                if ((k = listed(b, real)) >= 0) {
                        /* a denial of the daemon's wins over a profile's grant */
                        if (r[i].access < b->rule[k].access)
                                b->rule[k].access = r[i].access;
                        continue;
                }
                if (b->n == FS_ARRAY_SIZE(b->rule))
                        return failf(b, -E2BIG, "too many rules");
                memcpy(b->rule[b->n].path, real, strlen(real) + 1);
                b->rule[b->n++].access = r[i].access;
        }
        return 0;
}

static bool changed(const struct fsd_landlock *ll)
{
        if (ll->volatile_)
                return true;
        for (size_t i = 0; i < ll->ndirs; i++) {
                struct stat st;

                if (fstat(ll->dirs[i].fd, &st) < 0 ||
                    st.st_mtim.tv_sec != ll->dirs[i].mtime.tv_sec ||
                    st.st_mtim.tv_nsec != ll->dirs[i].mtime.tv_nsec)
                        return true;
        }
        return false;
}

void fsd_landlock_free(struct fsd_landlock *ll)
{
        for (size_t i = 0; i < ll->ndirs; i++)
                fs_close(ll->dirs[i].fd);
        fs_close(ll->fd);
        *ll = (struct fsd_landlock){.fd = -1};
}

int fsd_landlock_prepare(struct fsd_landlock *ll, int abi, const struct fsd_fs_rule *a, size_t na,
                         const struct fsd_fs_rule *rb, size_t nb, char *err, size_t errlen)
{
        static struct build b; /* a zygote is single-threaded; PATH_MAX paths are big */
        struct ruleset_attr attr = {.handled_access_fs = handled_fs(abi)};
        struct timespec t0;
        int r = 0;

        if (ll->fd >= 0 && !changed(ll))
                return 0;
        fsd_landlock_free(ll);
        if (abi >= 6)
                attr.scoped = FSD_LANDLOCK_SCOPE_ABSTRACT_UNIX | FSD_LANDLOCK_SCOPE_SIGNAL;
        b = (struct build){.ll = ll, .all = attr.handled_access_fs, .err = err, .errlen = errlen};
        clock_gettime(CLOCK_REALTIME, &t0);
        if ((r = add_rules(&b, a, na)) < 0 || (r = add_rules(&b, rb, nb)) < 0)
                return r;
        if ((b.rs = (int)syscall(__NR_landlock_create_ruleset, &attr, sizeof(attr), 0)) < 0)
                return failf(&b, -errno, "cannot create a ruleset: %s", strerror(errno));
        ll->fd = b.rs;
        if (listed(&b, "/") < 0)
                r = grant_path(&b, "/", FSD_FS_RW);
        for (size_t i = 0; r >= 0 && i < b.n; i++)
                if (b.rule[i].access != FSD_FS_DENY)
                        r = grant_path(&b, b.rule[i].path, b.rule[i].access);
        if (r < 0) {
                fsd_landlock_free(ll);
                return r;
        }
        /* A directory changed within a tick of the listing may change again unseen. */
        for (size_t i = 0; i < ll->ndirs; i++) {
                long long ns = (long long)(ll->dirs[i].mtime.tv_sec - t0.tv_sec) * 1000000000ll +
                               (ll->dirs[i].mtime.tv_nsec - t0.tv_nsec);

                if (ns > -VOLATILE_NS)
                        ll->volatile_ = true;
        }
        return 0;
}
