/*
 * Mutual HMAC-SHA256 challenge-response (docs/PROTOCOL.md, "Handshake"):
 *   server → HELLO {version range, server nonce}
 *   client → AUTH  {version, client nonce, HMAC(K, "client" label ‖ sn ‖ cn ‖ version)}
 *   server → AUTH_OK {HMAC(K, "server" label ‖ sn ‖ cn ‖ version)} | AUTH_FAILED
 * Distinct labels stop reflection, fresh nonces stop replay. Pure: no sockets here.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "common/key.h"
#include "common/proto.h"

enum fs_auth_label {
        FS_LABEL_CLIENT = 1,
        FS_LABEL_SERVER = 2,
};

int fs_auth_mac(const struct fs_key *key, enum fs_auth_label label, const uint8_t *snonce,
                const uint8_t *cnonce, uint16_t version, uint8_t out[FS_MAC_LEN]);
/* 0 when mac (of mac_len bytes) is right, -EACCES when not. Constant time. */
int fs_auth_check(const struct fs_key *key, enum fs_auth_label label, const uint8_t *snonce,
                  const uint8_t *cnonce, uint16_t version, const uint8_t *mac, size_t mac_len);
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
};

/* Starts a handshake: a fresh nonce and the HELLO datagram in out. Returns its length. */
int fs_auth_server_hello(struct fs_auth_server *s, void *out, size_t cap);

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
};

/* Answers a HELLO: writes AUTH into out and returns its length. */
int fs_auth_client_hello(struct fs_auth_client *c, const struct fs_key *key, const void *msg,
                         size_t len, void *out, size_t cap, const char **ret_why);
/*
 * Checks the server's answer. 0: AUTH_OK with the right server MAC. -EACCES: AUTH_FAILED, or
 * a server MAC that is wrong (whoever listens does not hold the key). An ERROR reply returns
 * its negative errno with *ret_why pointing at its reason inside msg.
 */
int fs_auth_client_finish(struct fs_auth_client *c, const struct fs_key *key, const void *msg,
                          size_t len, const char **ret_why);
