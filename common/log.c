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

static __attribute__((format(printf, 3, 0))) void vlog(enum fs_log_level level, int err,
                                                     const char *fmt, va_list ap)
{
        char line[1024];
        int n;

        n = snprintf(line, sizeof(line), "%s%s[%d]: %s: ", isatty(STDERR_FILENO) ? "" :
                     level_prefix[level], log_ident, (int)getpid(), level_names[level]);
        if (n < 0 || (size_t)n >= sizeof(line))
                return;
        int m = vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
        if (m > 0)
                n = (size_t)(n + m) >= sizeof(line) - 1 ? (int)sizeof(line) - 2 : n + m;
        if (err)
                n += snprintf(line + n, sizeof(line) - (size_t)n - 1, ": %s", strerror(-err));
        if ((size_t)n > sizeof(line) - 2)
                n = (int)sizeof(line) - 2;
        line[n++] = '\n';
        (void)fs_write_all(STDERR_FILENO, line, (size_t)n); /* one write: one line */
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
