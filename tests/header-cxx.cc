// forkserver.h from C++: extern "C" linkage and the INIT macros, warning-free at -Wextra.
#include <cstring>

#include "client/forkserver.h"

int main()
{
        struct forkserver_options o = FORKSERVER_OPTIONS_INIT;
        struct forkserver_spawn_args a = FORKSERVER_SPAWN_ARGS_INIT;

        return o.key_fd == 0 && a.nfds == 0 &&
                               std::strcmp(forkserver_version(), FORKSERVER_VERSION) == 0
                       ? 0
                       : 1;
}
