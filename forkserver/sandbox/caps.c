#include "forkserver/sandbox/caps.h"

#include <errno.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

int fsd_caps_get(uint64_t *ret_eff, uint64_t *ret_prm, uint64_t *ret_inh)
{
        struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3};
        struct __user_cap_data_struct d[2];

        memset(d, 0, sizeof(d));
        if (syscall(SYS_capget, &h, d) < 0)
                return -errno;
        *ret_eff = (uint64_t)d[1].effective << 32 | d[0].effective;
        *ret_prm = (uint64_t)d[1].permitted << 32 | d[0].permitted;
        if (ret_inh)
                *ret_inh = (uint64_t)d[1].inheritable << 32 | d[0].inheritable;
        return 0;
}

int fsd_caps_limit(uint64_t keep)
{
        struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3};
        struct __user_cap_data_struct d[2] = {
            {.effective = (uint32_t)keep, .permitted = (uint32_t)keep},
            {.effective = (uint32_t)(keep >> 32), .permitted = (uint32_t)(keep >> 32)},
        };

        /* EINVAL: a kernel before 4.3, which has no ambient set to clear */
        if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
                return -errno;
        return syscall(SYS_capset, &h, d) < 0 ? -errno : 0;
}
