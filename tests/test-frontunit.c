/*
 * The front's modules (conn, dispatch, spawn, zygotes, gpu, worker: fsd_front_lib) in this
 * process, against a fake zygote and a fake GPU broker on socketpairs. This process runs the
 * front's loop and plays the other end of every channel: the clients (real connections on a
 * listening socket, with the handshake), the zygote and the broker (the internal protocol,
 * common/proto.h) and the template (its fixed-size records). The helpers' pidfds are those of
 * children of ours that only wait, so that the front has something to kill and reap; the
 * closer is absent (fd -1), so the front closes passed fds itself, in this process, where
 * their count can be checked.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/auth.h"
#include "common/creds.h"
#include "common/fdpass.h"
#include "common/key.h"
#include "common/log.h"
#include "common/proto.h"
#include "common/util.h"
#include "forkserver/front/server.h"
#include "forkserver/front/sockdir.h"
#include "testutil.h"

#define MAX_CLIENTS 4
#define GPU_LEASE_ID 77
#define MIB (1024u * 1024u)

static struct fsd_server srv;
static struct fsd_server *const s = &srv;

/* The fixture: the front's state above, and our ends of its channels. */
static struct {
        struct fsd_options opt;
        char dir[32], path[64];
        int zyg;    /* the fake zygote's end of its channel */
        int tpl;    /* the fake template's end */
        int gpu;    /* the fake broker's end, once gpu_up() */
        pid_t zpid; /* the fake zygote (a child of ours that waits) */
        int cl[MAX_CLIENTS];
} F;

/* The last request the zygote read: its header, its fields as parsed, its fds. */
static struct {
        struct fs_hdr h;
        struct fs_spawn sp;
        uint8_t buf[FS_MAX_MSG];
        const char *ptrs[FS_SPAWN_PTRS];
        int fds[FS_MAX_MSG_FDS];
        size_t nfds;
} Z;

/* The zygote closes its copies of a request's fds (the worker has its own). */
static void zyg_close_fds(void)
{
        fs_close_many(Z.fds, Z.nfds);
        Z.nfds = 0;
}

/* ---- the loop, turned by hand as fsd_loop_run turns it ---- */

static void turn(int max_wait_ms)
{
        ck_assert_int_eq(fsd_loop_turn(&s->loop, max_wait_ms), 0);
        fsd_closer_flush(&s->closer);
        fsd_conn_free_dead(s);
        fsd_worker_free_dead(s);
}

/* Turns the loop until cond holds; fails after ms (times the sanitizers' slowdown). */
#define PUMP_UNTIL(cond, ms)                                                                       \
        do {                                                                                       \
                int64_t end_ = fs_now_ms() + (int64_t)(ms)*slowdown();                             \
                while (!(cond)) {                                                                  \
                        ck_assert_msg(fs_now_ms() < end_, "timed out waiting for: %s", #cond);     \
                        turn(10);                                                                  \
                }                                                                                  \
        } while (0)

static void pump_ms(int ms)
{
        for (int64_t end = fs_now_ms() + ms; fs_now_ms() < end;)
                turn(5);
}

static bool readable(int fd)
{
        struct pollfd p = {.fd = fd, .events = POLLIN};

        return poll(&p, 1, 0) == 1 && (p.revents & (POLLIN | POLLHUP));
}

/* Every reader of a pipe closed: its write end polls POLLERR. */
static bool readers_gone(int wfd)
{
        struct pollfd p = {.fd = wfd, .events = POLLOUT};

        return poll(&p, 1, 0) == 1 && (p.revents & POLLERR);
}

static bool same_file(int a, int b)
{
        struct stat x, y;

        return fstat(a, &x) == 0 && fstat(b, &y) == 0 && x.st_dev == y.st_dev &&
               x.st_ino == y.st_ino;
}

/* Our children, zombies included ("/proc/self/task/TID/children"). */
static int nchildren(void)
{
        char path[64];
        int n = 0, pid;
        FILE *f;

        snprintf(path, sizeof(path), "/proc/self/task/%d/children", (int)getpid());
        ck_assert_ptr_nonnull(f = fopen(path, "re"));
        while (fscanf(f, "%d", &pid) == 1)
                n++;
        fclose(f);
        return n;
}

/* A child that only waits: a stand-in for a helper (deaf: every signal blocked, so that only
 * SIGKILL ends it) or for a worker (SIGTERM ends it). Its pidfd is the caller's. It is born
 * with every signal blocked: until it has set SIGTERM's default, it has Check's handler,
 * which would take the whole test's process group down with it. */
static pid_t waiting_child(bool deaf, int *ret_pidfd)
{
        pid_t parent = getpid(), pid;
        sigset_t all, old;

        sigfillset(&all);
        ck_assert_int_eq(sigprocmask(SIG_SETMASK, &all, &old), 0);
        pid = fork();
        if (pid == 0) {
                (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (getppid() != parent)
                        _exit(1);
                if (!deaf) {
                        signal(SIGTERM, SIG_DFL);
                        sigemptyset(&all);
                }
                sigprocmask(SIG_SETMASK, &all, NULL);
                for (;;)
                        pause();
        }
        ck_assert_int_eq(sigprocmask(SIG_SETMASK, &old, NULL), 0);
        ck_assert_int_ge(pid, 0);
        ck_assert_int_ge(*ret_pidfd = pidfd_open(pid, 0), 0);
        return pid;
}

static void seqpacket_pair(int sv[2])
{
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
}

/* ---- the server, set up as forkserver/front/main.c start() does, with fakes ---- */

static void zygote_install(struct fsd_zygote *z, int fd, int pidfd, pid_t pid)
{
        *z = (struct fsd_zygote){.io = FSD_IO_INIT,
                                 .io_exit = FSD_IO_INIT,
                                 .fd = fd,
                                 .pidfd = pidfd,
                                 .pid = pid,
                                 .started_at = fs_now_ms()};
        z->wait_tail = &z->wait;
}

/* Also when a test fails: Check's child exits through exit(). */
static void remove_dir(void)
{
        if (F.dir[0]) {
                (void)unlink(F.path);
                (void)rmdir(F.dir);
        }
}

static void setup(void)
{
        struct fsd_options *o = &F.opt;
        const char *why = "";
        int zsv[2], tsv[2], pidfd;
        sigset_t none;

        fs_log_init("frontunit", FS_LOG_WARNING);
        signal(SIGPIPE, SIG_IGN);
        memset(&srv, 0, sizeof(srv));
        memset(&F, 0, sizeof(F));
        for (size_t i = 0; i < MAX_CLIENTS; i++)
                F.cl[i] = -1;
        F.gpu = -1;
        snprintf(F.dir, sizeof(F.dir), "/tmp/frontunit-XXXXXX");
        ck_assert_ptr_nonnull(mkdtemp(F.dir));
        atexit(remove_dir);
        snprintf(F.path, sizeof(F.path), "%s/s.sock", F.dir);
        *o = (struct fsd_options){.socket_path = F.path,
                                  .key_fd = -1,
                                  .ready_fd = -1,
                                  .listen_fd = -1,
                                  .max_workers = 1024,
                                  .max_pending = 64,
                                  .max_connections = 64,
                                  .handshake_timeout_ms = 5000,
                                  .log_level = FS_LOG_WARNING,
                                  .allow_root_workers = true}; /* as root, our workers are root's */

        s->listen_fd = s->sig_fd = s->reserve_fd = -1;
        s->gpu.pidfd = s->gpu.fd = -1;
        s->gpu.io = s->gpu.io_exit = s->io_listen = s->io_signal = s->io_template =
            (struct fsd_io)FSD_IO_INIT;
        s->opt = o;
        s->start_ms = s->key_loaded_ms = fs_now_ms();
        s->closer =
            (struct fsd_closer){.fd = -1, .pidfd = -1, .io = FSD_IO_INIT, .io_exit = FSD_IO_INIT};
        fsd_dispatch_init(s);
        fsd_spawn_init(s);
        ck_assert_int_eq(fsd_loop_init(&s->loop), 0);
        ck_assert_int_eq(fs_key_generate(&s->key), 0);
        fs_creds_pidns(s->pidns);
        ck_assert_msg(
            fsd_sock_listen(F.path, false, &s->listen_fd, &s->sock_dev, &s->sock_ino, &why) == 0,
            "listen: %s", why);
        sigemptyset(&none);
        ck_assert_int_ge(s->sig_fd = signalfd(-1, &none, SFD_CLOEXEC | SFD_NONBLOCK), 0);
        s->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        /* the template: we read what the front asks of it */
        seqpacket_pair(tsv);
        s->tpl = (struct fsd_template){.fd = tsv[0], .pidfd = -1};
        F.tpl = tsv[1];
        ck_assert_int_eq(fsd_front_attach(s), 0);
        /* the plain zygote */
        seqpacket_pair(zsv);
        F.zpid = waiting_child(true, &pidfd);
        zygote_install(&s->zyg[0], zsv[0], pidfd, F.zpid);
        F.zyg = zsv[1];
        s->nzyg = 1;
        ck_assert_int_eq(fsd_zygote_attach(s, &s->zyg[0]), 0);
}

static void teardown(void)
{
        for (size_t i = 0; i < MAX_CLIENTS; i++)
                F.cl[i] = fs_close(F.cl[i]);
        /* a fake helper does not exit on EOF as the real ones do: it is ended first */
        for (unsigned i = 0; i < s->nzyg; i++)
                if (s->zyg[i].pidfd >= 0)
                        (void)pidfd_send_signal(s->zyg[i].pidfd, SIGKILL, NULL, 0);
        if (s->gpu.pidfd >= 0)
                (void)pidfd_send_signal(s->gpu.pidfd, SIGKILL, NULL, 0);
        /* then the front's own way out: workers ended, helpers reaped */
        fsd_server_stop(s, "test over");
        ck_assert_int_eq(fsd_loop_run(s), 0);
        fsd_loop_fini(&s->loop);
        s->sig_fd = fs_close(s->sig_fd);
        s->reserve_fd = fs_close(s->reserve_fd);
        fs_key_free(fs_take_ptr(&s->key));
        fsd_closer_flush(&s->closer); /* what the loop's end gave up: no closer, so here */
        zyg_close_fds();
        F.zyg = fs_close(F.zyg);
        F.tpl = fs_close(F.tpl);
        F.gpu = fs_close(F.gpu);
        remove_dir();
        ck_assert_int_eq(nchildren(), 0); /* every worker and helper reaped */
}

/* ---- clients: a real connection, the real handshake ---- */

static int client_connect(void)
{
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        struct fs_auth_client ac;
        struct fs_creds self;
        uint8_t in[1024], out[1024];
        const char *why = "";
        size_t nfds;
        int fd, n;

        ck_assert_int_ge(fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0), 0);
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", F.path);
        ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
        PUMP_UNTIL(readable(fd), 2000);
        ck_assert_int_gt(n = fs_fdpass_recv(fd, in, sizeof(in), NULL, 0, &nfds, 0), 0);
        fs_creds_self(&self);
        n = fs_auth_client_hello(&ac, s->key, &self, in, (size_t)n, out, sizeof(out), &why);
        ck_assert_msg(n > 0, "HELLO: %s", why);
        ck_assert_int_eq(fs_fdpass_send(fd, out, (size_t)n, NULL, 0, 0), 0);
        PUMP_UNTIL(readable(fd), 2000);
        ck_assert_int_gt(n = fs_fdpass_recv(fd, in, sizeof(in), NULL, 0, &nfds, 0), 0);
        ck_assert_msg(fs_auth_client_finish(&ac, s->key, in, (size_t)n, &why) == 0, "AUTH: %s",
                      why);
        for (size_t i = 0; i < MAX_CLIENTS; i++)
                if (F.cl[i] < 0) {
                        F.cl[i] = fd;
                        return fd;
                }
        ck_abort_msg("too many clients");
        return -1;
}

static void client_close(int fd)
{
        for (size_t i = 0; i < MAX_CLIENTS; i++)
                if (F.cl[i] == fd)
                        F.cl[i] = fs_close(F.cl[i]);
}

#define CHILD_FD_BASE 10

/* A client's SPAWN, with the fields check_request() expects; tag is argv[1]. */
static void client_spawn(int fd, uint32_t id, const char *tag, const int *fds, size_t nfds,
                         uint64_t gpu_size)
{
        uint8_t buf[2048];
        struct fs_msgw w;
        int n;

        fs_msg_begin(&w, buf, sizeof(buf), FS_MSG_SPAWN, id);
        fs_msg_put_str(&w, FS_F_PATH, "/bin/echo");
        fs_msg_put_str(&w, FS_F_ARG, "echo");
        fs_msg_put_str(&w, FS_F_ARG, tag);
        fs_msg_put_str(&w, FS_F_ENV, "FRONTUNIT=1");
        fs_msg_put_str(&w, FS_F_CWD, "/tmp");
        fs_msg_put_u32(&w, FS_F_FLAGS, FS_SPAWN_NEWPGRP);
        fs_msg_put_u32(&w, FS_F_UMASK, 027);
        fs_msg_put_rlimit(&w, RLIMIT_NOFILE, 64, 128);
        for (size_t i = 0; i < nfds; i++)
                fs_msg_put_u32(&w, FS_F_FD, (uint32_t)(CHILD_FD_BASE + i));
        if (gpu_size)
                fs_msg_put_gpu(&w, 0, gpu_size);
        ck_assert_int_gt(n = fs_msg_finish(&w), 0);
        ck_assert_int_eq(fs_fdpass_send(fd, buf, (size_t)n, fds, nfds, 0), 0);
}

/* A reply as the client reads it. */
struct reply {
        uint16_t type;
        uint32_t id;
        uint32_t err, pid; /* ERROR's errno; SPAWNED's or EXITED's pid */
        char reason[512];
        int fds[4];
        size_t nfds;
};

static void client_reply(int fd, struct reply *r)
{
        static uint8_t buf[FS_MAX_MSG];
        struct fs_msg_spawned sp;
        struct fs_msg_error er;
        const char *why = "";
        struct fs_hdr h;
        struct fs_buf p;
        int n;

        memset(r, 0, sizeof(*r));
        PUMP_UNTIL(readable(fd), 2000);
        n = fs_fdpass_recv(fd, buf, sizeof(buf), r->fds, 4, &r->nfds, MSG_DONTWAIT);
        ck_assert_int_gt(n, 0);
        ck_assert_int_eq(fs_proto_parse_hdr(buf, (size_t)n, &h, &p), 0);
        r->type = h.type;
        r->id = h.id;
        if (h.type == FS_MSG_ERROR) {
                ck_assert_msg(fs_proto_parse_error(&p, &er, &why) == 0, "ERROR: %s", why);
                r->err = er.err;
                snprintf(r->reason, sizeof(r->reason), "%s", er.reason);
        } else if (h.type == FS_MSG_SPAWNED) {
                ck_assert_msg(fs_proto_parse_spawned(&p, &sp, &why) == 0, "SPAWNED: %s", why);
                r->pid = sp.pid;
        }
}

static void reply_close(struct reply *r)
{
        fs_close_many(r->fds, r->nfds);
        r->nfds = 0;
}

/* An ERROR for request id, with errno err and a reason containing what. */
static void expect_error(int fd, uint32_t id, uint32_t err, const char *what)
{
        struct reply r;

        client_reply(fd, &r);
        ck_assert_msg(r.type == FS_MSG_ERROR, "reply %u: type %u, not ERROR", r.id, r.type);
        ck_assert_uint_eq(r.id, id);
        ck_assert_msg(r.err == err, "request %u: errno %u (%s), not %u", id, r.err, r.reason, err);
        if (what)
                ck_assert_msg(strstr(r.reason, what), "request %u: reason '%s' lacks '%s'", id,
                              r.reason, what);
        ck_assert_uint_eq(r.nfds, 0);
}

/* ---- the fake zygote ---- */

/* Reads one request if one is there (wait: turns the loop until one is). */
static bool zyg_recv(bool wait)
{
        const char *why = "";
        struct fs_buf p;
        int n;

        if (wait)
                PUMP_UNTIL(readable(F.zyg), 2000);
        else if (!readable(F.zyg))
                return false;
        zyg_close_fds();
        n = fs_fdpass_recv(F.zyg, Z.buf, sizeof(Z.buf), Z.fds, FS_MAX_MSG_FDS, &Z.nfds,
                           MSG_DONTWAIT);
        ck_assert_int_gt(n, 0);
        ck_assert_int_eq(fs_iproto_parse_hdr(Z.buf, (size_t)n, FS_ICHAN_ZYGOTE, FS_ISIDE_FRONT,
                                             Z.nfds, &Z.h, &p),
                         0);
        ck_assert_uint_eq(Z.h.type, FS_I_SPAWN);
        ck_assert_msg(
            fs_proto_parse_spawn(&p, Z.nfds, true, Z.ptrs, FS_ARRAY_SIZE(Z.ptrs), &Z.sp, &why) == 0,
            "zygote's SPAWN: %s", why);
        return true;
}

static const char *ztag(void)
{
        return Z.sp.argc > 1 ? Z.sp.argv[1] : "";
}

/* The fields client_spawn() sent, as the zygote got them. */
static void check_request(const char *tag, size_t nfds)
{
        ck_assert_str_eq(Z.sp.path, "/bin/echo");
        ck_assert_uint_eq(Z.sp.argc, 2);
        ck_assert_str_eq(Z.sp.argv[0], "echo");
        ck_assert_str_eq(Z.sp.argv[1], tag);
        ck_assert_uint_eq(Z.sp.envc, 1);
        ck_assert_str_eq(Z.sp.envp[0], "FRONTUNIT=1");
        ck_assert_str_eq(Z.sp.cwd, "/tmp");
        ck_assert_uint_eq(Z.sp.flags, FS_SPAWN_NEWPGRP);
        ck_assert_int_eq(Z.sp.umask, 027);
        ck_assert_uint_eq(Z.sp.nrlimits, 1);
        ck_assert_uint_eq(Z.sp.rlimits[0].resource, RLIMIT_NOFILE);
        ck_assert_uint_eq(Z.sp.rlimits[0].soft, 64);
        ck_assert_uint_eq(Z.sp.rlimits[0].hard, 128);
        ck_assert_uint_eq(Z.sp.nfds, nfds);
        for (size_t i = 0; i < nfds; i++)
                ck_assert_uint_eq(Z.sp.child_fd[i], CHILD_FD_BASE + i);
        ck_assert_ptr_null(Z.sp.entry);
        ck_assert_ptr_null(Z.sp.profile);
}

/* CRED: this process, as the kernel told the front at accept (SO_PEERCRED, SO_PEERGROUPS). */
static void check_cred(void)
{
        gid_t groups[FS_MAX_GROUPS];
        int n = getgroups(FS_MAX_GROUPS, groups);

        ck_assert_msg(Z.sp.has_cred, "no CRED in the zygote's SPAWN");
        ck_assert_uint_eq(Z.sp.uid, geteuid());
        ck_assert_uint_eq(Z.sp.gid, getegid());
        ck_assert_int_ge(n, 0);
        ck_assert_uint_eq(Z.sp.ngroups, (size_t)n);
        for (size_t i = 0; i < Z.sp.ngroups; i++) {
                const uint8_t *g = Z.sp.groups + 4 * i;
                uint32_t v =
                    (uint32_t)g[0] << 24 | (uint32_t)g[1] << 16 | (uint32_t)g[2] << 8 | g[3];
                bool found = false;

                for (int k = 0; k < n && !found; k++)
                        found = groups[k] == v;
                ck_assert_msg(found, "CRED names group %u, which we are not in", v);
        }
}

static void zyg_failed(uint32_t id, int err, const char *reason)
{
        uint8_t buf[1024];
        struct fs_msgw w;
        int n;

        fs_imsg_begin_failed(&w, buf, sizeof(buf), id, err, "%s", reason);
        ck_assert_int_gt(n = fs_msg_finish(&w), 0);
        ck_assert_int_eq(fs_fdpass_send(F.zyg, buf, (size_t)n, NULL, 0, 0), 0);
}

/* SPAWNED for id: a new child of ours that waits is the worker; its pidfd goes with it. */
static pid_t zyg_spawned(uint32_t id, int *ret_pidfd)
{
        uint8_t buf[256];
        struct fs_msgw w;
        pid_t pid = waiting_child(false, ret_pidfd);
        int n;

        fs_imsg_begin(&w, buf, sizeof(buf), FS_I_SPAWNED, id);
        fs_msg_put_u32(&w, FS_F_PID, (uint32_t)pid);
        ck_assert_int_gt(n = fs_msg_finish(&w), 0);
        ck_assert_int_eq(fs_fdpass_send(F.zyg, buf, (size_t)n, ret_pidfd, 1, 0), 0);
        return pid;
}

/* ---- 1. the spawn queue ---- */

#define QA 34 /* the first client's requests: a ring's worth, one waiting, one unread */

/* A zygote has 32 requests in flight at most; the rest wait in the front in arrival order
 * (a connection with one waiting is not read) and go as answers make room. The zygote gets
 * an FS_I_SPAWN written afresh with the client's fields and CRED; answers are matched by
 * the channel's sequence number, and the client hears under its own ids. */
START_TEST(queue_caps_inflight_and_keeps_arrival_order)
{
        struct fsd_zygote *z = &s->zyg[0];
        int a, b, c, pfd[2], wpidfd = -1;
        const char *order[] = {"a32", "b0", "c0", "a33"};
        char tag[16];
        struct reply r;

        s->switch_uids = true;
        a = client_connect();
        b = client_connect();
        c = client_connect();
        ck_assert_int_eq(pipe2(pfd, O_CLOEXEC), 0);
        /* the first carries two fds: the zygote gets them after the fields naming them */
        for (unsigned i = 0; i < QA; i++) {
                snprintf(tag, sizeof(tag), "a%u", i);
                client_spawn(a, 1000 + i, tag, pfd, i == 0 ? 2 : 0, 0);
        }
        PUMP_UNTIL(z->nwait == 1, 2000);
        client_spawn(b, 2000, "b0", NULL, 0, 0);
        PUMP_UNTIL(z->nwait == 2, 2000);
        client_spawn(c, 3000, "c0", NULL, 0, 0);
        PUMP_UNTIL(z->nwait == 3, 2000);
        pump_ms(50);
        ck_assert_uint_eq(z->ring_len, FSD_ZYGOTE_INFLIGHT);
        ck_assert_uint_eq(z->nwait, 3); /* a32, b0, c0; a33 is not read while a32 waits */
        ck_assert_uint_eq(s->inflight, FSD_ZYGOTE_INFLIGHT + 3);

        /* exactly 32 reached the zygote, in order, numbered 1..32 */
        for (unsigned i = 0; i < 32; i++) {
                ck_assert(zyg_recv(false));
                snprintf(tag, sizeof(tag), "a%u", i);
                ck_assert_uint_eq(Z.h.id, i + 1);
                check_request(tag, i == 0 ? 2 : 0);
                check_cred();
                ck_assert_uint_eq(Z.sp.ngpu, 0);
                if (i == 0) {
                        ck_assert_uint_eq(Z.nfds, 2);
                        ck_assert(same_file(Z.fds[0], pfd[0]));
                        ck_assert(same_file(Z.fds[1], pfd[1]));
                }
        }
        pump_ms(50);
        ck_assert_msg(!zyg_recv(false), "a 33rd request reached the zygote");

        /* answers make room, one at a time, for what waits, oldest first; the second
         * names no request's sequence number (seq 2's is 2) */
        for (unsigned i = 0; i < 4; i++) {
                if (i == 0)
                        (void)zyg_spawned(1, &wpidfd);
                else if (i == 1)
                        zyg_failed(99, ENOENT, "not this one: the wrong id");
                else
                        zyg_failed(i + 1, ENOENT, "a-early");
                ck_assert(zyg_recv(true));
                ck_assert_str_eq(ztag(), order[i]);
                ck_assert_uint_eq(Z.h.id, FSD_ZYGOTE_INFLIGHT + 1 + i);
                check_request(order[i], 0);
                check_cred();
                pump_ms(20);
                ck_assert_msg(!zyg_recv(false), "more went out than answers made room for");
        }
        /* the rest answered, each with its own tag */
        for (unsigned seq = 5; seq <= FSD_ZYGOTE_INFLIGHT + 4; seq++) {
                snprintf(tag, sizeof(tag), "seq%u", seq);
                zyg_failed(seq, EACCES, tag);
        }

        /* a: SPAWNED under its id, with the worker's pid and pidfd */
        client_reply(a, &r);
        ck_assert_uint_eq(r.type, FS_MSG_SPAWNED);
        ck_assert_uint_eq(r.id, 1000);
        ck_assert_uint_eq(r.nfds, 1);
        ck_assert(same_file(r.fds[0], wpidfd));
        reply_close(&r);
        /* an answer not naming its request's sequence number is not taken for it */
        expect_error(a, 1001, EIO, "malformed zygote reply");
        expect_error(a, 1002, ENOENT, "a-early");
        expect_error(a, 1003, ENOENT, "a-early");
        for (unsigned i = 4; i < 32; i++) {
                snprintf(tag, sizeof(tag), "seq%u", i + 1);
                expect_error(a, 1000 + i, EACCES, tag);
        }
        expect_error(a, 1032, EACCES, "seq33");
        expect_error(b, 2000, EACCES, "seq34");
        expect_error(c, 3000, EACCES, "seq35");
        expect_error(a, 1033, EACCES, "seq36");
        ck_assert_uint_eq(z->ring_len, 0);
        ck_assert_uint_eq(s->nwait, 0);
        ck_assert_uint_eq(s->inflight, 0);
        ck_assert_uint_eq(s->nworkers, 1);
        fs_close_many(pfd, 2);
        fs_close(wpidfd);
}
END_TEST

/* ---- 2. deadlines ---- */

/* A zygote that answers nothing: after the deadline its requests are answered ETIMEDOUT under
 * their ids, it is killed (SIGKILL: it blocks every other signal), and a new one is asked of
 * the template; the one the template gives takes requests, numbered afresh. */
START_TEST(silent_zygote_is_killed_and_replaced)
{
        struct fsd_zygote *z = &s->zyg[0];
        struct fsd_template_reply rep;
        uint32_t q[2]; /* the template's request: kind, index */
        int a, zsv[2], fds[2], pidfd;
        int64_t t0;

        a = client_connect();
        t0 = fs_now_ms();
        for (unsigned i = 0; i < 3; i++)
                client_spawn(a, 51 + i, "late", NULL, 0, 0);
        PUMP_UNTIL(z->ring_len == 3, 2000);
        PUMP_UNTIL(readable(a), FSD_ZYGOTE_DEADLINE_MS + 2000);
        expect_error(a, 51, ETIMEDOUT, "did not answer in time");
        ck_assert_int_ge(fs_now_ms() - t0, FSD_ZYGOTE_DEADLINE_MS - 50);
        ck_assert_int_lt(fs_now_ms() - t0, FSD_ZYGOTE_DEADLINE_MS + 2000 * slowdown());
        expect_error(a, 52, ETIMEDOUT, "did not answer in time");
        expect_error(a, 53, ETIMEDOUT, "did not answer in time");
        ck_assert_uint_eq(z->killed, 1);
        ck_assert_uint_eq(s->inflight, 0);
        /* killed, and reaped by the front */
        PUMP_UNTIL(z->pidfd < 0, 2000);
        ck_assert_int_eq(kill(F.zpid, 0), -1);
        ck_assert_int_eq(errno, ESRCH);
        /* meanwhile: refused, not queued */
        client_spawn(a, 54, "meanwhile", NULL, 0, 0);
        expect_error(a, 54, EAGAIN, "restarting");

        /* a new one, asked of the template after the back-off */
        PUMP_UNTIL(readable(F.tpl), 2000);
        ck_assert_int_eq(recv(F.tpl, q, sizeof(q), 0), (ssize_t)sizeof(q));
        ck_assert_uint_eq(q[0], FSD_TPL_ZYGOTE);
        ck_assert_uint_eq(q[1], 0);
        ck_assert(z->starting);
        seqpacket_pair(zsv);
        rep = (struct fsd_template_reply){.kind = FSD_TPL_ZYGOTE, .index = 0};
        rep.pid = waiting_child(true, &pidfd);
        fds[0] = zsv[0];
        fds[1] = pidfd;
        ck_assert_int_eq(fs_fdpass_send(F.tpl, &rep, sizeof(rep), fds, 2, 0), 0);
        fs_close_many(fds, 2);
        F.zyg = fs_close(F.zyg);
        F.zyg = zsv[1];
        PUMP_UNTIL(z->fd >= 0, 2000);
        ck_assert_uint_eq(s->zygote_restarts, 1);
        ck_assert_int_eq(z->pid, rep.pid);
        client_spawn(a, 55, "fresh", NULL, 0, 0);
        ck_assert(zyg_recv(true));
        ck_assert_uint_eq(Z.h.id, 1);
        check_request("fresh", 0);
        zyg_failed(1, ENOEXEC, "fresh");
        expect_error(a, 55, ENOEXEC, "fresh");
}
END_TEST

/* ---- 3. GPU buffers ---- */

static const uint8_t uuid[16] = {0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};

/* A broker with one device, as the template would have made it. */
static void gpu_up(void)
{
        struct fsd_template_reply rep = {.kind = FSD_TPL_BROKER, .ndev = 1};
        int sv[2], pidfd;

        seqpacket_pair(sv);
        rep.pid = waiting_child(true, &pidfd);
        fsd_gpu_made(s, &rep, 0, sv[0], pidfd);
        ck_assert(s->gpu.up);
        F.gpu = sv[1];
}

/* The broker's next message: its header, and its payload in p (valid until the next call). */
static void gpu_recv(struct fs_hdr *h, struct fs_buf *p)
{
        static uint8_t buf[1024];
        size_t nfds;
        int n;

        PUMP_UNTIL(readable(F.gpu), 2000);
        ck_assert_int_gt(n = fs_fdpass_recv(F.gpu, buf, sizeof(buf), NULL, 0, &nfds, 0), 0);
        ck_assert_int_eq(
            fs_iproto_parse_hdr(buf, (size_t)n, FS_ICHAN_BROKER, FS_ISIDE_FRONT, nfds, h, p), 0);
}

static void gpu_alloc_recv(struct fs_hdr *h, struct fs_msg_gpu_alloc *a)
{
        struct fs_buf p;

        gpu_recv(h, &p);
        ck_assert_uint_eq(h->type, FS_I_GPU_ALLOC);
        ck_assert_int_eq(fs_proto_parse_gpu_alloc(&p, a, NULL), 0);
}

static void gpu_send(const uint8_t *buf, int n, const int *fds, size_t nfds)
{
        ck_assert_int_gt(n, 0);
        ck_assert_int_eq(fs_fdpass_send(F.gpu, buf, (size_t)n, fds, nfds, 0), 0);
}

/* The broker leases a buffer (a memfd): the request reaches the zygote with one GPU and one
 * UUID field for it and its fd after the request's own; SPAWNED charges it, the worker's
 * exit gives it back (GPU_FREE). */
START_TEST(gpu_lease_reaches_the_zygote)
{
        struct fs_msg_gpu_alloc al;
        struct fs_hdr h;
        struct fs_buf p;
        struct fs_msgw w;
        struct reply r;
        uint8_t buf[256];
        uint64_t lease;
        int n0, a, pfd[2], mfd, wpidfd;

        gpu_up();
        n0 = count_fds();
        a = client_connect();
        ck_assert_int_eq(pipe2(pfd, O_CLOEXEC), 0);
        client_spawn(a, 7, "gpu", pfd, 1, 3 * MIB + 1);
        gpu_alloc_recv(&h, &al);
        ck_assert_uint_eq(al.gpu.device, 0);
        ck_assert_uint_eq(al.gpu.size, 3 * MIB + 1);
        pump_ms(20);
        ck_assert_msg(!zyg_recv(false), "the request went on before its buffer was leased");

        ck_assert_int_ge(mfd = memfd_create("gpubuf", MFD_CLOEXEC), 0);
        ck_assert_int_eq(ftruncate(mfd, 4 * MIB), 0);
        fs_imsg_begin(&w, buf, sizeof(buf), FS_I_GPU_LEASE, h.id);
        fs_msg_put_u64(&w, FS_F_LEASE, GPU_LEASE_ID);
        fs_msg_put_gpu(&w, 0, 4 * MIB); /* rounded up */
        fs_msg_put_bytes(&w, FS_F_UUID, uuid, sizeof(uuid));
        gpu_send(buf, fs_msg_finish(&w), &mfd, 1);

        ck_assert(zyg_recv(true));
        check_request("gpu", 1);
        ck_assert(!Z.sp.has_cred); /* workers run as the daemon's uid */
        ck_assert_uint_eq(Z.sp.ngpu, 1);
        ck_assert_uint_eq(Z.sp.gpu[0].device, 0);
        ck_assert_uint_eq(Z.sp.gpu[0].size, 4 * MIB);
        ck_assert_mem_eq(Z.sp.gpu[0].uuid, uuid, sizeof(uuid));
        ck_assert_uint_eq(Z.nfds, 2);
        ck_assert(same_file(Z.fds[0], pfd[0]));
        ck_assert(same_file(Z.fds[1], mfd));
        zyg_close_fds();
        (void)zyg_spawned(Z.h.id, &wpidfd);
        client_reply(a, &r);
        ck_assert_uint_eq(r.type, FS_MSG_SPAWNED);
        ck_assert_uint_eq(r.id, 7);
        reply_close(&r);
        ck_assert_uint_eq(s->gpu.bytes, 4 * MIB);
        ck_assert_uint_eq(s->gpu.leases, 1);
        ck_assert_uint_eq(s->conns->gpu_bytes, 4 * MIB);

        /* the worker ends: EXITED, the lease freed and uncharged */
        ck_assert_int_eq(pidfd_send_signal(wpidfd, SIGKILL, NULL, 0), 0);
        client_reply(a, &r);
        ck_assert_uint_eq(r.type, FS_MSG_EXITED);
        ck_assert_uint_eq(r.id, 7);
        gpu_recv(&h, &p);
        ck_assert_uint_eq(h.type, FS_I_GPU_FREE);
        ck_assert_int_eq(fs_proto_parse_gpu_free(&p, &lease, NULL), 0);
        ck_assert_uint_eq(lease, GPU_LEASE_ID);
        ck_assert_uint_eq(s->gpu.bytes, 0);
        ck_assert_uint_eq(s->gpu.leases, 0);
        ck_assert_uint_eq(s->conns->gpu_bytes, 0);
        fs_close_many(pfd, 2);
        fs_close(mfd);
        fs_close(wpidfd);
        client_close(a);
        PUMP_UNTIL(s->nconns == 0, 2000);
        pump_ms(20);
        ck_assert_int_eq(count_fds(), n0); /* no copy of the buffer or the request's fds kept */
}
END_TEST

/* Over the quota: the front's own check refuses before the broker is asked; the broker's
 * FAILED EDQUOT (the sizes rounded up) becomes the client's ERROR EDQUOT. Neither reaches the
 * zygote, nothing stays charged, and the request's fds are closed. */
START_TEST(gpu_quota_refusal_is_an_error)
{
        struct fs_msg_gpu_alloc al;
        struct fs_hdr h;
        struct fs_msgw w;
        uint8_t buf[256];
        int a, pfd[2];

        F.opt.cuda_conn_quota = 4 * MIB;
        gpu_up();
        a = client_connect();
        ck_assert_int_eq(pipe2(pfd, O_CLOEXEC), 0);

        client_spawn(a, 8, "toolarge", pfd, 1, 8 * MIB);
        expect_error(a, 8, EDQUOT, "GPU quota of this connection exceeded");
        ck_assert_msg(!readable(F.gpu), "the broker was asked for what the quota refuses");

        client_spawn(a, 9, "rounded", pfd, 1, 3 * MIB);
        gpu_alloc_recv(&h, &al);
        ck_assert_uint_eq(al.gpu.size, 3 * MIB);
        ck_assert_uint_eq(al.room, 4 * MIB);
        fs_imsg_begin_failed(&w, buf, sizeof(buf), h.id, EDQUOT, "6 MiB rounded up");
        gpu_send(buf, fs_msg_finish(&w), NULL, 0);
        expect_error(a, 9, EDQUOT, "6 MiB rounded up");
        pump_ms(20);
        ck_assert_msg(!zyg_recv(false), "a refused request reached the zygote");
        ck_assert_uint_eq(s->gpu.bytes, 0);
        ck_assert_uint_eq(s->conns->gpu_bytes, 0);
        ck_assert_uint_eq(s->inflight, 0);
        /* the front closed its copies of the read end: ours was the last */
        pfd[0] = fs_close(pfd[0]);
        ck_assert(readers_gone(pfd[1]));
        fs_close(pfd[1]);
}
END_TEST

/* ---- 4. orphans ---- */

/* A client that closes with requests at the zygote: the answers that come later make
 * workers nobody holds, which are ended (SIGTERM) and reaped; no fd is left behind. */
START_TEST(closed_connection_orphans_its_answers)
{
        int n0 = count_fds(), a, pfd[2], wpidfd[2];
        pid_t wpid[2];

        a = client_connect();
        ck_assert_int_eq(pipe2(pfd, O_CLOEXEC), 0);
        client_spawn(a, 1, "orphan1", pfd, 1, 0);
        client_spawn(a, 2, "orphan2", pfd + 1, 1, 0);
        PUMP_UNTIL(s->zyg[0].ring_len == 2, 2000);
        client_close(a);
        PUMP_UNTIL(s->nconns == 0, 2000);
        for (unsigned i = 0; i < 2; i++) {
                ck_assert(zyg_recv(true));
                ck_assert_uint_eq(Z.h.id, i + 1);
                wpid[i] = zyg_spawned(Z.h.id, &wpidfd[i]);
        }
        zyg_close_fds();
        /* made (SIGTERM, SIGKILL after a second's grace), ended and reaped */
        PUMP_UNTIL(s->stats.spawns == 2 && s->nworkers == 0, 3000);
        ck_assert_ptr_null(s->orphans);
        ck_assert_uint_eq(s->inflight, 0);
        for (unsigned i = 0; i < 2; i++) {
                siginfo_t si = {0};

                ck_assert(readable(wpidfd[i])); /* it exited */
                ck_assert_int_eq(waitid(P_PIDFD, (id_t)wpidfd[i], &si, WEXITED | WNOHANG), -1);
                ck_assert_int_eq(errno, ECHILD); /* and the front reaped it */
                ck_assert_int_eq(kill(wpid[i], 0), -1);
                wpidfd[i] = fs_close(wpidfd[i]);
        }
        fs_close_many(pfd, 2);
        pump_ms(20);
        ck_assert_int_eq(count_fds(), n0);
}
END_TEST

/* A client that closes while its request waits for room at the zygote: the request never
 * goes, and its fds are closed. */
START_TEST(closed_connection_waiting_request_never_goes)
{
        int n0 = count_fds(), a, b, pfd[2];

        b = client_connect();
        for (unsigned i = 0; i < FSD_ZYGOTE_INFLIGHT; i++)
                client_spawn(b, 100 + i, "b", NULL, 0, 0);
        PUMP_UNTIL(s->zyg[0].ring_len == FSD_ZYGOTE_INFLIGHT, 2000);
        a = client_connect();
        ck_assert_int_eq(pipe2(pfd, O_CLOEXEC), 0);
        client_spawn(a, 1, "gone", pfd, 1, 0);
        PUMP_UNTIL(s->nwait == 1, 2000);
        client_close(a);
        PUMP_UNTIL(s->nconns == 1, 2000);

        for (unsigned i = 0; i < FSD_ZYGOTE_INFLIGHT; i++) {
                ck_assert(zyg_recv(false));
                zyg_failed(Z.h.id, EPERM, "b");
        }
        for (unsigned i = 0; i < FSD_ZYGOTE_INFLIGHT; i++)
                expect_error(b, 100 + i, EPERM, "b");
        pump_ms(20);
        ck_assert_msg(!zyg_recv(false), "a closed connection's request reached the zygote");
        ck_assert_uint_eq(s->nwait, 0);
        ck_assert_uint_eq(s->inflight, 0);
        pfd[0] = fs_close(pfd[0]);
        ck_assert(readers_gone(pfd[1]));
        fs_close(pfd[1]);
        client_close(b);
        PUMP_UNTIL(s->nconns == 0, 2000);
        pump_ms(20);
        ck_assert_int_eq(count_fds(), n0);
}
END_TEST

/* The server's record of the connection made last (conns are added at the head). */
static struct fsd_conn *newest_conn(void)
{
        ck_assert_ptr_nonnull(s->conns);
        return s->conns;
}

/*
 * A full queue for the zygotes: the uid holding most of it gives up its newest request to a
 * uid that holds fewer, and a uid that already holds as many gets EAGAIN itself. (Alone, a
 * uid may use every place: that is the rest of the suite, with one uid.)
 */
START_TEST(full_queue_makes_room_for_another_uid)
{
        int a, b, c, d;

        s->zygote_queue = 2;
        a = client_connect();
        for (unsigned i = 0; i <= FSD_ZYGOTE_INFLIGHT; i++) /* 32 in flight, one waits */
                client_spawn(a, 1 + i, "a", NULL, 0, 0);
        PUMP_UNTIL(s->nwait == 1, 2000);
        b = client_connect();
        client_spawn(b, 100, "b", NULL, 0, 0);
        PUMP_UNTIL(s->nwait == 2, 2000);
        c = client_connect();
        newest_conn()->uid = 12345; /* another tenant */
        client_spawn(c, 200, "c", NULL, 0, 0);
        /* b's, the newest of the uid holding both places, gives way to c's */
        expect_error(b, 100, EAGAIN, "holds most of their queue");
        PUMP_UNTIL(s->nwait == 2 && s->evicted == 1, 2000);
        /* one place each now: a third request of a's uid finds no room */
        d = client_connect();
        client_spawn(d, 300, "d", NULL, 0, 0);
        expect_error(d, 300, EAGAIN, "busy");
        ck_assert_uint_eq(s->nwait, 2);
        ck_assert_uint_eq(s->evicted, 1);
        /* the zygote answers: the waiting requests go, a's and then c's */
        for (unsigned i = 0; i < FSD_ZYGOTE_INFLIGHT + 2; i++) {
                ck_assert(zyg_recv(true));
                zyg_close_fds();
                zyg_failed(Z.h.id, EPERM, ztag());
        }
        for (unsigned i = 0; i <= FSD_ZYGOTE_INFLIGHT; i++)
                expect_error(a, 1 + i, EPERM, "a");
        expect_error(c, 200, EPERM, "c");
        ck_assert_uint_eq(s->nwait, 0);
}
END_TEST

static Suite *suite(void)
{
        Suite *su = suite_create("frontunit");
        TCase *tc = tcase_create("front");

        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_set_timeout(tc, 20);
        tcase_set_tags(tc, "pidfd"); /* the front's own pidfd calls: valgrind 3.19 lacks them */
        tcase_add_test(tc, queue_caps_inflight_and_keeps_arrival_order);
        tcase_add_test(tc, silent_zygote_is_killed_and_replaced);
        tcase_add_test(tc, gpu_lease_reaches_the_zygote);
        tcase_add_test(tc, gpu_quota_refusal_is_an_error);
        tcase_add_test(tc, closed_connection_orphans_its_answers);
        tcase_add_test(tc, closed_connection_waiting_request_never_goes);
        tcase_add_test(tc, full_queue_makes_room_for_another_uid);
        suite_add_tcase(su, tc);
        return su;
}

int main(void)
{
        return run_suite(suite());
}
