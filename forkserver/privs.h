/*
 * Who runs as whom, and with which capabilities (docs/PRIVILEGES.md). Raw capget/capset:
 * libcap is not a dependency. Not for the child between clone and exec (child.c has its own
 * raw-syscall switch).
 */
#pragma once

#include <linux/capability.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "forkserver/server.h"

#define FSD_CAP_BIT(c) (UINT64_C(1) << (c))
/* what the zygotes keep when workers run as their clients */
#define FSD_CAPS_SWITCH (FSD_CAP_BIT(CAP_SETUID) | FSD_CAP_BIT(CAP_SETGID))

/* Capabilities (permitted and effective) of this process. */
int fsd_caps_get(uint64_t *ret_eff, uint64_t *ret_prm);

/* Permitted and effective become keep (which must be held), inheritable and ambient empty. */
int fsd_caps_limit(uint64_t keep);

/*
 * Decides the uid plan and prepares this process for it, before anything else runs: with
 * --user, drops from root to that user keeping CAP_SETUID and CAP_SETGID; empties the
 * bounding set where CAP_SETPCAP allows; keeps CAP_SETUID and CAP_SETGID (for the zygotes)
 * when workers run as their clients, no capability otherwise. Sets *ret_switch to whether
 * workers run as their clients. On failure the reason is in err (start-up fails).
 */
int fsd_privs_init(const struct fsd_options *o, bool *ret_switch, char *err, size_t errlen);

/* The front gives up what it kept for its zygotes, once they and the GPU broker run. */
int fsd_privs_front_done(void);
