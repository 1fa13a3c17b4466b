#include "common/key.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <poll.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "common/util.h"

/* A key file or fd never holds more than this; larger input is refused, not truncated. */
#define KEY_INPUT_MAX (FS_KEY_HEX_LEN + 2)

static int fail(const char **ret_why, const char *why, int r)
{
        if (ret_why)
                *ret_why = why;
        return r;
}

int fs_key_new(struct fs_key **ret)
{
        size_t page = (size_t)sysconf(_SC_PAGESIZE);
        struct fs_key *k;

        k = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (k == MAP_FAILED)
                return -errno;
        if (madvise(k, page, MADV_DONTDUMP) < 0 || madvise(k, page, MADV_WIPEONFORK) < 0) {
                int r = -errno;

                munmap(k, page);
                return r;
        }
        /* RLIMIT_MEMLOCK may be 0 in containers; the key still works, callers may warn. */
        k->locked = mlock(k, page) == 0;
        *ret = k;
        return 0;
}

void fs_key_free(struct fs_key *k)
{
        size_t page = (size_t)sysconf(_SC_PAGESIZE);

        if (!k)
                return;
        OPENSSL_cleanse(k, page);
        munlock(k, page);
        munmap(k, page);
}

static int unhex(uint8_t c)
{
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

int fs_key_parse(const uint8_t *data, size_t len, struct fs_key *k, const char **ret_why)
{
        if (len == 0)
                return fail(ret_why, "is empty", -EBADMSG);
        if (len == FS_KEY_LEN) {
                memcpy(k->bytes, data, FS_KEY_LEN);
                return 0;
        }
        if (len == FS_KEY_HEX_LEN + 1 && data[FS_KEY_HEX_LEN] == '\n')
                len--;
        if (len < FS_KEY_HEX_LEN)
                return fail(ret_why, "is too short: need 32 raw bytes or 64 hex digits", -EBADMSG);
        if (len > FS_KEY_HEX_LEN)
                return fail(ret_why, "is too long: need 32 raw bytes or 64 hex digits", -EBADMSG);
        for (size_t i = 0; i < FS_KEY_LEN; i++) {
                int hi = unhex(data[2 * i]), lo = unhex(data[2 * i + 1]);

                if (hi < 0 || lo < 0) {
                        OPENSSL_cleanse(k->bytes, sizeof(k->bytes));
                        return fail(ret_why, "is malformed: 64 characters but not all hex digits",
                                    -EBADMSG);
                }
                k->bytes[i] = (uint8_t)(hi << 4 | lo);
        }
        return 0;
}

void fs_key_hex(const struct fs_key *k, char out[FS_KEY_HEX_LEN + 1])
{
        static const char digits[] = "0123456789abcdef";

        for (size_t i = 0; i < FS_KEY_LEN; i++) {
                out[2 * i] = digits[k->bytes[i] >> 4];
                out[2 * i + 1] = digits[k->bytes[i] & 15];
        }
        out[FS_KEY_HEX_LEN] = '\n';
}

int fs_key_generate(struct fs_key **ret)
{
        struct fs_key *k;
        int r;

        if ((r = fs_key_new(&k)) < 0)
                return r;
        if (RAND_bytes(k->bytes, FS_KEY_LEN) != 1) {
                fs_key_free(k);
                return -EIO;
        }
        *ret = k;
        return 0;
}

/* Reads until EOF into a stack buffer; parses into a fresh key page; cleanses the copy. */
static int read_key(int fd, int timeout_ms, struct fs_key **ret, const char **ret_why)
{
        uint8_t data[KEY_INPUT_MAX + 1];
        int64_t deadline = timeout_ms >= 0 ? fs_now_ms() + timeout_ms : -1;
        size_t len = 0;
        struct fs_key *k = NULL;
        int r;

        for (;;) {
                ssize_t n;

                if (deadline >= 0) {
                        struct pollfd p = {.fd = fd, .events = POLLIN};
                        int64_t left = deadline - fs_now_ms();

                        if (left < 0)
                                left = 0;
                        r = poll(&p, 1, (int)left);
                        if (r < 0 && errno == EINTR)
                                continue;
                        if (r < 0) {
                                r = fail(ret_why, "cannot be polled", -errno);
                                goto out;
                        }
                        if (r == 0) {
                                r = fail(ret_why,
                                         "timed out: no end of input within the deadline "
                                         "(the writer must close it)",
                                         -ETIMEDOUT);
                                goto out;
                        }
                        if (p.revents & POLLNVAL) {
                                r = fail(ret_why, "is not open", -EBADF);
                                goto out;
                        }
                }
                n = read(fd, data + len, sizeof(data) - len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        r = fail(ret_why, errno == EBADF ? "is not open" : "cannot be read",
                                 -errno);
                        goto out;
                }
                if (n == 0)
                        break;
                len += (size_t)n;
                if (len > KEY_INPUT_MAX) {
                        r = fail(ret_why, "is too long: need 32 raw bytes or 64 hex digits",
                                 -EBADMSG);
                        goto out;
                }
        }
        if ((r = fs_key_new(&k)) < 0) {
                r = fail(ret_why, "cannot get a locked page for it", r);
                goto out;
        }
        if ((r = fs_key_parse(data, len, k, ret_why)) < 0)
                goto out;
        *ret = fs_take_ptr(&k);
out:
        OPENSSL_cleanse(data, sizeof(data));
        fs_key_free(k);
        return r;
}

int fs_key_load_fd(int fd, int timeout_ms, struct fs_key **ret, const char **ret_why)
{
        if (fd < 0 || fcntl(fd, F_GETFD) < 0)
                return fail(ret_why, "is not open", -EBADF);
        return read_key(fd, timeout_ms, ret, ret_why);
}

int fs_key_load_file(const char *path, struct fs_key **ret, const char **ret_why)
{
        fs_autoclose int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK);
        struct stat st;

        if (fd < 0) {
                if (errno == ELOOP)
                        return fail(ret_why, "is a symbolic link", -ELOOP);
                if (errno == ENOENT)
                        return fail(ret_why, "does not exist", -ENOENT);
                return fail(ret_why, "cannot be opened", -errno);
        }
        if (fstat(fd, &st) < 0)
                return fail(ret_why, "cannot be inspected", -errno);
        if (!S_ISREG(st.st_mode))
                return fail(ret_why, "is not a regular file", -EINVAL);
        if (st.st_uid != geteuid())
                return fail(ret_why, "is not owned by the effective uid", -EPERM);
        if (st.st_mode & 077)
                return fail(ret_why, "is accessible by group or others (chmod 600 it)", -EPERM);
        return read_key(fd, -1, ret, ret_why);
}
