/* Peer-uid policy (SO_PEERCRED): needs root to act as two other uids; skipped otherwise. */
#include "daemon.h"

#define ALLOWED_UID 61234
#define REFUSED_UID 61235

static struct daemon d;

/* Connects as uid and returns the result. The key is loaded in the child, before it drops
 * root: a key page reads as zeros in a forked child (MADV_WIPEONFORK). */
static int connect_as(uid_t uid, char *why_out, size_t cap)
{
        int p[2], r = 0, st;
        pid_t pid;

        ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
        pid = fork();
        if (pid == 0) {
                struct forkserver_options o = {.socket_path = d.sock, .key_fd = -1};
                struct forkserver_key *key;
                struct forkserver *fs;
                const char *why = "";

                if (forkserver_key_load_file(d.key, &key, NULL) < 0)
                        _exit(100);
                o.key = key;
                if (setgroups(0, NULL) < 0 || setresgid(uid, uid, uid) < 0 ||
                    setresuid(uid, uid, uid) < 0)
                        _exit(100);
                r = forkserver_connect(&o, &fs, &why);
                if (r == 0)
                        r = forkserver_ping(fs);
                (void)!write(p[1], why, strlen(why));
                _exit(r == 0 ? 0 : -r);
        }
        close(p[1]);
        read_all_close(p[0], why_out, cap);
        ck_assert_int_eq(waitpid(pid, &st, 0), pid);
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) != 100);
        return -WEXITSTATUS(st);
}

START_TEST(peer_uid_policy)
{
        const char *const extra[] = {"--allow-uid", "61234", NULL};
        struct forkserver *fs;
        char why[512];

        daemon_start(&d, extra);
        /* other uids must be able to reach the socket at all */
        ck_assert_int_eq(chmod(d.dir, 0711), 0);
        ck_assert_int_eq(connect_as(ALLOWED_UID, why, sizeof(why)), 0);
        ck_assert_int_eq(connect_as(REFUSED_UID, why, sizeof(why)), -EPERM);
        ck_assert_ptr_nonnull(strstr(why, "uid 61235 is not allowed"));
        /* and the server keeps serving */
        fs = daemon_connect(&d);
        ck_assert_uint_eq(daemon_stat(fs, "peer_refused"), 1);
        forkserver_close(fs);
        ck_assert_int_eq(daemon_stop(&d), 0);
}
END_TEST

int main(void)
{
        Suite *s = suite_create("peeruid");
        TCase *tc = tcase_create("integration");

        if (geteuid() != 0) {
                printf("peer-uid test needs root to act as other uids: skipped\n");
                return 77;
        }
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, peer_uid_policy);
        suite_add_tcase(s, tc);
        return run_suite(s);
}
