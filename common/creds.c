#include "common/creds.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static void put_be64(uint8_t *p, uint64_t v)
{
        for (int i = 7; i >= 0; i--, v >>= 8)
                p[i] = (uint8_t)v;
}

void fs_creds_pidns(uint8_t out[FS_PIDNS_LEN])
{
        struct stat st;

        memset(out, 0, FS_PIDNS_LEN);
        /* nsfs identities are global: the same namespace has the same (dev, ino) whichever
         * mount namespace /proc belongs to. */
        if (stat("/proc/self/ns/pid", &st) < 0)
                return;
        put_be64(out, (uint64_t)st.st_dev);
        put_be64(out + 8, (uint64_t)st.st_ino);
}

void fs_creds_self(struct fs_creds *ret)
{
        *ret = (struct fs_creds){
            .uid = (uint32_t)geteuid(), .gid = (uint32_t)getegid(), .pid = (uint32_t)getpid()};
        fs_creds_pidns(ret->pidns);
}

int fs_creds_peer(int fd, const uint8_t pidns[FS_PIDNS_LEN], struct fs_creds *ret)
{
        struct ucred cr;
        socklen_t len = sizeof(cr);

        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0)
                return -errno;
        if (len != sizeof(cr))
                return -EIO;
        *ret = (struct fs_creds){.uid = (uint32_t)cr.uid,
                                 .gid = (uint32_t)cr.gid,
                                 .pid = cr.pid > 0 ? (uint32_t)cr.pid : 0};
        memcpy(ret->pidns, pidns, FS_PIDNS_LEN);
        return 0;
}

bool fs_creds_pidns_known(const uint8_t pidns[FS_PIDNS_LEN])
{
        for (size_t i = 0; i < FS_PIDNS_LEN; i++)
                if (pidns[i])
                        return true;
        return false;
}
