#include <errno.h>
#include <string.h>

#include "common/buf.h"
#include "testutil.h"

START_TEST(get_big_endian)
{
        static const uint8_t d[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
        struct fs_buf b;
        uint8_t u8;
        uint16_t u16;
        uint32_t u32;
        uint64_t u64;

        fs_buf_init_reader(&b, d, sizeof(d));
        ck_assert_int_eq(fs_buf_get_u8(&b, &u8), 0);
        ck_assert_uint_eq(u8, 1);
        ck_assert_int_eq(fs_buf_get_u16(&b, &u16), 0);
        ck_assert_uint_eq(u16, 0x0203);
        ck_assert_int_eq(fs_buf_get_u32(&b, &u32), 0);
        ck_assert_uint_eq(u32, 0x04050607);
        ck_assert_int_eq(fs_buf_get_u64(&b, &u64), 0);
        ck_assert_uint_eq(u64, 0x08090a0b0c0d0e0full);
        ck_assert_uint_eq(fs_buf_remaining(&b), 0);
}
END_TEST

START_TEST(get_past_end_fails_and_clears)
{
        static const uint8_t d[] = {0xff, 0xff, 0xff};
        struct fs_buf b;
        uint32_t u32 = 77;
        uint64_t u64 = 77;
        const uint8_t *v = d;

        fs_buf_init_reader(&b, d, sizeof(d));
        ck_assert_int_eq(fs_buf_get_u32(&b, &u32), -EBADMSG);
        ck_assert_uint_eq(u32, 0);
        ck_assert_uint_eq(fs_buf_remaining(&b), 3); /* nothing consumed */
        ck_assert_int_eq(fs_buf_get_view(&b, 4, &v), -EBADMSG);
        ck_assert_ptr_null(v);
        ck_assert_int_eq(fs_buf_get_view(&b, 3, &v), 0);
        ck_assert_ptr_eq(v, d);
        ck_assert_int_eq(fs_buf_get_u64(&b, &u64), -EBADMSG);
        ck_assert_uint_eq(u64, 0);
        /* A huge length must not wrap around. */
        ck_assert_int_eq(fs_buf_get_view(&b, SIZE_MAX, &v), -EBADMSG);
}
END_TEST

START_TEST(put_and_overflow)
{
        uint8_t mem[7];
        struct fs_buf b;

        fs_buf_init_writer(&b, mem, sizeof(mem));
        ck_assert_int_eq(fs_buf_put_u16(&b, 0xabcd), 0);
        ck_assert_int_eq(fs_buf_put_u32(&b, 0x01020304), 0);
        ck_assert_int_eq(fs_buf_put_u16(&b, 1), -EMSGSIZE); /* one byte left */
        ck_assert_int_eq(fs_buf_put_u8(&b, 9), 0);
        ck_assert_int_eq(fs_buf_put_u8(&b, 9), -EMSGSIZE);
        ck_assert_int_eq(fs_buf_put_bytes(&b, "x", SIZE_MAX), -EMSGSIZE);
        ck_assert_uint_eq(b.len, 7);
        ck_assert_mem_eq(mem, "\xab\xcd\x01\x02\x03\x04\x09", 7);
        ck_assert_int_eq(fs_buf_patch_u32(&b, 2, 0xa0b0c0d0), 0);
        ck_assert_mem_eq(mem + 2, "\xa0\xb0\xc0\xd0", 4);
        ck_assert_int_eq(fs_buf_patch_u32(&b, 4, 0), -EINVAL);
}
END_TEST

static Suite *suite(void)
{
        Suite *s = suite_create("buf");
        TCase *tc = tcase_create("core");

        tcase_add_test(tc, get_big_endian);
        tcase_add_test(tc, get_past_end_fails_and_clears);
        tcase_add_test(tc, put_and_overflow);
        suite_add_tcase(s, tc);
        return s;
}

int main(void)
{
        return run_suite(suite());
}
