#include <errno.h>
#include <string.h>

#include "common/auth.h"
#include "testutil.h"

static struct fs_key *key, *other;
static uint8_t hello[512], auth[512], reply[512];
static size_t reply_len;

static void setup(void)
{
        ck_assert_int_eq(fs_key_generate(&key), 0);
        ck_assert_int_eq(fs_key_generate(&other), 0);
}

static void teardown(void)
{
        fs_key_free(key);
        fs_key_free(other);
}

/* One handshake: client key ck against server key sk. Returns the server's verdict. */
static int handshake(const struct fs_key *ck, const struct fs_key *sk, struct fs_auth_server *s,
                     struct fs_auth_client *c, int *auth_len)
{
        int hl = fs_auth_server_hello(s, hello, sizeof(hello));

        ck_assert_int_gt(hl, 0);
        *auth_len = fs_auth_client_hello(c, ck, hello, (size_t)hl, auth, sizeof(auth), NULL);
        ck_assert_int_gt(*auth_len, 0);
        return fs_auth_server_recv(s, sk, auth, (size_t)*auth_len, 0, reply, sizeof(reply),
                                   &reply_len, NULL);
}

START_TEST(good_key)
{
        struct fs_auth_server s;
        struct fs_auth_client c;
        int al;

        ck_assert_int_eq(handshake(key, key, &s, &c, &al), 0);
        ck_assert_int_eq(s.state, FS_AUTH_DONE);
        ck_assert_int_eq(fs_auth_client_finish(&c, key, reply, reply_len, NULL), 0);
        /* A second AUTH on a finished handshake is refused. */
        ck_assert_int_eq(fs_auth_server_recv(&s, key, auth, (size_t)al, 0, reply, sizeof(reply),
                                             &reply_len, NULL),
                         -EINVAL);
}
END_TEST

START_TEST(wrong_key)
{
        struct fs_auth_server s;
        struct fs_auth_client c;
        const char *why = NULL;
        int al;

        ck_assert_int_eq(handshake(other, key, &s, &c, &al), -EACCES);
        ck_assert_int_eq(s.state, FS_AUTH_FAILED);
        ck_assert_int_eq(fs_auth_client_finish(&c, other, reply, reply_len, &why), -EACCES);
        ck_assert_ptr_nonnull(strstr(why, "refused"));
}
END_TEST

START_TEST(impostor_server)
{
        struct fs_auth_server s;
        struct fs_auth_client c;
        const char *why = NULL;
        int al;

        /* A server with another key that answers AUTH_OK anyway cannot produce our MAC. */
        ck_assert_int_eq(handshake(key, key, &s, &c, &al), 0);
        ck_assert_int_eq(fs_auth_client_finish(&c, other, reply, reply_len, &why), -EACCES);
        ck_assert_ptr_nonnull(strstr(why, "impostor"));
}
END_TEST

START_TEST(reflection_refused)
{
        struct fs_auth_server s;
        struct fs_msgw w;
        uint8_t mac[FS_MAC_LEN], fake_cnonce[FS_NONCE_LEN];
        int hl, n;

        hl = fs_auth_server_hello(&s, hello, sizeof(hello));
        ck_assert_int_gt(hl, 0);
        /* The server's own label cannot stand in for the client's. */
        memset(fake_cnonce, 7, sizeof(fake_cnonce));
        ck_assert_int_eq(fs_auth_mac(key, FS_LABEL_SERVER, s.snonce, fake_cnonce, 1, mac), 0);
        fs_msg_begin(&w, auth, sizeof(auth), FS_MSG_AUTH, 0);
        fs_msg_put_u16(&w, FS_F_VERSION, 1);
        fs_msg_put_bytes(&w, FS_F_NONCE, fake_cnonce, FS_NONCE_LEN);
        fs_msg_put_bytes(&w, FS_F_MAC, mac, FS_MAC_LEN);
        n = fs_msg_finish(&w);
        ck_assert_int_eq(fs_auth_server_recv(&s, key, auth, (size_t)n, 0, reply, sizeof(reply),
                                             &reply_len, NULL),
                         -EACCES);

        /* Nor can the server's nonce come back as the client's, even with a right MAC. */
        hl = fs_auth_server_hello(&s, hello, sizeof(hello));
        ck_assert_int_eq(fs_auth_mac(key, FS_LABEL_CLIENT, s.snonce, s.snonce, 1, mac), 0);
        fs_msg_begin(&w, auth, sizeof(auth), FS_MSG_AUTH, 0);
        fs_msg_put_u16(&w, FS_F_VERSION, 1);
        fs_msg_put_bytes(&w, FS_F_NONCE, s.snonce, FS_NONCE_LEN);
        fs_msg_put_bytes(&w, FS_F_MAC, mac, FS_MAC_LEN);
        n = fs_msg_finish(&w);
        ck_assert_int_eq(fs_auth_server_recv(&s, key, auth, (size_t)n, 0, reply, sizeof(reply),
                                             &reply_len, NULL),
                         -EACCES);
}
END_TEST

START_TEST(replay_refused)
{
        struct fs_auth_server s1, s2;
        struct fs_auth_client c;
        uint8_t recorded[512];
        int al;

        ck_assert_int_eq(handshake(key, key, &s1, &c, &al), 0);
        memcpy(recorded, auth, (size_t)al);
        /* A new connection has a new server nonce: the recorded AUTH does not fit it. */
        ck_assert_int_gt(fs_auth_server_hello(&s2, hello, sizeof(hello)), 0);
        ck_assert_int_eq(fs_auth_server_recv(&s2, key, recorded, (size_t)al, 0, reply,
                                             sizeof(reply), &reply_len, NULL),
                         -EACCES);
}
END_TEST

START_TEST(truncated_auth_refused)
{
        struct fs_auth_server s;
        struct fs_auth_client c;
        uint8_t copy[512];
        int al;

        ck_assert_int_eq(handshake(key, key, &s, &c, &al), 0);
        memcpy(copy, auth, (size_t)al);
        for (int len = 0; len < al; len++) {
                int hl = fs_auth_server_hello(&s, hello, sizeof(hello));

                ck_assert_int_gt(hl, 0);
                ck_assert_int_lt(fs_auth_server_recv(&s, key, copy, (size_t)len, 0, reply,
                                                     sizeof(reply), &reply_len, NULL),
                                 0);
                ck_assert_int_eq(s.state, FS_AUTH_FAILED);
                ck_assert_uint_gt(reply_len, 0); /* the client is told */
        }
}
END_TEST

START_TEST(wrong_messages_refused)
{
        static uint8_t big[FS_MAX_MSG + 1];
        struct fs_auth_server s;
        struct fs_auth_client c;
        const char *why;
        int al, hl;

        /* fds attached to AUTH */
        ck_assert_int_eq(handshake(key, key, &s, &c, &al), 0);
        hl = fs_auth_server_hello(&s, hello, sizeof(hello));
        al = fs_auth_client_hello(&c, key, hello, (size_t)hl, auth, sizeof(auth), NULL);
        ck_assert_int_eq(fs_auth_server_recv(&s, key, auth, (size_t)al, 1, reply, sizeof(reply),
                                             &reply_len, &why),
                         -EBADMSG);
        /* a HELLO sent back to the server (unknown/unexpected type) */
        hl = fs_auth_server_hello(&s, hello, sizeof(hello));
        ck_assert_int_eq(fs_auth_server_recv(&s, key, hello, (size_t)hl, 0, reply, sizeof(reply),
                                             &reply_len, &why),
                         -EPROTO);
        /* oversized */
        fs_auth_server_hello(&s, hello, sizeof(hello));
        memcpy(big, auth, (size_t)al);
        ck_assert_int_eq(fs_auth_server_recv(&s, key, big, sizeof(big), 0, reply, sizeof(reply),
                                             &reply_len, &why),
                         -EMSGSIZE);
        /* an unknown protocol version */
        hl = fs_auth_server_hello(&s, hello, sizeof(hello));
        al = fs_auth_client_hello(&c, key, hello, (size_t)hl, auth, sizeof(auth), NULL);
        auth[FS_HDR_LEN + 5] = 9; /* VERSION field value, low byte */
        ck_assert_int_eq(fs_auth_server_recv(&s, key, auth, (size_t)al, 0, reply, sizeof(reply),
                                             &reply_len, &why),
                         -EPROTO);
}
END_TEST

/* The vector in docs/PROTOCOL.md: a client in another language can check itself against it. */
START_TEST(documented_vector)
{
        static const uint8_t want_c[FS_MAC_LEN] = {
                0x12, 0xed, 0xde, 0x1b, 0xc1, 0xce, 0x34, 0x49, 0x3c, 0x8b, 0x3a,
                0x61, 0x2d, 0x76, 0x99, 0x38, 0x5d, 0x47, 0x8a, 0xf8, 0x70, 0x40,
                0xab, 0x6b, 0x9b, 0xe8, 0xb3, 0x02, 0xc8, 0x43, 0x9b, 0x19};
        static const uint8_t want_s[FS_MAC_LEN] = {
                0x55, 0xf3, 0xef, 0xc1, 0xf9, 0xf3, 0xdc, 0x89, 0xb5, 0xd9, 0x94,
                0xb2, 0xde, 0x17, 0xe8, 0x50, 0x96, 0x30, 0xf6, 0x58, 0xa5, 0x3e,
                0x2b, 0x72, 0x90, 0xe2, 0xe0, 0xbd, 0x4e, 0x84, 0xb4, 0xce};
        uint8_t sn[FS_NONCE_LEN], cn[FS_NONCE_LEN], mac[FS_MAC_LEN];

        memset(key->bytes, 0x5a, FS_KEY_LEN);
        memset(sn, 1, sizeof(sn));
        memset(cn, 2, sizeof(cn));
        ck_assert_int_eq(fs_auth_mac(key, FS_LABEL_CLIENT, sn, cn, 1, mac), 0);
        ck_assert_mem_eq(mac, want_c, FS_MAC_LEN);
        ck_assert_int_eq(fs_auth_mac(key, FS_LABEL_SERVER, sn, cn, 1, mac), 0);
        ck_assert_mem_eq(mac, want_s, FS_MAC_LEN);
}
END_TEST

static Suite *suite(void)
{
        Suite *s = suite_create("auth");
        TCase *tc = tcase_create("core");

        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, documented_vector);
        tcase_add_test(tc, good_key);
        tcase_add_test(tc, wrong_key);
        tcase_add_test(tc, impostor_server);
        tcase_add_test(tc, reflection_refused);
        tcase_add_test(tc, replay_refused);
        tcase_add_test(tc, truncated_auth_refused);
        tcase_add_test(tc, wrong_messages_refused);
        suite_add_tcase(s, tc);
        return s;
}

int main(void)
{
        return run_suite(suite());
}
