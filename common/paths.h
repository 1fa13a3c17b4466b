/* Default socket and key locations shared by forkserverd, forkctl and libforkserver. */
#pragma once

#include <stddef.h>

#define FS_SOCKET_PATH_MAX 108 /* sizeof(sockaddr_un.sun_path) */

/* $FORKSERVER_SOCKET, else $XDG_RUNTIME_DIR/forkserver/forkserverd.sock,
 * else /tmp/forkserver-$UID/forkserverd.sock. -ENAMETOOLONG if it does not fit. */
int fs_default_socket(char *buf, size_t size);
/* $FORKSERVER_KEY_FILE, else "key" in the socket's directory. */
int fs_default_key(const char *socket_path, char *buf, size_t size);
/* Writes the directory part of path ("." when none). */
int fs_dirname(const char *path, char *buf, size_t size);
