/*
 * An example job library for fork mode. Preload it:
 *     forkserverd --preload /path/libwordcount.so ...
 * and every worker starts with it loaded, no exec. The entry "wordcount" serves its channel:
 * each message carries a file descriptor (a memfd, a file, a pipe); the reply is the number of
 * words read from it. It ends when the client closes its end.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <unistd.h>

#include <forkserver.h>

__attribute__((visibility("default"))) int wordcount(const struct forkserver_worker *w);

static long count_words(int fd)
{
        char buf[65536];
        long words = 0;
        int in_word = 0;
        ssize_t n;

        while ((n = read(fd, buf, sizeof(buf))) > 0)
                for (ssize_t i = 0; i < n; i++) {
                        int space = isspace((unsigned char)buf[i]);

                        words += !space && !in_word;
                        in_word = !space;
                }
        return n < 0 ? -1 : words;
}

int wordcount(const struct forkserver_worker *w)
{
        char msg[64];
        int fds[1];

        for (;;) {
                size_t nfds;
                int n = forkserver_channel_recv(w->channel_fd, msg, sizeof(msg), fds, 1, &nfds);

                if (n == -EPIPE)
                        return 0; /* the client is done */
                if (n < 0 || nfds != 1)
                        return 1;
                n = snprintf(msg, sizeof(msg), "%ld", count_words(fds[0]));
                close(fds[0]);
                if (forkserver_channel_send(w->channel_fd, msg, (size_t)n, NULL, 0) < 0)
                        return 1;
        }
}
