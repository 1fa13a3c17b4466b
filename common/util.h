/* Small helpers shared by every module: scoped cleanup, fd ownership, clocks. */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#define FS_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Closes fd if valid, keeps errno, returns the empty value: fd = fs_close(fd); */
static inline int fs_close(int fd)
{
        if (fd >= 0) {
                int saved = errno;

                /* never retried on EINTR: the fd is gone either way. errno is written only
                 * when close changed it (a zygote's every write after a fork costs a fault). */
                if (close(fd) < 0)
                        errno = saved;
        }
        return -1;
}

static inline void fs_closep(int *fd)
{
        *fd = fs_close(*fd);
}

static inline void fs_freep(void *p)
{
        free(*(void **)p);
}

#define fs_autoclose __attribute__((cleanup(fs_closep)))
#define fs_autofree __attribute__((cleanup(fs_freep)))

/* The one place ownership of an fd leaves a scope. */
static inline int fs_take_fd(int *fd)
{
        int r = *fd;
        *fd = -1;
        return r;
}

#define fs_take_ptr(p)                                                                             \
        ({                                                                                         \
                __typeof__(*(p)) _fs_t = *(p);                                                     \
                *(p) = NULL;                                                                       \
                _fs_t;                                                                             \
        })

/* Closes every fd of an array and marks it empty. */
void fs_close_many(int *fds, size_t n);

/* CLOCK_MONOTONIC in milliseconds and microseconds. */
int64_t fs_now_ms(void);
/*
 * Ends the child behind pidfd, ours to reap, and closes the pidfd: waits for its exit for at
 * most grace_ms (0: none; -1: for as long as it takes, no signal), then SIGKILL, then reaps
 * it. Returns -1, for pidfd = fs_pidfd_end(pidfd, ...). A pidfd of -1 is a no-op.
 */
int fs_pidfd_end(int pidfd, int grace_ms);
int64_t fs_now_us(void);

/* Parses a decimal integer in [min, max]; the whole string must be the number. */
int fs_parse_long(const char *s, long min, long max, long *ret);

/* Entries of a directory other than "." and ".."; a negative errno if it cannot be read.
 * For /proc/self/fd the count includes the fd this call itself opens. */
int fs_count_dir(const char *path);

/* Writes all of buf to fd, retrying on EINTR and short writes. */
int fs_write_all(int fd, const void *buf, size_t len);

/* snprintf that reports truncation: 0, or -ENAMETOOLONG when buf was too small. */
int fs_format(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* The rest of s after prefix, or NULL when s does not start with it. */
const char *fs_startswith(const char *s, const char *prefix);
bool fs_endswith(const char *s, const char *suffix);

/* A byte count: digits with an optional K, M, G or T (powers of 1024). 0 or -EINVAL/-ERANGE. */
int fs_parse_size(const char *s, uint64_t *ret);

/* A GPU UUID as nvidia-smi shows it: "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" (40 + NUL). */
#define FS_GPU_UUID_STR 41
void fs_gpu_uuid_str(const uint8_t uuid[16], char out[FS_GPU_UUID_STR]);
/* The reverse: 0, or -EINVAL. */
int fs_gpu_uuid_parse(const char *s, uint8_t uuid[16]);
