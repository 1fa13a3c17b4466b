/* Who runs as whom, and with which capabilities (docs/PRIVILEGES.md): the front's start-up. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "forkserver/front/server.h"
#include "forkserver/sandbox/caps.h"

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
