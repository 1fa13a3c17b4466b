#include "common/proto.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

enum kind { K_NONE, K_U16, K_U32, K_U64, K_STR, K_B32, K_STAT, K_RLIM, K_BYTES, K_GPU, K_B16 };

static const uint8_t field_kind[FS_F_MAX_ + 1] = {
    [FS_F_VERSION_MIN] = K_U16, [FS_F_VERSION_MAX] = K_U16, [FS_F_NONCE] = K_B32,
    [FS_F_MAC] = K_B32,         [FS_F_VERSION] = K_U16,     [FS_F_ERRNO] = K_U32,
    [FS_F_REASON] = K_STR,      [FS_F_PATH] = K_STR,        [FS_F_ARG] = K_STR,
    [FS_F_ENV] = K_STR,         [FS_F_CWD] = K_STR,         [FS_F_FD] = K_U32,
    [FS_F_FLAGS] = K_U32,       [FS_F_WORKER] = K_U64,      [FS_F_PID] = K_U32,
    [FS_F_CODE] = K_U32,        [FS_F_STATUS] = K_U32,      [FS_F_STAT] = K_STAT,
    [FS_F_STEP] = K_U32,        [FS_F_PROFILE] = K_STR,     [FS_F_RLIMIT] = K_RLIM,
    [FS_F_UMASK] = K_U32,       [FS_F_ENTRY] = K_STR,       [FS_F_ARGBYTES] = K_BYTES,
    [FS_F_GPU] = K_GPU,         [FS_F_LEASE] = K_U64,       [FS_F_UUID] = K_B16,
    [FS_F_PIDNS] = K_B16,       [FS_F_BIND] = K_U32,        [FS_F_CRED] = K_BYTES,
    [FS_F_ROOM] = K_U64,        [FS_F_RESERVE] = K_U64,
};

static const char *const type_names[FS_MSG_MAX_ + 1] = {
    [FS_MSG_HELLO] = "HELLO",     [FS_MSG_AUTH] = "AUTH",
    [FS_MSG_AUTH_OK] = "AUTH_OK", [FS_MSG_AUTH_FAILED] = "AUTH_FAILED",
    [FS_MSG_ERROR] = "ERROR",     [FS_MSG_OK] = "OK",
    [FS_MSG_PING] = "PING",       [FS_MSG_SPAWN] = "SPAWN",
    [FS_MSG_SPAWNED] = "SPAWNED", [FS_MSG_EXITED] = "EXITED",
    [FS_MSG_STATUS] = "STATUS",   [FS_MSG_STATUS_REPLY] = "STATUS_REPLY",
    [FS_MSG_STOP] = "STOP",       [FS_MSG_DATA] = "DATA",
};

const char *fs_proto_type_name(uint16_t type)
{
        if (type < 1 || type > FS_MSG_MAX_)
                return "unknown";
        return type_names[type] ? type_names[type] : "reserved";
}

/* ---- the daemon's own channels: the table (proto.h) ---- */

#define FRONT FS_ISIDE_FRONT
#define HELPER FS_ISIDE_HELPER
static const struct itype {
        const char *name;
        uint8_t chans, from, max_fds;
} itypes[FS_I_MAX_ + 1] = {
#define FS_IMSG_ROW_(name, value, chans, from, fds) [value] = {#name, chans, from, fds},
    FS_IMSG_TYPES(FS_IMSG_ROW_)
#undef FS_IMSG_ROW_
};
#undef FRONT
#undef HELPER

const char *fs_iproto_type_name(uint16_t type)
{
        return type >= 1 && type <= FS_I_MAX_ && itypes[type].name ? itypes[type].name : "unknown";
}

size_t fs_proto_max_fds(uint16_t type)
{
        switch (type) {
        case FS_MSG_SPAWN:
                return FS_MAX_MSG_FDS;
        case FS_MSG_SPAWNED:
                return 2 + FS_MAX_GPU; /* pidfd, the channel when asked for, GPU buffers */
        case FS_MSG_DATA:
                return FS_MAX_MSG_FDS;
        default:
                return 0;
        }
}

/* ---- writer ---- */

static void begin(struct fs_msgw *w, void *mem, size_t cap, uint32_t magic, uint16_t version,
                  uint16_t type, uint32_t id)
{
        fs_buf_init_writer(&w->b, mem, cap < FS_MAX_MSG ? cap : FS_MAX_MSG);
        w->err = 0;
        if (fs_buf_put_u32(&w->b, magic) < 0 || fs_buf_put_u16(&w->b, version) < 0 ||
            fs_buf_put_u16(&w->b, type) < 0 || fs_buf_put_u32(&w->b, id) < 0 ||
            fs_buf_put_u32(&w->b, 0) < 0)
                w->err = -EMSGSIZE;
}

void fs_msg_begin(struct fs_msgw *w, void *mem, size_t cap, uint16_t type, uint32_t id)
{
        begin(w, mem, cap, FS_PROTO_MAGIC, FS_PROTO_VERSION, type, id);
}

void fs_imsg_begin(struct fs_msgw *w, void *mem, size_t cap, uint16_t type, uint32_t id)
{
        begin(w, mem, cap, FS_IPROTO_MAGIC, FS_IPROTO_VERSION, type, id);
}

void fs_msg_resume(struct fs_msgw *w, void *mem, size_t len, size_t cap)
{
        fs_buf_init_writer(&w->b, mem, cap < FS_MAX_MSG ? cap : FS_MAX_MSG);
        w->err = len >= FS_HDR_LEN && len <= w->b.cap ? 0 : -EINVAL;
        if (!w->err)
                w->b.len = len;
}

void fs_msg_set_id(uint8_t *msg, size_t len, uint32_t id)
{
        struct fs_buf b;

        if (len < FS_HDR_LEN)
                return;
        fs_buf_init_writer(&b, msg + 8, 4);
        (void)fs_buf_put_u32(&b, id);
}

static void put_field(struct fs_msgw *w, uint16_t tag, size_t len)
{
        int r;

        if (w->err)
                return;
        if (len > UINT16_MAX) {
                w->err = -EMSGSIZE;
                return;
        }
        if ((r = fs_buf_put_u16(&w->b, tag)) < 0 || (r = fs_buf_put_u16(&w->b, (uint16_t)len)) < 0)
                w->err = r;
}

static void put_or_fail(struct fs_msgw *w, int r)
{
        if (!w->err && r < 0)
                w->err = r;
}

void fs_msg_put_u16(struct fs_msgw *w, uint16_t tag, uint16_t v)
{
        put_field(w, tag, 2);
        if (!w->err)
                put_or_fail(w, fs_buf_put_u16(&w->b, v));
}

void fs_msg_put_u32(struct fs_msgw *w, uint16_t tag, uint32_t v)
{
        put_field(w, tag, 4);
        if (!w->err)
                put_or_fail(w, fs_buf_put_u32(&w->b, v));
}

void fs_msg_put_u64(struct fs_msgw *w, uint16_t tag, uint64_t v)
{
        put_field(w, tag, 8);
        if (!w->err)
                put_or_fail(w, fs_buf_put_u64(&w->b, v));
}

void fs_msg_put_bytes(struct fs_msgw *w, uint16_t tag, const void *p, size_t n)
{
        put_field(w, tag, n);
        if (!w->err)
                put_or_fail(w, fs_buf_put_bytes(&w->b, p, n));
}

void fs_msg_put_str(struct fs_msgw *w, uint16_t tag, const char *s)
{
        fs_msg_put_bytes(w, tag, s, strlen(s) + 1);
}

void fs_msg_put_stat(struct fs_msgw *w, const char *name, uint64_t v)
{
        size_t n = strlen(name) + 1;

        put_field(w, FS_F_STAT, 8 + n);
        if (!w->err)
                put_or_fail(w, fs_buf_put_u64(&w->b, v));
        if (!w->err)
                put_or_fail(w, fs_buf_put_bytes(&w->b, name, n));
}

void fs_msg_begin_error(struct fs_msgw *w, void *mem, size_t cap, uint32_t id, int err,
                        const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        fs_msg_begin_verror(w, mem, cap, id, err, fmt, ap);
        va_end(ap);
}

static __attribute__((format(printf, 3, 0))) void put_error(struct fs_msgw *w, int err,
                                                            const char *fmt, va_list ap)
{
        char reason[512];

        vsnprintf(reason, sizeof(reason), fmt, ap);
        fs_msg_put_u32(w, FS_F_ERRNO, (uint32_t)(err < 0 ? -err : err));
        fs_msg_put_str(w, FS_F_REASON, reason);
}

void fs_msg_begin_verror(struct fs_msgw *w, void *mem, size_t cap, uint32_t id, int err,
                         const char *fmt, va_list ap)
{
        fs_msg_begin(w, mem, cap, FS_MSG_ERROR, id);
        put_error(w, err, fmt, ap);
}

void fs_imsg_begin_vfailed(struct fs_msgw *w, void *mem, size_t cap, uint32_t id, int err,
                           const char *fmt, va_list ap)
{
        fs_imsg_begin(w, mem, cap, FS_I_FAILED, id);
        put_error(w, err, fmt, ap);
}

void fs_imsg_begin_failed(struct fs_msgw *w, void *mem, size_t cap, uint32_t id, int err,
                          const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        fs_imsg_begin_vfailed(w, mem, cap, id, err, fmt, ap);
        va_end(ap);
}

void fs_msg_put_gpu(struct fs_msgw *w, uint32_t device, uint64_t size)
{
        put_field(w, FS_F_GPU, 12);
        if (!w->err)
                put_or_fail(w, fs_buf_put_u32(&w->b, device));
        if (!w->err)
                put_or_fail(w, fs_buf_put_u64(&w->b, size));
}

void fs_msg_put_rlimit(struct fs_msgw *w, uint32_t resource, uint64_t soft, uint64_t hard)
{
        put_field(w, FS_F_RLIMIT, 20);
        if (!w->err)
                put_or_fail(w, fs_buf_put_u32(&w->b, resource));
        if (!w->err)
                put_or_fail(w, fs_buf_put_u64(&w->b, soft));
        if (!w->err)
                put_or_fail(w, fs_buf_put_u64(&w->b, hard));
}

int fs_msg_finish(struct fs_msgw *w)
{
        if (w->err)
                return w->err;
        if (fs_buf_patch_u32(&w->b, 12, (uint32_t)(w->b.len - FS_HDR_LEN)) < 0)
                return -EINVAL;
        return (int)w->b.len;
}

/* ---- reader ---- */

static int parse_hdr(const void *msg, size_t len, uint32_t want_magic, uint16_t want_version,
                     uint16_t max_type, struct fs_hdr *ret, struct fs_buf *ret_payload)
{
        struct fs_buf b;
        uint32_t magic;
        struct fs_hdr h;

        memset(ret, 0, sizeof(*ret));
        fs_buf_init_reader(ret_payload, NULL, 0);
        if (len > FS_MAX_MSG)
                return -EMSGSIZE;
        fs_buf_init_reader(&b, msg, len);
        if (fs_buf_get_u32(&b, &magic) < 0 || fs_buf_get_u16(&b, &h.version) < 0 ||
            fs_buf_get_u16(&b, &h.type) < 0 || fs_buf_get_u32(&b, &h.id) < 0 ||
            fs_buf_get_u32(&b, &h.len) < 0)
                return -EBADMSG;
        if (magic != want_magic || h.version != want_version)
                return -EPROTO;
        if (h.len != fs_buf_remaining(&b))
                return -EBADMSG;
        if (h.type < 1 || h.type > max_type)
                return -EBADMSG;
        *ret = h;
        fs_buf_init_reader(ret_payload, (const uint8_t *)msg + FS_HDR_LEN, h.len);
        return 0;
}

int fs_proto_parse_hdr(const void *msg, size_t len, struct fs_hdr *ret, struct fs_buf *ret_payload)
{
        return parse_hdr(msg, len, FS_PROTO_MAGIC, FS_PROTO_VERSION, FS_MSG_MAX_, ret, ret_payload);
}

int fs_iproto_parse_hdr(const void *msg, size_t len, unsigned chan, enum fs_iside from, size_t nfds,
                        struct fs_hdr *ret, struct fs_buf *ret_payload)
{
        const struct itype *t;
        int r =
            parse_hdr(msg, len, FS_IPROTO_MAGIC, FS_IPROTO_VERSION, FS_I_MAX_, ret, ret_payload);

        if (r < 0)
                return r;
        t = &itypes[ret->type];
        if (!(t->chans & chan) || t->from != from || nfds > t->max_fds) {
                memset(ret, 0, sizeof(*ret));
                fs_buf_init_reader(ret_payload, NULL, 0);
                return -EBADMSG;
        }
        return 0;
}

int fs_proto_parse_hdr_only(const uint8_t hdr[FS_HDR_LEN], size_t len, struct fs_hdr *ret)
{
        uint8_t copy[FS_HDR_LEN];
        struct fs_buf b, p;
        uint32_t plen;
        int r;

        /* the same checks as for a whole datagram, on the header's bytes and the total length */
        memset(ret, 0, sizeof(*ret));
        if (len < FS_HDR_LEN)
                return -EBADMSG;
        if (len > FS_MAX_MSG)
                return -EMSGSIZE;
        memcpy(copy, hdr, FS_HDR_LEN);
        fs_buf_init_reader(&b, copy + 12, 4);
        if (fs_buf_get_u32(&b, &plen) < 0 || plen != len - FS_HDR_LEN)
                return -EBADMSG;
        /* present it as a header with an empty payload */
        copy[12] = copy[13] = copy[14] = copy[15] = 0;
        if ((r = fs_proto_parse_hdr(copy, FS_HDR_LEN, ret, &p)) == 0)
                ret->len = plen;
        return r;
}

#define REQ 1u
#define REP 2u

struct spec {
        uint8_t tag;
        uint8_t flags;
};

struct fields {
        uint32_t count[FS_F_MAX_ + 1];
        uint64_t num[FS_F_MAX_ + 1];
        const uint8_t *val[FS_F_MAX_ + 1];
        uint16_t len[FS_F_MAX_ + 1]; /* of the first occurrence */
};

static int fail(const char **ret_why, const char *why, int r)
{
        if (ret_why)
                *ret_why = why;
        return r;
}

/* Reads one field header and a view of its value: 1 = a field, 0 = end, < 0 = error. */
static int next_field(struct fs_buf *p, uint16_t *tag, uint16_t *len, const uint8_t **val)
{
        if (fs_buf_remaining(p) == 0)
                return 0;
        if (fs_buf_get_u16(p, tag) < 0 || fs_buf_get_u16(p, len) < 0 ||
            fs_buf_get_view(p, *len, val) < 0)
                return -EBADMSG;
        return 1;
}

static bool valid_str(const uint8_t *v, size_t len)
{
        return len >= 1 && v[len - 1] == '\0' && !memchr(v, '\0', len - 1);
}

static uint64_t be(const uint8_t *v, size_t n)
{
        uint64_t x = 0;

        for (size_t i = 0; i < n; i++)
                x = x << 8 | v[i];
        return x;
}

/* Checks one field's value against its kind; stores the scalar in *num. */
static int check_value(uint16_t tag, const uint8_t *v, uint16_t len, uint64_t *num,
                       const char **ret_why)
{
        static const uint8_t fixed[] = {[K_U16] = 2,   [K_U32] = 4,  [K_U64] = 8, [K_B32] = 32,
                                        [K_RLIM] = 20, [K_GPU] = 12, [K_B16] = 16};
        uint8_t k = field_kind[tag];

        *num = 0;
        switch (k) {
        case K_U16:
        case K_U32:
        case K_U64:
        case K_B32:
        case K_RLIM:
        case K_GPU:
        case K_B16:
                if (len != fixed[k])
                        return fail(ret_why, "field has the wrong length", -EBADMSG);
                if (k == K_U16 || k == K_U32 || k == K_U64)
                        *num = be(v, len);
                return 0;
        case K_STR:
                if (!valid_str(v, len))
                        return fail(ret_why, "string field without a single final NUL", -EBADMSG);
                return 0;
        case K_BYTES:
                return 0;
        case K_STAT:
                if (len < 9 || !valid_str(v + 8, len - 8u))
                        return fail(ret_why, "malformed STAT field", -EBADMSG);
                *num = be(v, 8);
                return 0;
        default:
                return fail(ret_why, "unknown field", -EBADMSG);
        }
}

static int decode(struct fs_buf *p, const struct spec *specs, size_t nspecs, struct fields *f,
                  const char **ret_why)
{
        uint16_t tag, len;
        const uint8_t *v;
        int r;

        memset(f, 0, sizeof(*f));
        while ((r = next_field(p, &tag, &len, &v)) > 0) {
                const struct spec *s = NULL;
                uint64_t num;

                for (size_t i = 0; i < nspecs; i++)
                        if (specs[i].tag == tag)
                                s = &specs[i];
                if (!s)
                        return fail(ret_why, "field not allowed in this message", -EBADMSG);
                if ((r = check_value(tag, v, len, &num, ret_why)) < 0)
                        return r;
                if (f->count[tag] && !(s->flags & REP))
                        return fail(ret_why, "duplicate field", -EBADMSG);
                if (f->count[tag]++ == 0) {
                        f->num[tag] = num;
                        f->val[tag] = v;
                        f->len[tag] = len;
                }
        }
        if (r < 0)
                return fail(ret_why, "truncated field", r);
        for (size_t i = 0; i < nspecs; i++)
                if ((specs[i].flags & REQ) && !f->count[specs[i].tag])
                        return fail(ret_why, "required field missing", -EBADMSG);
        return 0;
}

#define DECODE(p, f, why, ...)                                                                     \
        ({                                                                                         \
                static const struct spec specs_[] = {__VA_ARGS__};                                 \
                decode(p, specs_, FS_ARRAY_SIZE_(specs_), f, why);                                 \
        })
#define FS_ARRAY_SIZE_(a) (sizeof(a) / sizeof((a)[0]))

int fs_proto_parse_empty(struct fs_buf *p, const char **ret_why)
{
        if (fs_buf_remaining(p) != 0)
                return fail(ret_why, "message takes no fields", -EBADMSG);
        return 0;
}

int fs_proto_parse_hello(struct fs_buf *p, struct fs_msg_hello *ret, const char **ret_why)
{
        struct fields f;
        int r;

        memset(ret, 0, sizeof(*ret));
        r = DECODE(p, &f, ret_why, {FS_F_VERSION_MIN, REQ}, {FS_F_VERSION_MAX, REQ},
                   {FS_F_NONCE, REQ}, {FS_F_PIDNS, REQ});
        if (r < 0)
                return r;
        if (f.num[FS_F_VERSION_MIN] > f.num[FS_F_VERSION_MAX])
                return fail(ret_why, "empty version range", -EBADMSG);
        ret->version_min = (uint16_t)f.num[FS_F_VERSION_MIN];
        ret->version_max = (uint16_t)f.num[FS_F_VERSION_MAX];
        ret->nonce = f.val[FS_F_NONCE];
        ret->pidns = f.val[FS_F_PIDNS];
        return 0;
}

int fs_proto_parse_auth(struct fs_buf *p, struct fs_msg_auth *ret, const char **ret_why)
{
        struct fields f;
        int r;

        memset(ret, 0, sizeof(*ret));
        r = DECODE(p, &f, ret_why, {FS_F_VERSION, REQ}, {FS_F_NONCE, REQ}, {FS_F_MAC, REQ},
                   {FS_F_BIND, REQ});
        if (r < 0)
                return r;
        if (f.num[FS_F_BIND] & ~(uint64_t)FS_BIND_KNOWN)
                return fail(ret_why, "unknown BIND bits", -EBADMSG);
        ret->bind = (uint32_t)f.num[FS_F_BIND];
        ret->version = (uint16_t)f.num[FS_F_VERSION];
        ret->nonce = f.val[FS_F_NONCE];
        ret->mac = f.val[FS_F_MAC];
        return 0;
}

int fs_proto_parse_auth_ok(struct fs_buf *p, const uint8_t **ret_mac, const char **ret_why)
{
        struct fields f;
        int r;

        *ret_mac = NULL;
        r = DECODE(p, &f, ret_why, {FS_F_MAC, REQ});
        if (r < 0)
                return r;
        *ret_mac = f.val[FS_F_MAC];
        return 0;
}

int fs_proto_parse_error(struct fs_buf *p, struct fs_msg_error *ret, const char **ret_why)
{
        struct fields f;
        int r;

        memset(ret, 0, sizeof(*ret));
        r = DECODE(p, &f, ret_why, {FS_F_ERRNO, REQ}, {FS_F_REASON, REQ}, {FS_F_STEP, 0},
                   {FS_F_PID, 0});
        if (r < 0)
                return r;
        if (f.num[FS_F_ERRNO] == 0 || f.num[FS_F_ERRNO] > 4095)
                return fail(ret_why, "errno out of range", -EBADMSG);
        if (f.num[FS_F_STEP] > FS_STEP_MAX_)
                return fail(ret_why, "unknown spawn step", -EBADMSG);
        if (f.num[FS_F_PID] > INT32_MAX)
                return fail(ret_why, "pid out of range", -EBADMSG);
        ret->err = (uint32_t)f.num[FS_F_ERRNO];
        ret->step = (uint32_t)f.num[FS_F_STEP];
        ret->pid = (uint32_t)f.num[FS_F_PID];
        ret->reason = (const char *)f.val[FS_F_REASON];
        return 0;
}

int fs_proto_parse_spawned(struct fs_buf *p, struct fs_msg_spawned *ret, const char **ret_why)
{
        struct fs_buf again = *p;
        struct fields f;
        uint16_t tag, len;
        const uint8_t *v;
        int r;

        memset(ret, 0, sizeof(*ret));
        r = DECODE(p, &f, ret_why, {FS_F_WORKER, REQ}, {FS_F_PID, REQ}, {FS_F_GPU, REP},
                   {FS_F_UUID, REP});
        if (r < 0)
                return r;
        if (f.num[FS_F_PID] == 0 || f.num[FS_F_PID] > INT32_MAX)
                return fail(ret_why, "pid out of range", -EBADMSG);
        if (f.count[FS_F_GPU] > FS_MAX_GPU || f.count[FS_F_UUID] != f.count[FS_F_GPU])
                return fail(ret_why, "GPU buffers without their UUIDs, or too many", -EBADMSG);
        ret->worker = f.num[FS_F_WORKER];
        ret->pid = (uint32_t)f.num[FS_F_PID];
        for (size_t nuuid = 0; next_field(&again, &tag, &len, &v) > 0;)
                if (tag == FS_F_GPU)
                        ret->gpu[ret->ngpu++] =
                            (struct fs_gpu_buf){.device = (uint32_t)be(v, 4), .size = be(v + 4, 8)};
                else if (tag == FS_F_UUID)
                        memcpy(ret->gpu[nuuid++].uuid, v, 16);
        return 0;
}

int fs_proto_parse_exited(struct fs_buf *p, struct fs_msg_exited *ret, const char **ret_why)
{
        struct fields f;
        int r;

        memset(ret, 0, sizeof(*ret));
        r = DECODE(p, &f, ret_why, {FS_F_WORKER, REQ}, {FS_F_CODE, REQ}, {FS_F_STATUS, REQ});
        if (r < 0)
                return r;
        if (f.num[FS_F_CODE] < 1 || f.num[FS_F_CODE] > 3)
                return fail(ret_why, "unknown exit code kind", -EBADMSG);
        if (f.num[FS_F_CODE] == 1 ? f.num[FS_F_STATUS] > 255
                                  : f.num[FS_F_STATUS] > 64 || f.num[FS_F_STATUS] == 0)
                return fail(ret_why, "exit status out of range", -EBADMSG);
        ret->worker = f.num[FS_F_WORKER];
        ret->code = (uint32_t)f.num[FS_F_CODE];
        ret->status = (uint32_t)f.num[FS_F_STATUS];
        return 0;
}

int fs_proto_parse_status(struct fs_buf *p, int (*fn)(void *ud, const char *name, uint64_t v),
                          void *ud, const char **ret_why)
{
        struct fs_buf again = *p;
        struct fields f;
        uint16_t tag, len;
        const uint8_t *v;
        int r;

        r = DECODE(p, &f, ret_why, {FS_F_STAT, REP});
        if (r < 0)
                return r;
        if (f.count[FS_F_STAT] > FS_MAX_STATS)
                return fail(ret_why, "too many STAT fields", -EBADMSG);
        while (next_field(&again, &tag, &len, &v) > 0)
                if ((r = fn(ud, (const char *)v + 8, be(v, 8))) < 0)
                        return r;
        return 0;
}

bool fs_proto_entry_ok(const char *e)
{
        const char *colon = strchr(e, ':');
        size_t n = strlen(e);

        if (!colon || colon == e || n > FS_MAX_ENTRY || !colon[1])
                return false;
        for (const char *c = e; c < colon; c++)
                if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
                      (*c >= '0' && *c <= '9') || *c == '_' || *c == '-' || *c == '.' || *c == '+'))
                        return false;
        for (const char *c = colon + 1; *c; c++)
                if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || *c == '_' ||
                      (c > colon + 1 && *c >= '0' && *c <= '9')))
                        return false;
        return true;
}

int fs_proto_parse_spawn(struct fs_buf *p, size_t nfds, bool internal, const char **ptrs,
                         size_t nptrs, struct fs_spawn *ret, const char **ret_why)
{
        struct fs_buf again = *p;
        uint64_t fd_seen[(FS_MAX_CHILD_FD + 64) / 64] = {0};
        size_t argc = 0, envc = 0, nfd = 0, nuuid = 0;
        struct fields f;
        uint16_t tag, len;
        const uint8_t *v;
        int r;

        memset(ret, 0, sizeof(*ret));
        r = DECODE(p, &f, ret_why, {FS_F_PATH, 0}, {FS_F_ARG, REP}, {FS_F_ENV, REP}, {FS_F_CWD, 0},
                   {FS_F_FD, REP}, {FS_F_FLAGS, 0}, {FS_F_PROFILE, 0}, {FS_F_RLIMIT, REP},
                   {FS_F_UMASK, 0}, {FS_F_ENTRY, 0}, {FS_F_ARGBYTES, 0}, {FS_F_GPU, REP},
                   {FS_F_UUID, REP}, {FS_F_CRED, 0});
        if (r < 0)
                return r;
        if (f.count[FS_F_CRED] && !internal)
                return fail(ret_why, "CRED fields only come from the server", -EBADMSG);
        if (f.count[FS_F_CRED] && (f.len[FS_F_CRED] < 8 || f.len[FS_F_CRED] % 4 ||
                                   f.len[FS_F_CRED] > 8 + 4 * FS_MAX_GROUPS))
                return fail(ret_why, "malformed CRED field", -EBADMSG);
        if (f.count[FS_F_UUID] != (internal ? f.count[FS_F_GPU] : 0))
                return fail(ret_why, "UUID fields only come from the server, one per GPU buffer",
                            -EBADMSG);
        if (f.count[FS_F_GPU] > FS_MAX_GPU)
                return fail(ret_why, "too many GPU buffers", -E2BIG);
        if (f.count[FS_F_FD] + (internal ? f.count[FS_F_GPU] : 0) != nfds)
                return fail(ret_why, "number of fds differs from FD fields", -EBADMSG);
        if (f.count[FS_F_ARG] > FS_MAX_ARGV)
                return fail(ret_why, "too many arguments", -E2BIG);
        if (f.count[FS_F_ENV] > FS_MAX_ENVP)
                return fail(ret_why, "too many environment entries", -E2BIG);
        if (f.count[FS_F_ARG] + f.count[FS_F_ENV] + 2 > nptrs)
                return fail(ret_why, "argument storage too small", -E2BIG);
        if (!f.count[FS_F_PATH] == !f.count[FS_F_ENTRY])
                return fail(ret_why, "exactly one of PATH and ENTRY is required", -EBADMSG);
        if (f.count[FS_F_PATH] && !f.count[FS_F_ARG])
                return fail(ret_why, "exec mode needs argv[0]", -EBADMSG);
        if (f.count[FS_F_ENTRY] && f.count[FS_F_ARG])
                return fail(ret_why, "fork mode takes ARGBYTES, not ARG", -EBADMSG);
        if (f.count[FS_F_PATH] && f.count[FS_F_ARGBYTES])
                return fail(ret_why, "exec mode takes ARG, not ARGBYTES", -EBADMSG);
        if (f.count[FS_F_PATH] && f.val[FS_F_PATH][0] != '/')
                return fail(ret_why, "program path must be absolute", -EINVAL);
        if (f.count[FS_F_ENTRY] && !fs_proto_entry_ok((const char *)f.val[FS_F_ENTRY]))
                return fail(ret_why, "entry must be LIBNAME:SYMBOL", -EINVAL);
        if (f.val[FS_F_CWD] && f.val[FS_F_CWD][0] != '/')
                return fail(ret_why, "cwd must be absolute", -EINVAL);
        if (f.val[FS_F_PROFILE] &&
            (f.val[FS_F_PROFILE][0] == '\0' ||
             strlen((const char *)f.val[FS_F_PROFILE]) > FS_MAX_PROFILE_NAME))
                return fail(ret_why, "profile name empty or too long", -EINVAL);
        if (f.count[FS_F_RLIMIT] > FS_MAX_RLIMITS)
                return fail(ret_why, "too many rlimits", -E2BIG);
        if (f.num[FS_F_UMASK] > 0777)
                return fail(ret_why, "umask out of range", -EINVAL);
        if (f.num[FS_F_FLAGS] & ~(uint64_t)FS_SPAWN_KNOWN_FLAGS)
                return fail(ret_why, "unknown spawn flags", -EINVAL);

        ret->argv = ptrs;
        ret->envp = ptrs + f.count[FS_F_ARG] + 1;
        while (next_field(&again, &tag, &len, &v) > 0) {
                const char *s = (const char *)v;

                switch (tag) {
                case FS_F_ARG:
                        ret->argv[argc++] = s;
                        break;
                case FS_F_ENV:
                        if (s[0] == '=' || !strchr(s, '='))
                                return fail(ret_why, "environment entry is not NAME=VALUE",
                                            -EINVAL);
                        ret->envp[envc++] = s;
                        break;
                case FS_F_RLIMIT: {
                        struct fs_rlimit rl = {(uint32_t)be(v, 4), be(v + 4, 8), be(v + 12, 8)};

                        if (rl.resource >= 16) /* RLIM_NLIMITS on Linux */
                                return fail(ret_why, "unknown rlimit resource", -EINVAL);
                        if (rl.soft > rl.hard)
                                return fail(ret_why, "rlimit soft value above hard", -EINVAL);
                        for (size_t i = 0; i < ret->nrlimits; i++)
                                if (ret->rlimits[i].resource == rl.resource)
                                        return fail(ret_why, "rlimit resource given twice",
                                                    -EINVAL);
                        ret->rlimits[ret->nrlimits++] = rl;
                        break;
                }
                case FS_F_GPU: {
                        struct fs_gpu_buf g = {.device = (uint32_t)be(v, 4), .size = be(v + 4, 8)};

                        if (g.size == 0)
                                return fail(ret_why, "GPU buffer of size 0", -EINVAL);
                        ret->gpu[ret->ngpu++] = g;
                        break;
                }
                case FS_F_UUID: /* of the GPU field before it */
                        if (nuuid + 1 != ret->ngpu)
                                return fail(ret_why, "a UUID field follows its GPU field",
                                            -EBADMSG);
                        memcpy(ret->gpu[nuuid++].uuid, v, 16);
                        break;
                case FS_F_FD: {
                        uint32_t cfd = (uint32_t)be(v, 4);

                        if (cfd > FS_MAX_CHILD_FD)
                                return fail(ret_why, "child fd number too large", -EINVAL);
                        if (fd_seen[cfd / 64] & (1ull << (cfd % 64)))
                                return fail(ret_why, "child fd number given twice", -EINVAL);
                        if (cfd == FS_CHANNEL_FD && (f.num[FS_F_FLAGS] & FS_SPAWN_CHANNEL))
                                return fail(ret_why, "fd 3 is the channel's", -EINVAL);
                        fd_seen[cfd / 64] |= 1ull << (cfd % 64);
                        ret->child_fd[nfd++] = cfd;
                        break;
                }
                default:
                        break;
                }
        }
        ret->argv[argc] = NULL;
        ret->envp[envc] = NULL;
        ret->argc = argc;
        ret->envc = envc;
        ret->nfds = nfd;
        ret->path = (const char *)f.val[FS_F_PATH];
        ret->entry = (const char *)f.val[FS_F_ENTRY];
        ret->arg = f.val[FS_F_ARGBYTES];
        ret->arglen = f.len[FS_F_ARGBYTES];
        ret->cwd = (const char *)f.val[FS_F_CWD];
        ret->profile = (const char *)f.val[FS_F_PROFILE];
        ret->flags = (uint32_t)f.num[FS_F_FLAGS];
        ret->umask = f.count[FS_F_UMASK] ? (int32_t)f.num[FS_F_UMASK] : -1;
        if (f.count[FS_F_CRED]) {
                ret->has_cred = true;
                ret->uid = (uint32_t)be(f.val[FS_F_CRED], 4);
                ret->gid = (uint32_t)be(f.val[FS_F_CRED] + 4, 4);
                ret->ngroups = (f.len[FS_F_CRED] - 8u) / 4;
                ret->groups = f.val[FS_F_CRED] + 8;
        }
        return 0;
}

void fs_msg_put_spawn(struct fs_msgw *w, const struct fs_spawn *sp)
{
        if (sp->path)
                fs_msg_put_str(w, FS_F_PATH, sp->path);
        if (sp->entry)
                fs_msg_put_str(w, FS_F_ENTRY, sp->entry);
        if (sp->arg)
                fs_msg_put_bytes(w, FS_F_ARGBYTES, sp->arg, sp->arglen);
        for (size_t i = 0; i < sp->argc; i++)
                fs_msg_put_str(w, FS_F_ARG, sp->argv[i]);
        for (size_t i = 0; i < sp->envc; i++)
                fs_msg_put_str(w, FS_F_ENV, sp->envp[i]);
        if (sp->cwd)
                fs_msg_put_str(w, FS_F_CWD, sp->cwd);
        if (sp->profile)
                fs_msg_put_str(w, FS_F_PROFILE, sp->profile);
        if (sp->flags)
                fs_msg_put_u32(w, FS_F_FLAGS, sp->flags);
        if (sp->umask >= 0)
                fs_msg_put_u32(w, FS_F_UMASK, (uint32_t)sp->umask);
        for (size_t i = 0; i < sp->nrlimits; i++)
                fs_msg_put_rlimit(w, sp->rlimits[i].resource, sp->rlimits[i].soft,
                                  sp->rlimits[i].hard);
        for (size_t i = 0; i < sp->nfds; i++)
                fs_msg_put_u32(w, FS_F_FD, sp->child_fd[i]);
}

int fs_iproto_parse_spawned(struct fs_buf *p, uint32_t *ret_pid, const char **ret_why)
{
        struct fields f;
        int r = DECODE(p, &f, ret_why, {FS_F_PID, REQ});

        *ret_pid = 0;
        if (r < 0)
                return r;
        if (f.num[FS_F_PID] == 0 || f.num[FS_F_PID] > INT32_MAX)
                return fail(ret_why, "pid out of range", -EBADMSG);
        *ret_pid = (uint32_t)f.num[FS_F_PID];
        return 0;
}

int fs_proto_parse_lease(struct fs_buf *p, struct fs_msg_lease *ret, const char **ret_why)
{
        struct fields f;
        int r = DECODE(p, &f, ret_why, {FS_F_LEASE, REQ}, {FS_F_GPU, REQ}, {FS_F_UUID, REQ});

        if (r < 0)
                return r;
        ret->lease = f.num[FS_F_LEASE];
        ret->gpu = (struct fs_gpu_buf){.device = (uint32_t)be(f.val[FS_F_GPU], 4),
                                       .size = be(f.val[FS_F_GPU] + 4, 8)};
        memcpy(ret->gpu.uuid, f.val[FS_F_UUID], 16);
        return 0;
}

int fs_proto_parse_gpu_alloc(struct fs_buf *p, struct fs_msg_gpu_alloc *ret, const char **ret_why)
{
        struct fields f;
        int r = DECODE(p, &f, ret_why, {FS_F_GPU, REQ}, {FS_F_ROOM, 0}, {FS_F_RESERVE, 0});

        if (r < 0)
                return r;
        *ret = (struct fs_msg_gpu_alloc){
            .gpu = {.device = (uint32_t)be(f.val[FS_F_GPU], 4), .size = be(f.val[FS_F_GPU] + 4, 8)},
            .room = f.count[FS_F_ROOM] ? f.num[FS_F_ROOM] : UINT64_MAX,
            .reserve = f.count[FS_F_RESERVE] ? f.num[FS_F_RESERVE] : UINT64_MAX};
        return 0;
}

int fs_proto_parse_gpu_free(struct fs_buf *p, uint64_t *ret_lease, const char **ret_why)
{
        struct fields f;
        int r = DECODE(p, &f, ret_why, {FS_F_LEASE, REQ});

        if (r < 0)
                return r;
        *ret_lease = f.num[FS_F_LEASE];
        return 0;
}

void fs_msg_put_cred(struct fs_msgw *w, uint32_t uid, uint32_t gid, const uint32_t *groups,
                     size_t ngroups)
{
        if (ngroups > FS_MAX_GROUPS) {
                put_or_fail(w, -E2BIG);
                return;
        }
        put_field(w, FS_F_CRED, 8 + 4 * ngroups);
        if (!w->err)
                put_or_fail(w, fs_buf_put_u32(&w->b, uid));
        if (!w->err)
                put_or_fail(w, fs_buf_put_u32(&w->b, gid));
        for (size_t i = 0; i < ngroups && !w->err; i++)
                put_or_fail(w, fs_buf_put_u32(&w->b, groups[i]));
}

int fs_proto_parse_signal(struct fs_buf *p, size_t nfds, struct fs_msg_signal *ret,
                          const char **ret_why)
{
        struct fields f;
        int r = DECODE(p, &f, ret_why, {FS_F_STATUS, REQ}, {FS_F_CRED, REQ}, {FS_F_PID, 0});

        if (r < 0)
                return r;
        if (f.len[FS_F_CRED] != 8)
                return fail(ret_why, "SIGNAL: CRED is uid and gid", -EBADMSG);
        if (f.num[FS_F_STATUS] == 0 || f.num[FS_F_STATUS] >= 65)
                return fail(ret_why, "SIGNAL: no such signal", -EINVAL);
        if ((f.count[FS_F_PID] ? 0u : 1u) != nfds || (f.count[FS_F_PID] && !f.num[FS_F_PID]))
                return fail(ret_why, "SIGNAL: a pidfd or a PID", -EBADMSG);
        if (f.num[FS_F_PID] > INT32_MAX || be(f.val[FS_F_CRED] + 4, 4) != 0)
                return fail(ret_why, "SIGNAL: PID out of range, or a gid", -EBADMSG);
        *ret = (struct fs_msg_signal){.signo = (uint32_t)f.num[FS_F_STATUS],
                                      .uid = (uint32_t)be(f.val[FS_F_CRED], 4),
                                      .pid = (uint32_t)f.num[FS_F_PID]};
        return 0;
}

int fs_proto_parse_pool(struct fs_buf *p, size_t nfds, struct fs_msg_pool *ret,
                        const char **ret_why)
{
        struct fields f;
        int r = DECODE(p, &f, ret_why, {FS_F_PID, REQ}, {FS_F_STATUS, REQ});

        if (r < 0)
                return r;
        if (f.num[FS_F_PID] == 0 || f.num[FS_F_PID] > INT32_MAX)
                return fail(ret_why, "POOL: no such PID", -EBADMSG);
        if (f.num[FS_F_STATUS] != FS_POOL_ADDED && f.num[FS_F_STATUS] != FS_POOL_GONE)
                return fail(ret_why, "POOL: unknown event", -EBADMSG);
        if (nfds > (f.num[FS_F_STATUS] == FS_POOL_ADDED ? 1u : 0u))
                return fail(ret_why, "POOL: a pidfd comes with ADDED only", -EBADMSG);
        *ret = (struct fs_msg_pool){.pid = (uint32_t)f.num[FS_F_PID],
                                    .event = (uint32_t)f.num[FS_F_STATUS]};
        return 0;
}
