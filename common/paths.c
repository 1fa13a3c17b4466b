#include "common/paths.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int fmt(char *buf, size_t size, int n)
{
        return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

int fs_default_socket(char *buf, size_t size)
{
        const char *e = getenv("FORKSERVER_SOCKET");

        if (e && *e)
                return fmt(buf, size, snprintf(buf, size, "%s", e));
        e = getenv("XDG_RUNTIME_DIR");
        if (e && *e == '/')
                return fmt(buf, size, snprintf(buf, size, "%s/forkserver/forkserverd.sock", e));
        return fmt(buf, size,
                   snprintf(buf, size, "/tmp/forkserver-%u/forkserverd.sock", (unsigned)geteuid()));
}

int fs_dirname(const char *path, char *buf, size_t size)
{
        const char *slash = strrchr(path, '/');

        if (!slash)
                return fmt(buf, size, snprintf(buf, size, "."));
        if (slash == path)
                return fmt(buf, size, snprintf(buf, size, "/"));
        return fmt(buf, size, snprintf(buf, size, "%.*s", (int)(slash - path), path));
}

int fs_default_key(const char *socket_path, char *buf, size_t size)
{
        const char *e = getenv("FORKSERVER_KEY_FILE");
        char dir[4096];
        int r;

        if (e && *e)
                return fmt(buf, size, snprintf(buf, size, "%s", e));
        if ((r = fs_dirname(socket_path, dir, sizeof(dir))) < 0)
                return r;
        return fmt(buf, size, snprintf(buf, size, "%s/key", dir));
}
