#include "forkserver/sandbox/profile.h"

#include <errno.h>
#include <seccomp.h>
#include <stdio.h>
#include <string.h>

#include "common/util.h"

#define MAX_LINE 1024
#define MAX_TOKENS 64

static const struct {
        const char *name;
        int value;
} errno_names[] = {
    {"EPERM", EPERM},   {"ENOENT", ENOENT}, {"EIO", EIO},         {"EBADF", EBADF},
    {"EAGAIN", EAGAIN}, {"ENOMEM", ENOMEM}, {"EACCES", EACCES},   {"EFAULT", EFAULT},
    {"EBUSY", EBUSY},   {"EEXIST", EEXIST}, {"EINVAL", EINVAL},   {"ENOSPC", ENOSPC},
    {"EROFS", EROFS},   {"ENOSYS", ENOSYS}, {"ENOTSUP", ENOTSUP}, {"EOPNOTSUPP", EOPNOTSUPP},
    {"ENOTTY", ENOTTY}, {"ECHILD", ECHILD},
};

int fsd_errno_parse(const char *s)
{
        long v;

        for (size_t i = 0; i < FS_ARRAY_SIZE(errno_names); i++)
                if (strcmp(s, errno_names[i].name) == 0)
                        return errno_names[i].value;
        if (fs_parse_long(s, 1, 4095, &v) == 0)
                return (int)v;
        return -EINVAL;
}

int fsd_profile_name_ok(const char *name, size_t len)
{
        if (len == 0 || len > 32)
                return 0;
        for (size_t i = 0; i < len; i++)
                if (!((name[i] >= 'a' && name[i] <= 'z') || (name[i] >= '0' && name[i] <= '9') ||
                      name[i] == '_' || name[i] == '-'))
                        return 0;
        return 1;
}

static int bad(char *err, size_t errlen, const char *file, size_t line, const char *what,
               const char *token)
{
        snprintf(err, errlen, "%s:%zu: %s%s%s%s", file, line, what, token ? " '" : "",
                 token ? token : "", token ? "'" : "");
        return -EINVAL;
}

/* Splits a line at spaces and tabs, in place. */
static size_t tokenize(char *line, char **tok, size_t max, int *too_many)
{
        size_t n = 0;

        *too_many = 0;
        for (char *save, *t = strtok_r(line, " \t\r", &save); t;
             t = strtok_r(NULL, " \t\r", &save)) {
                if (n == max) {
                        *too_many = 1;
                        break;
                }
                tok[n++] = t;
        }
        return n;
}

static int parse_fs(char **tok, size_t n, const char *file, size_t lineno,
                    struct fsd_profile_src *out, char *err, size_t errlen)
{
        uint8_t access;

        if (n < 2)
                return bad(err, errlen, file, lineno, "fs needs ro, rw or deny", NULL);
        if (strcmp(tok[1], "ro") == 0)
                access = FSD_FS_RO;
        else if (strcmp(tok[1], "rw") == 0)
                access = FSD_FS_RW;
        else if (strcmp(tok[1], "deny") == 0)
                access = FSD_FS_DENY;
        else
                return bad(err, errlen, file, lineno, "unknown fs access", tok[1]);
        if (n < 3)
                return bad(err, errlen, file, lineno, "no path named", NULL);
        for (size_t i = 2; i < n; i++) {
                size_t len = strlen(tok[i]);

                if (tok[i][0] != '/')
                        return bad(err, errlen, file, lineno, "path not absolute", tok[i]);
                if (len >= FSD_FS_PATH_MAX)
                        return bad(err, errlen, file, lineno, "path longer than 511 bytes", NULL);
                for (size_t j = 0; j < out->nfs; j++)
                        if (strcmp(out->fs[j].path, tok[i]) == 0)
                                return bad(err, errlen, file, lineno, "path listed twice", tok[i]);
                if (out->nfs == FSD_MAX_FS_RULES)
                        return bad(err, errlen, file, lineno, "more than 32 paths", NULL);
                out->fs[out->nfs].access = access;
                memcpy(out->fs[out->nfs++].path, tok[i], len + 1);
        }
        return 0;
}

static int parse_line(char **tok, size_t n, const char *file, size_t lineno,
                      struct fsd_profile_src *out, int *have_default, char *err, size_t errlen)
{
        struct fsd_action act = {0};
        size_t first;

        if (strcmp(tok[0], "default") == 0) {
                if (*have_default)
                        return bad(err, errlen, file, lineno, "second default", NULL);
                if (n < 2)
                        return bad(err, errlen, file, lineno, "default needs an action", NULL);
                if (strcmp(tok[1], "allow") == 0 || strcmp(tok[1], "kill") == 0) {
                        if (n != 2)
                                return bad(err, errlen, file, lineno, "extra token", tok[2]);
                        out->dflt.kind = tok[1][0] == 'a' ? FSD_ACT_ALLOW : FSD_ACT_KILL;
                } else if (strcmp(tok[1], "errno") == 0) {
                        int e;

                        if (n != 3)
                                return bad(err, errlen, file, lineno,
                                           n < 3 ? "errno needs a name" : "extra token",
                                           n < 3 ? NULL : tok[3]);
                        if ((e = fsd_errno_parse(tok[2])) < 0)
                                return bad(err, errlen, file, lineno, "unknown errno", tok[2]);
                        out->dflt = (struct fsd_action){FSD_ACT_ERRNO, (uint16_t)e};
                } else {
                        return bad(err, errlen, file, lineno, "unknown action", tok[1]);
                }
                *have_default = 1;
                return 0;
        }
        if (strcmp(tok[0], "fs") == 0)
                return parse_fs(tok, n, file, lineno, out, err, errlen);
        if (strcmp(tok[0], "allow") == 0) {
                act.kind = FSD_ACT_ALLOW;
                first = 1;
        } else if (strcmp(tok[0], "kill") == 0) {
                act.kind = FSD_ACT_KILL;
                first = 1;
        } else if (strcmp(tok[0], "errno") == 0) {
                int e;

                if (n < 2)
                        return bad(err, errlen, file, lineno, "errno needs a name", NULL);
                if ((e = fsd_errno_parse(tok[1])) < 0)
                        return bad(err, errlen, file, lineno, "unknown errno", tok[1]);
                act = (struct fsd_action){FSD_ACT_ERRNO, (uint16_t)e};
                first = 2;
        } else {
                return bad(err, errlen, file, lineno, "unknown verb", tok[0]);
        }
        if (n <= first)
                return bad(err, errlen, file, lineno, "no syscall named", NULL);
        for (size_t i = first; i < n; i++) {
                int nr = seccomp_syscall_resolve_name(tok[i]);

                if (nr == __NR_SCMP_ERROR || nr < 0)
                        return bad(err, errlen, file, lineno, "unknown syscall", tok[i]);
                for (size_t j = 0; j < out->nrules; j++)
                        if (out->rules[j].nr == nr)
                                return bad(err, errlen, file, lineno, "syscall listed twice",
                                           tok[i]);
                if (out->nrules == FSD_MAX_RULES)
                        return bad(err, errlen, file, lineno, "too many rules", NULL);
                out->rules[out->nrules++] = (struct fsd_rule){nr, act};
        }
        return 0;
}

int fsd_profile_parse(const char *text, size_t len, const char *file, struct fsd_profile_src *out,
                      char *err, size_t errlen)
{
        char line[MAX_LINE + 2];
        char *tok[MAX_TOKENS];
        int have_default = 0, too_many, r;
        size_t lineno = 0, off = 0;

        memset(out, 0, sizeof(*out));
        if (len > FSD_PROFILE_MAX_BYTES)
                return bad(err, errlen, file, 0, "file larger than 64 KiB", NULL);
        while (off < len) {
                const char *nl = memchr(text + off, '\n', len - off);
                size_t ll = nl ? (size_t)(nl - (text + off)) : len - off;
                char *hash;
                size_t n;

                lineno++;
                if (ll > MAX_LINE)
                        return bad(err, errlen, file, lineno, "line longer than 1024 bytes", NULL);
                if (memchr(text + off, '\0', ll))
                        return bad(err, errlen, file, lineno, "NUL byte", NULL);
                memcpy(line, text + off, ll);
                line[ll] = '\0';
                off += ll + (nl ? 1 : 0);
                if ((hash = strchr(line, '#')))
                        *hash = '\0';
                n = tokenize(line, tok, MAX_TOKENS, &too_many);
                if (too_many)
                        return bad(err, errlen, file, lineno, "more than 64 tokens", NULL);
                if (n == 0)
                        continue;
                if ((r = parse_line(tok, n, file, lineno, out, &have_default, err, errlen)) < 0)
                        return r;
        }
        if (!have_default)
                return bad(err, errlen, file, lineno, "no 'default' line", NULL);
        return 0;
}
