/* Exec-mode GPU worker: maps each buffer of $FORKSERVER_GPU_FDS, fills it with argv[1] (a
 * byte value), unmaps, and prints "FD SIZE UUID" per buffer. Exits 0, or 10 + the step (14:
 * the fd would survive a further exec). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>

#include "client/forkserver.h"

int main(int argc, char **argv)
{
        struct forkserver_gpu_buf b[8];
        size_t n;

        if (argc != 2 || forkserver_gpu_from_env(b, 8, &n) < 0 || n == 0)
                return 10;
        for (size_t i = 0; i < n; i++) {
                char uuid[FORKSERVER_GPU_UUID_STR];
                struct forkserver_gpu_map m;

                if (forkserver_gpu_map(&b[i], &m) < 0)
                        return 11;
                if (forkserver_gpu_fill(&m, (uint8_t)strtol(argv[1], NULL, 0)) < 0)
                        return 12;
                if (forkserver_gpu_unmap(&m) < 0)
                        return 13;
                if (!(fcntl(b[i].fd, F_GETFD) & FD_CLOEXEC))
                        return 14;
                forkserver_gpu_uuid_str(b[i].uuid, uuid);
                printf("%d %llu %s\n", b[i].fd, (unsigned long long)b[i].size, uuid);
        }
        return 0;
}
