#include "common/buf.h"

#include <errno.h>
#include <string.h>

void fs_buf_init_reader(struct fs_buf *b, const void *data, size_t len)
{
        *b = (struct fs_buf){.data = (uint8_t *)data, .cap = len, .len = len};
}

void fs_buf_init_writer(struct fs_buf *b, void *data, size_t cap)
{
        *b = (struct fs_buf){.data = data, .cap = cap};
}

static int get_be(struct fs_buf *b, size_t n, uint64_t *ret)
{
        uint64_t v = 0;

        *ret = 0;
        if (n > b->len - b->off)
                return -EBADMSG;
        for (size_t i = 0; i < n; i++)
                v = v << 8 | b->data[b->off + i];
        b->off += n;
        *ret = v;
        return 0;
}

int fs_buf_get_u8(struct fs_buf *b, uint8_t *ret)
{
        uint64_t v;
        int r = get_be(b, 1, &v);

        *ret = (uint8_t)v;
        return r;
}

int fs_buf_get_u16(struct fs_buf *b, uint16_t *ret)
{
        uint64_t v;
        int r = get_be(b, 2, &v);

        *ret = (uint16_t)v;
        return r;
}

int fs_buf_get_u32(struct fs_buf *b, uint32_t *ret)
{
        uint64_t v;
        int r = get_be(b, 4, &v);

        *ret = (uint32_t)v;
        return r;
}

int fs_buf_get_u64(struct fs_buf *b, uint64_t *ret)
{
        return get_be(b, 8, ret);
}

int fs_buf_get_view(struct fs_buf *b, size_t n, const uint8_t **ret)
{
        *ret = NULL;
        if (n > b->len - b->off)
                return -EBADMSG;
        *ret = b->data + b->off;
        b->off += n;
        return 0;
}

static int put_be(struct fs_buf *b, size_t n, uint64_t v)
{
        if (n > b->cap - b->len)
                return -EMSGSIZE;
        for (size_t i = n; i > 0; i--, v >>= 8)
                b->data[b->len + i - 1] = (uint8_t)v;
        b->len += n;
        return 0;
}

int fs_buf_put_u8(struct fs_buf *b, uint8_t v)
{
        return put_be(b, 1, v);
}

int fs_buf_put_u16(struct fs_buf *b, uint16_t v)
{
        return put_be(b, 2, v);
}

int fs_buf_put_u32(struct fs_buf *b, uint32_t v)
{
        return put_be(b, 4, v);
}

int fs_buf_put_u64(struct fs_buf *b, uint64_t v)
{
        return put_be(b, 8, v);
}

int fs_buf_put_bytes(struct fs_buf *b, const void *p, size_t n)
{
        if (n > b->cap - b->len)
                return -EMSGSIZE;
        if (n > 0)
                memcpy(b->data + b->len, p, n);
        b->len += n;
        return 0;
}

int fs_buf_patch_u32(struct fs_buf *b, size_t at, uint32_t v)
{
        if (at > b->len || 4 > b->len - at)
                return -EINVAL;
        for (size_t i = 4; i > 0; i--, v >>= 8)
                b->data[at + i - 1] = (uint8_t)v;
        return 0;
}
