/* libFuzzer target: the profile-file parser. */
#include <stdint.h>

#include "forkserver/sandbox/profile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        static struct fsd_profile_src src;
        char err[256];

        if (fsd_profile_parse((const char *)data, size, "f", &src, err, sizeof(err)) == 0 &&
            (src.nrules > FSD_MAX_RULES || src.dflt.kind == 0))
                __builtin_trap();
        return 0;
}
