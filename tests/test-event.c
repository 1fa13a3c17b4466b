/* The front's event loop (forkserver/front/event.c): timers in order, re-armed and disarmed; fds
 * with their handlers; a source stopped during a batch gets none of the batch's events; late
 * sources after the others. */
#include <errno.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/util.h"
#include "forkserver/front/event.h"
#include "testutil.h"

#define NT 200

struct tm_ {
        struct fsd_timer t;
        int id;
};

static int fired[NT], nfired;

static void on_timer(struct fsd_loop *l, struct fsd_timer *t, int64_t now)
{
        struct tm_ *x = fsd_container_of(t, struct tm_, t);

        (void)l;
        ck_assert_int_ge(now, t->at);
        ck_assert(!fsd_timer_armed(t));
        fired[nfired++] = x->id;
}

static int64_t model_min(const int64_t *want)
{
        int64_t m = -1;

        for (int k = 0; k < NT; k++)
                if (want[k] >= 0 && (m < 0 || want[k] < m))
                        m = want[k];
        return m;
}

/* The heap's own invariants: each timer knows its slot, no parent is due after its child. */
static bool heap_ok(const struct fsd_loop *l)
{
        for (size_t i = 0; i < l->nheap; i++)
                if (l->heap[i]->slot != i + 1 ||
                    (i > 0 && l->heap[(i - 1) / 2]->at > l->heap[i]->at))
                        return false;
        return true;
}

/* Random arms, re-arms (earlier and later) and disarms against a model: what fires is what
 * the model says is armed, in order of time. */
START_TEST(timers_fire_in_order)
{
        static struct tm_ tm[NT];
        static int64_t want[NT]; /* the model: when each is due; -1 disarmed */
        struct fsd_loop l;
        int64_t base = fs_now_ms() + 100000; /* none is due while the model is built */
        uint32_t seed = 12345;

        ck_assert_int_eq(fsd_loop_init(&l), 0);
        nfired = 0;
        for (int k = 0; k < NT; k++) {
                tm[k].id = k;
                want[k] = -1;
        }
        for (int op = 0; op < 10000; op++) {
                int k;

                seed = seed * 1103515245u + 12345u;
                k = (int)((seed >> 8) % NT);
                if ((seed >> 4) % 4 == 0) {
                        fsd_timer_disarm(&l, &tm[k].t);
                        want[k] = -1;
                } else {
                        int64_t at = base + (int64_t)((seed >> 12) % 5000) * NT + k; /* distinct */

                        ck_assert_int_eq(fsd_timer_arm(&l, &tm[k].t, at, on_timer), 0);
                        want[k] = at;
                }
                ck_assert(fsd_timer_armed(&tm[k].t) == (want[k] >= 0));
                ck_assert_int_eq(fsd_loop_next_timer(&l), model_min(want));
                ck_assert_msg(heap_ok(&l), "heap broken after operation %d", op);
        }
        int armed = 0;

        for (int k = 0; k < NT; k++)
                armed += want[k] >= 0;
        /* moved to now, in their order: they all fire at the next turn */
        for (int k = 0; k < NT; k++)
                if (want[k] >= 0)
                        ck_assert_int_eq(fsd_timer_arm(&l, &tm[k].t, want[k] - base, on_timer), 0);
        ck_assert_int_eq(fsd_loop_turn(&l, 0), 0);
        ck_assert_int_eq(nfired, armed);
        for (int i = 1; i < nfired; i++)
                ck_assert_int_lt(want[fired[i - 1]], want[fired[i]]);
        ck_assert_int_eq(fsd_loop_next_timer(&l), -1);
        fsd_loop_fini(&l);
}
END_TEST

struct pair {
        struct fsd_io io;
        int fd, peer, hits;
        struct pair *victim; /* stopped by this one's handler */
        int *order, *norder, tag;
};

static void on_io(struct fsd_loop *l, struct fsd_io *io, uint32_t events)
{
        struct pair *p = fsd_container_of(io, struct pair, io);
        char b[16];

        ck_assert(events & EPOLLIN);
        p->hits++;
        p->order[(*p->norder)++] = p->tag;
        (void)read(p->fd, b, sizeof(b));
        if (p->victim)
                fsd_io_stop(l, &p->victim->io);
}

static void make_pair(struct pair *p, int tag, int *order, int *norder)
{
        int sv[2];

        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv), 0);
        *p = (struct pair){.io = FSD_IO_INIT,
                           .fd = sv[0],
                           .peer = sv[1],
                           .tag = tag,
                           .order = order,
                           .norder = norder};
}

/* Whichever of two ready sources runs first stops the other: the other gets no event from
 * the batch the kernel already reported; late sources run after the rest. */
START_TEST(stopped_sources_get_no_stale_events)
{
        struct fsd_loop l;
        struct pair p[4];
        int order[16], norder = 0;

        ck_assert_int_eq(fsd_loop_init(&l), 0);
        for (int i = 0; i < 4; i++)
                make_pair(&p[i], i, order, &norder);
        p[0].victim = &p[1];
        p[1].victim = &p[0];
        ck_assert_int_eq(fsd_io_start(&l, &p[2].io, p[2].fd, EPOLLIN, true, on_io), 0);
        for (int i = 0; i < 2; i++)
                ck_assert_int_eq(fsd_io_start(&l, &p[i].io, p[i].fd, EPOLLIN, false, on_io), 0);
        ck_assert_int_eq(fsd_io_start(&l, &p[3].io, p[3].fd, EPOLLIN, false, on_io), 0);
        for (int i = 0; i < 4; i++)
                ck_assert_int_eq(write(p[i].peer, "x", 1), 1);
        ck_assert_int_eq(fsd_loop_turn(&l, 1000), 0);
        ck_assert_int_eq(p[0].hits + p[1].hits, 1);
        ck_assert_int_eq(p[2].hits, 1);
        ck_assert_int_eq(p[3].hits, 1);
        ck_assert_int_eq(norder, 3);
        ck_assert_int_eq(order[2], 2); /* the late one last */
        /* the stopped one is stopped for good; the other goes on */
        struct pair *live = p[0].hits ? &p[0] : &p[1], *dead = p[0].hits ? &p[1] : &p[0];

        ck_assert(!fsd_io_active(&dead->io));
        live->victim = NULL;
        ck_assert_int_eq(write(live->peer, "y", 1), 1);
        ck_assert_int_eq(fsd_loop_turn(&l, 1000), 0);
        ck_assert_int_eq(live->hits, 2);
        ck_assert_int_eq(dead->hits, 0);
        /* update: EPOLLIN off means no event though data waits */
        ck_assert_int_eq(write(p[3].peer, "z", 1), 1);
        ck_assert_int_eq(fsd_io_update(&l, &p[3].io, 0), 0);
        ck_assert_int_eq(fsd_loop_turn(&l, 50), 0);
        ck_assert_int_eq(p[3].hits, 1);
        ck_assert_int_eq(fsd_io_update(&l, &p[3].io, EPOLLIN), 0);
        ck_assert_int_eq(fsd_loop_turn(&l, 1000), 0);
        ck_assert_int_eq(p[3].hits, 2);
        ck_assert_int_eq(fsd_io_update(&l, &dead->io, EPOLLIN), -EBADF);
        for (int i = 0; i < 4; i++) {
                fsd_io_stop(&l, &p[i].io);
                close(p[i].fd);
                close(p[i].peer);
        }
        fsd_loop_fini(&l);
}
END_TEST

/* A turn waits no longer than the next timer. */
struct wake {
        struct fsd_timer t;
        int woke;
};

static void on_wake(struct fsd_loop *l, struct fsd_timer *t, int64_t now)
{
        (void)l;
        (void)now;
        fsd_container_of(t, struct wake, t)->woke = 1;
}

START_TEST(turn_waits_for_the_next_timer_only)
{
        struct wake w = {FSD_TIMER_INIT, 0};
        struct fsd_loop l;
        int64_t t0 = fs_now_ms();

        ck_assert_int_eq(fsd_loop_init(&l), 0);
        ck_assert_int_eq(fsd_timer_arm(&l, &w.t, t0 + 30, on_wake), 0);
        ck_assert_int_eq(fsd_loop_turn(&l, -1), 0);
        ck_assert_int_eq(w.woke, 1);
        ck_assert_int_ge(fs_now_ms() - t0, 30);
        ck_assert_int_lt(fs_now_ms() - t0, 10000);
        ck_assert_int_eq(fsd_loop_next_timer(&l), -1);
        fsd_loop_fini(&l);
}
END_TEST

static Suite *suite(void)
{
        Suite *s = suite_create("event");
        TCase *tc = tcase_create("loop");

        tcase_set_timeout(tc, 30);
        tcase_add_test(tc, timers_fire_in_order);
        tcase_add_test(tc, stopped_sources_get_no_stale_events);
        tcase_add_test(tc, turn_waits_for_the_next_timer_only);
        suite_add_tcase(s, tc);
        return s;
}

int main(void)
{
        return run_suite(suite());
}
