/*
 * Mutual HMAC-SHA256 challenge-response (docs/PROTOCOL.md, "Handshake"):
 *   server → HELLO {version range, server nonce, server's pid namespace}
 *   client → AUTH  {version, client nonce, BIND,
 *                   HMAC(K, "client" label ‖ sn ‖ cn ‖ version ‖ B)}
 *   server → AUTH_OK {HMAC(K, "server" label ‖ sn ‖ cn ‖ version ‖ B)} | AUTH_FAILED
 * B binds the client's credentials: the client puts its own in, the server those the kernel
 * reports of its peer (SO_PEERCRED), so a relay (another uid, or another process where the
 * pid is bound) fails both checks. Distinct labels stop reflection, fresh nonces stop replay.
 * Pure: no sockets here (common/creds.h gathers the credentials).
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "common/creds.h"
#include "common/key.h"
#include "common/proto.h"

enum fs_auth_label {
        FS_LABEL_CLIENT = 1,
        FS_LABEL_SERVER = 2,
};

/*
 * What both MACs bind besides the nonces and the version: the pid namespace the server
 * announced, the BIND bits, and the client's uid, gid and (with FS_BIND_PID, else 0) pid.
 */
struct fs_auth_bind {
        uint8_t pidns[FS_PIDNS_LEN];
        uint32_t flags; /* FS_BIND_* */
        uint32_t uid, gid, pid;
};

int fs_auth_mac(const struct fs_key *key, enum fs_auth_label label, const uint8_t *snonce,
                const uint8_t *cnonce, uint16_t version, const struct fs_auth_bind *b,
                uint8_t out[FS_MAC_LEN]);
/* 0 when mac (of mac_len bytes) is right, -EACCES when not. Constant time. */
int fs_auth_check(const struct fs_key *key, enum fs_auth_label label, const uint8_t *snonce,
                  const uint8_t *cnonce, uint16_t version, const struct fs_auth_bind *b,
                  const uint8_t *mac, size_t mac_len);
int fs_auth_nonce(uint8_t out[FS_NONCE_LEN]);

enum fs_auth_state {
        FS_AUTH_NEW = 0,
        FS_AUTH_HELLO_SENT = 1,
        FS_AUTH_DONE = 2,
        FS_AUTH_FAILED = 3,
};

struct fs_auth_server {
        enum fs_auth_state state;
        uint16_t version;
        uint8_t snonce[FS_NONCE_LEN];
        struct fs_creds peer;      /* the client as the kernel reports it */
        struct fs_auth_bind bound; /* once DONE: what the MACs bound */
};

/*
 * Starts a handshake with the peer whose credentials the kernel reported (peer->pidns: the
 * server's own pid namespace, which HELLO announces): a fresh nonce and the HELLO datagram in
 * out. Returns its length.
 */
int fs_auth_server_hello(struct fs_auth_server *s, const struct fs_creds *peer, void *out,
                         size_t cap);

/*
 * Feeds one datagram (with nfds fds, which the caller closes) to a pending handshake and
 * writes the reply into out (*ret_len bytes; 0 = no reply). Returns 0 when the client is
 * authenticated (reply AUTH_OK); -EACCES for a wrong MAC (reply AUTH_FAILED, which never says
 * why); -EBADMSG/-EPROTO for anything else (reply ERROR with *ret_why). Every failure is final.
 */
int fs_auth_server_recv(struct fs_auth_server *s, const struct fs_key *key, const void *msg,
                        size_t len, size_t nfds, void *out, size_t cap, size_t *ret_len,
                        const char **ret_why);

struct fs_auth_client {
        uint16_t version;
        uint8_t snonce[FS_NONCE_LEN];
        uint8_t cnonce[FS_NONCE_LEN];
        struct fs_auth_bind bound;
};

/*
 * Answers a HELLO: writes AUTH into out and returns its length. self: this process's
 * credentials as the server's SO_PEERCRED will report them (fs_creds_self); the pid is bound
 * only when self->pidns is known and equals the pid namespace the HELLO announced.
 */
int fs_auth_client_hello(struct fs_auth_client *c, const struct fs_key *key,
                         const struct fs_creds *self, const void *msg, size_t len, void *out,
                         size_t cap, const char **ret_why);
/*
 * Checks the server's answer. 0: AUTH_OK with the right server MAC. -EACCES: AUTH_FAILED, or
 * a server MAC that is wrong (whoever listens does not hold the key). An ERROR reply returns
 * its negative errno with *ret_why pointing at its reason inside msg.
 */
int fs_auth_client_finish(struct fs_auth_client *c, const struct fs_key *key, const void *msg,
                          size_t len, const char **ret_why);
