/*
 * Who is at each end of a Unix socket, as the kernel reports it (SO_PEERCRED), and the pid
 * namespace a pid is expressed in. The handshake binds these (common/auth.h).
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "common/proto.h"

struct fs_creds {
        uint32_t uid, gid; /* effective, at connect() or listen() time */
        uint32_t pid;      /* 0: not visible from the reader's pid namespace */
        /* The pid namespace pid is counted in: st_dev then st_ino of /proc/self/ns/pid, each
         * as u64 big-endian; all zero when unknown (no /proc). */
        uint8_t pidns[FS_PIDNS_LEN];
};

/* This process's pid namespace (all zero when /proc/self/ns/pid cannot be read). */
void fs_creds_pidns(uint8_t out[FS_PIDNS_LEN]);
/* What SO_PEERCRED reports of this process to the other end of a socket it connects: its
 * effective uid and gid and its pid (the thread group's), in its own pid namespace. */
void fs_creds_self(struct fs_creds *ret);
/* The other end's credentials (SO_PEERCRED), its pid counted in pidns (the caller's). */
int fs_creds_peer(int fd, const uint8_t pidns[FS_PIDNS_LEN], struct fs_creds *ret);
/* Whether a pid namespace identity is known (not all zero). */
bool fs_creds_pidns_known(const uint8_t pidns[FS_PIDNS_LEN]);
