#include "common/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common/util.h"

static const char *log_ident = "forkserver";
static enum fs_log_level log_max = FS_LOG_INFO;
static int64_t window_start;
static unsigned window_count, suppressed;

static const char *const level_names[] = {"error", "warning", "info", "debug"};
/* syslog priorities, which journald reads from a "<N>" line prefix */
static const char *const level_prefix[] = {"<3>", "<4>", "<6>", "<7>"};

void fs_log_init(const char *ident, enum fs_log_level max)
{
        log_ident = ident;
        log_max = max;
}

int fs_log_level_parse(const char *s, enum fs_log_level *ret)
{
        for (size_t i = 0; i < FS_ARRAY_SIZE(level_names); i++)
                if (strcasecmp(s, level_names[i]) == 0) {
                        *ret = (enum fs_log_level)i;
                        return 0;
                }
        return -EINVAL;
}

bool fs_log_enabled(enum fs_log_level level)
{
        return level <= log_max;
}

/* Where a write of k characters (an snprintf result) leaves a line of room cap. */
static size_t advance(size_t n, int k, size_t cap)
{
        if (k < 0)
                return n;
        return (size_t)k >= cap - n ? cap - 1 : n + (size_t)k;
}

static __attribute__((format(printf, 3, 0))) void vlog(enum fs_log_level level, int err,
                                                       const char *fmt, va_list ap)
{
        char line[1024];
        const size_t cap = sizeof(line) - 1; /* keeps room for the newline */
        size_t n = 0;

        n = advance(n,
                    snprintf(line, cap,
                             "%s%s[%d]: %s: ", isatty(STDERR_FILENO) ? "" : level_prefix[level],
                             log_ident, (int)getpid(), level_names[level]),
                    cap);
        n = advance(n, vsnprintf(line + n, cap - n, fmt, ap), cap);
        if (err)
                n = advance(n, snprintf(line + n, cap - n, ": %s", strerror(-err)), cap);
        line[n++] = '\n';
        (void)fs_write_all(STDERR_FILENO, line, n); /* one write: one line */
}

void fs_log(enum fs_log_level level, const char *fmt, ...)
{
        va_list ap;

        if (!fs_log_enabled(level))
                return;
        va_start(ap, fmt);
        vlog(level, 0, fmt, ap);
        va_end(ap);
}

int fs_log_errno(enum fs_log_level level, int err, const char *fmt, ...)
{
        va_list ap;

        if (fs_log_enabled(level)) {
                va_start(ap, fmt);
                vlog(level, err, fmt, ap);
                va_end(ap);
        }
        return err;
}

int64_t fs_log_limited_flush(int64_t now)
{
        if (!suppressed)
                return -1;
        if (now - window_start < 1000)
                return window_start + 1000;
        fs_log(FS_LOG_WARNING, "%u similar messages suppressed", suppressed);
        window_start = now;
        window_count = 0;
        suppressed = 0;
        return -1;
}

void fs_log_limited(enum fs_log_level level, const char *fmt, ...)
{
        int64_t now = fs_now_ms();
        va_list ap;

        if (!fs_log_enabled(level))
                return;
        if (now - window_start >= 1000) {
                if (suppressed)
                        fs_log(FS_LOG_WARNING, "%u similar messages suppressed", suppressed);
                window_start = now;
                window_count = 0;
                suppressed = 0;
        }
        if (window_count++ >= FS_LOG_BURST) {
                suppressed++;
                return;
        }
        va_start(ap, fmt);
        vlog(level, 0, fmt, ap);
        va_end(ap);
}
