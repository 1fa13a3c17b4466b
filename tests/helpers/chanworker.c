/* An exec-mode worker that serves its channel with the same echo service as libjobs. */
#include "client/forkserver.h"

int job_echo(const struct forkserver_worker *w);

int main(void)
{
        struct forkserver_worker w = {.channel_fd = forkserver_channel_fd()};

        return w.channel_fd < 0 ? 2 : job_echo(&w);
}
