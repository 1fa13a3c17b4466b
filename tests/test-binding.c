/*
 * Attacks on who is at each end (docs/PROTOCOL.md "Handshake", docs/SECURITY.md "Handshake
 * binding and socket path"), against the real forkserverd:
 *   - a relay between a victim client and the daemon, forwarding the handshake byte for byte
 *     and then speaking on its own daemon connection: both ends must refuse;
 *   - a listening socket of an unexpected uid (--server-uid / server_uid);
 *   - a socket path with an ancestor directory someone else could swap.
 * As root the relay runs as uid 65534 (another uid than the victim); as a normal user it is
 * another process of the same uid, and the pid binding is what stops it. The listener-uid
 * refusal needs a second uid: root only.
 */
#include <sched.h>
#include <sys/prctl.h>

#include "daemon.h"

#define OTHER_UID 65534

static struct daemon d;

static bool root(void)
{
        return geteuid() == 0;
}

static void drop_to(uid_t uid)
{
        if (setgroups(0, NULL) < 0 || setresgid(uid, uid, uid) < 0 || setresuid(uid, uid, uid) < 0)
                _exit(100);
}

static int unix_listener(const char *path)
{
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

        ck_assert_int_ge(fd, 0);
        strcpy(sa.sun_path, path);
        ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
        return fd;
}

/* One datagram from -> to, unchanged; returns its length (0 at EOF). */
static int relay_one(int from, int to, uint8_t *buf, size_t cap)
{
        int n = raw_recv(from, buf, cap, 5000);

        if (n > 0 && fs_fdpass_send(to, buf, (size_t)n, NULL, 0, 0) < 0)
                return -1;
        return n;
}

static uint16_t type_of(const uint8_t *buf, int n)
{
        struct fs_hdr h;
        struct fs_buf p;

        return n > 0 && fs_proto_parse_hdr(buf, (size_t)n, &h, &p) == 0 ? h.type : 0;
}

/*
 * The relay, in a child: accepts the victim on lfd, connects to the daemon, forwards HELLO
 * and AUTH unchanged, and right after AUTH sends a SPAWN of its own (`touch marker`) on its
 * daemon connection. Then, as forge says: 0, it forwards the daemon's answer to the victim;
 * 1, it plays a daemon that was fooled and answers the victim with AUTH_OK made with the key
 * for the peer that daemon saw (the relay), the best a relay could ever get. It writes to
 * report: 'F' when the daemon answered AUTH with AUTH_FAILED, 'S' if its SPAWN was ever
 * answered with SPAWNED, 'E' when the daemon then closed the connection.
 */
static pid_t start_relay(int lfd, int report, bool forge, const char *marker)
{
        pid_t pid = fork();

        ck_assert_int_ge(pid, 0);
        if (pid > 0)
                return pid;
        static uint8_t buf[FS_MAX_MSG], hello[FS_MAX_MSG];
        struct fs_key *k = NULL;
        int v, s, n, hl;

        prctl(PR_SET_PDEATHSIG, SIGKILL);
        /* the key only to forge the fooled daemon's answer: loaded before dropping root (a
         * forked child sees the parent's key page as zeros) */
        if (forge && fs_key_load_file(d.key, &k, NULL) < 0)
                _exit(101);
        if (root())
                drop_to(OTHER_UID);
        if ((v = accept4(lfd, NULL, NULL, SOCK_CLOEXEC)) < 0)
                _exit(102);
        s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        struct sockaddr_un sa = {.sun_family = AF_UNIX};

        strcpy(sa.sun_path, d.sock);
        if (s < 0 || connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0)
                _exit(103);
        if ((hl = relay_one(s, v, hello, sizeof(hello))) <= 0 || type_of(hello, hl) != FS_MSG_HELLO)
                _exit(104);
        if ((n = relay_one(v, s, buf, sizeof(buf))) <= 0 || type_of(buf, n) != FS_MSG_AUTH)
                _exit(105);
        /* the victim's AUTH, kept to forge below */
        static uint8_t auth[FS_MAX_MSG];
        int al = n;

        memcpy(auth, buf, (size_t)n);
        {
                const char *argv_touch[] = {"touch", marker, NULL};
                struct fs_msgw w;

                fs_msg_begin(&w, buf, sizeof(buf), FS_MSG_SPAWN, 1);
                fs_msg_put_str(&w, FS_F_PATH, "/usr/bin/touch");
                for (size_t i = 0; argv_touch[i]; i++)
                        fs_msg_put_str(&w, FS_F_ARG, argv_touch[i]);
                n = fs_msg_finish(&w);
                (void)fs_fdpass_send(s, buf, (size_t)n, NULL, 0, MSG_NOSIGNAL);
        }
        /* The daemon's answers until it hangs up. Closing with our SPAWN unread, it resets
         * the connection: that error may come before the answer queued ahead of it. */
        bool closed = false;

        for (int i = 0; i < 6; i++) {
                n = raw_recv(s, buf, sizeof(buf), 5000);
                if (n == -ECONNRESET || n == 0) {
                        closed = true;
                        if (n == 0)
                                break;
                        continue;
                }
                if (n < 0)
                        break;
                if (type_of(buf, n) == FS_MSG_AUTH_FAILED) {
                        (void)!write(report, "F", 1);
                        if (!forge)
                                (void)fs_fdpass_send(v, buf, (size_t)n, NULL, 0, MSG_NOSIGNAL);
                }
                if (type_of(buf, n) == FS_MSG_SPAWNED)
                        (void)!write(report, "S", 1);
        }
        if (closed)
                (void)!write(report, "E", 1);
        if (forge) {
                /* AUTH_OK for the peer the daemon sees: this process, in the daemon's pid
                 * namespace (ours), with the BIND bits the victim sent */
                struct fs_auth_client c = {.version = FS_PROTO_VERSION};
                struct fs_msg_hello mh;
                struct fs_msg_auth ma;
                struct fs_creds me;
                struct fs_auth_bind b;
                struct fs_hdr h;
                struct fs_buf p;
                uint8_t mac[FS_MAC_LEN];
                struct fs_msgw w;

                if (fs_proto_parse_hdr(hello, (size_t)hl, &h, &p) < 0 ||
                    fs_proto_parse_hello(&p, &mh, NULL) < 0 ||
                    fs_proto_parse_hdr(auth, (size_t)al, &h, &p) < 0 ||
                    fs_proto_parse_auth(&p, &ma, NULL) < 0)
                        _exit(106);
                memcpy(c.snonce, mh.nonce, FS_NONCE_LEN);
                memcpy(c.cnonce, ma.nonce, FS_NONCE_LEN);
                fs_creds_self(&me);
                b = (struct fs_auth_bind){
                    .flags = ma.bind, .uid = me.uid, .gid = me.gid, .pid = me.pid};
                memcpy(b.pidns, mh.pidns, FS_PIDNS_LEN);
                if (fs_auth_mac(k, FS_LABEL_SERVER, c.snonce, c.cnonce, c.version, &b, mac) < 0)
                        _exit(107);
                fs_msg_begin(&w, buf, sizeof(buf), FS_MSG_AUTH_OK, 0);
                fs_msg_put_bytes(&w, FS_F_MAC, mac, FS_MAC_LEN);
                n = fs_msg_finish(&w);
                (void)fs_fdpass_send(v, buf, (size_t)n, NULL, 0, MSG_NOSIGNAL);
        }
        /* hold the victim's connection until it gives up */
        (void)raw_recv(v, buf, sizeof(buf), 5000);
        _exit(0);
}

static void reap_ok(pid_t pid)
{
        int st;

        ck_assert_int_eq(waitpid(pid, &st, 0), pid);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "relay: status %#x", st);
}

static void start_shared_daemon(void)
{
        const char *const extra[] = {"--allow-uid", "65534", NULL};

        daemon_start(&d, root() ? extra : NULL);
        /* the relay (uid 65534 as root) must reach the daemon's socket */
        ck_assert_int_eq(chmod(d.dir, 0711), 0);
}

START_TEST(relay_refused_by_both_ends)
{
        const char *truth[] = {"/bin/true", NULL};
        char relay_path[160], marker[160], got[16];
        struct forkserver_options o = {.key_fd = -1};
        struct forkserver_key *key;
        struct forkserver *fs;
        const char *why = "";
        char out[64];

        start_shared_daemon();
        snprintf(relay_path, sizeof(relay_path), "%s/relay.sock", d.dir);
        snprintf(marker, sizeof(marker), "%s/relayed-spawn-ran", d.dir);
        ck_assert_int_eq(forkserver_key_load_file(d.key, &key, NULL), 0);
        o.key = key;
        o.socket_path = relay_path;
        for (int forge = 0; forge < 2; forge++) {
                int rep[2], lfd;
                pid_t relay;
                ssize_t n;

                /* Bound and listening before the relay drops root, as systemd makes a
                 * socket-activated daemon's: the victim's listener check passes (root), so
                 * the MACs are what must stop the relay. */
                unlink(relay_path);
                lfd = unix_listener(relay_path);
                ck_assert_int_eq(chmod(relay_path, 0666), 0);
                ck_assert_int_eq(listen(lfd, 4), 0);
                ck_assert_int_eq(pipe2(rep, O_CLOEXEC), 0);
                relay = start_relay(lfd, rep[1], forge, marker);
                close(rep[1]);
                close(lfd);
                int r = forkserver_connect(&o, &fs, &why);

                ck_assert_msg(r == -EACCES, "victim connect through the relay: %d %s", r, why);
                ck_assert_msg(strstr(why, forge ? "could not prove" : "refused our key"), "%s",
                              why);
                reap_ok(relay);
                n = read(rep[0], got, sizeof(got) - 1);
                close(rep[0]);
                got[n > 0 ? n : 0] = '\0';
                /* the daemon refused the relayed AUTH and closed; its SPAWN never ran */
                ck_assert_msg(strcmp(got, "FE") == 0, "relay saw '%s'", got);
                ck_assert_int_eq(access(marker, F_OK), -1);
        }
        unlink(relay_path);
        forkserver_key_free(key);
        /* the honest client is served, and the daemon counted both refusals */
        fs = daemon_connect(&d);
        ck_assert_uint_eq(daemon_stat(fs, "auth_failed"), 2);
        ck_assert_uint_eq(daemon_stat(fs, "auth_pid_bound"), 1); /* the pid binding was on */
        ck_assert_uint_eq(daemon_stat(fs, "spawns"), 0);
        ck_assert_int_eq(run_capture(fs, truth, out, sizeof(out)), 0);
        forkserver_close(fs);
        ck_assert_int_eq(daemon_stop(&d), 0);
}
END_TEST

/* A listener another uid made (as root: bound as root, listen() as 65534) is refused unless
 * named with server_uid / --server-uid. */
START_TEST(listener_of_another_uid_refused)
{
        struct forkserver_options o = {.key_fd = -1};
        char path[160], err[1024];
        struct forkserver_key *key;
        struct forkserver *fs;
        const char *why = "";
        int st, lfd, p[2];
        pid_t pid;

        if (!root()) {
                printf("listener_of_another_uid_refused: needs a second uid (root): skipped\n");
                return;
        }
        daemon_paths(&d);
        make_key_file(d.key);
        snprintf(path, sizeof(path), "%s/other.sock", d.dir);
        lfd = unix_listener(path);
        ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
        pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                int c;

                prctl(PR_SET_PDEATHSIG, SIGKILL);
                drop_to(OTHER_UID);
                if (listen(lfd, 4) < 0)
                        _exit(1);
                (void)!write(p[1], "L", 1);
                /* accept and close at once, until killed: a server that says nothing */
                while ((c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC)) >= 0)
                        close(c);
                _exit(0);
        }
        close(lfd);
        char b;

        ck_assert_int_eq(read(p[0], &b, 1), 1);
        ck_assert_int_eq(forkserver_key_load_file(d.key, &key, NULL), 0);
        o.key = key;
        o.socket_path = path;
        ck_assert_int_eq(forkserver_connect(&o, &fs, &why), -EACCES);
        ck_assert_msg(strstr(why, "belongs to uid 65534") && strstr(why, "expected uid 0 (ours)"),
                      "%s", why);
        /* forkctl says the same and fails with its documented status */
        const char *ctl[] = {
            env_or_die("FORKCTL"), "--socket", path, "--key-file", d.key, "ping", NULL};
        ck_assert_int_eq(exec_capture(ctl, 2, err, sizeof(err)), 1 << 8);
        ck_assert_msg(strstr(err, "belongs to uid 65534"), "%s", err);
        /* named: the listener check passes (this one then hangs up in the handshake) */
        o.server_uid = OTHER_UID;
        ck_assert_int_lt(forkserver_connect(&o, &fs, &why), 0);
        ck_assert_msg(!strstr(why, "belongs to uid"), "%s", why);
        const char *ctl2[] = {env_or_die("FORKCTL"), "--socket", path,   "--key-file", d.key,
                              "--server-uid",        "65534",    "ping", NULL};
        ck_assert_int_eq(exec_capture(ctl2, 2, err, sizeof(err)), 1 << 8);
        ck_assert_msg(!strstr(err, "belongs to uid"), "%s", err);
        forkserver_key_free(key);
        close(p[1]);
        close(p[0]);
        kill(pid, SIGKILL);
        ck_assert_int_eq(waitpid(pid, &st, 0), pid);
        unlink(path);
        daemon_cleanup_dir(&d);
}
END_TEST

/* A real daemon running as another uid, in its own directory: refused unless named; named,
 * it serves (socket and directory both belong to the named uid). */
START_TEST(daemon_of_a_named_uid_served)
{
        const char *const as_root[] = {"--allow-uid", "0", NULL};
        struct forkserver_options o = {.key_fd = -1};
        char mine[160], err[1024];
        struct forkserver *fs;
        const char *why = "";

        if (!root()) {
                printf("daemon_of_a_named_uid_served: needs a second uid (root): skipped\n");
                return;
        }
        d.run_as = OTHER_UID;
        daemon_start(&d, as_root);
        ck_assert_int_eq(chmod(d.dir, 0711), 0);
        /* a key file must belong to its reader: root's own copy, outside the daemon's dir */
        snprintf(mine, sizeof(mine), "/tmp/fs-binding-key-%d", (int)getpid());
        {
                char hex[FS_KEY_HEX_LEN + 2] = {0};
                int in = open(d.key, O_RDONLY | O_CLOEXEC), out;

                ck_assert_int_ge(in, 0);
                ck_assert_int_gt(read(in, hex, sizeof(hex) - 1), 0);
                close(in);
                out = open(mine, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
                ck_assert_int_ge(out, 0);
                ck_assert_int_eq(fs_write_all(out, hex, strlen(hex)), 0);
                close(out);
        }
        o.socket_path = d.sock;
        o.key_file = mine;
        /* the socket's directory belongs to 65534: refused before connecting */
        ck_assert_int_eq(forkserver_connect(&o, &fs, &why), -EPERM);
        ck_assert_msg(strstr(why, "is owned by uid 65534"), "%s", why);
        o.server_uid = OTHER_UID;
        ck_assert_msg(forkserver_connect(&o, &fs, &why) == 0, "%s", why);
        ck_assert_int_eq(forkserver_ping(fs), 0);
        forkserver_close(fs);
        const char *ctl[] = {env_or_die("FORKCTL"), "--socket", d.sock, "--key-file", mine,
                             "--server-uid",        "65534",    "ping", NULL};
        ck_assert_int_eq(exec_capture(ctl, 2, err, sizeof(err)), 0);
        unlink(mine);
        ck_assert_int_eq(daemon_stop(&d), 0);
        d.run_as = 0;
}
END_TEST

/* Across pid namespaces (a container's client, a Kubernetes pod without a shared process
 * namespace): the pid cannot be bound, uid and gid still are, and the client is served.
 * The same namespace binds the pid. Needs CAP_SYS_ADMIN for CLONE_NEWPID: root only. */
START_TEST(other_pid_namespace_served)
{
        struct forkserver *fs;
        pid_t pid;
        int st;

        if (!root()) {
                printf("other_pid_namespace_served: needs CLONE_NEWPID (root): skipped\n");
                return;
        }
        daemon_start(&d, NULL);
        fs = daemon_connect(&d);
        ck_assert_uint_eq(daemon_stat(fs, "auth_pid_bound"), 1); /* ourselves: bound */
        pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                pid_t inner;

                if (unshare(CLONE_NEWPID) < 0 || (inner = fork()) < 0)
                        _exit(100);
                if (inner == 0) {
                        struct forkserver_options o = {
                            .socket_path = d.sock, .key_file = d.key, .key_fd = -1};
                        struct forkserver *c;
                        const char *why = "";

                        if (getpid() != 1) /* in the new namespace */
                                _exit(101);
                        if (forkserver_connect(&o, &c, &why) < 0 || forkserver_ping(c) < 0)
                                _exit(102);
                        forkserver_close(c);
                        _exit(0);
                }
                _exit(waitpid(inner, &st, 0) == inner && WIFEXITED(st) ? WEXITSTATUS(st) : 103);
        }
        ck_assert_int_eq(waitpid(pid, &st, 0), pid);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "client in a new pid namespace: %#x",
                      st);
        ck_assert_uint_eq(daemon_stat(fs, "auth_ok"), 2);
        ck_assert_uint_eq(daemon_stat(fs, "auth_pid_bound"), 1); /* not the other one */
        forkserver_close(fs);
        ck_assert_int_eq(daemon_stop(&d), 0);
}
END_TEST

/* Starts the daemon on sock; 0 when it runs, else its exit status with its log in log. */
static int try_start(const char *sock, char *log, size_t cap)
{
        const char *args[] = {"--socket", sock, "--key-file", d.key, NULL};
        char logpath[160];
        int st = 0;

        snprintf(logpath, sizeof(logpath), "%s/daemon.log", d.dir);
        unlink(logpath);
        d.log_path = logpath;
        if (daemon_spawn(&d, args, &st) == 0) {
                d.log_path = NULL;
                return 0;
        }
        d.log_path = NULL;
        int fd = open(logpath, O_RDONLY | O_CLOEXEC);

        ck_assert_int_ge(fd, 0);
        read_all_close(fd, log, cap);
        unlink(logpath);
        ck_assert_int_ne(st, 0);
        return st;
}

static int client_connect(const char *sock, const char **why)
{
        struct forkserver_options o = {.socket_path = sock, .key_file = d.key, .key_fd = -1};
        struct forkserver *fs;
        int r = forkserver_connect(&o, &fs, why);

        if (r == 0) {
                r = forkserver_ping(fs);
                forkserver_close(fs);
        }
        return r;
}

/* dir/p/s/x.sock, where p (an ancestor of the socket's directory) is the one swapped. */
START_TEST(swappable_ancestor_refused)
{
        char p[96], sdir[112], sock[128], link[96], lsock[128], log[4096], err[1024];
        const char *why = "";

        daemon_paths(&d);
        make_key_file(d.key);
        snprintf(p, sizeof(p), "%s/p", d.dir);
        snprintf(sdir, sizeof(sdir), "%s/s", p);
        snprintf(sock, sizeof(sock), "%s/x.sock", sdir);
        snprintf(link, sizeof(link), "%s/via-link", d.dir);
        snprintf(lsock, sizeof(lsock), "%s/x.sock", link);
        ck_assert_int_eq(mkdir(p, 0755), 0);
        ck_assert_int_eq(symlink(sdir, link), 0);

        /* group/other-writable, not sticky: the daemon refuses to start, naming p */
        ck_assert_int_eq(chmod(p, 0777), 0);
        ck_assert_int_ne(try_start(sock, log, sizeof(log)), 0);
        ck_assert_msg(strstr(log, p) && strstr(log, "writable by group or others"), "%s", log);
        if (root()) {
                /* owned by another uid: the same */
                ck_assert_int_eq(chmod(p, 0755), 0);
                ck_assert_int_eq(chown(p, OTHER_UID, OTHER_UID), 0);
                ck_assert_int_ne(try_start(sock, log, sizeof(log)), 0);
                ck_assert_msg(strstr(log, p) && strstr(log, "owned by uid 65534"), "%s", log);
                ck_assert_int_eq(chown(p, 0, 0), 0);
        }
        /* sticky and world-writable, as /tmp: fine */
        ck_assert_int_eq(chmod(p, 01777), 0);
        ck_assert_int_eq(try_start(sock, log, sizeof(log)), 0);
        ck_assert_int_eq(client_connect(sock, &why), 0);
        ck_assert_int_eq(client_connect(lsock, &why), 0);

        /* swapped under a running daemon: each client refuses before it connects */
        ck_assert_int_eq(chmod(p, 0777), 0);
        ck_assert_int_eq(client_connect(sock, &why), -EPERM);
        ck_assert_msg(strstr(why, p) && strstr(why, "writable by group or others"), "%s", why);
        ck_assert_int_eq(client_connect(lsock, &why), -EPERM); /* the link resolves into p */
        ck_assert_msg(strstr(why, p), "%s", why);
        const char *ctl[] = {
            env_or_die("FORKCTL"), "--socket", sock, "--key-file", d.key, "ping", NULL};
        ck_assert_int_eq(exec_capture(ctl, 2, err, sizeof(err)), 1 << 8);
        ck_assert_msg(strstr(err, "can be swapped by others") && strstr(err, p), "%s", err);
        if (root()) {
                ck_assert_int_eq(chmod(p, 0755), 0);
                ck_assert_int_eq(chown(p, OTHER_UID, OTHER_UID), 0);
                ck_assert_int_eq(client_connect(sock, &why), -EPERM);
                ck_assert_msg(strstr(why, "owned by uid 65534"), "%s", why);
                /* the same uid named as the server's: trusted */
                struct forkserver_options o = {
                    .socket_path = sock, .key_file = d.key, .key_fd = -1, .server_uid = OTHER_UID};
                struct forkserver *fs;

                ck_assert_msg(forkserver_connect(&o, &fs, &why) == 0, "%s", why);
                forkserver_close(fs);
                ck_assert_int_eq(chown(p, 0, 0), 0);
        }
        /* restored: served again */
        ck_assert_int_eq(chmod(p, 0755), 0);
        ck_assert_int_eq(client_connect(sock, &why), 0);
        kill(d.pid, SIGTERM);
        ck_assert_int_eq(waitpid(d.pid, NULL, 0), d.pid);
        d.pid = 0;
        unlink(link);
        rmdir(sdir);
        rmdir(p);
        daemon_cleanup_dir(&d);
}
END_TEST

int main(void)
{
        Suite *s = suite_create("binding");
        TCase *tc = tcase_create("integration");

        printf("running as %s\n",
               root() ? "root (relay: uid 65534)" : "a normal user (relay: same uid, another pid)");
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, relay_refused_by_both_ends);
        tcase_add_test(tc, listener_of_another_uid_refused);
        tcase_add_test(tc, daemon_of_a_named_uid_served);
        tcase_add_test(tc, swappable_ancestor_refused);
        tcase_add_test(tc, other_pid_namespace_served);
        suite_add_tcase(s, tc);
        return run_suite(s);
}
