/*
 * Capabilities of this process, by raw capget/capset (libcap is not a dependency): what every
 * process of the daemon uses to hold no more than it needs. Not for the child between clone
 * and exec (child.c has its own raw-syscall switch).
 */
#pragma once

#include <linux/capability.h>
#include <stdint.h>

#define FSD_CAP_BIT(c) (UINT64_C(1) << (c))
/* what the zygotes keep when workers run as their clients */
#define FSD_CAPS_SWITCH (FSD_CAP_BIT(CAP_SETUID) | FSD_CAP_BIT(CAP_SETGID))

/* Capabilities (effective, permitted and, when ret_inh, inheritable) of this process. */
int fsd_caps_get(uint64_t *ret_eff, uint64_t *ret_prm, uint64_t *ret_inh);

/* Permitted and effective become keep (which must be held), inheritable and ambient empty. */
int fsd_caps_limit(uint64_t keep);
