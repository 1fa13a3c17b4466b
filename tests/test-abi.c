/* libforkserver's ABI as a program linked against libforkserver.so sees it: internal helpers
 * not interposable, zeroed options meaning the defaults, reserved members checked, the
 * version. Links the shared library alone (not common/), as an installed program would. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "client/forkserver.h"

/* A program's own function that happens to share the name of one of the library's internal
 * helpers. Were the library's fs_now_ms exported (or called through its PLT), this one would
 * be called from inside forkserver_connect. */
int64_t fs_now_ms(void);
static int own_now_calls;

int64_t fs_now_ms(void)
{
        own_now_calls++;
        return 0;
}

static char dir[64], sock[128];

/* A listening socket in a fresh directory with no key beside it; nobody accepts. */
static int listener(void)
{
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

        strcpy(dir, "/tmp/fs-abi-XXXXXX");
        ck_assert_ptr_nonnull(mkdtemp(dir));
        snprintf(sock, sizeof(sock), "%s/s.sock", dir);
        ck_assert_int_ge(s, 0);
        strcpy(sa.sun_path, sock);
        ck_assert_int_eq(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
        ck_assert_int_eq(listen(s, 16), 0);
        return s;
}

static void listener_done(int s)
{
        close(s);
        unlink(sock);
        rmdir(dir);
}

/* fd 0 becomes a pipe holding text (writer closed); returns nothing. */
static void stdin_with(const char *text)
{
        int p[2];

        ck_assert_int_eq(pipe(p), 0);
        ck_assert_int_eq(write(p[1], text, strlen(text)), (ssize_t)strlen(text));
        close(p[1]);
        ck_assert_int_eq(dup2(p[0], 0), 0);
        close(p[0]);
}

static const char hex_key[] = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n";

START_TEST(internal_symbols_not_interposed)
{
        struct forkserver_options o = {.socket_path = "/nonexistent/forkserverd.sock"};
        struct forkserver *fs;
        const char *why = NULL;

        ck_assert_int_eq(forkserver_connect(&o, &fs, &why), -ENOENT);
        ck_assert_int_eq(own_now_calls, 0);
}
END_TEST

START_TEST(missing_socket_named)
{
        struct forkserver_options o = {.socket_path = "/nonexistent/forkserverd.sock"};
        struct forkserver *fs;
        const char *why = NULL;

        /* no key file either: the socket is what is reported */
        ck_assert_int_eq(forkserver_connect(&o, &fs, &why), -ENOENT);
        ck_assert_ptr_null(fs);
        ck_assert_msg(strstr(why, "no server") && strstr(why, o.socket_path) && !strstr(why, "key"),
                      "why: %s", why);
}
END_TEST

START_TEST(zeroed_options_do_not_read_stdin)
{
        struct forkserver_options zero = {0}, init = FORKSERVER_OPTIONS_INIT, old = {.key_fd = -1};
        const struct forkserver_options *all[] = {&zero, &init, &old};
        struct forkserver *fs;
        const char *why = NULL;
        char buf[8];
        int s = listener();

        for (size_t i = 0; i < 3; i++) {
                struct forkserver_options o = *all[i];

                stdin_with(hex_key);
                o.socket_path = sock;
                o.timeout_ms = 200; /* were the key read, nobody would answer the handshake */
                /* no key option: the default key file beside the socket, which is absent */
                ck_assert_int_eq(forkserver_connect(&o, &fs, &why), -ENOENT);
                ck_assert_msg(strstr(why, "key file"), "why: %s", why);
                ck_assert_int_eq(read(0, buf, sizeof(buf)), sizeof(buf)); /* left unread */
        }
        listener_done(s);
}
END_TEST

START_TEST(key_fd_above_zero_is_read)
{
        struct forkserver_options o = {.timeout_ms = 200};
        struct forkserver *fs;
        const char *why = NULL;
        char buf[8];
        int s = listener();

        stdin_with(hex_key);
        o.socket_path = sock;
        o.key_fd = dup(0);
        ck_assert_int_gt(o.key_fd, 0);
        /* the key is read, then nobody answers the handshake */
        ck_assert_int_eq(forkserver_connect(&o, &fs, &why), -ETIMEDOUT);
        ck_assert_int_eq(read(0, buf, sizeof(buf)), 0);
        ck_assert_int_ge(fcntl(o.key_fd, F_GETFD), 0); /* and not closed */
        close(o.key_fd);
        listener_done(s);
}
END_TEST

START_TEST(reserved_must_be_zero)
{
        struct forkserver_options o = FORKSERVER_OPTIONS_INIT;
        struct forkserver *fs;
        const char *why = NULL;

        o.socket_path = "/nonexistent/forkserverd.sock";
        o.reserved[sizeof(o.reserved) / sizeof(o.reserved[0]) - 1] = 1;
        ck_assert_int_eq(forkserver_connect(&o, &fs, &why), -EINVAL);
        ck_assert_msg(strstr(why, "reserved"), "why: %s", why);
}
END_TEST

START_TEST(version)
{
        char want[32];

        snprintf(want, sizeof(want), "%d.%d.%d", FORKSERVER_VERSION_MAJOR, FORKSERVER_VERSION_MINOR,
                 FORKSERVER_VERSION_PATCH);
        ck_assert_str_eq(FORKSERVER_VERSION, want);
        ck_assert_str_eq(FORKSERVER_VERSION, FS_PROJECT_VERSION); /* meson's */
        ck_assert_str_eq(forkserver_version(), FORKSERVER_VERSION);
        ck_assert_int_eq(FORKSERVER_VERSION_NUMBER, (FORKSERVER_VERSION_MAJOR << 16) |
                                                        (FORKSERVER_VERSION_MINOR << 8) |
                                                        FORKSERVER_VERSION_PATCH);
}
END_TEST

int main(void)
{
        Suite *s = suite_create("abi");
        TCase *tc = tcase_create("abi");
        SRunner *sr;
        int failed;

        tcase_add_test(tc, internal_symbols_not_interposed);
        tcase_add_test(tc, missing_socket_named);
        tcase_add_test(tc, zeroed_options_do_not_read_stdin);
        tcase_add_test(tc, key_fd_above_zero_is_read);
        tcase_add_test(tc, reserved_must_be_zero);
        tcase_add_test(tc, version);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
