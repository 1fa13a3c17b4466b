#include "forkserver/front/privs.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/util.h"

#define WANT FSD_CAPS_SWITCH
#define MAX_USER_GROUPS 256

/* The highest capability this kernel knows (read once, here, never in a child). */
static int cap_last_cap(void)
{
        char buf[16] = "";
        long v;
        int fd = open("/proc/sys/kernel/cap_last_cap", O_RDONLY | O_CLOEXEC);
        ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;

        if (fd >= 0)
                close(fd);
        if (n > 0 && buf[n - 1] == '\n')
                buf[n - 1] = '\0';
        if (n <= 0 || fs_parse_long(buf, 0, 63, &v) < 0)
                return CAP_LAST_CAP;
        return (int)v;
}

/* Empties the bounding set: nothing started from here can gain a capability at exec, even
 * a root worker. Needs CAP_SETPCAP. */
static int drop_bounding(void)
{
        int last = cap_last_cap();

        for (int c = 0; c <= last; c++)
                if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0 && errno != EINVAL)
                        return -errno;
        return 0;
}

struct user {
        uid_t uid;
        gid_t gid;
        gid_t groups[MAX_USER_GROUPS];
        int ngroups;
};

/* NAME from the user database, or a number (then gid = uid and no other group). */
static int resolve_user(const char *name, struct user *u, char *err, size_t errlen)
{
        struct passwd *pw = getpwnam(name);
        long v;

        if (!pw && fs_parse_long(name, 0, UINT32_MAX - 1, &v) == 0)
                pw = getpwuid((uid_t)v);
        if (!pw) {
                if (fs_parse_long(name, 1, UINT32_MAX - 1, &v) < 0) {
                        snprintf(err, errlen, "--user %s: no such user", name);
                        return -ENOENT;
                }
                *u = (struct user){.uid = (uid_t)v, .gid = (gid_t)v, .ngroups = 1};
                u->groups[0] = u->gid;
                return 0;
        }
        u->uid = pw->pw_uid;
        u->gid = pw->pw_gid;
        u->ngroups = MAX_USER_GROUPS;
        if (getgrouplist(pw->pw_name, pw->pw_gid, u->groups, &u->ngroups) < 0) {
                snprintf(err, errlen, "--user %s: more than %d groups", name, MAX_USER_GROUPS);
                return -E2BIG;
        }
        return 0;
}

/* Root's session directory is not the user's: the default socket path must not point
 * there after the drop. */
static void forget_runtime_dir(uid_t uid)
{
        const char *rt = getenv("XDG_RUNTIME_DIR");
        struct stat st;

        if (rt && (stat(rt, &st) < 0 || st.st_uid != uid))
                (void)unsetenv("XDG_RUNTIME_DIR");
}

/* From root to u, keeping keep (permitted and effective). Single-threaded: glibc's
 * set*id wrappers are fine here. */
static int become(const struct user *u, uint64_t keep)
{
        int r = 0;

        if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0)
                return -errno;
        if (setgroups((size_t)u->ngroups, u->groups) < 0 || setresgid(u->gid, u->gid, u->gid) < 0 ||
            setresuid(u->uid, u->uid, u->uid) < 0)
                r = -errno;
        (void)prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0);
        /* the uid change cleared the effective set: back to what we keep, from permitted */
        return r < 0 ? r : fsd_caps_limit(keep);
}

int fsd_privs_init(const struct fsd_options *o, bool *ret_switch, char *err, size_t errlen)
{
        static struct user u;
        bool root = geteuid() == 0, to_user = false;
        uint64_t eff, prm, inh;
        int r;

        if (o->user) {
                if ((r = resolve_user(o->user, &u, err, errlen)) < 0)
                        return r;
                if (!root && u.uid != geteuid()) {
                        snprintf(err, errlen,
                                 "--user %s: only root can switch to another user "
                                 "(this is uid %u)",
                                 o->user, (unsigned)geteuid());
                        return -EPERM;
                }
                to_user = root && u.uid != 0;
        }
        if (root && !to_user && !o->allow_root_workers) {
                snprintf(err, errlen,
                         "refusing to run as root without a plan for the workers: "
                         "give --user NAME (the daemon becomes NAME and runs each worker as its "
                         "client) or --allow-root-workers (it stays root; root clients get root "
                         "workers, without capabilities)");
                return -EPERM;
        }
        if ((r = fsd_caps_get(&eff, &prm, &inh)) < 0) {
                snprintf(err, errlen, "capget: %s", strerror(-r));
                return r;
        }
        if (prm & FSD_CAP_BIT(CAP_SETPCAP)) {
                if ((r = fsd_caps_limit(prm)) < 0 || (r = drop_bounding()) < 0) {
                        snprintf(err, errlen, "emptying the capability bounding set: %s",
                                 strerror(-r));
                        return r;
                }
        } else if (prm) {
                fs_log(FS_LOG_INFO,
                       "no CAP_SETPCAP: the capability bounding set stays as it "
                       "is (no_new_privs still keeps workers from gaining any at exec)");
        }
        if (to_user && (r = become(&u, prm & WANT)) < 0) {
                snprintf(err, errlen, "--user %s: %s", o->user, strerror(-r));
                return r;
        }
        if (to_user)
                forget_runtime_dir(u.uid);
        if ((r = fsd_caps_get(&eff, &prm, &inh)) < 0) {
                snprintf(err, errlen, "capget: %s", strerror(-r));
                return r;
        }
        *ret_switch = (prm & WANT) == WANT;
        if (!*ret_switch && (prm & WANT))
                fs_log(FS_LOG_WARNING, "only one of CAP_SETUID and CAP_SETGID: workers run as "
                                       "the daemon's uid");
        /* the zygotes inherit these two and nothing else; with no plan, nothing at all */
        if ((prm | inh) && (r = fsd_caps_limit(*ret_switch ? WANT : 0)) < 0) {
                snprintf(err, errlen, "capset: %s", strerror(-r));
                return r;
        }
        return 0;
}

int fsd_privs_front_done(void)
{
        uint64_t eff, prm, inh;
        int r = fsd_caps_get(&eff, &prm, &inh);

        return r < 0 ? r : (eff | prm | inh) ? fsd_caps_limit(0) : 0;
}
