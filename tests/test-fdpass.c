#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include "common/fdpass.h"
#include "common/proto.h"
#include "testutil.h"

static int sv[2];

static void setup(void)
{
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
}

static void teardown(void)
{
        fs_close_many(sv, 2);
}

START_TEST(roundtrip_with_fds)
{
        int fds[2], got[4];
        char buf[64];
        size_t n;
        int mfd = memfd_create("t", MFD_CLOEXEC);

        ck_assert_int_ge(mfd, 0);
        ck_assert_int_eq(write(mfd, "payload", 7), 7);
        ck_assert_int_eq(pipe2(fds, O_CLOEXEC), 0);
        int send_fds[2] = {mfd, fds[1]};
        ck_assert_int_eq(fs_fdpass_send(sv[0], "hello", 5, send_fds, 2, 0), 0);
        ck_assert_int_eq(fs_fdpass_recv(sv[1], buf, sizeof(buf), got, 4, &n, 0), 5);
        ck_assert_mem_eq(buf, "hello", 5);
        ck_assert_uint_eq(n, 2);
        /* Received fds are close-on-exec from birth. */
        ck_assert_int_eq(fcntl(got[0], F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
        ck_assert_int_eq(fcntl(got[1], F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
        ck_assert_int_eq(pread(got[0], buf, 7, 0), 7);
        ck_assert_mem_eq(buf, "payload", 7);
        ck_assert_int_eq(write(got[1], "x", 1), 1);
        ck_assert_int_eq(read(fds[0], buf, 1), 1);
        close(mfd);
        fs_close_many(fds, 2);
        fs_close_many(got, 2);
}
END_TEST

START_TEST(too_many_fds_closed)
{
        int fds[8], got[4], base;
        char buf[16];
        size_t n = 99;

        for (int i = 0; i < 8; i++)
                fds[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
        ck_assert_int_eq(fs_fdpass_send(sv[0], "x", 1, fds, 8, 0), 0);
        fs_close_many(fds, 8);
        base = count_fds();
        ck_assert_int_eq(fs_fdpass_recv(sv[1], buf, sizeof(buf), got, 4, &n, 0), -EBADMSG);
        ck_assert_uint_eq(n, 0);
        ck_assert_int_eq(count_fds(), base); /* none leaked */
}
END_TEST

START_TEST(oversized_closed)
{
        static char big[FS_MAX_MSG + 100];
        int fd = open("/dev/null", O_RDONLY | O_CLOEXEC), got[4], base;
        size_t n;

        ck_assert_int_eq(fs_fdpass_send(sv[0], big, sizeof(big), &fd, 1, 0), 0);
        close(fd);
        base = count_fds();
        ck_assert_int_eq(fs_fdpass_recv(sv[1], big, FS_MAX_MSG, got, 4, &n, 0), -EMSGSIZE);
        ck_assert_int_eq(count_fds(), base);
}
END_TEST

START_TEST(credentials_refused)
{
        int one = 1, got[4];
        char buf[16];
        size_t n;

        /* SO_PASSCRED makes the kernel attach SCM_CREDENTIALS: not ours, refused. */
        ck_assert_int_eq(setsockopt(sv[1], SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)), 0);
        ck_assert_int_eq(fs_fdpass_send(sv[0], "x", 1, NULL, 0, 0), 0);
        ck_assert_int_eq(fs_fdpass_recv(sv[1], buf, sizeof(buf), got, 4, &n, 0), -EBADMSG);
}
END_TEST

START_TEST(eof_and_nonblock)
{
        int got[1];
        char buf[16];
        size_t n;

        ck_assert_int_eq(fs_fdpass_recv(sv[1], buf, sizeof(buf), got, 1, &n, MSG_DONTWAIT),
                         -EAGAIN);
        sv[0] = fs_close(sv[0]);
        ck_assert_int_eq(fs_fdpass_recv(sv[1], buf, sizeof(buf), got, 1, &n, 0), 0);
        ck_assert_int_eq(fs_fdpass_send(sv[1], "x", 1, NULL, 0, 0), -EPIPE); /* no SIGPIPE */
        ck_assert_int_eq(fs_fdpass_send(sv[1], "x", 1, got, FS_MAX_MSG_FDS + 1, 0), -EINVAL);
}
END_TEST

/* Regression: a receiver out of fd slots used to see a plain "bad control data", with the one
 * fd the kernel did install left to the caller's error path and the datagram unanswerable. */
START_TEST(receiver_out_of_fds)
{
        struct rlimit rl;
        int fill[64], got[4], three[3] = {0, 1, 2}, probe;
        size_t nfill = 0, n;
        bool lost = true;
        char buf[16];

        ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
        rl.rlim_cur = 48;
        ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
        while ((probe = fcntl(sv[1], F_DUPFD_CLOEXEC, 0)) >= 0) {
                ck_assert_uint_lt(nfill, 64);
                fill[nfill++] = probe;
        }
        ck_assert_int_eq(errno, EMFILE);
        close(fill[--nfill]); /* one slot free */

        /* three fds, room for one: -EMFILE, and the one that was installed is closed */
        ck_assert_int_eq(fs_fdpass_send(sv[0], "abc", 3, three, 3, 0), 0);
        ck_assert_int_eq(fs_fdpass_recv(sv[1], buf, sizeof(buf), got, 4, &n, 0), -EMFILE);
        ck_assert_uint_eq(n, 0);
        /* the lossy variant gives the datagram, no fds, and says so */
        ck_assert_int_eq(fs_fdpass_send(sv[0], "defg", 4, three, 3, 0), 0);
        ck_assert_int_eq(fs_fdpass_recv_lossy(sv[1], buf, sizeof(buf), got, 4, &n, &lost, 0), 4);
        ck_assert(lost);
        ck_assert_uint_eq(n, 0);
        ck_assert_mem_eq(buf, "defg", 4);
        /* the slot is free again, and only it */
        ck_assert_int_ge(probe = fcntl(sv[1], F_DUPFD_CLOEXEC, 0), 0);
        ck_assert_int_eq(fcntl(sv[1], F_DUPFD_CLOEXEC, 0), -1);
        close(probe);
        /* with room, nothing is lost */
        close(fill[--nfill]);
        close(fill[--nfill]);
        ck_assert_int_eq(fs_fdpass_send(sv[0], "h", 1, three, 3, 0), 0);
        ck_assert_int_eq(fs_fdpass_recv_lossy(sv[1], buf, sizeof(buf), got, 4, &n, &lost, 0), 1);
        ck_assert(!lost);
        ck_assert_uint_eq(n, 3);
        fs_close_many(got, n);
        fs_close_many(fill, nfill);
}
END_TEST

static Suite *suite(void)
{
        Suite *s = suite_create("fdpass");
        TCase *tc = tcase_create("core");

        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, roundtrip_with_fds);
        tcase_add_test(tc, too_many_fds_closed);
        tcase_add_test(tc, oversized_closed);
        tcase_add_test(tc, credentials_refused);
        tcase_add_test(tc, eof_and_nonblock);
        suite_add_tcase(s, tc);

        /* valgrind keeps its own fd table limit, so its run leaves this out */
        TCase *tr = tcase_create("rlimit");

        tcase_set_tags(tr, "rlimit");
        tcase_add_checked_fixture(tr, setup, teardown);
        tcase_add_test(tr, receiver_out_of_fds);
        suite_add_tcase(s, tr);
        return s;
}

int main(void)
{
        return run_suite(suite());
}
