/* libFuzzer target: the key parser. */
#include <stdint.h>

#include "common/key.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct fs_key k;
        const char *why;

        if (fs_key_parse(data, size, &k, &why) == 0 && size != 32 && size != 64 && size != 65)
                __builtin_trap();
        return 0;
}
