/* The C API in a few lines: connect, run three workers at once, collect their exits. */
#include <forkserver.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
        struct forkserver_options opts = {.socket_path = argc > 1 ? argv[1] : NULL,
                                          .key_file = argc > 2 ? argv[2] : NULL,
                                          .key_fd = -1};
        const char *const jobs[][4] = {
            {"/bin/sh", "-c", "echo \"worker $$ says hello\"", NULL},
            {"/bin/sh", "-c", "exit 3", NULL},
            {"/bin/sh", "-c", "kill -TERM $$", NULL},
        };
        struct forkserver_fd_map out[] = {{1, STDOUT_FILENO}, {2, STDERR_FILENO}};
        struct forkserver *fs;
        const char *why;
        int r;

        setvbuf(stdout, NULL, _IOLBF, 0);
        if ((r = forkserver_connect(&opts, &fs, &why)) < 0) {
                fprintf(stderr, "spawn-demo: %s\n", why);
                return 1;
        }
        for (size_t i = 0; i < 3; i++) {
                struct forkserver_spawn_args a = {
                    .path = jobs[i][0], .argv = jobs[i], .fds = out, .nfds = 2};
                struct forkserver_proc *w;

                if ((r = forkserver_spawn(fs, &a, &w)) < 0) {
                        fprintf(stderr, "spawn-demo: %s\n", forkserver_error(fs));
                        forkserver_close(fs);
                        return 1;
                }
                printf("spawned worker %d: %s\n", (int)forkserver_proc_pid(w), jobs[i][2]);
        }
        for (;;) {
                struct forkserver_proc *w;
                int st;

                if (forkserver_wait_any(fs, 5000, &w) < 0)
                        break; /* -ECHILD: all reported */
                forkserver_poll(fs, w, &st);
                if (WIFEXITED(st))
                        printf("worker %d exited with %d\n", (int)forkserver_proc_pid(w),
                               WEXITSTATUS(st));
                else
                        printf("worker %d killed by signal %d (%s)\n", (int)forkserver_proc_pid(w),
                               WTERMSIG(st), strsignal(WTERMSIG(st)));
                forkserver_proc_free(fs, w);
        }
        forkserver_close(fs);
        return 0;
}
