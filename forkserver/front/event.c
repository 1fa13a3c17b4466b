#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "common/util.h"
#include "forkserver/front/event.h"

#define MAX_EVENTS 64

int fsd_loop_init(struct fsd_loop *l)
{
        *l = (struct fsd_loop){.epfd = epoll_create1(EPOLL_CLOEXEC)};
        return l->epfd < 0 ? -errno : 0;
}

void fsd_loop_fini(struct fsd_loop *l)
{
        l->epfd = fs_close(l->epfd);
        free(l->heap);
        l->heap = NULL;
        l->nheap = l->capheap = 0;
}

int fsd_io_start(struct fsd_loop *l, struct fsd_io *io, int fd, uint32_t events, bool late,
                 fsd_io_fn fn)
{
        struct epoll_event ev = {.events = events, .data.ptr = io};

        if (fsd_io_active(io))
                fsd_io_stop(l, io);
        if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
                return -errno;
        *io = (struct fsd_io){.fd = fd, .events = events, .late = late, .fn = fn};
        return 0;
}

int fsd_io_update(struct fsd_loop *l, struct fsd_io *io, uint32_t events)
{
        struct epoll_event ev = {.events = events, .data.ptr = io};

        if (!fsd_io_active(io))
                return -EBADF;
        if (events == io->events)
                return 0;
        if (epoll_ctl(l->epfd, EPOLL_CTL_MOD, io->fd, &ev) < 0)
                return -errno;
        io->events = events;
        return 0;
}

void fsd_io_stop(struct fsd_loop *l, struct fsd_io *io)
{
        struct epoll_event *ev = l->batch;

        if (!fsd_io_active(io))
                return;
        (void)epoll_ctl(l->epfd, EPOLL_CTL_DEL, io->fd, NULL);
        io->fd = -1;
        /* what the kernel already reported for it is not delivered */
        for (int i = 0; i < l->nbatch; i++)
                if (ev[i].data.ptr == io)
                        ev[i].data.ptr = NULL;
}

/* ---- timers: a binary min-heap; each timer knows its slot ---- */

static bool before(const struct fsd_timer *a, const struct fsd_timer *b)
{
        return a->at < b->at;
}

static void place(struct fsd_loop *l, size_t i, struct fsd_timer *t)
{
        l->heap[i] = t;
        t->slot = i + 1;
}

static void sift_up(struct fsd_loop *l, size_t i)
{
        struct fsd_timer *t = l->heap[i];

        while (i > 0 && before(t, l->heap[(i - 1) / 2])) {
                place(l, i, l->heap[(i - 1) / 2]);
                i = (i - 1) / 2;
        }
        place(l, i, t);
}

static void sift_down(struct fsd_loop *l, size_t i)
{
        struct fsd_timer *t = l->heap[i];

        for (;;) {
                size_t c = 2 * i + 1;

                if (c >= l->nheap)
                        break;
                if (c + 1 < l->nheap && before(l->heap[c + 1], l->heap[c]))
                        c++;
                if (!before(l->heap[c], t))
                        break;
                place(l, i, l->heap[c]);
                i = c;
        }
        place(l, i, t);
}

int fsd_timer_arm(struct fsd_loop *l, struct fsd_timer *t, int64_t at_ms, fsd_timer_fn fn)
{
        if (fsd_timer_armed(t)) {
                int64_t old = t->at;

                t->at = at_ms;
                t->fn = fn;
                if (at_ms < old)
                        sift_up(l, t->slot - 1);
                else
                        sift_down(l, t->slot - 1);
                return 0;
        }
        if (l->nheap == l->capheap) {
                size_t cap = l->capheap ? 2 * l->capheap : 64;
                struct fsd_timer **h = realloc(l->heap, cap * sizeof(*h));

                if (!h)
                        return -ENOMEM;
                l->heap = h;
                l->capheap = cap;
        }
        t->at = at_ms;
        t->fn = fn;
        l->heap[l->nheap++] = t;
        sift_up(l, l->nheap - 1);
        return 0;
}

void fsd_timer_disarm(struct fsd_loop *l, struct fsd_timer *t)
{
        size_t i;

        if (!fsd_timer_armed(t))
                return;
        i = t->slot - 1;
        t->slot = 0;
        if (i == --l->nheap)
                return;
        place(l, i, l->heap[l->nheap]);
        if (i > 0 && before(l->heap[i], l->heap[(i - 1) / 2]))
                sift_up(l, i);
        else
                sift_down(l, i);
}

int64_t fsd_loop_next_timer(const struct fsd_loop *l)
{
        return l->nheap ? l->heap[0]->at : -1;
}

static void run_timers(struct fsd_loop *l)
{
        int64_t now = fs_now_ms();

        /* one that re-arms itself for now runs again next turn, not in a loop here */
        for (size_t budget = l->nheap; budget > 0 && l->nheap && l->heap[0]->at <= now; budget--) {
                struct fsd_timer *t = l->heap[0];

                fsd_timer_disarm(l, t);
                t->fn(l, t, now);
        }
}

static void dispatch(struct fsd_loop *l, struct epoll_event *ev, int n, bool late)
{
        for (int i = 0; i < n; i++) {
                struct fsd_io *io = ev[i].data.ptr;

                if (!io || io->late != late)
                        continue;
                ev[i].data.ptr = NULL;
                io->fn(l, io, ev[i].events);
        }
}

int fsd_loop_turn(struct fsd_loop *l, int max_wait_ms)
{
        struct epoll_event ev[MAX_EVENTS];
        int64_t next, now;
        int timeout = max_wait_ms, n;

        run_timers(l);
        if ((next = fsd_loop_next_timer(l)) >= 0) {
                now = fs_now_ms();
                int64_t t = next > now ? next - now : 0;

                if (t > 24 * 3600 * 1000)
                        t = 24 * 3600 * 1000;
                if (timeout < 0 || t < timeout)
                        timeout = (int)t;
        }
        n = epoll_wait(l->epfd, ev, MAX_EVENTS, timeout);
        if (n < 0)
                return errno == EINTR ? 0 : -errno;
        l->batch = ev;
        l->nbatch = n;
        dispatch(l, ev, n, false);
        dispatch(l, ev, n, true);
        l->batch = NULL;
        l->nbatch = 0;
        run_timers(l);
        return 0;
}
