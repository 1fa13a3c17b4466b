/*
 * The shared secret. Its bytes live only in one mlock'd page marked MADV_DONTDUMP and
 * MADV_WIPEONFORK (a forked child sees zeros), cleansed when freed.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FS_KEY_LEN 32
#define FS_KEY_HEX_LEN 64
#define FS_KEY_FD_TIMEOUT_MS 5000

struct fs_key {
        uint8_t bytes[FS_KEY_LEN];
        bool locked; /* mlock succeeded */
};

/* A zeroed key page. */
int fs_key_new(struct fs_key **ret);
void fs_key_free(struct fs_key *k);

/* Parses 32 raw bytes, or 64 hex digits with an optional final newline. */
int fs_key_parse(const uint8_t *data, size_t len, struct fs_key *k, const char **ret_why);

/* Fresh random key. */
int fs_key_generate(struct fs_key **ret);

/*
 * Reads a key from fd until EOF, waiting at most timeout_ms in all; does not close fd.
 * -EBADF closed fd, -ETIMEDOUT no EOF in time, -EBADMSG bad contents; *ret_why says which.
 */
int fs_key_load_fd(int fd, int timeout_ms, struct fs_key **ret, const char **ret_why);

/* Loads a key file: a regular file owned by the euid, no group/other bits, no symlink. */
int fs_key_load_file(const char *path, struct fs_key **ret, const char **ret_why);

/* Formats the key as 64 hex digits and a newline (65 bytes, no NUL) into out. */
void fs_key_hex(const struct fs_key *k, char out[FS_KEY_HEX_LEN + 1]);
