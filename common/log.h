/* Daemon logging: one line per event on stderr, levels, a rate limit for peer-caused lines. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

enum fs_log_level {
        FS_LOG_ERROR = 0,
        FS_LOG_WARNING = 1,
        FS_LOG_INFO = 2,
        FS_LOG_DEBUG = 3,
};

void fs_log_init(const char *ident, enum fs_log_level max);
int fs_log_level_parse(const char *s, enum fs_log_level *ret);
bool fs_log_enabled(enum fs_log_level level);

void fs_log(enum fs_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Logs with ": strerror(-err)" appended; returns err so callers can `return fs_log_errno(...)`. */
int fs_log_errno(enum fs_log_level level, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Like fs_log, but at most FS_LOG_BURST lines a second; the rest are counted and summarized. */
void fs_log_limited(enum fs_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define FS_LOG_BURST 20
/* Logs the count of suppressed lines once their second is over (now = INT64_MAX: at once).
 * Returns when to call again, or -1 when nothing waits. */
int64_t fs_log_limited_flush(int64_t now);
