/* A library that starts a thread when loaded: forkserverd must refuse to preload it. */
#include <pthread.h>
#include <unistd.h>

static void *sleeper(void *arg)
{
        for (;;)
                pause();
        return arg;
}

__attribute__((constructor)) static void start(void)
{
        pthread_t t;

        pthread_create(&t, NULL, sleeper, NULL);
}
