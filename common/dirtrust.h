/*
 * Can anybody untrusted swap a path under us? Walks every directory from / down to the one
 * holding path's last component, both as written and as resolved (symbolic links followed),
 * and refuses one that is owned by a uid outside trusted, or writable by group or others
 * without the sticky bit (world-writable sticky directories such as /tmp are fine: there
 * nobody can rename or remove another's entry). A symbolic link on the way must belong to a
 * trusted uid too. Used by forkserverd on its socket's ancestors and by clients before they
 * connect; touches the filesystem only through lstat and realpath.
 */
#pragma once

#include <stddef.h>
#include <sys/types.h>

/*
 * 0 when every directory above path's last component is trusted. Otherwise a negative errno
 * (-EPERM for an untrusted directory, -ENOENT for a missing one, others from lstat/realpath)
 * and why (when given) gets a sentence naming the offending directory, e.g.
 * "/srv/x is owned by uid 1000" or "/srv is writable by group or others (mode 0777)".
 */
int fs_dirtrust_check(const char *path, const uid_t *trusted, size_t ntrusted, char *why,
                      size_t whycap);
