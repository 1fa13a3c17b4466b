/* systemd integration without libsystemd: socket activation and readiness notification. */
#pragma once

#include <stddef.h>

/*
 * Takes the listening socket systemd passed (LISTEN_PID is us, LISTEN_FDS is 1: fd 3) and
 * checks it is a listening filesystem AF_UNIX SOCK_SEQPACKET socket; its path goes to path.
 * Returns 1 with *ret_fd (now close-on-exec and non-blocking), 0 when nothing was passed, or
 * a negative errno with *why. The LISTEN_* variables are removed from the environment.
 */
int fsd_systemd_listen_fd(int *ret_fd, char *path, size_t pathlen, const char **ret_why);

/* Sends state ("READY=1", "STOPPING=1", ...) to $NOTIFY_SOCKET, if set; the socket address is
 * read once, on the first call, and the variable then removed from the environment. */
int fsd_systemd_notify(const char *state);
