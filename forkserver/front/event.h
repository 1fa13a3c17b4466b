/*
 * forkserverd's event loop: file descriptors and timers, each with its own handler, in the
 * shape of sd-event and libuv. It knows nothing of what it serves: an owner embeds a
 * struct fsd_io or struct fsd_timer in its own state, starts it with a handler, and finds its
 * state again from the handler's argument (fsd_container_of). Single-threaded; no allocation
 * per source (the timer heap grows as timers are armed).
 *
 * A source stopped from a handler gets no further event from the batch being dispatched,
 * even when the kernel reported one for it already, so an owner may stop and reuse a source
 * from any handler. Freeing the owner's memory from inside one of its own handlers stays
 * the owner's concern.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define fsd_container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

struct fsd_loop;
struct fsd_io;
struct fsd_timer;

/* events: EPOLLIN, EPOLLOUT, EPOLLHUP, EPOLLERR as epoll reported them. */
typedef void (*fsd_io_fn)(struct fsd_loop *l, struct fsd_io *io, uint32_t events);
typedef void (*fsd_timer_fn)(struct fsd_loop *l, struct fsd_timer *t, int64_t now_ms);

struct fsd_io {
        int fd;          /* -1 while stopped */
        uint32_t events; /* asked for */
        bool late;       /* dispatched after the batch's other sources */
        fsd_io_fn fn;
};

struct fsd_timer {
        int64_t at;  /* fs_now_ms() clock */
        size_t slot; /* in the heap, + 1; 0 while disarmed */
        fsd_timer_fn fn;
};

#define FSD_IO_INIT                                                                                \
        {                                                                                          \
                .fd = -1                                                                           \
        }
#define FSD_TIMER_INIT                                                                             \
        {                                                                                          \
                0                                                                                  \
        }

struct fsd_loop {
        int epfd;
        struct fsd_timer **heap; /* a binary min-heap by at */
        size_t nheap, capheap;
        void *batch; /* the epoll events being dispatched (event.c) */
        int nbatch;
};

int fsd_loop_init(struct fsd_loop *l);
/* Closes the epoll fd; the sources' fds stay their owners'. */
void fsd_loop_fini(struct fsd_loop *l);

/* Watches fd for events; late ones run after the rest of each batch (so that, say, a new
 * connection is accepted only after every connection that sent something was served).
 * 0, or a negative errno. */
int fsd_io_start(struct fsd_loop *l, struct fsd_io *io, int fd, uint32_t events, bool late,
                 fsd_io_fn fn);
int fsd_io_update(struct fsd_loop *l, struct fsd_io *io, uint32_t events);
/* Stops watching (the fd stays open); a stopped source is a no-op. */
void fsd_io_stop(struct fsd_loop *l, struct fsd_io *io);
static inline bool fsd_io_active(const struct fsd_io *io)
{
        return io->fd >= 0;
}

/* Arms (or re-arms) t for at_ms; 0, or -ENOMEM (t stays as it was). */
int fsd_timer_arm(struct fsd_loop *l, struct fsd_timer *t, int64_t at_ms, fsd_timer_fn fn);
void fsd_timer_disarm(struct fsd_loop *l, struct fsd_timer *t);
static inline bool fsd_timer_armed(const struct fsd_timer *t)
{
        return t->slot != 0;
}
/* When the earliest timer is due; -1 when none is armed. */
int64_t fsd_loop_next_timer(const struct fsd_loop *l);

/*
 * One turn: runs the timers that are due, waits for an event (at most until the next timer
 * is due, or max_wait_ms when that is sooner; -1: no limit), dispatches what came, then the
 * timers that fell due meanwhile. 0, or a negative errno (-EINTR is not one).
 */
int fsd_loop_turn(struct fsd_loop *l, int max_wait_ms);
