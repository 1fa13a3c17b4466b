/*
 * Bounds-checked buffer: the only code that does pointer arithmetic on wire data.
 * A reader walks [0, len) with off; a writer appends up to cap. Integers are big-endian.
 * Getters clear their output first and return -EBADMSG past the end; putters return
 * -EMSGSIZE when the buffer is full. Bounds are written `n > len - off`, never `off + n > len`.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

struct fs_buf {
        uint8_t *data;
        size_t cap; /* writer: capacity */
        size_t len; /* reader: bytes readable; writer: bytes written */
        size_t off; /* reader position */
};

void fs_buf_init_reader(struct fs_buf *b, const void *data, size_t len);
void fs_buf_init_writer(struct fs_buf *b, void *data, size_t cap);

static inline size_t fs_buf_remaining(const struct fs_buf *b)
{
        return b->len - b->off;
}

int fs_buf_get_u8(struct fs_buf *b, uint8_t *ret);
int fs_buf_get_u16(struct fs_buf *b, uint16_t *ret);
int fs_buf_get_u32(struct fs_buf *b, uint32_t *ret);
int fs_buf_get_u64(struct fs_buf *b, uint64_t *ret);
/* A borrowed view of the next n bytes; valid while the underlying data is. */
int fs_buf_get_view(struct fs_buf *b, size_t n, const uint8_t **ret);

int fs_buf_put_u8(struct fs_buf *b, uint8_t v);
int fs_buf_put_u16(struct fs_buf *b, uint16_t v);
int fs_buf_put_u32(struct fs_buf *b, uint32_t v);
int fs_buf_put_u64(struct fs_buf *b, uint64_t v);
int fs_buf_put_bytes(struct fs_buf *b, const void *p, size_t n);
/* Overwrites 4 bytes at an offset already written (length back-patching). */
int fs_buf_patch_u32(struct fs_buf *b, size_t at, uint32_t v);
