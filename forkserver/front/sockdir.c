#include "forkserver/front/sockdir.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/dirtrust.h"
#include "common/paths.h"
#include "common/util.h"

#define LISTEN_BACKLOG 512

static int fail(const char **ret_why, const char *why, int r)
{
        *ret_why = why;
        return r;
}

static int check_dir(const char *dir, bool shared, const char **ret_why)
{
        fs_autoclose int fd = -1;
        struct stat st;

        if (mkdir(dir, shared ? 0711 : 0700) < 0 && errno != EEXIST)
                return fail(ret_why, "cannot create the socket directory", -errno);
        fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return fail(ret_why,
                            errno == ELOOP || errno == ENOTDIR
                                ? "the socket directory is a symbolic link or not a directory"
                                : "cannot open the socket directory",
                            -errno);
        if (fstat(fd, &st) < 0)
                return fail(ret_why, "cannot inspect the socket directory", -errno);
        if (st.st_uid != geteuid())
                return fail(ret_why, "the socket directory is not owned by the effective uid",
                            -EPERM);
        if (st.st_mode & 022)
                return fail(ret_why,
                            "the socket directory is writable by group or others: use a private "
                            "subdirectory (--socket DIR/SUB/NAME.sock; the daemon creates SUB "
                            "with mode 0700) of a directory that is sticky, as /tmp, or not "
                            "writable by others",
                            -EPERM);
        return 0;
}

/* An existing path: a live server keeps it; a dead one's socket is removed. */
static int clear_stale(const struct sockaddr_un *sa, const char **ret_why)
{
        fs_autoclose int fd = -1;
        struct stat st;

        if (lstat(sa->sun_path, &st) < 0)
                return errno == ENOENT ? 0
                                       : fail(ret_why, "cannot inspect the socket path", -errno);
        if (!S_ISSOCK(st.st_mode))
                return fail(ret_why, "the socket path exists and is not a socket", -EEXIST);
        if (st.st_uid != geteuid())
                return fail(ret_why, "the socket path is owned by another uid", -EPERM);
        fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return fail(ret_why, "socket", -errno);
        if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0)
                return fail(ret_why, "another server is listening on the socket path", -EADDRINUSE);
        if (errno != ECONNREFUSED)
                return fail(ret_why, "cannot probe the existing socket", -errno);
        if (unlink(sa->sun_path) < 0 && errno != ENOENT)
                return fail(ret_why, "cannot remove the stale socket", -errno);
        return 0;
}

int fsd_sock_check_ancestors(const char *path, const char **ret_why)
{
        static char why_buf[PATH_MAX + 256];
        const uid_t trusted[] = {0, geteuid()};
        char bad[PATH_MAX + 64];
        int r;

        if ((r = fs_dirtrust_check(path, trusted, FS_ARRAY_SIZE(trusted), bad, sizeof(bad))) < 0) {
                snprintf(why_buf, sizeof(why_buf),
                         "the socket's path can be swapped by others: %s (each directory above "
                         "the socket must belong to root or uid %u and not be writable by group "
                         "or others unless sticky)",
                         bad, (unsigned)geteuid());
                return fail(ret_why, why_buf, r);
        }
        return 0;
}

int fsd_sock_listen(const char *path, bool shared, int *ret_fd, dev_t *ret_dev, ino_t *ret_ino,
                    const char **ret_why)
{
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        fs_autoclose int fd = -1;
        char dir[sizeof(sa.sun_path)];
        struct stat st;
        mode_t old;
        int r;

        if (strlen(path) >= sizeof(sa.sun_path))
                return fail(ret_why, "the socket path is longer than 107 bytes", -ENAMETOOLONG);
        memcpy(sa.sun_path, path, strlen(path) + 1);
        if ((r = fs_dirname(path, dir, sizeof(dir))) < 0)
                return fail(ret_why, "bad socket path", r);
        /* The ancestors of the directory, then the directory itself with the stricter check. */
        if ((r = fsd_sock_check_ancestors(dir, ret_why)) < 0 ||
            (r = check_dir(dir, shared, ret_why)) < 0 || (r = clear_stale(&sa, ret_why)) < 0)
                return r;
        fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return fail(ret_why, "socket", -errno);
        old = umask(shared ? 0111 : 0177);
        r = bind(fd, (const struct sockaddr *)&sa, sizeof(sa)) < 0 ? -errno : 0;
        umask(old);
        if (r < 0)
                return fail(ret_why, "cannot bind the socket", r);
        if (listen(fd, LISTEN_BACKLOG) < 0 || lstat(path, &st) < 0) {
                r = -errno;
                (void)unlink(path);
                return fail(ret_why, "cannot listen", r);
        }
        *ret_dev = st.st_dev;
        *ret_ino = st.st_ino;
        *ret_fd = fs_take_fd(&fd);
        return 0;
}
