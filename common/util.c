#include "common/util.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/wait.h>
#include <time.h>

void fs_close_many(int *fds, size_t n)
{
        for (size_t i = 0; i < n; i++)
                fds[i] = fs_close(fds[i]);
}

int fs_pidfd_end(int pidfd, int grace_ms)
{
        struct pollfd pf = {.fd = pidfd, .events = POLLIN};
        siginfo_t si;

        if (pidfd < 0)
                return -1;
        if (grace_ms >= 0 && (grace_ms == 0 || poll(&pf, 1, grace_ms) != 1))
                (void)pidfd_send_signal(pidfd, SIGKILL, NULL, 0);
        while (waitid(P_PIDFD, (id_t)pidfd, &si, WEXITED) < 0 && errno == EINTR)
                ;
        return fs_close(pidfd);
}

int64_t fs_now_us(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t fs_now_ms(void)
{
        return fs_now_us() / 1000;
}

int fs_parse_long(const char *s, long min, long max, long *ret)
{
        char *end;
        long v;

        if (!s || !*s)
                return -EINVAL;
        errno = 0;
        v = strtol(s, &end, 10);
        if (errno == ERANGE || *end != '\0' || end == s)
                return -EINVAL;
        if (v < min || v > max)
                return -ERANGE;
        *ret = v;
        return 0;
}

int fs_write_all(int fd, const void *buf, size_t len)
{
        const char *p = buf;

        while (len > 0) {
                ssize_t n = write(fd, p, len);

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                p += n;
                len -= (size_t)n;
        }
        return 0;
}

int fs_format(char *buf, size_t size, const char *fmt, ...)
{
        va_list ap;
        int n;

        va_start(ap, fmt);
        n = vsnprintf(buf, size, fmt, ap);
        va_end(ap);
        return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

int fs_count_dir(const char *path)
{
        DIR *d = opendir(path);
        int n = 0;

        if (!d)
                return -errno;
        for (struct dirent *e; (e = readdir(d));)
                n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
        closedir(d);
        return n;
}

const char *fs_startswith(const char *s, const char *prefix)
{
        size_t n = strlen(prefix);

        return strncmp(s, prefix, n) == 0 ? s + n : NULL;
}

bool fs_endswith(const char *s, const char *suffix)
{
        size_t n = strlen(s), k = strlen(suffix);

        return n >= k && memcmp(s + n - k, suffix, k) == 0;
}

int fs_parse_size(const char *s, uint64_t *ret)
{
        static const char units[] = "KMGT";
        unsigned long long v;
        const char *u;
        char *end;

        if (!s || *s < '0' || *s > '9')
                return -EINVAL;
        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno)
                return -ERANGE;
        if (*end) {
                if (end[1] || !(u = strchr(units, end[0] & ~0x20)))
                        return -EINVAL;
                for (int shift = (int)(u - units + 1) * 10; shift > 0; shift -= 10) {
                        if (v > (~0ull >> 10))
                                return -ERANGE;
                        v <<= 10;
                }
        }
        *ret = v;
        return 0;
}

void fs_gpu_uuid_str(const uint8_t uuid[16], char out[FS_GPU_UUID_STR])
{
        static const char hex[] = "0123456789abcdef";
        char *o = out;

        memcpy(o, "GPU-", 4);
        o += 4;
        for (int i = 0; i < 16; i++) {
                if (i == 4 || i == 6 || i == 8 || i == 10)
                        *o++ = '-';
                *o++ = hex[uuid[i] >> 4];
                *o++ = hex[uuid[i] & 15];
        }
        *o = '\0';
}

int fs_gpu_uuid_parse(const char *s, uint8_t uuid[16])
{
        int n = 0;

        if (strncmp(s, "GPU-", 4) != 0)
                return -EINVAL;
        s += 4;
        for (int i = 0; i < 36; i++, s++) {
                int hi, lo;

                if (i == 8 || i == 13 || i == 18 || i == 23) {
                        if (*s != '-')
                                return -EINVAL;
                        continue;
                }
                if (!isxdigit((unsigned char)s[0]) || !isxdigit((unsigned char)s[1]))
                        return -EINVAL;
                hi = isdigit((unsigned char)s[0]) ? s[0] - '0' : (s[0] | 0x20) - 'a' + 10;
                lo = isdigit((unsigned char)s[1]) ? s[1] - '0' : (s[1] | 0x20) - 'a' + 10;
                uuid[n++] = (uint8_t)(hi << 4 | lo);
                s++, i++;
        }
        return *s == '\0' && n == 16 ? 0 : -EINVAL;
}
