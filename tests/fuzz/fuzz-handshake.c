/*
 * libFuzzer target: the server's handshake state machine and the client's answers.
 * The input is split at "FSZZ" into datagrams fed in order to one pending handshake; the
 * first datagram is also given to the client side as a HELLO and as a reply.
 */
#include <stdint.h>
#include <string.h>

#include "common/auth.h"

static struct fs_key *key;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        static uint8_t out[FS_MAX_MSG];
        /* Fixed credentials on both sides, as if the client were the peer the kernel reports:
         * even then, random bytes never authenticate. */
        static const struct fs_creds peer = {
            .uid = 1000, .gid = 1000, .pid = 4242, .pidns = {[7] = 4, [12] = 0xf0, [15] = 0x36}};
        struct fs_auth_server s;
        struct fs_auth_client c;
        size_t out_len;
        const char *why;
        int r;

        if (!key) {
                if (fs_key_new(&key) < 0)
                        return 0;
                memset(key->bytes, 0x5a, sizeof(key->bytes));
        }
        if (fs_auth_server_hello(&s, &peer, out, sizeof(out)) < 0)
                __builtin_trap();
        for (size_t off = 0, i = 0; off <= size && i < 8; i++) {
                const uint8_t *end = memmem(data + off, size - off, "FSZZ", 4);
                size_t len = end ? (size_t)(end - (data + off)) : size - off;

                r = fs_auth_server_recv(&s, key, data + off, len, i % 2, out, sizeof(out), &out_len,
                                        &why);
                /* Random bytes never authenticate, and every failure is final. */
                if (r == 0 || (r < 0 && s.state != FS_AUTH_FAILED && s.state != FS_AUTH_HELLO_SENT))
                        __builtin_trap();
                if (out_len > sizeof(out))
                        __builtin_trap();
                if (i == 0) {
                        memset(&c, 0, sizeof(c));
                        (void)fs_auth_client_hello(&c, key, &peer, data + off, len, out,
                                                   sizeof(out), &why);
                        if (fs_auth_client_finish(&c, key, data + off, len, &why) == 0)
                                __builtin_trap(); /* no reply without the key's MAC passes */
                }
                if (!end)
                        break;
                off += len + 4;
        }
        return 0;
}
