#include <errno.h>
#include <string.h>

#include "common/proto.h"
#include "testutil.h"

static uint8_t mem[FS_MAX_MSG + 64], mem2[FS_MAX_MSG];
static const char *ptrs[FS_SPAWN_PTRS];

static int build_spawn(uint8_t *out, size_t cap)
{
        struct fs_msgw w;

        fs_msg_begin(&w, out, cap, FS_MSG_SPAWN, 42);
        fs_msg_put_str(&w, FS_F_PATH, "/bin/echo");
        fs_msg_put_str(&w, FS_F_ARG, "echo");
        fs_msg_put_str(&w, FS_F_ARG, "hi");
        fs_msg_put_str(&w, FS_F_ENV, "A=1");
        fs_msg_put_str(&w, FS_F_CWD, "/tmp");
        fs_msg_put_u32(&w, FS_F_FLAGS, FS_SPAWN_DETACH);
        /* FD fields last: their count must match the fds, so no prefix is complete. */
        fs_msg_put_u32(&w, FS_F_FD, 1);
        fs_msg_put_u32(&w, FS_F_FD, 7);
        return fs_msg_finish(&w);
}

/* An internal datagram of the zygote channel, from whichever side may send its type. */
static int ihdr(const uint8_t *m, size_t len, struct fs_hdr *h, struct fs_buf *p)
{
        if (fs_iproto_parse_hdr(m, len, FS_ICHAN_ZYGOTE, FS_ISIDE_FRONT, 0, h, p) == 0)
                return 0;
        return fs_iproto_parse_hdr(m, len, FS_ICHAN_ZYGOTE, FS_ISIDE_HELPER, 0, h, p);
}

static int parse_spawn(const uint8_t *m, size_t len, size_t nfds, struct fs_spawn *sp,
                       const char **why)
{
        struct fs_hdr h;
        struct fs_buf p;
        int r = fs_proto_parse_hdr(m, len, &h, &p);

        if (r < 0)
                return r;
        return fs_proto_parse_spawn(&p, nfds, false, ptrs, FS_ARRAY_SIZE(ptrs), sp, why);
}

START_TEST(header_roundtrip_and_errors)
{
        struct fs_msgw w;
        struct fs_hdr h;
        struct fs_buf p;
        int n;

        fs_msg_begin(&w, mem, sizeof(mem), FS_MSG_PING, 0xdeadbeef);
        n = fs_msg_finish(&w);
        ck_assert_int_eq(n, FS_HDR_LEN);
        ck_assert_int_eq(fs_proto_parse_hdr(mem, (size_t)n, &h, &p), 0);
        ck_assert_uint_eq(h.type, FS_MSG_PING);
        ck_assert_uint_eq(h.id, 0xdeadbeef);
        ck_assert_uint_eq(fs_buf_remaining(&p), 0);

        ck_assert_int_eq(fs_proto_parse_hdr(mem, FS_HDR_LEN - 1, &h, &p), -EBADMSG);
        ck_assert_int_eq(fs_proto_parse_hdr(mem, FS_MAX_MSG + 1, &h, &p), -EMSGSIZE);
        mem[0] ^= 1; /* magic */
        ck_assert_int_eq(fs_proto_parse_hdr(mem, (size_t)n, &h, &p), -EPROTO);
        mem[0] ^= 1;
        mem[5] = FS_PROTO_VERSION + 1; /* version: a later one */
        ck_assert_int_eq(fs_proto_parse_hdr(mem, (size_t)n, &h, &p), -EPROTO);
        mem[5] = 1; /* version 1 bound nobody in its handshake: refused */
        ck_assert_int_eq(fs_proto_parse_hdr(mem, (size_t)n, &h, &p), -EPROTO);
        mem[5] = FS_PROTO_VERSION;
        mem[7] = 200; /* unknown type */
        ck_assert_int_eq(fs_proto_parse_hdr(mem, (size_t)n, &h, &p), -EBADMSG);
        mem[7] = 0; /* types start at 1 */
        ck_assert_int_eq(fs_proto_parse_hdr(mem, (size_t)n, &h, &p), -EBADMSG);
        mem[7] = FS_MSG_PING;
        mem[15] = 1; /* length says 1 byte more than there is */
        ck_assert_int_eq(fs_proto_parse_hdr(mem, (size_t)n, &h, &p), -EBADMSG);
        mem[15] = 0;
        ck_assert_int_eq(fs_proto_parse_hdr(mem, (size_t)n, &h, &p), 0);
}
END_TEST

START_TEST(spawn_roundtrip)
{
        struct fs_spawn sp;
        int n = build_spawn(mem, sizeof(mem));

        ck_assert_int_gt(n, 0);
        ck_assert_int_eq(parse_spawn(mem, (size_t)n, 2, &sp, NULL), 0);
        ck_assert_str_eq(sp.path, "/bin/echo");
        ck_assert_uint_eq(sp.argc, 2);
        ck_assert_str_eq(sp.argv[0], "echo");
        ck_assert_str_eq(sp.argv[1], "hi");
        ck_assert_ptr_null(sp.argv[2]);
        ck_assert_uint_eq(sp.envc, 1);
        ck_assert_str_eq(sp.envp[0], "A=1");
        ck_assert_ptr_null(sp.envp[1]);
        ck_assert_str_eq(sp.cwd, "/tmp");
        ck_assert_uint_eq(sp.nfds, 2);
        ck_assert_uint_eq(sp.child_fd[0], 1);
        ck_assert_uint_eq(sp.child_fd[1], 7);
        ck_assert_uint_eq(sp.flags, FS_SPAWN_DETACH);
        ck_assert_ptr_null(sp.profile);
}
END_TEST

/* Every proper prefix of a valid message is refused; only the whole one parses. */
START_TEST(spawn_every_cut_refused)
{
        static uint8_t copy[FS_MAX_MSG];
        struct fs_spawn sp;
        int n = build_spawn(mem, sizeof(mem));

        for (int len = 0; len < n; len++) {
                memcpy(copy, mem, (size_t)len);
                if (len >= FS_HDR_LEN) /* a consistent header over a cut payload */
                        copy[15] = (uint8_t)(len - FS_HDR_LEN), copy[14] = 0;
                ck_assert_int_lt(parse_spawn(copy, (size_t)len, 2, &sp, NULL), 0);
        }
        ck_assert_int_eq(parse_spawn(mem, (size_t)n, 2, &sp, NULL), 0);
}
END_TEST

struct bad_case {
        const char *name;
        int want;
        void (*build)(struct fs_msgw *w);
        size_t nfds;
};

static void b_no_path(struct fs_msgw *w)
{
        fs_msg_put_str(w, FS_F_ARG, "x");
}
static void b_dup_path(struct fs_msgw *w)
{
        fs_msg_put_str(w, FS_F_PATH, "/a");
        fs_msg_put_str(w, FS_F_PATH, "/b");
        fs_msg_put_str(w, FS_F_ARG, "x");
}
static void b_relative(struct fs_msgw *w)
{
        fs_msg_put_str(w, FS_F_PATH, "bin/true");
        fs_msg_put_str(w, FS_F_ARG, "x");
}
static void b_no_argv0(struct fs_msgw *w)
{
        fs_msg_put_str(w, FS_F_PATH, "/bin/true");
}
static void b_no_nul(struct fs_msgw *w)
{
        fs_msg_put_bytes(w, FS_F_PATH, "/bin/true", 9);
        fs_msg_put_str(w, FS_F_ARG, "x");
}
static void b_inner_nul(struct fs_msgw *w)
{
        fs_msg_put_bytes(w, FS_F_PATH, "/bin\0/true", 11);
        fs_msg_put_str(w, FS_F_ARG, "x");
}
static void b_empty_str(struct fs_msgw *w)
{
        fs_msg_put_bytes(w, FS_F_PATH, "", 0);
        fs_msg_put_str(w, FS_F_ARG, "x");
}
static void b_unknown_field(struct fs_msgw *w)
{
        fs_msg_put_str(w, FS_F_PATH, "/bin/true");
        fs_msg_put_str(w, FS_F_ARG, "x");
        fs_msg_put_u32(w, 999, 1);
}
static void b_foreign_field(struct fs_msgw *w)
{
        fs_msg_put_str(w, FS_F_PATH, "/bin/true");
        fs_msg_put_str(w, FS_F_ARG, "x");
        fs_msg_put_u64(w, FS_F_WORKER, 1);
}
static void b_fd_wrong_len(struct fs_msgw *w)
{
        fs_msg_put_str(w, FS_F_PATH, "/bin/true");
        fs_msg_put_str(w, FS_F_ARG, "x");
        fs_msg_put_u16(w, FS_F_FD, 1);
}
static void b_fd_count(struct fs_msgw *w)
{
        fs_msg_put_str(w, FS_F_PATH, "/bin/true");
        fs_msg_put_str(w, FS_F_ARG, "x");
        fs_msg_put_u32(w, FS_F_FD, 1);
}
static void b_fd_dup(struct fs_msgw *w)
{
        b_fd_count(w);
        fs_msg_put_u32(w, FS_F_FD, 1);
}
static void b_fd_big(struct fs_msgw *w)
{
        fs_msg_put_str(w, FS_F_PATH, "/bin/true");
        fs_msg_put_str(w, FS_F_ARG, "x");
        fs_msg_put_u32(w, FS_F_FD, FS_MAX_CHILD_FD + 1);
}
static void b_env(struct fs_msgw *w)
{
        fs_msg_put_str(w, FS_F_PATH, "/bin/true");
        fs_msg_put_str(w, FS_F_ARG, "x");
        fs_msg_put_str(w, FS_F_ENV, "NOEQUALS");
}
static void b_env_empty_name(struct fs_msgw *w)
{
        fs_msg_put_str(w, FS_F_PATH, "/bin/true");
        fs_msg_put_str(w, FS_F_ARG, "x");
        fs_msg_put_str(w, FS_F_ENV, "=x");
}
static void b_flags(struct fs_msgw *w)
{
        fs_msg_put_str(w, FS_F_PATH, "/bin/true");
        fs_msg_put_str(w, FS_F_ARG, "x");
        fs_msg_put_u32(w, FS_F_FLAGS, 1u << 30);
}
static void b_cwd(struct fs_msgw *w)
{
        fs_msg_put_str(w, FS_F_PATH, "/bin/true");
        fs_msg_put_str(w, FS_F_ARG, "x");
        fs_msg_put_str(w, FS_F_CWD, "tmp");
}
static void b_trailing(struct fs_msgw *w)
{
        fs_msg_put_str(w, FS_F_PATH, "/bin/true");
        fs_msg_put_str(w, FS_F_ARG, "x");
        fs_buf_put_u16(&w->b, FS_F_ARG); /* a field header cut short */
}

static const struct bad_case bad[] = {
    {"missing path", -EBADMSG, b_no_path, 0},
    {"duplicate path", -EBADMSG, b_dup_path, 0},
    {"relative path", -EINVAL, b_relative, 0},
    {"no argv[0]", -EBADMSG, b_no_argv0, 0},
    {"string without NUL", -EBADMSG, b_no_nul, 0},
    {"string with inner NUL", -EBADMSG, b_inner_nul, 0},
    {"zero-length string", -EBADMSG, b_empty_str, 0},
    {"unknown field", -EBADMSG, b_unknown_field, 0},
    {"field of another message", -EBADMSG, b_foreign_field, 0},
    {"u32 field of wrong length", -EBADMSG, b_fd_wrong_len, 0},
    {"more fds than FD fields", -EBADMSG, b_fd_count, 2},
    {"fewer fds than FD fields", -EBADMSG, b_fd_count, 0},
    {"child fd twice", -EINVAL, b_fd_dup, 2},
    {"child fd too large", -EINVAL, b_fd_big, 1},
    {"env without =", -EINVAL, b_env, 0},
    {"env with empty name", -EINVAL, b_env_empty_name, 0},
    {"unknown flags", -EINVAL, b_flags, 0},
    {"relative cwd", -EINVAL, b_cwd, 0},
    {"trailing bytes", -EBADMSG, b_trailing, 0},
};

START_TEST(spawn_refusals)
{
        const struct bad_case *c = &bad[_i];
        const char *why = NULL;
        struct fs_spawn sp;
        struct fs_msgw w;
        int n;

        fs_msg_begin(&w, mem, sizeof(mem), FS_MSG_SPAWN, 1);
        c->build(&w);
        n = fs_msg_finish(&w);
        ck_assert_int_gt(n, 0);
        ck_assert_msg(parse_spawn(mem, (size_t)n, c->nfds, &sp, &why) == c->want,
                      "case '%s' not refused as expected", c->name);
        ck_assert_ptr_nonnull(why);
}
END_TEST

START_TEST(spawn_too_many_args)
{
        struct fs_spawn sp;
        struct fs_msgw w;
        const char *why;
        int n;

        fs_msg_begin(&w, mem, sizeof(mem), FS_MSG_SPAWN, 1);
        fs_msg_put_str(&w, FS_F_PATH, "/bin/true");
        for (int i = 0; i < FS_MAX_ARGV + 1; i++)
                fs_msg_put_str(&w, FS_F_ARG, "");
        n = fs_msg_finish(&w);
        ck_assert_int_gt(n, 0);
        ck_assert_int_eq(parse_spawn(mem, (size_t)n, 0, &sp, &why), -E2BIG);
        /* And a message too large for a datagram cannot even be built. */
        fs_msg_begin(&w, mem, sizeof(mem), FS_MSG_SPAWN, 1);
        for (int i = 0; i < 20000; i++)
                fs_msg_put_str(&w, FS_F_ARG, "");
        ck_assert_int_eq(fs_msg_finish(&w), -EMSGSIZE);
}
END_TEST

START_TEST(small_messages)
{
        struct fs_msg_error e;
        struct fs_msg_exited x;
        struct fs_msg_spawned s;
        struct fs_hdr h;
        struct fs_buf p;
        struct fs_msgw w;
        const char *why;
        int n;

        fs_msg_begin(&w, mem, sizeof(mem), FS_MSG_ERROR, 3);
        fs_msg_put_u32(&w, FS_F_ERRNO, ENOENT);
        fs_msg_put_str(&w, FS_F_REASON, "nope");
        n = fs_msg_finish(&w);
        ck_assert_int_eq(fs_proto_parse_hdr(mem, (size_t)n, &h, &p), 0);
        ck_assert_int_eq(fs_proto_parse_error(&p, &e, &why), 0);
        ck_assert_uint_eq(e.err, ENOENT);
        ck_assert_str_eq(e.reason, "nope");

        fs_msg_begin(&w, mem, sizeof(mem), FS_MSG_ERROR, 3);
        fs_msg_put_u32(&w, FS_F_ERRNO, 0); /* errno 0 is not an error */
        fs_msg_put_str(&w, FS_F_REASON, "x");
        n = fs_msg_finish(&w);
        ck_assert_int_eq(fs_proto_parse_hdr(mem, (size_t)n, &h, &p), 0);
        ck_assert_int_eq(fs_proto_parse_error(&p, &e, &why), -EBADMSG);

        fs_msg_begin(&w, mem, sizeof(mem), FS_MSG_EXITED, 3);
        fs_msg_put_u64(&w, FS_F_WORKER, 9);
        fs_msg_put_u32(&w, FS_F_CODE, 2);
        fs_msg_put_u32(&w, FS_F_STATUS, 9);
        n = fs_msg_finish(&w);
        ck_assert_int_eq(fs_proto_parse_hdr(mem, (size_t)n, &h, &p), 0);
        ck_assert_int_eq(fs_proto_parse_exited(&p, &x, &why), 0);
        ck_assert_uint_eq(x.worker, 9);
        ck_assert_uint_eq(x.status, 9);

        fs_msg_begin(&w, mem, sizeof(mem), FS_MSG_EXITED, 3);
        fs_msg_put_u64(&w, FS_F_WORKER, 9);
        fs_msg_put_u32(&w, FS_F_CODE, 1);
        fs_msg_put_u32(&w, FS_F_STATUS, 256); /* exit codes are 0..255 */
        n = fs_msg_finish(&w);
        ck_assert_int_eq(fs_proto_parse_hdr(mem, (size_t)n, &h, &p), 0);
        ck_assert_int_eq(fs_proto_parse_exited(&p, &x, &why), -EBADMSG);

        fs_msg_begin(&w, mem, sizeof(mem), FS_MSG_SPAWNED, 3);
        fs_msg_put_u64(&w, FS_F_WORKER, 1);
        fs_msg_put_u32(&w, FS_F_PID, 0); /* pid 0 is not a worker */
        n = fs_msg_finish(&w);
        ck_assert_int_eq(fs_proto_parse_hdr(mem, (size_t)n, &h, &p), 0);
        ck_assert_int_eq(fs_proto_parse_spawned(&p, &s, &why), -EBADMSG);
}
END_TEST

static int count_stat(void *ud, const char *name, uint64_t v)
{
        *(uint64_t *)ud += v + strlen(name);
        return 0;
}

START_TEST(spawn_gpu_fields)
{
        static const uint8_t uuid_a[16] = "fakecuda-gpu00", uuid_b[16] = "fakecuda-gpu01";
        uint64_t sizes[2] = {2 << 20, 4 << 20};
        struct fs_msg_spawned sd;
        struct fs_spawn sp;
        struct fs_msgw w;
        struct fs_hdr h;
        struct fs_buf p;
        size_t len;
        const char *why;
        int n;

        fs_msg_begin(&w, mem, sizeof(mem), FS_MSG_SPAWN, 3);
        fs_msg_put_str(&w, FS_F_PATH, "/bin/true");
        fs_msg_put_str(&w, FS_F_ARG, "true");
        fs_msg_put_gpu(&w, 0, 1);
        fs_msg_put_u32(&w, FS_F_FD, 1);
        fs_msg_put_gpu(&w, 1, 3 << 20);
        ck_assert_int_gt(n = fs_msg_finish(&w), 0);
        len = (size_t)n;
        /* from a client: GPU fields, fds for FD fields only */
        ck_assert_int_eq(parse_spawn(mem, len, 1, &sp, &why), 0);
        ck_assert_uint_eq(sp.ngpu, 2);
        ck_assert_uint_eq(sp.gpu[0].device, 0);
        ck_assert_uint_eq(sp.gpu[0].size, 1);
        ck_assert_uint_eq(sp.gpu[1].device, 1);
        ck_assert_int_eq(parse_spawn(mem, len, 3, &sp, &why), -EBADMSG);
        /* as the front sends it to its zygote: written afresh from what it parsed, the
         * buffers as leased (sizes rounded up, a UUID each), their fds attached */
        ck_assert_int_eq(parse_spawn(mem, len, 1, &sp, &why), 0);
        fs_imsg_begin(&w, mem2, sizeof(mem2), FS_I_SPAWN, 0);
        fs_msg_put_spawn(&w, &sp);
        fs_msg_put_gpu(&w, 0, sizes[0]);
        fs_msg_put_bytes(&w, FS_F_UUID, uuid_a, 16);
        fs_msg_put_gpu(&w, 1, sizes[1]);
        fs_msg_put_bytes(&w, FS_F_UUID, uuid_b, 16);
        ck_assert_int_gt(n = fs_msg_finish(&w), 0);
        ck_assert_int_eq(
            fs_iproto_parse_hdr(mem2, (size_t)n, FS_ICHAN_ZYGOTE, FS_ISIDE_FRONT, 3, &h, &p), 0);
        ck_assert_int_eq(fs_proto_parse_spawn(&p, 3, true, ptrs, FS_ARRAY_SIZE(ptrs), &sp, &why),
                         0);
        ck_assert_uint_eq(sp.gpu[0].size, 2 << 20);
        ck_assert_uint_eq(sp.gpu[1].size, 4 << 20);
        ck_assert_mem_eq(sp.gpu[1].uuid, uuid_b, 16);
        ck_assert_uint_eq(sp.nfds, 1);
        ck_assert_uint_eq(sp.child_fd[0], 1);
        ck_assert_str_eq(sp.path, "/bin/true");
        /* a client may not send UUIDs; a size of 0 or more than 8 buffers are refused */
        fs_buf_init_reader(&p, mem2 + FS_HDR_LEN, h.len);
        ck_assert_int_eq(fs_proto_parse_spawn(&p, 1, false, ptrs, FS_ARRAY_SIZE(ptrs), &sp, &why),
                         -EBADMSG);
        fs_msg_begin(&w, mem, sizeof(mem), FS_MSG_SPAWN, 3);
        fs_msg_put_str(&w, FS_F_PATH, "/bin/true");
        fs_msg_put_str(&w, FS_F_ARG, "true");
        fs_msg_put_gpu(&w, 0, 0);
        ck_assert_int_eq(parse_spawn(mem, (size_t)fs_msg_finish(&w), 0, &sp, &why), -EINVAL);
        fs_msg_begin(&w, mem, sizeof(mem), FS_MSG_SPAWN, 3);
        fs_msg_put_str(&w, FS_F_PATH, "/bin/true");
        fs_msg_put_str(&w, FS_F_ARG, "true");
        for (int i = 0; i < FS_MAX_GPU + 1; i++)
                fs_msg_put_gpu(&w, 0, 1);
        ck_assert_int_eq(parse_spawn(mem, (size_t)fs_msg_finish(&w), 0, &sp, &why), -E2BIG);

        /* SPAWNED: GPU and UUID fields pair up, in order */
        fs_msg_begin(&w, mem, sizeof(mem), FS_MSG_SPAWNED, 3);
        fs_msg_put_u64(&w, FS_F_WORKER, 9);
        fs_msg_put_u32(&w, FS_F_PID, 1234);
        fs_msg_put_gpu(&w, 1, 4 << 20);
        fs_msg_put_bytes(&w, FS_F_UUID, uuid_b, 16);
        ck_assert_int_eq(fs_proto_parse_hdr(mem, (size_t)fs_msg_finish(&w), &h, &p), 0);
        ck_assert_int_eq(fs_proto_parse_spawned(&p, &sd, &why), 0);
        ck_assert_uint_eq(sd.ngpu, 1);
        ck_assert_uint_eq(sd.gpu[0].size, 4 << 20);
        ck_assert_mem_eq(sd.gpu[0].uuid, uuid_b, 16);
        fs_msg_begin(&w, mem, sizeof(mem), FS_MSG_SPAWNED, 3);
        fs_msg_put_u64(&w, FS_F_WORKER, 9);
        fs_msg_put_u32(&w, FS_F_PID, 1234);
        fs_msg_put_gpu(&w, 1, 4 << 20);
        ck_assert_int_eq(fs_proto_parse_hdr(mem, (size_t)fs_msg_finish(&w), &h, &p), 0);
        ck_assert_int_eq(fs_proto_parse_spawned(&p, &sd, &why), -EBADMSG);
}
END_TEST

START_TEST(spawn_cred_and_signal)
{
        const uint32_t groups[2] = {100, 0x01020304};
        struct fs_msg_signal sig;
        struct fs_spawn sp;
        struct fs_msgw w;
        struct fs_hdr h;
        struct fs_buf p;
        const char *why;
        size_t len;
        int n;

        fs_msg_begin(&w, mem, sizeof(mem), FS_MSG_SPAWN, 3);
        fs_msg_put_str(&w, FS_F_PATH, "/bin/true");
        fs_msg_put_str(&w, FS_F_ARG, "true");
        ck_assert_int_gt(n = fs_msg_finish(&w), 0);
        len = (size_t)n;
        ck_assert_int_eq(parse_spawn(mem, len, 0, &sp, &why), 0);
        ck_assert(!sp.has_cred);
        /* as the front sends it: the client's uid, gid and groups */
        fs_imsg_begin(&w, mem, sizeof(mem), FS_I_SPAWN, 0);
        fs_msg_put_str(&w, FS_F_PATH, "/bin/true");
        fs_msg_put_str(&w, FS_F_ARG, "true");
        fs_msg_put_cred(&w, 65534, 65533, groups, 2);
        ck_assert_int_gt(n = fs_msg_finish(&w), 0);
        len = (size_t)n;
        ck_assert_int_eq(fs_iproto_parse_hdr(mem, len, FS_ICHAN_ZYGOTE, FS_ISIDE_FRONT, 0, &h, &p),
                         0);
        ck_assert_int_eq(fs_proto_parse_spawn(&p, 0, true, ptrs, FS_ARRAY_SIZE(ptrs), &sp, &why),
                         0);
        ck_assert(sp.has_cred);
        ck_assert_uint_eq(sp.uid, 65534);
        ck_assert_uint_eq(sp.gid, 65533);
        ck_assert_uint_eq(sp.ngroups, 2);
        ck_assert_mem_eq(sp.groups + 4, "\x01\x02\x03\x04", 4);
        /* a client may not name whom its worker runs as */
        fs_buf_init_reader(&p, mem + FS_HDR_LEN, h.len);
        ck_assert_int_eq(fs_proto_parse_spawn(&p, 0, false, ptrs, FS_ARRAY_SIZE(ptrs), &sp, &why),
                         -EBADMSG);
        ck_assert_str_eq(why, "CRED fields only come from the server");
        fs_imsg_begin(&w, mem, sizeof(mem), FS_I_SPAWN, 0);
        fs_msg_put_cred(&w, 1, 1, groups, FS_MAX_GROUPS + 1);
        ck_assert_int_eq(fs_msg_finish(&w), -E2BIG);
        /* a CRED of the wrong length is malformed, even from the front */
        fs_msg_begin(&w, mem, sizeof(mem), FS_MSG_SPAWN, 3);
        fs_msg_put_str(&w, FS_F_PATH, "/bin/true");
        fs_msg_put_str(&w, FS_F_ARG, "true");
        fs_msg_put_bytes(&w, FS_F_CRED, "\0\0\0\1\0\0\0\1\0", 9);
        ck_assert_int_eq(fs_proto_parse_hdr(mem, (size_t)fs_msg_finish(&w), &h, &p), 0);
        ck_assert_int_eq(fs_proto_parse_spawn(&p, 0, true, ptrs, FS_ARRAY_SIZE(ptrs), &sp, &why),
                         -EBADMSG);

        /* SIGNAL: by pidfd, or by PID without one */
        fs_imsg_begin(&w, mem, sizeof(mem), FS_I_SIGNAL, 0);
        fs_msg_put_u32(&w, FS_F_STATUS, 15);
        fs_msg_put_cred(&w, 65534, 0, NULL, 0);
        ck_assert_int_eq(ihdr(mem, (size_t)fs_msg_finish(&w), &h, &p), 0);
        ck_assert_int_eq(fs_proto_parse_signal(&p, 1, &sig, &why), 0);
        ck_assert_uint_eq(sig.signo, 15);
        ck_assert_uint_eq(sig.uid, 65534);
        ck_assert_uint_eq(sig.pid, 0);
        fs_buf_init_reader(&p, mem + FS_HDR_LEN, h.len);
        ck_assert_int_eq(fs_proto_parse_signal(&p, 0, &sig, &why), -EBADMSG);
        fs_imsg_begin(&w, mem, sizeof(mem), FS_I_SIGNAL, 0);
        fs_msg_put_u32(&w, FS_F_STATUS, 9);
        fs_msg_put_cred(&w, 7, 0, NULL, 0);
        fs_msg_put_u32(&w, FS_F_PID, 4321);
        ck_assert_int_eq(ihdr(mem, (size_t)fs_msg_finish(&w), &h, &p), 0);
        ck_assert_int_eq(fs_proto_parse_signal(&p, 0, &sig, &why), 0);
        ck_assert_uint_eq(sig.pid, 4321);
        fs_buf_init_reader(&p, mem + FS_HDR_LEN, h.len);
        ck_assert_int_eq(fs_proto_parse_signal(&p, 1, &sig, &why), -EBADMSG);
        fs_imsg_begin(&w, mem, sizeof(mem), FS_I_SIGNAL, 0);
        fs_msg_put_u32(&w, FS_F_STATUS, 0);
        fs_msg_put_cred(&w, 7, 0, NULL, 0);
        ck_assert_int_eq(ihdr(mem, (size_t)fs_msg_finish(&w), &h, &p), 0);
        ck_assert_int_eq(fs_proto_parse_signal(&p, 1, &sig, &why), -EINVAL);
}
END_TEST

/* POOL (zygote → front): ADDED with its pidfd, GONE without; nothing else. */
START_TEST(pool_events)
{
        struct fs_msg_pool m;
        const char *why;
        struct fs_msgw w;
        struct fs_hdr h;
        struct fs_buf p;
        int n;

        fs_imsg_begin(&w, mem, sizeof(mem), FS_I_POOL, 0);
        fs_msg_put_u32(&w, FS_F_PID, 4321);
        fs_msg_put_u32(&w, FS_F_STATUS, FS_POOL_ADDED);
        ck_assert_int_gt(n = fs_msg_finish(&w), 0);
        ck_assert_int_eq(ihdr(mem, (size_t)n, &h, &p), 0);
        ck_assert_int_eq(fs_proto_parse_pool(&p, 1, &m, &why), 0);
        ck_assert_uint_eq(m.pid, 4321);
        ck_assert_uint_eq(m.event, FS_POOL_ADDED);
        fs_buf_init_reader(&p, mem + FS_HDR_LEN, h.len);
        ck_assert_int_eq(fs_proto_parse_pool(&p, 0, &m, &why), 0); /* its pidfd lost */
        fs_buf_init_reader(&p, mem + FS_HDR_LEN, h.len);
        ck_assert_int_eq(fs_proto_parse_pool(&p, 2, &m, &why), -EBADMSG);
        for (int cut = FS_HDR_LEN; cut < n; cut++) {
                fs_buf_init_reader(&p, mem + FS_HDR_LEN, (size_t)cut - FS_HDR_LEN);
                ck_assert_int_lt(fs_proto_parse_pool(&p, 1, &m, &why), 0);
        }
        fs_imsg_begin(&w, mem, sizeof(mem), FS_I_POOL, 0);
        fs_msg_put_u32(&w, FS_F_PID, 4321);
        fs_msg_put_u32(&w, FS_F_STATUS, FS_POOL_GONE);
        ck_assert_int_eq(ihdr(mem, (size_t)fs_msg_finish(&w), &h, &p), 0);
        ck_assert_int_eq(fs_proto_parse_pool(&p, 0, &m, &why), 0);
        ck_assert_uint_eq(m.event, FS_POOL_GONE);
        fs_buf_init_reader(&p, mem + FS_HDR_LEN, h.len);
        ck_assert_int_eq(fs_proto_parse_pool(&p, 1, &m, &why), -EBADMSG);
        fs_imsg_begin(&w, mem, sizeof(mem), FS_I_POOL, 0);
        fs_msg_put_u32(&w, FS_F_PID, 4321);
        fs_msg_put_u32(&w, FS_F_STATUS, 3);
        ck_assert_int_eq(ihdr(mem, (size_t)fs_msg_finish(&w), &h, &p), 0);
        ck_assert_int_eq(fs_proto_parse_pool(&p, 0, &m, &why), -EBADMSG);
        fs_imsg_begin(&w, mem, sizeof(mem), FS_I_POOL, 0);
        fs_msg_put_u32(&w, FS_F_PID, 0);
        fs_msg_put_u32(&w, FS_F_STATUS, FS_POOL_GONE);
        ck_assert_int_eq(ihdr(mem, (size_t)fs_msg_finish(&w), &h, &p), 0);
        ck_assert_int_eq(fs_proto_parse_pool(&p, 0, &m, &why), -EBADMSG);
        ck_assert_str_eq(fs_iproto_type_name(FS_I_POOL), "POOL");
}
END_TEST

/* The daemon's own channels: another magic, and each type only on its channel, from its side,
 * with no more fds than the table allows. */
START_TEST(internal_channels)
{
        static const struct {
                uint16_t type;
                unsigned chan;
                enum fs_iside from;
                size_t nfds;
                int want;
        } cases[] = {
            {FS_I_SPAWN, FS_ICHAN_ZYGOTE, FS_ISIDE_FRONT, FS_MAX_MSG_FDS, 0},
            {FS_I_SPAWN, FS_ICHAN_ZYGOTE, FS_ISIDE_FRONT, FS_MAX_MSG_FDS + 1, -EBADMSG},
            {FS_I_SPAWN, FS_ICHAN_ZYGOTE, FS_ISIDE_HELPER, 0, -EBADMSG},
            {FS_I_SPAWN, FS_ICHAN_BROKER, FS_ISIDE_FRONT, 0, -EBADMSG},
            {FS_I_SPAWNED, FS_ICHAN_ZYGOTE, FS_ISIDE_HELPER, 2, 0},
            {FS_I_SPAWNED, FS_ICHAN_ZYGOTE, FS_ISIDE_HELPER, 3, -EBADMSG},
            {FS_I_SPAWNED, FS_ICHAN_ZYGOTE, FS_ISIDE_FRONT, 1, -EBADMSG},
            {FS_I_SIGNAL, FS_ICHAN_ZYGOTE, FS_ISIDE_FRONT, 1, 0},
            {FS_I_SIGNAL, FS_ICHAN_ZYGOTE, FS_ISIDE_HELPER, 1, -EBADMSG},
            {FS_I_POOL, FS_ICHAN_ZYGOTE, FS_ISIDE_HELPER, 1, 0},
            {FS_I_POOL, FS_ICHAN_BROKER, FS_ISIDE_HELPER, 1, -EBADMSG},
            {FS_I_GPU_ALLOC, FS_ICHAN_BROKER, FS_ISIDE_FRONT, 0, 0},
            {FS_I_GPU_ALLOC, FS_ICHAN_ZYGOTE, FS_ISIDE_FRONT, 0, -EBADMSG},
            {FS_I_GPU_ALLOC, FS_ICHAN_BROKER, FS_ISIDE_FRONT, 1, -EBADMSG},
            {FS_I_GPU_LEASE, FS_ICHAN_BROKER, FS_ISIDE_HELPER, 1, 0},
            {FS_I_GPU_LEASE, FS_ICHAN_BROKER, FS_ISIDE_FRONT, 1, -EBADMSG},
            {FS_I_GPU_FREE, FS_ICHAN_BROKER, FS_ISIDE_FRONT, 0, 0},
            {FS_I_READY, FS_ICHAN_HELPER, FS_ISIDE_HELPER, 0, 0},
            {FS_I_READY, FS_ICHAN_BROKER, FS_ISIDE_HELPER, 1, -EBADMSG},
            {FS_I_READY, FS_ICHAN_ZYGOTE, FS_ISIDE_FRONT, 0, -EBADMSG},
            {FS_I_FAILED, FS_ICHAN_ZYGOTE, FS_ISIDE_HELPER, 1, 0},
            {0, FS_ICHAN_ZYGOTE, FS_ISIDE_FRONT, 0, -EBADMSG},
            {FS_I_MAX_ + 1, FS_ICHAN_ZYGOTE, FS_ISIDE_FRONT, 0, -EBADMSG},
        };
        struct fs_msgw w;
        struct fs_hdr h;
        struct fs_buf p;
        uint32_t pid;
        int n;

        for (size_t i = 0; i < FS_ARRAY_SIZE(cases); i++) {
                fs_imsg_begin(&w, mem, sizeof(mem), cases[i].type, 7);
                ck_assert_int_gt(n = fs_msg_finish(&w), 0);
                ck_assert_msg(fs_iproto_parse_hdr(mem, (size_t)n, cases[i].chan, cases[i].from,
                                                  cases[i].nfds, &h, &p) == cases[i].want,
                              "case %zu: type %u", i, cases[i].type);
                /* never a client message, whatever its type */
                ck_assert_int_eq(fs_proto_parse_hdr(mem, (size_t)n, &h, &p), -EPROTO);
        }
        /* nor is a client message ever an internal one */
        fs_msg_begin(&w, mem, sizeof(mem), FS_I_SPAWN, 7);
        ck_assert_int_gt(n = fs_msg_finish(&w), 0);
        ck_assert_int_eq(
            fs_iproto_parse_hdr(mem, (size_t)n, FS_ICHAN_ZYGOTE, FS_ISIDE_FRONT, 0, &h, &p),
            -EPROTO);
        /* the client types the daemon once used itself are reserved: a well-framed header
         * (answered with ERROR, not a closed connection), no name of their own */
        fs_msg_begin(&w, mem, sizeof(mem), 15, 7);
        ck_assert_int_eq(fs_proto_parse_hdr(mem, (size_t)fs_msg_finish(&w), &h, &p), 0);
        ck_assert_str_eq(fs_proto_type_name(15), "reserved");
        ck_assert_str_eq(fs_proto_type_name(FS_MSG_DATA), "DATA");
        ck_assert_str_eq(fs_iproto_type_name(FS_I_GPU_LEASE), "GPU_LEASE");
        ck_assert_str_eq(fs_iproto_type_name(0), "unknown");
        /* a sequence number set once sent */
        fs_imsg_begin(&w, mem, sizeof(mem), FS_I_SPAWN, 0);
        ck_assert_int_gt(n = fs_msg_finish(&w), 0);
        fs_msg_set_id(mem, (size_t)n, 0xdeadbeef);
        ck_assert_int_eq(ihdr(mem, (size_t)n, &h, &p), 0);
        ck_assert_uint_eq(h.id, 0xdeadbeef);
        /* a zygote's SPAWNED carries the PID and nothing to fill in */
        fs_imsg_begin(&w, mem, sizeof(mem), FS_I_SPAWNED, 1);
        fs_msg_put_u32(&w, FS_F_PID, 1234);
        ck_assert_int_eq(ihdr(mem, (size_t)fs_msg_finish(&w), &h, &p), 0);
        ck_assert_int_eq(fs_iproto_parse_spawned(&p, &pid, NULL), 0);
        ck_assert_uint_eq(pid, 1234);
        fs_imsg_begin(&w, mem, sizeof(mem), FS_I_SPAWNED, 1);
        fs_msg_put_u64(&w, FS_F_WORKER, 0);
        fs_msg_put_u32(&w, FS_F_PID, 1234);
        ck_assert_int_eq(ihdr(mem, (size_t)fs_msg_finish(&w), &h, &p), 0);
        ck_assert_int_eq(fs_iproto_parse_spawned(&p, &pid, NULL), -EBADMSG);
        /* a message resumed after its first fields, then finished */
        fs_imsg_begin(&w, mem, sizeof(mem), FS_I_GPU_FREE, 2);
        size_t part = w.b.len;

        fs_msg_resume(&w, mem, part, sizeof(mem));
        fs_msg_put_u64(&w, FS_F_LEASE, 77);
        ck_assert_int_gt(n = fs_msg_finish(&w), 0);
        ck_assert_int_eq(
            fs_iproto_parse_hdr(mem, (size_t)n, FS_ICHAN_BROKER, FS_ISIDE_FRONT, 0, &h, &p), 0);
        uint64_t lease = 0;

        ck_assert_int_eq(fs_proto_parse_gpu_free(&p, &lease, NULL), 0);
        ck_assert_uint_eq(lease, 77);
        fs_msg_resume(&w, mem, 3, sizeof(mem));
        ck_assert_int_lt(fs_msg_finish(&w), 0);

        /* each UUID follows its GPU field; a SIGNAL's PID is a pid, its CRED has no gid */
        struct fs_spawn sp;
        struct fs_msg_signal sig;

        fs_imsg_begin(&w, mem, sizeof(mem), FS_I_SPAWN, 0);
        fs_msg_put_str(&w, FS_F_PATH, "/bin/true");
        fs_msg_put_str(&w, FS_F_ARG, "true");
        fs_msg_put_bytes(&w, FS_F_UUID, "fakecuda-gpu00\0\0", 16);
        fs_msg_put_gpu(&w, 0, 1 << 20);
        ck_assert_int_eq(ihdr(mem, (size_t)fs_msg_finish(&w), &h, &p), 0);
        ck_assert_int_eq(fs_proto_parse_spawn(&p, 1, true, ptrs, FS_ARRAY_SIZE(ptrs), &sp, NULL),
                         -EBADMSG);
        fs_imsg_begin(&w, mem, sizeof(mem), FS_I_SIGNAL, 0);
        fs_msg_put_u32(&w, FS_F_STATUS, 9);
        fs_msg_put_cred(&w, 7, 0, NULL, 0);
        fs_msg_put_u32(&w, FS_F_PID, 0x80000000u);
        ck_assert_int_eq(ihdr(mem, (size_t)fs_msg_finish(&w), &h, &p), 0);
        ck_assert_int_eq(fs_proto_parse_signal(&p, 0, &sig, NULL), -EBADMSG);
        fs_imsg_begin(&w, mem, sizeof(mem), FS_I_SIGNAL, 0);
        fs_msg_put_u32(&w, FS_F_STATUS, 9);
        fs_msg_put_cred(&w, 7, 7, NULL, 0);
        fs_msg_put_u32(&w, FS_F_PID, 4321);
        ck_assert_int_eq(ihdr(mem, (size_t)fs_msg_finish(&w), &h, &p), 0);
        ck_assert_int_eq(fs_proto_parse_signal(&p, 0, &sig, NULL), -EBADMSG);
}
END_TEST

/* The zygote's request, written afresh from a parsed one, says what the client asked and
 * nothing else: field for field, whatever order or extras the client's had. */
START_TEST(spawn_rebuilt)
{
        struct fs_spawn a, b;
        const char *bptrs[FS_SPAWN_PTRS];
        struct fs_msgw w;
        struct fs_hdr h;
        struct fs_buf p;
        const char *why;
        int n;

        fs_msg_begin(&w, mem, sizeof(mem), FS_MSG_SPAWN, 3);
        fs_msg_put_u32(&w, FS_F_FD, 7);
        fs_msg_put_str(&w, FS_F_ENV, "A=1");
        fs_msg_put_str(&w, FS_F_PATH, "/bin/echo");
        fs_msg_put_str(&w, FS_F_ARG, "echo");
        fs_msg_put_str(&w, FS_F_ARG, "");
        fs_msg_put_str(&w, FS_F_ENV, "B=");
        fs_msg_put_str(&w, FS_F_CWD, "/tmp");
        fs_msg_put_str(&w, FS_F_PROFILE, "strict");
        fs_msg_put_u32(&w, FS_F_FLAGS, FS_SPAWN_CHANNEL | FS_SPAWN_NEWPGRP);
        fs_msg_put_u32(&w, FS_F_UMASK, 022);
        fs_msg_put_rlimit(&w, 7, 10, 20);
        fs_msg_put_u32(&w, FS_F_FD, 0);
        ck_assert_int_gt(n = fs_msg_finish(&w), 0);
        ck_assert_int_eq(parse_spawn(mem, (size_t)n, 2, &a, &why), 0);
        fs_imsg_begin(&w, mem2, sizeof(mem2), FS_I_SPAWN, 0);
        fs_msg_put_spawn(&w, &a);
        ck_assert_int_gt(n = fs_msg_finish(&w), 0);
        ck_assert_int_eq(ihdr(mem2, (size_t)n, &h, &p), 0);
        ck_assert_int_eq(fs_proto_parse_spawn(&p, 2, true, bptrs, FS_ARRAY_SIZE(bptrs), &b, &why),
                         0);
        ck_assert_str_eq(b.path, "/bin/echo");
        ck_assert_uint_eq(b.argc, 2);
        ck_assert_str_eq(b.argv[1], "");
        ck_assert_uint_eq(b.envc, 2);
        ck_assert_str_eq(b.envp[0], "A=1");
        ck_assert_str_eq(b.envp[1], "B=");
        ck_assert_str_eq(b.cwd, "/tmp");
        ck_assert_str_eq(b.profile, "strict");
        ck_assert_uint_eq(b.flags, a.flags);
        ck_assert_int_eq(b.umask, 022);
        ck_assert_uint_eq(b.nrlimits, 1);
        ck_assert_uint_eq(b.rlimits[0].hard, 20);
        ck_assert_uint_eq(b.nfds, 2);
        ck_assert_uint_eq(b.child_fd[0], 7);
        ck_assert_uint_eq(b.child_fd[1], 0);
        ck_assert(!b.has_cred);
        ck_assert_ptr_null(b.entry);
        /* fork mode, with an empty argument */
        fs_msg_begin(&w, mem, sizeof(mem), FS_MSG_SPAWN, 3);
        fs_msg_put_str(&w, FS_F_ENTRY, "libx.so:run");
        fs_msg_put_bytes(&w, FS_F_ARGBYTES, "", 0);
        ck_assert_int_gt(n = fs_msg_finish(&w), 0);
        ck_assert_int_eq(parse_spawn(mem, (size_t)n, 0, &a, &why), 0);
        fs_imsg_begin(&w, mem2, sizeof(mem2), FS_I_SPAWN, 0);
        fs_msg_put_spawn(&w, &a);
        ck_assert_int_gt(n = fs_msg_finish(&w), 0);
        ck_assert_int_eq(ihdr(mem2, (size_t)n, &h, &p), 0);
        ck_assert_int_eq(fs_proto_parse_spawn(&p, 0, true, bptrs, FS_ARRAY_SIZE(bptrs), &b, &why),
                         0);
        ck_assert_str_eq(b.entry, "libx.so:run");
        ck_assert_uint_eq(b.arglen, 0);
        ck_assert_int_eq(b.umask, -1);
        ck_assert_uint_eq(b.flags, 0);
}
END_TEST

START_TEST(status_fields)
{
        struct fs_hdr h;
        struct fs_buf p;
        struct fs_msgw w;
        uint64_t sum = 0;
        int n;

        fs_msg_begin(&w, mem, sizeof(mem), FS_MSG_STATUS_REPLY, 3);
        fs_msg_put_stat(&w, "ab", 10);
        fs_msg_put_stat(&w, "c", 20);
        n = fs_msg_finish(&w);
        ck_assert_int_eq(fs_proto_parse_hdr(mem, (size_t)n, &h, &p), 0);
        ck_assert_int_eq(fs_proto_parse_status(&p, count_stat, &sum, NULL), 0);
        ck_assert_uint_eq(sum, 33);
}
END_TEST

static Suite *suite(void)
{
        Suite *s = suite_create("proto");
        TCase *tc = tcase_create("core");

        tcase_add_test(tc, header_roundtrip_and_errors);
        tcase_add_test(tc, spawn_roundtrip);
        tcase_add_test(tc, spawn_every_cut_refused);
        tcase_add_loop_test(tc, spawn_refusals, 0, (int)FS_ARRAY_SIZE(bad));
        tcase_add_test(tc, spawn_too_many_args);
        tcase_add_test(tc, small_messages);
        tcase_add_test(tc, status_fields);
        tcase_add_test(tc, spawn_gpu_fields);
        tcase_add_test(tc, spawn_cred_and_signal);
        tcase_add_test(tc, pool_events);
        tcase_add_test(tc, internal_channels);
        tcase_add_test(tc, spawn_rebuilt);
        suite_add_tcase(s, tc);
        return s;
}

int main(void)
{
        return run_suite(suite());
}
