#include <errno.h>
#include <seccomp.h>
#include <string.h>

#include "forkserver/sandbox/profile.h"
#include "testutil.h"

static struct fsd_profile_src src;
static char err[512];

static int parse(const char *text)
{
        err[0] = '\0';
        return fsd_profile_parse(text, strlen(text), "t.profile", &src, err, sizeof(err));
}

START_TEST(good_profile)
{
        ck_assert_int_eq(parse("# a comment\n"
                               "default errno EPERM\n"
                               "\n"
                               "allow read write   # trailing comment\n"
                               "kill ptrace\n"
                               "errno ENOSYS io_uring_setup\n"
                               "errno 13 mount"),
                         0);
        ck_assert_int_eq(src.dflt.kind, FSD_ACT_ERRNO);
        ck_assert_int_eq(src.dflt.err, EPERM);
        ck_assert_uint_eq(src.nrules, 5);
        ck_assert_int_eq(src.rules[0].nr, seccomp_syscall_resolve_name("read"));
        ck_assert_int_eq(src.rules[0].act.kind, FSD_ACT_ALLOW);
        ck_assert_int_eq(src.rules[2].act.kind, FSD_ACT_KILL);
        ck_assert_int_eq(src.rules[3].act.err, ENOSYS);
        ck_assert_int_eq(src.rules[4].act.err, 13);
        ck_assert_int_eq(parse("default kill\nallow exit_group\n"), 0);
        ck_assert_int_eq(src.dflt.kind, FSD_ACT_KILL);
        ck_assert_int_eq(parse("default allow\nfs deny /home /srv\nfs ro /home/shared\n"
                               "fs rw /home/shared/out\n"),
                         0);
        ck_assert_uint_eq(src.nfs, 4);
        ck_assert_str_eq(src.fs[1].path, "/srv");
        ck_assert_int_eq(src.fs[1].access, FSD_FS_DENY);
        ck_assert_int_eq(src.fs[2].access, FSD_FS_RO);
        ck_assert_int_eq(src.fs[3].access, FSD_FS_RW);
}
END_TEST

static const struct {
        const char *text;
        const char *want; /* in the message, after "t.profile:" */
} bad[] = {
    {"allow read\n", "1: no 'default' line"},
    {"default allow\ndefault kill\n", "2: second default"},
    {"default allow\n\nfrobnicate read\n", "3: unknown verb 'frobnicate'"},
    {"default allow\nallow read not_a_syscall\n", "2: unknown syscall 'not_a_syscall'"},
    {"default allow\nallow read\nkill read\n", "3: syscall listed twice 'read'"},
    {"default allow extra\n", "1: extra token 'extra'"},
    {"default maybe\n", "1: unknown action 'maybe'"},
    {"default errno\n", "1: errno needs a name"},
    {"default errno EWHAT\n", "1: unknown errno 'EWHAT'"},
    {"default errno 0\n", "1: unknown errno '0'"},
    {"default errno 4096\n", "1: unknown errno '4096'"},
    {"default allow\nerrno EPERM\n", "2: no syscall named"},
    {"default allow\nkill\n", "2: no syscall named"},
    {"default allow\nfs\n", "2: fs needs ro, rw or deny"},
    {"default allow\nfs wx /tmp\n", "2: unknown fs access 'wx'"},
    {"default allow\nfs ro\n", "2: no path named"},
    {"default allow\nfs ro tmp\n", "2: path not absolute 'tmp'"},
    {"default allow\nfs ro /a\nfs deny /a\n", "3: path listed twice '/a'"},
};

START_TEST(bad_profiles)
{
        ck_assert_int_eq(parse(bad[_i].text), -EINVAL);
        ck_assert_msg(strncmp(err, "t.profile:", 10) == 0 && strstr(err, bad[_i].want),
                      "case %d: got '%s', want '%s'", _i, err, bad[_i].want);
}
END_TEST

START_TEST(limits)
{
        static char big[FSD_PROFILE_MAX_BYTES + 10];
        char line[1100];

        memset(line, 'a', sizeof(line) - 1);
        line[sizeof(line) - 1] = '\0';
        ck_assert_int_eq(parse(line), -EINVAL);
        ck_assert_ptr_nonnull(strstr(err, "t.profile:1: line longer"));
        ck_assert_int_eq(
            fsd_profile_parse("default allow\n\0x", 16, "t.profile", &src, err, sizeof(err)),
            -EINVAL);
        ck_assert_ptr_nonnull(strstr(err, ":2: NUL byte"));
        memset(big, '\n', sizeof(big));
        ck_assert_int_eq(fsd_profile_parse(big, sizeof(big), "t.profile", &src, err, sizeof(err)),
                         -EINVAL);
        ck_assert_int_eq(fsd_profile_name_ok("ok-name_2", 9), 1);
        ck_assert_int_eq(fsd_profile_name_ok("Bad", 3), 0);
        ck_assert_int_eq(fsd_profile_name_ok("../x", 4), 0);
        ck_assert_int_eq(fsd_profile_name_ok("", 0), 0);
}
END_TEST

static Suite *suite(void)
{
        Suite *s = suite_create("profile");
        TCase *tc = tcase_create("core");

        tcase_add_test(tc, good_profile);
        tcase_add_loop_test(tc, bad_profiles, 0, (int)FS_ARRAY_SIZE(bad));
        tcase_add_test(tc, limits);
        suite_add_tcase(s, tc);
        return s;
}

int main(void)
{
        return run_suite(suite());
}
