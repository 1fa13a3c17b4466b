#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/auth.h"
#include "testutil.h"

static struct fs_key *key, *other;
static uint8_t hello[512], auth[512], reply[512];
static size_t reply_len;

/* The client as it is, and as the server's SO_PEERCRED reports it: the same process. */
static const struct fs_creds me = {
    .uid = 1000, .gid = 1001, .pid = 4242, .pidns = {[7] = 4, [12] = 0xf0, [15] = 0x36}};

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

/* One handshake: a client that is self, with key ck, against a server with key sk that sees
 * peer at the other end. Returns the server's verdict. */
static int handshake_as(const struct fs_key *ck, const struct fs_key *sk,
                        const struct fs_creds *self, const struct fs_creds *peer,
                        struct fs_auth_server *s, struct fs_auth_client *c, int *auth_len)
{
        int hl = fs_auth_server_hello(s, peer, hello, sizeof(hello));

        ck_assert_int_gt(hl, 0);
        *auth_len = fs_auth_client_hello(c, ck, self, hello, (size_t)hl, auth, sizeof(auth), NULL);
        ck_assert_int_gt(*auth_len, 0);
        return fs_auth_server_recv(s, sk, auth, (size_t)*auth_len, 0, reply, sizeof(reply),
                                   &reply_len, NULL);
}

static int handshake(const struct fs_key *ck, const struct fs_key *sk, struct fs_auth_server *s,
                     struct fs_auth_client *c, int *auth_len)
{
        return handshake_as(ck, sk, &me, &me, s, c, auth_len);
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
        struct fs_auth_bind nobind = {.uid = me.uid, .gid = me.gid};
        struct fs_auth_server s;
        struct fs_msgw w;
        uint8_t mac[FS_MAC_LEN], fake_cnonce[FS_NONCE_LEN];
        int hl, n;

        hl = fs_auth_server_hello(&s, &me, hello, sizeof(hello));
        ck_assert_int_gt(hl, 0);
        memcpy(nobind.pidns, me.pidns, FS_PIDNS_LEN);
        /* The server's own label cannot stand in for the client's. */
        memset(fake_cnonce, 7, sizeof(fake_cnonce));
        ck_assert_int_eq(fs_auth_mac(key, FS_LABEL_SERVER, s.snonce, fake_cnonce, FS_PROTO_VERSION,
                                     &nobind, mac),
                         0);
        fs_msg_begin(&w, auth, sizeof(auth), FS_MSG_AUTH, 0);
        fs_msg_put_u16(&w, FS_F_VERSION, FS_PROTO_VERSION);
        fs_msg_put_u32(&w, FS_F_BIND, 0);
        fs_msg_put_bytes(&w, FS_F_NONCE, fake_cnonce, FS_NONCE_LEN);
        fs_msg_put_bytes(&w, FS_F_MAC, mac, FS_MAC_LEN);
        n = fs_msg_finish(&w);
        ck_assert_int_eq(fs_auth_server_recv(&s, key, auth, (size_t)n, 0, reply, sizeof(reply),
                                             &reply_len, NULL),
                         -EACCES);

        /* Nor can the server's nonce come back as the client's, even with a right MAC. */
        hl = fs_auth_server_hello(&s, &me, hello, sizeof(hello));
        memcpy(nobind.pidns, me.pidns, FS_PIDNS_LEN);
        ck_assert_int_eq(
            fs_auth_mac(key, FS_LABEL_CLIENT, s.snonce, s.snonce, FS_PROTO_VERSION, &nobind, mac),
            0);
        fs_msg_begin(&w, auth, sizeof(auth), FS_MSG_AUTH, 0);
        fs_msg_put_u16(&w, FS_F_VERSION, FS_PROTO_VERSION);
        fs_msg_put_u32(&w, FS_F_BIND, 0);
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
        ck_assert_int_gt(fs_auth_server_hello(&s2, &me, hello, sizeof(hello)), 0);
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
                int hl = fs_auth_server_hello(&s, &me, hello, sizeof(hello));

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
        hl = fs_auth_server_hello(&s, &me, hello, sizeof(hello));
        al = fs_auth_client_hello(&c, key, &me, hello, (size_t)hl, auth, sizeof(auth), NULL);
        ck_assert_int_eq(fs_auth_server_recv(&s, key, auth, (size_t)al, 1, reply, sizeof(reply),
                                             &reply_len, &why),
                         -EBADMSG);
        /* a HELLO sent back to the server (unknown/unexpected type) */
        hl = fs_auth_server_hello(&s, &me, hello, sizeof(hello));
        ck_assert_int_eq(fs_auth_server_recv(&s, key, hello, (size_t)hl, 0, reply, sizeof(reply),
                                             &reply_len, &why),
                         -EPROTO);
        /* oversized */
        fs_auth_server_hello(&s, &me, hello, sizeof(hello));
        memcpy(big, auth, (size_t)al);
        ck_assert_int_eq(fs_auth_server_recv(&s, key, big, sizeof(big), 0, reply, sizeof(reply),
                                             &reply_len, &why),
                         -EMSGSIZE);
        /* an unknown protocol version */
        hl = fs_auth_server_hello(&s, &me, hello, sizeof(hello));
        al = fs_auth_client_hello(&c, key, &me, hello, (size_t)hl, auth, sizeof(auth), NULL);
        auth[FS_HDR_LEN + 5] = 9; /* VERSION field value, low byte */
        ck_assert_int_eq(fs_auth_server_recv(&s, key, auth, (size_t)al, 0, reply, sizeof(reply),
                                             &reply_len, &why),
                         -EPROTO);
}
END_TEST

/* Hex to bytes, for the vectors below. */
static void unhex(const char *h, uint8_t *out, size_t n)
{
        ck_assert_uint_eq(strlen(h), 2 * n);
        for (size_t i = 0; i < n; i++)
                ck_assert_int_eq(sscanf(h + 2 * i, "%2hhx", &out[i]), 1);
}

/* The vectors in docs/PROTOCOL.md: a client in another language can check itself against
 * them (tests/python checks the same ones against its own code). */
START_TEST(documented_vector)
{
        static const struct {
                uint32_t flags, pid;
                const char *client, *server;
        } v[] = {
            {FS_BIND_PID, 4242, "4471fb32d288ec335f4d8007f149d08264de46496a920affb559d731d6cc320a",
             "bbb9d326f908787af6ac968896586dac734ac1c6f6db87d5f8b11e9ac2e7ad3b"},
            {0, 0, "cde09240f2af8420579fce2a50fd0d175793afa41c856171f86bf12e5ffa5387",
             "5de78c46e272178ba3a61ef58ca2a3f83b1451b3972c69685ca1fbee628c75c1"},
        };
        uint8_t sn[FS_NONCE_LEN], cn[FS_NONCE_LEN], mac[FS_MAC_LEN], want[FS_MAC_LEN];

        memset(key->bytes, 0x5a, FS_KEY_LEN);
        memset(sn, 1, sizeof(sn));
        memset(cn, 2, sizeof(cn));
        ck_assert_int_eq(FS_PROTO_VERSION, 2);
        for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
                struct fs_auth_bind b = {
                    .flags = v[i].flags, .uid = 1000, .gid = 1000, .pid = v[i].pid};

                unhex("000000000000000400000000effffffc", b.pidns, FS_PIDNS_LEN);
                ck_assert_int_eq(fs_auth_mac(key, FS_LABEL_CLIENT, sn, cn, 2, &b, mac), 0);
                unhex(v[i].client, want, FS_MAC_LEN);
                ck_assert_mem_eq(mac, want, FS_MAC_LEN);
                ck_assert_int_eq(fs_auth_mac(key, FS_LABEL_SERVER, sn, cn, 2, &b, mac), 0);
                unhex(v[i].server, want, FS_MAC_LEN);
                ck_assert_mem_eq(mac, want, FS_MAC_LEN);
        }
}
END_TEST

/* What an honest server that sees peer would answer to this AUTH (the key at hand): the MAC
 * a relay could at best get from a fooled server. */
static void server_answer_for(const struct fs_creds *peer, const struct fs_auth_client *c,
                              uint32_t flags)
{
        struct fs_auth_bind b = {
            .flags = flags, .uid = peer->uid, .gid = peer->gid, .pid = peer->pid};
        uint8_t mac[FS_MAC_LEN];
        struct fs_msgw w;
        int n;

        memcpy(b.pidns, peer->pidns, FS_PIDNS_LEN);
        ck_assert_int_eq(
            fs_auth_mac(key, FS_LABEL_SERVER, c->snonce, c->cnonce, c->version, &b, mac), 0);
        fs_msg_begin(&w, reply, sizeof(reply), FS_MSG_AUTH_OK, 0);
        fs_msg_put_bytes(&w, FS_F_MAC, mac, FS_MAC_LEN);
        n = fs_msg_finish(&w);
        ck_assert_int_gt(n, 0);
        reply_len = (size_t)n;
}

/* A relay of another uid forwards the victim's HELLO and AUTH unchanged: the server sees the
 * relay, so it refuses; and an AUTH_OK made for the relay does not pass the victim's check. */
START_TEST(relay_of_another_uid_refused)
{
        struct fs_creds relay = me;
        struct fs_auth_server s;
        struct fs_auth_client c;
        const char *why = NULL;
        int al;

        relay.uid = relay.gid = 65534;
        relay.pid = 777;
        ck_assert_int_eq(handshake_as(key, key, &me, &relay, &s, &c, &al), -EACCES);
        ck_assert_int_eq(s.state, FS_AUTH_FAILED);
        server_answer_for(&relay, &c, FS_BIND_PID);
        ck_assert_int_eq(fs_auth_client_finish(&c, key, reply, reply_len, &why), -EACCES);
        ck_assert_ptr_nonnull(strstr(why, "relay"));
        /* only the uid differs: still refused */
        relay = me;
        relay.uid = 65534;
        ck_assert_int_eq(handshake_as(key, key, &me, &relay, &s, &c, &al), -EACCES);
        /* only the gid differs: still refused */
        relay = me;
        relay.gid = 65534;
        ck_assert_int_eq(handshake_as(key, key, &me, &relay, &s, &c, &al), -EACCES);
}
END_TEST

/* The same uid, another process in the same pid namespace: the pid binding stops it. */
START_TEST(relay_of_the_same_uid_refused)
{
        struct fs_creds relay = me;
        struct fs_auth_server s;
        struct fs_auth_client c;
        const char *why = NULL;
        int al;

        relay.pid = me.pid + 1;
        ck_assert_int_eq(handshake_as(key, key, &me, &relay, &s, &c, &al), -EACCES);
        ck_assert_uint_eq(c.bound.flags, FS_BIND_PID);
        server_answer_for(&relay, &c, FS_BIND_PID);
        ck_assert_int_eq(fs_auth_client_finish(&c, key, reply, reply_len, &why), -EACCES);
        /* the honest pair passes */
        ck_assert_int_eq(handshake_as(key, key, &me, &me, &s, &c, &al), 0);
        ck_assert_uint_eq(s.bound.flags, FS_BIND_PID);
        ck_assert_uint_eq(s.bound.pid, me.pid);
        ck_assert_int_eq(fs_auth_client_finish(&c, key, reply, reply_len, NULL), 0);
}
END_TEST

/* A relay that edits what it forwards: it cannot make the victim leave its pid out (the MACs
 * cover the pid namespace HELLO announced and the BIND bits). */
START_TEST(relay_that_edits_refused)
{
        struct fs_creds relay = me;
        struct fs_auth_server s;
        struct fs_auth_client c;
        struct fs_msg_auth a;
        struct fs_hdr h;
        struct fs_buf p;
        struct fs_msgw w;
        int hl, al, n;

        relay.pid = me.pid + 1;
        /* HELLO with another pid namespace: the victim binds no pid, but the server MACs the
         * namespace it announced */
        hl = fs_auth_server_hello(&s, &relay, hello, sizeof(hello));
        ck_assert_int_gt(hl, 0);
        hello[hl - 1] ^= 1; /* PIDNS is HELLO's last field */
        al = fs_auth_client_hello(&c, key, &me, hello, (size_t)hl, auth, sizeof(auth), NULL);
        ck_assert_int_gt(al, 0);
        ck_assert_uint_eq(c.bound.flags, 0);
        ck_assert_int_eq(fs_auth_server_recv(&s, key, auth, (size_t)al, 0, reply, sizeof(reply),
                                             &reply_len, NULL),
                         -EACCES);
        /* AUTH rewritten with BIND 0 (the MAC kept): refused */
        hl = fs_auth_server_hello(&s, &relay, hello, sizeof(hello));
        al = fs_auth_client_hello(&c, key, &me, hello, (size_t)hl, auth, sizeof(auth), NULL);
        ck_assert_int_eq(fs_proto_parse_hdr(auth, (size_t)al, &h, &p), 0);
        ck_assert_int_eq(fs_proto_parse_auth(&p, &a, NULL), 0);
        ck_assert_uint_eq(a.bind, FS_BIND_PID);
        fs_msg_begin(&w, auth, sizeof(auth), FS_MSG_AUTH, 0);
        fs_msg_put_u16(&w, FS_F_VERSION, a.version);
        fs_msg_put_bytes(&w, FS_F_NONCE, c.cnonce, FS_NONCE_LEN);
        fs_msg_put_u32(&w, FS_F_BIND, 0);
        ck_assert_int_eq(
            fs_auth_mac(key, FS_LABEL_CLIENT, c.snonce, c.cnonce, c.version, &c.bound, hello),
            0); /* the victim's MAC, recomputed: what a.mac held */
        fs_msg_put_bytes(&w, FS_F_MAC, hello, FS_MAC_LEN);
        n = fs_msg_finish(&w);
        ck_assert_int_eq(fs_auth_server_recv(&s, key, auth, (size_t)n, 0, reply, sizeof(reply),
                                             &reply_len, NULL),
                         -EACCES);
}
END_TEST

/* Across pid namespaces (a client outside the server's, which sees pid 0 or another number):
 * the pid is not bound, uid and gid still are. */
START_TEST(other_pid_namespace_binds_uid_and_gid)
{
        struct fs_creds outside = me, seen = me;
        struct fs_auth_server s;
        struct fs_auth_client c;
        int al;

        outside.pidns[15] ^= 1;
        outside.pid = 12;
        seen.pid = 0;
        ck_assert_int_eq(handshake_as(key, key, &outside, &seen, &s, &c, &al), 0);
        ck_assert_uint_eq(c.bound.flags, 0);
        ck_assert_int_eq(fs_auth_client_finish(&c, key, reply, reply_len, NULL), 0);
        seen.uid = 65534;
        ck_assert_int_eq(handshake_as(key, key, &outside, &seen, &s, &c, &al), -EACCES);
        /* a server that cannot read its namespace (all zero) gets no pid either */
        memset(seen.pidns, 0, FS_PIDNS_LEN);
        seen.uid = me.uid;
        ck_assert_int_eq(handshake_as(key, key, &me, &seen, &s, &c, &al), 0);
        ck_assert_uint_eq(c.bound.flags, 0);
}
END_TEST

/* Version 1 bound nobody: neither side speaks it any more (a relay would just downgrade). */
START_TEST(version_1_refused)
{
        struct fs_auth_server s;
        struct fs_auth_client c;
        const char *why = NULL;
        struct fs_msgw w;
        int hl, al;

        hl = fs_auth_server_hello(&s, &me, hello, sizeof(hello));
        al = fs_auth_client_hello(&c, key, &me, hello, (size_t)hl, auth, sizeof(auth), NULL);
        auth[5] = 1; /* the header's version */
        ck_assert_int_eq(fs_auth_server_recv(&s, key, auth, (size_t)al, 0, reply, sizeof(reply),
                                             &reply_len, &why),
                         -EPROTO);
        /* a v2 header with a HELLO that offers 1 only */
        fs_msg_begin(&w, hello, sizeof(hello), FS_MSG_HELLO, 0);
        fs_msg_put_u16(&w, FS_F_VERSION_MIN, 1);
        fs_msg_put_u16(&w, FS_F_VERSION_MAX, 1);
        fs_msg_put_bytes(&w, FS_F_NONCE, s.snonce, FS_NONCE_LEN);
        fs_msg_put_bytes(&w, FS_F_PIDNS, me.pidns, FS_PIDNS_LEN);
        hl = fs_msg_finish(&w);
        ck_assert_int_eq(
            fs_auth_client_hello(&c, key, &me, hello, (size_t)hl, auth, sizeof(auth), &why),
            -EPROTO);
        ck_assert_ptr_nonnull(strstr(why, "no common protocol version"));
        /* a version-1 HELLO as a v1 server sends it */
        hello[5] = 1;
        ck_assert_int_eq(
            fs_auth_client_hello(&c, key, &me, hello, (size_t)hl, auth, sizeof(auth), &why),
            -EPROTO);
        ck_assert_ptr_nonnull(strstr(why, "another protocol version"));
}
END_TEST

/* BIND bits this version does not define are refused, not ignored. */
START_TEST(unknown_bind_bits_refused)
{
        struct fs_auth_server s;
        struct fs_msgw w;
        uint8_t zero[FS_MAC_LEN] = {0};
        const char *why = NULL;
        int n;

        ck_assert_int_gt(fs_auth_server_hello(&s, &me, hello, sizeof(hello)), 0);
        fs_msg_begin(&w, auth, sizeof(auth), FS_MSG_AUTH, 0);
        fs_msg_put_u16(&w, FS_F_VERSION, FS_PROTO_VERSION);
        fs_msg_put_bytes(&w, FS_F_NONCE, zero, FS_NONCE_LEN);
        fs_msg_put_u32(&w, FS_F_BIND, 2);
        fs_msg_put_bytes(&w, FS_F_MAC, zero, FS_MAC_LEN);
        n = fs_msg_finish(&w);
        ck_assert_int_eq(fs_auth_server_recv(&s, key, auth, (size_t)n, 0, reply, sizeof(reply),
                                             &reply_len, &why),
                         -EBADMSG);
        ck_assert_str_eq(why, "unknown BIND bits");
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
        tcase_add_test(tc, relay_of_another_uid_refused);
        tcase_add_test(tc, relay_of_the_same_uid_refused);
        tcase_add_test(tc, relay_that_edits_refused);
        tcase_add_test(tc, other_pid_namespace_binds_uid_and_gid);
        tcase_add_test(tc, version_1_refused);
        tcase_add_test(tc, unknown_bind_bits_refused);
        suite_add_tcase(s, tc);
        return s;
}

int main(void)
{
        return run_suite(suite());
}
