/* The listening socket and its directory, created safely. */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

/*
 * Refuses a path whose directories above its last component (from / down) may be swapped by
 * someone other than root or the euid: owned by another uid, or writable by group or others
 * without the sticky bit. *ret_why names the directory.
 */
int fsd_sock_check_ancestors(const char *path, const char **ret_why);

/*
 * Refuses a socket directory whose ancestors fail fsd_sock_check_ancestors. Creates the
 * socket's directory if missing (0700, or 0711 when other uids are allowed),
 * refuses a directory that is a symlink, not owned by the euid, or writable by group or
 * others; replaces a stale socket only when nothing listens on it; binds and listens
 * (SOCK_SEQPACKET, non-blocking). The socket is 0600, or 0666 when shared.
 */
int fsd_sock_listen(const char *path, bool shared, int *ret_fd, dev_t *ret_dev, ino_t *ret_ino,
                    const char **ret_why);
