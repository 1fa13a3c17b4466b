/*
 * Preloaded by fsbench: a fork-mode entry that does nothing, and, when FSBENCH_ZYGOTE_MIB is
 * set, that many MiB allocated and touched at load, so the zygote is as large as a real
 * preloaded application. The memory asks for transparent huge pages (FSBENCH_HUGEPAGES=0
 * says no): fork copies one page-table entry per 2 MiB instead of per 4 KiB.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "client/forkserver.h"

__attribute__((visibility("default"))) int noop(const struct forkserver_worker *w);
__attribute__((visibility("default"))) int echo_memfd(const struct forkserver_worker *w);

static char *held;

int noop(const struct forkserver_worker *w)
{
        (void)w;
        return 0;
}

/* Channel round trips: reads all of each memfd it is sent (as a consumer would), then sends
 * it back with the message. Ends at EOF. */
int echo_memfd(const struct forkserver_worker *w)
{
        static char data[1 << 20];
        char msg[64];
        int fd;

        for (;;) {
                size_t nfds;
                int n = forkserver_channel_recv(w->channel_fd, msg, sizeof(msg), &fd, 1, &nfds);

                if (n < 0)
                        return n == -EPIPE ? 0 : 1;
                if (nfds != 1)
                        return 1;
                for (off_t off = 0; pread(fd, data, sizeof(data), off) > 0; off += sizeof(data))
                        ;
                n = forkserver_channel_send(w->channel_fd, msg, (size_t)n, &fd, 1);
                close(fd);
                if (n < 0)
                        return 1;
        }
}

__attribute__((constructor)) static void hold_memory(void)
{
        const char *e = getenv("FSBENCH_ZYGOTE_MIB"), *hp = getenv("FSBENCH_HUGEPAGES");
        size_t n = e ? (size_t)strtoul(e, NULL, 10) << 20 : 0, align = 2u << 20;
        char *p;

        if (n == 0)
                return;
        p = mmap(NULL, n + align, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
                return;
        held = (char *)(((unsigned long)p + align - 1) & ~(unsigned long)(align - 1));
        madvise(held, n, hp && strcmp(hp, "0") == 0 ? MADV_NOHUGEPAGE : MADV_HUGEPAGE);
        memset(held, 1, n);
}
