#include "forkserver/front/closer.h"
#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/fdpass.h"
#include "common/proto.h"
#include "common/util.h"
#include "forkserver/front/launch.h"

#define CLOSER_SOCK_FD 3
#define MAX_THREADS 256 /* closes that may be stuck at once before the queue waits */
#define QUEUE 8192

/* ---- the closer process ---- */

static struct {
        pthread_mutex_t lock;
        pthread_cond_t more;
        int q[QUEUE];
        size_t head, len;
        unsigned threads, idle;
} cq = {.lock = PTHREAD_MUTEX_INITIALIZER, .more = PTHREAD_COND_INITIALIZER};

static void *close_thread(void *arg)
{
        (void)arg;
        pthread_mutex_lock(&cq.lock);
        for (;;) {
                while (cq.len == 0) {
                        cq.idle++;
                        pthread_cond_wait(&cq.more, &cq.lock);
                        cq.idle--;
                }
                int fd = cq.q[cq.head];

                cq.head = (cq.head + 1) % QUEUE;
                cq.len--;
                pthread_mutex_unlock(&cq.lock);
                close(fd); /* may take as long as it takes: it is ours alone */
                pthread_mutex_lock(&cq.lock);
        }
        return NULL;
}

static int start_thread(void)
{
        pthread_attr_t attr;
        pthread_t t;
        int r;

        if ((r = pthread_attr_init(&attr)) != 0)
                return -r;
        (void)pthread_attr_setstacksize(&attr, 64 * 1024);
        (void)pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        r = pthread_create(&t, &attr, close_thread, NULL);
        pthread_attr_destroy(&attr);
        return -r;
}

/* Queues fd for a thread, starting one when none is idle; closes here when that fails. */
static void close_later(int fd)
{
        bool here = false;

        pthread_mutex_lock(&cq.lock);
        if (cq.len == QUEUE) {
                here = true;
        } else {
                cq.q[(cq.head + cq.len++) % QUEUE] = fd;
                if (cq.idle < cq.len && cq.threads < MAX_THREADS && start_thread() == 0)
                        cq.threads++;
                if (cq.threads == 0) {
                        cq.len--;
                        here = true;
                } else {
                        pthread_cond_signal(&cq.more);
                }
        }
        pthread_mutex_unlock(&cq.lock);
        if (here)
                close(fd);
}

#define HELD (4 * FS_SCM_MAX_FD)

static int held[HELD];
static size_t nheld;

static __attribute__((noreturn)) void closer_main(void *arg, int sock, pid_t front)
{
        uint8_t ok[64], byte[64];
        struct fs_msgw w;
        sigset_t all;
        int n;

        (void)arg;
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != front)
                _exit(1);
        (void)prctl(PR_SET_NAME, "forkserverd-cls");
        if (sock != CLOSER_SOCK_FD) {
                if (dup3(sock, CLOSER_SOCK_FD, O_CLOEXEC) < 0)
                        _exit(1);
                if (sock < CLOSER_SOCK_FD)
                        close(sock);
        }
        if (close_range(CLOSER_SOCK_FD + 1, ~0u, 0) < 0)
                _exit(1);
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, NULL); /* threads too: nothing to handle here */
        fs_imsg_begin(&w, ok, sizeof(ok), FS_I_READY, 0);
        if ((n = fs_msg_finish(&w)) < 0 ||
            fs_fdpass_send(CLOSER_SOCK_FD, ok, (size_t)n, NULL, 0, 0) < 0)
                _exit(1);
        for (;;) {
                int fds[FS_SCM_MAX_FD], flags;
                bool foreign;
                size_t nfds;
                int got = fs_fdpass_recv_raw(CLOSER_SOCK_FD, byte, sizeof(byte), fds, &nfds, &flags,
                                             &foreign, 0);

                if (got == -EINTR)
                        continue;
                if (got <= 0)
                        _exit(0); /* the front is done; exit closes what the threads hold */
                /* Held until the front says it let go of its copies ('C'): closed before
                 * that, ours would not be the last reference, and the front's would be. */
                for (size_t i = 0; i < nfds; i++) {
                        if (nheld < HELD)
                                held[nheld++] = fds[i];
                        else
                                close_later(fds[i]); /* the front broke its word */
                }
                if (got == 1 && byte[0] == 'C') {
                        for (size_t i = 0; i < nheld; i++)
                                close_later(held[i]);
                        nheld = 0;
                }
        }
}

int fsd_closer_start(struct fsd_closer *cl, char *err, size_t errlen)
{
        int r;

        *cl = (struct fsd_closer){.fd = -1, .pidfd = -1, .io = FSD_IO_INIT, .io_exit = FSD_IO_INIT};
        if ((r = fsd_helper_start("closer", closer_main, NULL, NULL, 0, NULL, &cl->pid, &cl->pidfd,
                                  &cl->fd, err, errlen)) < 0)
                return r;
        return 0;
}

/* ---- the front's side ---- */

static void on_writable(struct fsd_loop *l, struct fsd_io *io, uint32_t events)
{
        (void)l;
        (void)events;
        fsd_closer_flush(fsd_container_of(io, struct fsd_closer, io));
}

static void died(struct fsd_loop *l, struct fsd_io *io, uint32_t events);

void fsd_closer_attach(struct fsd_closer *cl, struct fsd_loop *l)
{
        cl->loop = l;
        if (cl->pidfd >= 0 && fsd_io_start(l, &cl->io_exit, cl->pidfd, EPOLLIN, false, died) < 0)
                cl->loop = NULL; /* without it, a full socket waits for the next turn */
}

static void want_out(struct fsd_closer *cl, bool on)
{
        if (fsd_io_active(&cl->io) == on || !cl->loop)
                return;
        if (on)
                (void)fsd_io_start(cl->loop, &cl->io, cl->fd, EPOLLOUT, false, on_writable);
        else
                fsd_io_stop(cl->loop, &cl->io);
}

/* Without a closer: here, as a last resort. */
static void close_here(struct fsd_closer *cl, const int *fds, size_t n)
{
        for (size_t i = 0; i < n; i++)
                if (fds[i] >= 0) {
                        close(fds[i]);
                        cl->closed_here++;
                }
}

/* 'C': every fd sent before it, the front has closed its copy of. */
static bool release(struct fsd_closer *cl)
{
        static const uint8_t c = 'C';
        int r;

        if (!cl->unreleased)
                return true;
        r = cl->fd < 0 ? -EPIPE : fs_fdpass_send(cl->fd, &c, 1, NULL, 0, MSG_DONTWAIT);
        if (r == -EAGAIN)
                return false;
        cl->unreleased = false; /* or the closer is gone, and exit closes what it held */
        return true;
}

void fsd_closer_flush(struct fsd_closer *cl)
{
        static const uint8_t byte = 'F';

        if (!release(cl)) {
                want_out(cl, true);
                return;
        }
        while (cl->n > 0) {
                size_t k = cl->n < FS_MAX_MSG_FDS ? cl->n : FS_MAX_MSG_FDS;
                int r = cl->fd < 0 ? -EPIPE
                                   : fs_fdpass_send(cl->fd, &byte, 1, cl->pending, k, MSG_DONTWAIT);

                if (r == -EAGAIN) {
                        want_out(cl, true);
                        return;
                }
                if (r < 0) /* the closer is gone */
                        close_here(cl, cl->pending, k);
                else
                        for (size_t i = 0; i < k; i++)
                                close(cl->pending[i]); /* the closer holds them now */
                cl->handed += r < 0 ? 0 : k;
                cl->unreleased |= r >= 0;
                cl->n -= k;
                memmove(cl->pending, cl->pending + k, cl->n * sizeof(int));
                if (!release(cl)) {
                        want_out(cl, true);
                        return;
                }
        }
        want_out(cl, false);
}

void fsd_closer_put(struct fsd_closer *cl, const int *fds, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                if (fds[i] < 0)
                        continue;
                if (cl->n == FSD_CLOSER_PENDING)
                        fsd_closer_flush(cl);
                if (cl->n == FSD_CLOSER_PENDING) {
                        close_here(cl, &fds[i], 1); /* the closer is stuck: nothing better */
                        continue;
                }
                cl->pending[cl->n++] = fds[i];
        }
}

static void reap(struct fsd_closer *cl)
{
        cl->pidfd = fs_pidfd_end(cl->pidfd, -1);
}

/* Its pidfd became readable: it died; reaps it, closes go on here. */
static void died(struct fsd_loop *l, struct fsd_io *io, uint32_t events)
{
        struct fsd_closer *cl = fsd_container_of(io, struct fsd_closer, io_exit);

        (void)events;
        fs_log(FS_LOG_ERROR, "the closer died: passed fds are closed by the front itself from "
                             "now on");
        want_out(cl, false);
        fsd_io_stop(l, io);
        cl->fd = fs_close(cl->fd);
        reap(cl);
        fsd_closer_flush(cl); /* what waited is closed here now */
}

void fsd_closer_stop(struct fsd_closer *cl, int timeout_ms)
{
        struct pollfd pf = {.fd = cl->pidfd, .events = POLLIN};

        for (int64_t end = fs_now_ms() + timeout_ms;
             (cl->n > 0 || cl->unreleased) && cl->fd >= 0;) {
                struct pollfd out = {.fd = cl->fd, .events = POLLOUT};
                int64_t left = end - fs_now_ms();

                if (left <= 0 || poll(&out, 1, (int)left) <= 0)
                        break;
                cl->loop = NULL; /* the loop is over: nothing is watched any more */
                cl->io.fd = -1;
                fsd_closer_flush(cl);
        }
        if (cl->loop) {
                fsd_io_stop(cl->loop, &cl->io);
                fsd_io_stop(cl->loop, &cl->io_exit);
        }
        cl->loop = NULL;
        cl->fd = fs_close(cl->fd); /* EOF: the closer exits once its threads are done */
        if (cl->pidfd >= 0) {
                if (poll(&pf, 1, timeout_ms) <= 0)
                        (void)pidfd_send_signal(cl->pidfd, SIGKILL, NULL, 0);
                reap(cl);
        }
        /* what never reached it (or with no closer at all) is closed here */
        close_here(cl, cl->pending, cl->n);
        cl->n = 0;
}
