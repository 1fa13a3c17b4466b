#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "common/key.h"
#include "testutil.h"

static char dir[64];
static char path[128];
static const char hex[] = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";

static void setup(void)
{
        strcpy(dir, "/tmp/fs-test-key-XXXXXX");
        ck_assert_ptr_nonnull(mkdtemp(dir));
        snprintf(path, sizeof(path), "%s/key", dir);
}

static void teardown(void)
{
        char p[160];

        unlink(path);
        snprintf(p, sizeof(p), "%s/link", dir);
        unlink(p);
        snprintf(p, sizeof(p), "%s/sub", dir);
        rmdir(p);
        rmdir(dir);
}

static void write_file(const char *data, size_t len, mode_t mode)
{
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);

        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(fs_write_all(fd, data, len), 0);
        ck_assert_int_eq(fchmod(fd, mode), 0);
        close(fd);
}

START_TEST(parse_forms)
{
        struct fs_key k;
        uint8_t raw[32];
        char buf[80];
        const char *why;

        memset(raw, 0xa5, sizeof(raw));
        ck_assert_int_eq(fs_key_parse(raw, 32, &k, &why), 0);
        ck_assert_mem_eq(k.bytes, raw, 32);
        ck_assert_int_eq(fs_key_parse((const uint8_t *)hex, 64, &k, &why), 0);
        ck_assert_uint_eq(k.bytes[1], 0x11);
        ck_assert_uint_eq(k.bytes[31], 0xff);
        snprintf(buf, sizeof(buf), "%s\n", hex);
        ck_assert_int_eq(fs_key_parse((const uint8_t *)buf, 65, &k, &why), 0);
        ck_assert_int_eq(fs_key_parse((const uint8_t *)buf, 0, &k, &why), -EBADMSG);
        ck_assert_int_eq(fs_key_parse((const uint8_t *)buf, 31, &k, &why), -EBADMSG);
        ck_assert_ptr_nonnull(strstr(why, "short"));
        ck_assert_int_eq(fs_key_parse((const uint8_t *)buf, 63, &k, &why), -EBADMSG);
        snprintf(buf, sizeof(buf), "%s\n\n", hex);
        ck_assert_int_eq(fs_key_parse((const uint8_t *)buf, 66, &k, &why), -EBADMSG);
        ck_assert_ptr_nonnull(strstr(why, "long"));
        snprintf(buf, sizeof(buf), "%s", hex);
        buf[10] = 'g';
        ck_assert_int_eq(fs_key_parse((const uint8_t *)buf, 64, &k, &why), -EBADMSG);
        ck_assert_ptr_nonnull(strstr(why, "hex"));
}
END_TEST

START_TEST(file_ok)
{
        struct fs_key *k = NULL;

        write_file(hex, 64, 0600);
        ck_assert_int_eq(fs_key_load_file(path, &k, NULL), 0);
        ck_assert_uint_eq(k->bytes[0], 0x00);
        ck_assert_uint_eq(k->bytes[15], 0xff);
        fs_key_free(k);
}
END_TEST

START_TEST(file_refusals)
{
        struct fs_key *k = NULL;
        const char *why = NULL;
        char link[160], sub[160];

        ck_assert_int_eq(fs_key_load_file(path, &k, &why), -ENOENT);
        write_file(hex, 64, 0640);
        ck_assert_int_eq(fs_key_load_file(path, &k, &why), -EPERM);
        ck_assert_ptr_nonnull(strstr(why, "group or others"));
        write_file(hex, 64, 0604);
        ck_assert_int_eq(fs_key_load_file(path, &k, &why), -EPERM);
        write_file("", 0, 0600);
        ck_assert_int_eq(fs_key_load_file(path, &k, &why), -EBADMSG);
        ck_assert_ptr_nonnull(strstr(why, "empty"));
        write_file(hex, 40, 0600);
        ck_assert_int_eq(fs_key_load_file(path, &k, &why), -EBADMSG);
        write_file(hex, 64, 0600);
        snprintf(link, sizeof(link), "%s/link", dir);
        ck_assert_int_eq(symlink(path, link), 0);
        ck_assert_int_eq(fs_key_load_file(link, &k, &why), -ELOOP);
        ck_assert_ptr_nonnull(strstr(why, "symbolic"));
        snprintf(sub, sizeof(sub), "%s/sub", dir);
        ck_assert_int_eq(mkdir(sub, 0700), 0);
        ck_assert_int_eq(fs_key_load_file(sub, &k, &why), -EINVAL);
        ck_assert_ptr_nonnull(strstr(why, "regular"));
        if (geteuid() == 0) { /* owner check needs a second uid */
                ck_assert_int_eq(chown(path, 65534, 65534), 0);
                ck_assert_int_eq(fs_key_load_file(path, &k, &why), -EPERM);
                ck_assert_ptr_nonnull(strstr(why, "owned"));
        }
        ck_assert_ptr_null(k);
}
END_TEST

START_TEST(fd_forms)
{
        struct fs_key *k = NULL;
        const char *why = NULL;
        int p[2];
        int64_t t0;

        /* a good key, writer closed */
        ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
        ck_assert_int_eq(write(p[1], hex, 64), 64);
        close(p[1]);
        ck_assert_int_eq(fs_key_load_fd(p[0], 1000, &k, &why), 0);
        close(p[0]);
        fs_key_free(k);
        k = NULL;
        /* empty */
        ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
        close(p[1]);
        ck_assert_int_eq(fs_key_load_fd(p[0], 1000, &k, &why), -EBADMSG);
        close(p[0]);
        /* short */
        ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
        ck_assert_int_eq(write(p[1], hex, 10), 10);
        close(p[1]);
        ck_assert_int_eq(fs_key_load_fd(p[0], 1000, &k, &why), -EBADMSG);
        close(p[0]);
        /* never written to, writer still open: a bounded wait, not a hang */
        ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
        t0 = fs_now_ms();
        ck_assert_int_eq(fs_key_load_fd(p[0], 200, &k, &why), -ETIMEDOUT);
        ck_assert_int_lt(fs_now_ms() - t0, 2000);
        ck_assert_ptr_nonnull(strstr(why, "timed out"));
        /* a whole key, but the writer never closes: still refused at the deadline */
        ck_assert_int_eq(write(p[1], hex, 64), 64);
        ck_assert_int_eq(fs_key_load_fd(p[0], 200, &k, &why), -ETIMEDOUT);
        fs_close_many(p, 2);
        /* closed fd */
        ck_assert_int_eq(fs_key_load_fd(999, 200, &k, &why), -EBADF);
        ck_assert_ptr_null(k);
}
END_TEST

START_TEST(page_wiped_in_child)
{
        struct fs_key *k;
        int status;
        pid_t pid;

        ck_assert_int_eq(fs_key_generate(&k), 0);
        k->bytes[0] |= 1; /* surely not all zero */
        pid = fork();
        if (pid == 0) {
                uint8_t acc = 0;

                for (size_t i = 0; i < sizeof(k->bytes); i++)
                        acc |= k->bytes[i];
                _exit(acc == 0 ? 0 : 1); /* MADV_WIPEONFORK: a child sees zeros */
        }
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        ck_assert_uint_ne(k->bytes[0], 0); /* the parent keeps it */
        fs_key_free(k);
}
END_TEST

static Suite *suite(void)
{
        Suite *s = suite_create("key");
        TCase *tc = tcase_create("core");

        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, parse_forms);
        tcase_add_test(tc, file_ok);
        tcase_add_test(tc, file_refusals);
        tcase_add_test(tc, fd_forms);
        tcase_add_test(tc, page_wiped_in_child);
        suite_add_tcase(s, tc);
        return s;
}

int main(void)
{
        return run_suite(suite());
}
