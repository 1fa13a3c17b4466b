/*
 * The client side of libwordcount: starts one fork-mode worker with a private channel and
 * hands it each file named on the command line as an open fd, then prints the counts.
 *     wordcount-client SOCKET KEYFILE FILE...
 */
#include <fcntl.h>
#include <forkserver.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
        struct forkserver_options o = {.socket_path = argv[1], .key_file = argv[2], .key_fd = -1};
        struct forkserver_spawn_args a = {.entry = "libwordcount:wordcount",
                                          .flags = FORKSERVER_SPAWN_CHANNEL};
        struct forkserver_proc *w;
        struct forkserver *fs;
        const char *why;
        int st, ch;

        if (argc < 4) {
                fprintf(stderr, "usage: wordcount-client SOCKET KEYFILE FILE...\n");
                return 2;
        }
        if (forkserver_connect(&o, &fs, &why) < 0) {
                fprintf(stderr, "wordcount-client: %s\n", why);
                return 1;
        }
        if (forkserver_spawn(fs, &a, &w) < 0) {
                fprintf(stderr, "wordcount-client: %s\n", forkserver_error(fs));
                return 1;
        }
        ch = forkserver_proc_channel(w);
        for (int i = 3; i < argc; i++) {
                char reply[64];
                size_t nfds;
                int fd = open(argv[i], O_RDONLY | O_CLOEXEC), n;

                if (fd < 0) {
                        perror(argv[i]);
                        continue;
                }
                /* the worker reads the file through the fd: it needs no access of its own */
                n = forkserver_channel_send(ch, "count", 5, &fd, 1);
                close(fd);
                if (n < 0 || (n = forkserver_channel_recv(ch, reply, sizeof(reply) - 1, NULL, 0,
                                                          &nfds)) < 0) {
                        fprintf(stderr, "wordcount-client: the worker is gone\n");
                        break;
                }
                reply[n] = '\0';
                printf("%8s %s\n", reply, argv[i]);
        }
        close(forkserver_proc_take_channel(w)); /* EOF: the worker returns */
        forkserver_wait(fs, w, &st);
        printf("worker %d exited with %d\n", (int)forkserver_proc_pid(w),
               WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
        forkserver_close(fs);
        return 0;
}
