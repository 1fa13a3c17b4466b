#include "forkserver/front/systemd.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/util.h"

#define SD_LISTEN_FDS_START 3

static void unset_listen_env(void)
{
        unsetenv("LISTEN_PID");
        unsetenv("LISTEN_FDS");
        unsetenv("LISTEN_FDNAMES");
}

int fsd_systemd_listen_fd(int *ret_fd, char *path, size_t pathlen, const char **ret_why)
{
        const char *pid_s = getenv("LISTEN_PID"), *fds_s = getenv("LISTEN_FDS");
        const int fd = SD_LISTEN_FDS_START;
        struct sockaddr_un sa;
        socklen_t sl = sizeof(sa), ol;
        int type, domain, listening, fl;
        long pid, n;

        *ret_fd = -1;
        if (!pid_s || !fds_s)
                return 0;
        if (fs_parse_long(pid_s, 1, INT32_MAX, &pid) < 0 || pid != getpid()) {
                unset_listen_env(); /* meant for another process */
                return 0;
        }
        unset_listen_env();
        if (fs_parse_long(fds_s, 0, 1024, &n) < 0 || n != 1) {
                *ret_why = "systemd passed more than one socket (LISTEN_FDS); give it one";
                return -EINVAL;
        }
        /* set close-on-exec first of all: the fd was inherited without it */
        if ((fl = fcntl(fd, F_GETFD)) < 0 || fcntl(fd, F_SETFD, fl | FD_CLOEXEC) < 0 ||
            (fl = fcntl(fd, F_GETFL)) < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
                *ret_why = "the passed socket (fd 3) is not open";
                return -EBADF;
        }
        ol = sizeof(int);
        if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &ol) < 0 || domain != AF_UNIX) {
                *ret_why = "the passed fd 3 is not an AF_UNIX socket";
                return -ENOTSOCK;
        }
        ol = sizeof(int);
        if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &ol) < 0 || type != SOCK_SEQPACKET) {
                *ret_why = "the passed socket is not SOCK_SEQPACKET (ListenSequentialPacket=)";
                return -EPROTOTYPE;
        }
        ol = sizeof(int);
        if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &ol) < 0 || !listening) {
                *ret_why = "the passed socket is not listening";
                return -EINVAL;
        }
        memset(&sa, 0, sizeof(sa));
        if (getsockname(fd, (struct sockaddr *)&sa, &sl) < 0 ||
            sl <= offsetof(struct sockaddr_un, sun_path) || sa.sun_path[0] == '\0') {
                *ret_why = "the passed socket is not bound to a filesystem path";
                return -EINVAL;
        }
        if (fs_format(path, pathlen, "%.*s", (int)(sl - offsetof(struct sockaddr_un, sun_path)),
                      sa.sun_path) < 0) {
                *ret_why = "the passed socket's path is too long";
                return -ENAMETOOLONG;
        }
        *ret_fd = fd;
        return 1;
}

int fsd_systemd_notify(const char *state)
{
        static struct sockaddr_un sa;
        static socklen_t sl;
        static bool read_env;
        int fd, r = 0;

        if (!read_env) {
                const char *e = getenv("NOTIFY_SOCKET");
                size_t n = e ? strlen(e) : 0;

                read_env = true;
                if (n > 0 && n < sizeof(sa.sun_path) && (e[0] == '/' || e[0] == '@')) {
                        sa.sun_family = AF_UNIX;
                        memcpy(sa.sun_path, e, n);
                        if (e[0] == '@') /* abstract namespace */
                                sa.sun_path[0] = '\0';
                        sl = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
                }
                unsetenv("NOTIFY_SOCKET");
        }
        if (!sl)
                return 0;
        if ((fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0)
                return -errno;
        if (sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sa, sl) < 0)
                r = -errno;
        close(fd);
        return r;
}
