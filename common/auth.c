#include "common/auth.h"

#include <errno.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <string.h>

static const char label_client[] = "forkserver-v2 client";
static const char label_server[] = "forkserver-v2 server";

static EVP_MAC *hmac;
static pthread_once_t hmac_once = PTHREAD_ONCE_INIT;

static void hmac_fetch(void)
{
        hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
}

static void put_be32(uint8_t *p, uint32_t v)
{
        p[0] = (uint8_t)(v >> 24);
        p[1] = (uint8_t)(v >> 16);
        p[2] = (uint8_t)(v >> 8);
        p[3] = (uint8_t)v;
}

int fs_auth_mac(const struct fs_key *key, enum fs_auth_label label, const uint8_t *snonce,
                const uint8_t *cnonce, uint16_t version, const struct fs_auth_bind *b,
                uint8_t out[FS_MAC_LEN])
{
        const char *l = label == FS_LABEL_CLIENT ? label_client : label_server;
        uint8_t ver[2] = {(uint8_t)(version >> 8), (uint8_t)version};
        uint8_t who[FS_PIDNS_LEN + 16]; /* pidns ‖ flags ‖ uid ‖ gid ‖ pid, big-endian */
        OSSL_PARAM params[] = {
            OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
            OSSL_PARAM_construct_end(),
        };
        EVP_MAC_CTX *ctx;
        size_t outl = 0;
        int ok;

        memcpy(who, b->pidns, FS_PIDNS_LEN);
        put_be32(who + FS_PIDNS_LEN, b->flags);
        put_be32(who + FS_PIDNS_LEN + 4, b->uid);
        put_be32(who + FS_PIDNS_LEN + 8, b->gid);
        put_be32(who + FS_PIDNS_LEN + 12, b->flags & FS_BIND_PID ? b->pid : 0);
        pthread_once(&hmac_once, hmac_fetch);
        if (!hmac || !(ctx = EVP_MAC_CTX_new(hmac)))
                return -ENOMEM;
        /* The label's NUL separates it from the nonces; everything after has a fixed size. */
        ok = EVP_MAC_init(ctx, key->bytes, FS_KEY_LEN, params) &&
             EVP_MAC_update(ctx, (const uint8_t *)l, strlen(l) + 1) &&
             EVP_MAC_update(ctx, snonce, FS_NONCE_LEN) &&
             EVP_MAC_update(ctx, cnonce, FS_NONCE_LEN) && EVP_MAC_update(ctx, ver, 2) &&
             EVP_MAC_update(ctx, who, sizeof(who)) && EVP_MAC_final(ctx, out, &outl, FS_MAC_LEN) &&
             outl == FS_MAC_LEN;
        EVP_MAC_CTX_free(ctx);
        if (!ok) {
                OPENSSL_cleanse(out, FS_MAC_LEN);
                return -EIO;
        }
        return 0;
}

int fs_auth_check(const struct fs_key *key, enum fs_auth_label label, const uint8_t *snonce,
                  const uint8_t *cnonce, uint16_t version, const struct fs_auth_bind *b,
                  const uint8_t *mac, size_t mac_len)
{
        uint8_t want[FS_MAC_LEN];
        bool ok;
        int r;

        r = fs_auth_mac(key, label, snonce, cnonce, version, b, want);
        ok = r >= 0 && mac_len == sizeof(want) && CRYPTO_memcmp(want, mac, sizeof(want)) == 0;
        OPENSSL_cleanse(want, sizeof(want));
        return r < 0 ? r : ok ? 0 : -EACCES;
}

int fs_auth_nonce(uint8_t out[FS_NONCE_LEN])
{
        return RAND_bytes(out, FS_NONCE_LEN) == 1 ? 0 : -EIO;
}

static int fail(const char **ret_why, const char *why, int r)
{
        if (ret_why)
                *ret_why = why;
        return r;
}

int fs_auth_server_hello(struct fs_auth_server *s, const struct fs_creds *peer, void *out,
                         size_t cap)
{
        struct fs_msgw w;
        int r;

        memset(s, 0, sizeof(*s));
        s->peer = *peer;
        if ((r = fs_auth_nonce(s->snonce)) < 0)
                return r;
        /* Version 1 bound nobody: a relay would just downgrade, so it is not offered. */
        fs_msg_begin(&w, out, cap, FS_MSG_HELLO, 0);
        fs_msg_put_u16(&w, FS_F_VERSION_MIN, FS_PROTO_VERSION);
        fs_msg_put_u16(&w, FS_F_VERSION_MAX, FS_PROTO_VERSION);
        fs_msg_put_bytes(&w, FS_F_NONCE, s->snonce, FS_NONCE_LEN);
        fs_msg_put_bytes(&w, FS_F_PIDNS, peer->pidns, FS_PIDNS_LEN);
        r = fs_msg_finish(&w);
        if (r >= 0)
                s->state = FS_AUTH_HELLO_SENT;
        return r;
}

/* Parses AUTH; on failure *ret_why says why and the result is -EBADMSG or -EPROTO. */
static int server_parse_auth(const void *msg, size_t len, size_t nfds, struct fs_msg_auth *a,
                             const char **ret_why)
{
        struct fs_hdr h;
        struct fs_buf p;
        int r;

        if ((r = fs_proto_parse_hdr(msg, len, &h, &p)) < 0)
                return fail(
                    ret_why,
                    r == -EPROTO ? "bad magic or protocol version" : "malformed message header", r);
        if (h.type != FS_MSG_AUTH)
                return fail(ret_why, "expected AUTH", -EPROTO);
        if (nfds > 0)
                return fail(ret_why, "AUTH carries no fds", -EBADMSG);
        if ((r = fs_proto_parse_auth(&p, a, ret_why)) < 0)
                return r;
        if (a->version != FS_PROTO_VERSION)
                return fail(ret_why, "unsupported protocol version", -EPROTO);
        return 0;
}

int fs_auth_server_recv(struct fs_auth_server *s, const struct fs_key *key, const void *msg,
                        size_t len, size_t nfds, void *out, size_t cap, size_t *ret_len,
                        const char **ret_why)
{
        const char *why = "";
        struct fs_auth_bind b;
        struct fs_msg_auth a;
        struct fs_msgw w;
        uint8_t mac[FS_MAC_LEN];
        int r;

        *ret_len = 0;
        if (s->state != FS_AUTH_HELLO_SENT)
                return fail(ret_why, "handshake is not pending", -EINVAL);
        s->state = FS_AUTH_FAILED; /* every failure is final */
        if ((r = server_parse_auth(msg, len, nfds, &a, &why)) < 0) {
                fs_msg_begin(&w, out, cap, FS_MSG_ERROR, 0);
                fs_msg_put_u32(&w, FS_F_ERRNO, (uint32_t)-r);
                fs_msg_put_str(&w, FS_F_REASON, why);
                goto finish;
        }
        /* The client said what it bound; the values are the kernel's, never the client's. A
         * relay forwarding AUTH unchanged is another uid or process than the one that made it. */
        b = (struct fs_auth_bind){
            .flags = a.bind, .uid = s->peer.uid, .gid = s->peer.gid, .pid = s->peer.pid};
        memcpy(b.pidns, s->peer.pidns, FS_PIDNS_LEN);
        if (CRYPTO_memcmp(a.nonce, s->snonce, FS_NONCE_LEN) == 0 ||
            fs_auth_check(key, FS_LABEL_CLIENT, s->snonce, a.nonce, a.version, &b, a.mac,
                          FS_MAC_LEN) < 0) {
                /* A reflected server nonce is refused outright; AUTH_FAILED never says why. */
                r = -EACCES;
                why = "wrong key, or credentials that are not the connecting process's";
                fs_msg_begin(&w, out, cap, FS_MSG_AUTH_FAILED, 0);
        } else if ((r = fs_auth_mac(key, FS_LABEL_SERVER, s->snonce, a.nonce, a.version, &b, mac)) <
                   0) {
                return fail(ret_why, "cannot compute MAC", r);
        } else {
                fs_msg_begin(&w, out, cap, FS_MSG_AUTH_OK, 0);
                fs_msg_put_bytes(&w, FS_F_MAC, mac, FS_MAC_LEN);
                OPENSSL_cleanse(mac, sizeof(mac));
                s->version = a.version;
                s->bound = b;
                s->state = FS_AUTH_DONE;
        }
finish:;
        int n = fs_msg_finish(&w);

        *ret_len = n > 0 ? (size_t)n : 0;
        if (n < 0 && r == 0) {
                s->state = FS_AUTH_FAILED;
                r = n;
                why = "cannot build AUTH_OK";
        }
        return r < 0 ? fail(ret_why, why, r) : 0;
}

int fs_auth_client_hello(struct fs_auth_client *c, const struct fs_key *key,
                         const struct fs_creds *self, const void *msg, size_t len, void *out,
                         size_t cap, const char **ret_why)
{
        struct fs_msg_hello hello;
        struct fs_hdr h;
        struct fs_buf p;
        struct fs_msgw w;
        uint8_t mac[FS_MAC_LEN];
        int r;

        memset(c, 0, sizeof(*c));
        if ((r = fs_proto_parse_hdr(msg, len, &h, &p)) < 0)
                return fail(ret_why,
                            r == -EPROTO ? "the server speaks another protocol version (this "
                                           "client speaks version 2 only)"
                                         : "malformed HELLO",
                            r);
        if (h.type == FS_MSG_ERROR) {
                struct fs_msg_error e;

                if (fs_proto_parse_error(&p, &e, ret_why) < 0)
                        return -EBADMSG;
                return fail(ret_why, e.reason, -(int)e.err);
        }
        if (h.type != FS_MSG_HELLO)
                return fail(ret_why, "expected HELLO", -EPROTO);
        if ((r = fs_proto_parse_hello(&p, &hello, ret_why)) < 0)
                return r;
        if (hello.version_min > FS_PROTO_VERSION || hello.version_max < FS_PROTO_VERSION)
                return fail(ret_why, "no common protocol version", -EPROTO);
        c->version = FS_PROTO_VERSION;
        memcpy(c->snonce, hello.nonce, FS_NONCE_LEN);
        /* Our pid means the same to the server only in the same pid namespace. The MACs
         * cover the namespace HELLO announced, so a relay cannot make us leave the pid out. */
        c->bound = (struct fs_auth_bind){.uid = self->uid, .gid = self->gid};
        memcpy(c->bound.pidns, hello.pidns, FS_PIDNS_LEN);
        if (fs_creds_pidns_known(self->pidns) &&
            memcmp(self->pidns, hello.pidns, FS_PIDNS_LEN) == 0) {
                c->bound.flags |= FS_BIND_PID;
                c->bound.pid = self->pid;
        }
        if ((r = fs_auth_nonce(c->cnonce)) < 0)
                return fail(ret_why, "no random bytes", r);
        if ((r = fs_auth_mac(key, FS_LABEL_CLIENT, c->snonce, c->cnonce, c->version, &c->bound,
                             mac)) < 0)
                return fail(ret_why, "cannot compute MAC", r);
        fs_msg_begin(&w, out, cap, FS_MSG_AUTH, 0);
        fs_msg_put_u16(&w, FS_F_VERSION, c->version);
        fs_msg_put_bytes(&w, FS_F_NONCE, c->cnonce, FS_NONCE_LEN);
        fs_msg_put_u32(&w, FS_F_BIND, c->bound.flags);
        fs_msg_put_bytes(&w, FS_F_MAC, mac, FS_MAC_LEN);
        OPENSSL_cleanse(mac, sizeof(mac));
        r = fs_msg_finish(&w);
        return r < 0 ? fail(ret_why, "cannot build AUTH", r) : r;
}

int fs_auth_client_finish(struct fs_auth_client *c, const struct fs_key *key, const void *msg,
                          size_t len, const char **ret_why)
{
        const uint8_t *mac;
        struct fs_hdr h;
        struct fs_buf p;
        int r;

        if ((r = fs_proto_parse_hdr(msg, len, &h, &p)) < 0)
                return fail(ret_why, "malformed handshake reply", r);
        switch (h.type) {
        case FS_MSG_AUTH_FAILED:
                return fail(ret_why,
                            "authentication failed: the server refused our key (or did not "
                            "see us at the other end: a relay?)",
                            -EACCES);
        case FS_MSG_ERROR: {
                struct fs_msg_error e;

                if (fs_proto_parse_error(&p, &e, ret_why) < 0)
                        return -EBADMSG;
                return fail(ret_why, e.reason, -(int)e.err);
        }
        case FS_MSG_AUTH_OK:
                if ((r = fs_proto_parse_auth_ok(&p, &mac, ret_why)) < 0)
                        return r;
                if (fs_auth_check(key, FS_LABEL_SERVER, c->snonce, c->cnonce, c->version, &c->bound,
                                  mac, FS_MAC_LEN) < 0)
                        return fail(ret_why,
                                    "the server could not prove it holds the key and sees "
                                    "us as we are (an impostor, or a relay?)",
                                    -EACCES);
                return 0;
        default:
                return fail(ret_why, "unexpected message during handshake", -EPROTO);
        }
}
