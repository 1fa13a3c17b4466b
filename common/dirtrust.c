#include "common/dirtrust.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/paths.h"
#include "common/util.h"

static __attribute__((format(printf, 4, 5))) int say(char *err, size_t errlen, int r,
                                                     const char *fmt, ...)
{
        va_list ap;

        if (err && errlen) {
                va_start(ap, fmt);
                vsnprintf(err, errlen, fmt, ap);
                va_end(ap);
        }
        return r;
}

static bool trusted_uid(uid_t uid, const uid_t *trusted, size_t n)
{
        for (size_t i = 0; i < n; i++)
                if (trusted[i] == uid)
                        return true;
        return false;
}

/* One directory (or a symbolic link to one) on the way. */
static int check_one(const char *p, const uid_t *trusted, size_t n, char *err, size_t errlen)
{
        struct stat st;

        if (lstat(p, &st) < 0)
                return say(err, errlen, -errno, "cannot inspect %s: %s", p, strerror(errno));
        if (!trusted_uid(st.st_uid, trusted, n))
                return say(err, errlen, -EPERM, "%s is owned by uid %u", p, (unsigned)st.st_uid);
        if (S_ISLNK(st.st_mode))
                return 0; /* what it points to is checked on the resolved path */
        if (!S_ISDIR(st.st_mode))
                return say(err, errlen, -ENOTDIR, "%s is not a directory", p);
        if ((st.st_mode & 022) && !(st.st_mode & S_ISVTX))
                return say(err, errlen, -EPERM,
                           "%s is writable by group or others (mode %04o) and not sticky", p,
                           (unsigned)(st.st_mode & 07777));
        return 0;
}

/* Every prefix of the absolute path dir ("/", "/a", "/a/b"), dir included. */
static int walk(const char *dir, const uid_t *trusted, size_t n, char *err, size_t errlen)
{
        char p[PATH_MAX];
        size_t len = strlen(dir);
        int r;

        if (len >= sizeof(p))
                return say(err, errlen, -ENAMETOOLONG, "path too long");
        if ((r = check_one("/", trusted, n, err, errlen)) < 0)
                return r;
        for (size_t i = 1; i <= len; i++) {
                if (i < len && dir[i] != '/')
                        continue;
                if (dir[i - 1] == '/')
                        continue; /* "//" or a final "/" */
                memcpy(p, dir, i);
                p[i] = '\0';
                if ((r = check_one(p, trusted, n, err, errlen)) < 0)
                        return r;
        }
        return 0;
}

int fs_dirtrust_check(const char *path, const uid_t *trusted, size_t ntrusted, char *why,
                      size_t whycap)
{
        char abs[PATH_MAX], dir[PATH_MAX], real[PATH_MAX];
        int r;

        if (path[0] == '/') {
                if (fs_format(abs, sizeof(abs), "%s", path) < 0)
                        return say(why, whycap, -ENAMETOOLONG, "path too long");
        } else {
                char cwd[PATH_MAX];

                if (!getcwd(cwd, sizeof(cwd)))
                        return say(why, whycap, -errno, "cannot get the current directory");
                if (fs_format(abs, sizeof(abs), "%s/%s", cwd, path) < 0)
                        return say(why, whycap, -ENAMETOOLONG, "path too long");
        }
        if ((r = fs_dirname(abs, dir, sizeof(dir))) < 0)
                return say(why, whycap, r, "bad path %s", abs);
        /* As written: whoever could replace a link or directory on the way... */
        if ((r = walk(dir, trusted, ntrusted, why, whycap)) < 0)
                return r;
        /* ...and as the kernel will resolve it, where links lead elsewhere. */
        if (!realpath(dir, real))
                return say(why, whycap, -errno, "cannot resolve %s: %s", dir, strerror(errno));
        if (strcmp(real, dir) == 0)
                return 0;
        return walk(real, trusted, ntrusted, why, whycap);
}
