#include "forkserver/sandbox/sandbox.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <seccomp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"
#include "forkserver/sandbox/profile.h"

/* Denied by "default": each is named with its reason in docs/SECURITY.md. */
static const char *const default_denied[] = {
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "pidfd_getfd",
    "kcmp",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "move_mount",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "open_tree",
    "mount_setattr",
    "unshare",
    "setns",
    "keyctl",
    "add_key",
    "request_key",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "reboot",
    "swapon",
    "swapoff",
    "clock_settime",
    "clock_adjtime",
    "settimeofday",
    "adjtimex",
    "open_by_handle_at",
    "name_to_handle_at",
    "iopl",
    "ioperm",
    "syslog",
    "acct",
    "quotactl",
    "vhangup",
    "lookup_dcookie",
    "uselib",
    "nfsservctl",
};

static const char *const strict_allowed[] = {
    "read",
    "write",
    "readv",
    "writev",
    "pread64",
    "pwrite64",
    "preadv",
    "pwritev",
    "preadv2",
    "pwritev2",
    "close",
    "lseek",
    "fstat",
    "newfstatat",
    "statx",
    "fstatfs",
    "getdents64",
    "readlink",
    "readlinkat",
    "getcwd",
    "access",
    "faccessat",
    "faccessat2",
    "mmap",
    "munmap",
    "mprotect",
    "mremap",
    "madvise",
    "brk",
    "futex",
    "set_robust_list",
    "get_robust_list",
    "rseq",
    "set_tid_address",
    "clock_gettime",
    "clock_getres",
    "clock_nanosleep",
    "nanosleep",
    "gettimeofday",
    "time",
    "getpid",
    "gettid",
    "getppid",
    "getuid",
    "geteuid",
    "getgid",
    "getegid",
    "getresuid",
    "getresgid",
    "exit",
    "exit_group",
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "sigaltstack",
    "rt_sigtimedwait",
    "rt_sigsuspend",
    "restart_syscall",
    "tgkill",
    "sendmsg",
    "recvmsg",
    "sendto",
    "recvfrom",
    "shutdown",
    "getsockname",
    "getpeername",
    "getsockopt",
    "poll",
    "ppoll",
    "epoll_create1",
    "epoll_ctl",
    "epoll_wait",
    "epoll_pwait",
    "select",
    "pselect6",
    "dup",
    "dup2",
    "dup3",
    "fcntl",
    "pipe2",
    "eventfd2",
    "getrandom",
    "sched_yield",
    "sched_getaffinity",
    "prlimit64",
    "getrlimit",
    "arch_prctl",
    "uname",
    "sysinfo",
    "membarrier",
    "execve",
};

static int failf(char *err, size_t errlen, int r, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int failf(char *err, size_t errlen, int r, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
        return r;
}

static uint32_t scmp_action(struct fsd_action a)
{
        switch (a.kind) {
        case FSD_ACT_ALLOW:
                return SCMP_ACT_ALLOW;
        case FSD_ACT_ERRNO:
                return SCMP_ACT_ERRNO(a.err);
        default:
                return SCMP_ACT_KILL_PROCESS;
        }
}

static int export_prog(scmp_filter_ctx ctx, struct sock_fprog *out)
{
        fs_autoclose int fd = memfd_create("seccomp-bpf", MFD_CLOEXEC);
        struct sock_filter *f;
        off_t size;
        int r;

        if (fd < 0)
                return -errno;
        if ((r = seccomp_export_bpf(ctx, fd)) < 0)
                return r;
        if ((size = lseek(fd, 0, SEEK_END)) < 0)
                return -errno;
        if (size == 0 || size % (off_t)sizeof(*f) != 0 || size / (off_t)sizeof(*f) > 65535)
                return -EINVAL;
        if (!(f = malloc((size_t)size)))
                return -ENOMEM;
        if (pread(fd, f, (size_t)size, 0) != size) {
                free(f);
                return -EIO;
        }
        out->len = (unsigned short)(size / (off_t)sizeof(*f));
        out->filter = f;
        return 0;
}

static scmp_filter_ctx new_ctx(uint32_t dflt)
{
        scmp_filter_ctx ctx = seccomp_init(dflt);

        /* We set no_new_privs ourselves; foreign-arch syscalls kill the whole process. */
        if (ctx && (seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0) < 0 ||
                    seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS) < 0)) {
                seccomp_release(ctx);
                return NULL;
        }
        return ctx;
}

static int add_names(scmp_filter_ctx ctx, uint32_t action, const char *const *names, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                int nr = seccomp_syscall_resolve_name(names[i]);
                int r;

                if (nr == __NR_SCMP_ERROR)
                        continue; /* not on this architecture */
                if ((r = seccomp_rule_add(ctx, action, nr, 0)) < 0)
                        return r;
        }
        return 0;
}

/*
 * socket(2): AF_UNIX, AF_INET and AF_INET6 only; the rest fail with EAFNOSUPPORT (AF_VSOCK
 * reaches a virtual machine's host, AF_ALG the kernel's crypto, AF_NETLINK the kernel's
 * configuration, AF_PACKET raw frames: docs/SECURITY.md). The family is an int that the kernel
 * truncates: a value with any high bit set is at least 11 and refused, never taken for 1.
 * allow: SCMP_ACT_ALLOW to add the three as allowed (a filter whose default is not allow).
 */
static int socket_families(scmp_filter_ctx ctx, bool allow)
{
        const uint32_t no = SCMP_ACT_ERRNO(EAFNOSUPPORT);
        static const uint64_t ok[] = {AF_UNIX, AF_INET, AF_INET6};
        int r;

        for (uint64_t af = 0; af < AF_INET6; af++)
                if (af != AF_UNIX && af != AF_INET &&
                    (r = seccomp_rule_add(ctx, no, SCMP_SYS(socket), 1,
                                          SCMP_A0(SCMP_CMP_EQ, af, 0))) < 0)
                        return r;
        if ((r = seccomp_rule_add(ctx, no, SCMP_SYS(socket), 1,
                                  SCMP_A0(SCMP_CMP_GT, (uint64_t)AF_INET6, 0))) < 0)
                return r;
        for (size_t i = 0; allow && i < FS_ARRAY_SIZE(ok); i++)
                if ((r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(socket), 1,
                                          SCMP_A0(SCMP_CMP_EQ, ok[i], 0))) < 0)
                        return r;
        return 0;
}

static int build_default(scmp_filter_ctx ctx, uint32_t deny)
{
        static const uint64_t ns_flags[] = {CLONE_NEWNS,    CLONE_NEWUTS, CLONE_NEWIPC,
                                            CLONE_NEWUSER,  CLONE_NEWPID, CLONE_NEWNET,
                                            CLONE_NEWCGROUP};
        int r;

        if ((r = add_names(ctx, deny, default_denied, FS_ARRAY_SIZE(default_denied))) < 0 ||
            (r = socket_families(ctx, false)) < 0)
                return r;
        /* Only the default execution domain (0) and the query (0xffffffff). A rule may compare
         * an argument once, so "neither" is spelled bit by bit: with bit 31 clear, any other
         * bit set is denied; with bit 31 set, any other bit clear is denied. */
        for (unsigned b = 0; b < 31; b++) {
                const uint64_t hi = 0x80000000u, bit = 1u << b;

                if ((r = seccomp_rule_add(ctx, deny, SCMP_SYS(personality), 1,
                                          SCMP_A0(SCMP_CMP_MASKED_EQ, hi | bit, bit))) < 0 ||
                    (r = seccomp_rule_add(ctx, deny, SCMP_SYS(personality), 1,
                                          SCMP_A0(SCMP_CMP_MASKED_EQ, hi | bit, hi))) < 0)
                        return r;
        }
        /* Terminal input injection; the command is 32 bits, so high bits cannot hide it. */
        if ((r = seccomp_rule_add(ctx, deny, SCMP_SYS(ioctl), 1,
                                  SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, TIOCSTI))) < 0 ||
            (r = seccomp_rule_add(ctx, deny, SCMP_SYS(ioctl), 1,
                                  SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, TIOCLINUX))) < 0)
                return r;
        /* New namespaces through clone's flags; clone3 passes them in memory a filter cannot
         * read, so it answers ENOSYS and libc falls back to clone. */
        for (size_t i = 0; i < FS_ARRAY_SIZE(ns_flags); i++)
                if ((r = seccomp_rule_add(ctx, deny, SCMP_SYS(clone), 1,
                                          SCMP_A0(SCMP_CMP_MASKED_EQ, ns_flags[i], ns_flags[i]))) <
                    0)
                        return r;
        return seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
}

static int build_strict(scmp_filter_ctx ctx)
{
        static const unsigned long ioctls[] = {TCGETS, TIOCGWINSZ, FIONREAD, FIONBIO};
        const uint64_t write_bits = O_ACCMODE | O_CREAT | O_TRUNC | O_APPEND;
        int r;

        if ((r = add_names(ctx, SCMP_ACT_ALLOW, strict_allowed, FS_ARRAY_SIZE(strict_allowed))) <
                0 ||
            (r = socket_families(ctx, true)) < 0)
                return r;
        /* Threads, not processes. */
        if ((r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1,
                                  SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD))) < 0 ||
            (r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0)) < 0)
                return r;
        /* Read-only opens: the dynamic loader needs them before main(). */
        if ((r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(openat), 1,
                                  SCMP_A2(SCMP_CMP_MASKED_EQ, write_bits, 0))) < 0 ||
            (r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(open), 1,
                                  SCMP_A1(SCMP_CMP_MASKED_EQ, write_bits, 0))) < 0)
                return r;
        for (size_t i = 0; i < FS_ARRAY_SIZE(ioctls); i++)
                if ((r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1,
                                          SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, ioctls[i]))) < 0)
                        return r;
        return 0;
}

static int build_src(scmp_filter_ctx ctx, const struct fsd_profile_src *src)
{
        for (size_t i = 0; i < src->nrules; i++) {
                /* A rule equal to the default is redundant, and libseccomp refuses it. */
                if (src->rules[i].act.kind == src->dflt.kind &&
                    src->rules[i].act.err == src->dflt.err)
                        continue;
                int r = seccomp_rule_add(ctx, scmp_action(src->rules[i].act), src->rules[i].nr, 0);

                if (r < 0)
                        return r;
        }
        return 0;
}

static struct fsd_profile *add_profile(struct fsd_sandbox *sb, const char *name, size_t len)
{
        struct fsd_profile *p;

        if (sb->n == FSD_MAX_PROFILES)
                return NULL;
        p = &sb->profiles[sb->n++];
        memset(p, 0, sizeof(*p));
        memcpy(p->name, name, len);
        return p;
}

enum kind {
        KIND_NONE,
        KIND_DEFAULT,      /* denials fail with EPERM */
        KIND_DEFAULT_KILL, /* the same denials kill */
        KIND_STRICT,
        KIND_FILE, /* from a --profile-dir file */
};

static const struct {
        const char *name;
        enum kind kind;
        bool zygote_safe; /* everything a zygote does (recvmsg, clone without namespaces,
                             pipes, exec set-up, seccomp) is allowed */
} builtins[] = {
    {"none", KIND_NONE, false},
    {"default", KIND_DEFAULT, true},
    {"default-kill", KIND_DEFAULT_KILL, true},
    {"strict", KIND_STRICT, false},
};

static int compile(struct fsd_profile *p, enum kind kind, const struct fsd_profile_src *src)
{
        scmp_filter_ctx ctx;
        int r;

        if (kind == KIND_NONE)
                return 0;
        ctx = new_ctx(kind == KIND_STRICT ? SCMP_ACT_KILL_PROCESS
                      : kind == KIND_FILE ? scmp_action(src->dflt)
                                          : SCMP_ACT_ALLOW);
        if (!ctx)
                return -ENOMEM;
        switch (kind) {
        case KIND_DEFAULT:
                r = build_default(ctx, SCMP_ACT_ERRNO(EPERM));
                break;
        case KIND_DEFAULT_KILL:
                r = build_default(ctx, SCMP_ACT_KILL_PROCESS);
                break;
        case KIND_STRICT:
                r = build_strict(ctx);
                break;
        default:
                r = build_src(ctx, src);
                break;
        }
        if (r >= 0)
                r = export_prog(ctx, &p->prog);
        seccomp_release(ctx);
        return r;
}

static int load_dir(struct fsd_sandbox *sb, const char *dir, char *err, size_t errlen)
{
        static struct fsd_profile_src src;
        static char text[FSD_PROFILE_MAX_BYTES + 1];
        DIR *d = opendir(dir);
        int r = 0;

        if (!d)
                return failf(err, errlen, -errno, "--profile-dir %s: %s", dir, strerror(errno));
        for (struct dirent *e; (e = readdir(d));) {
                size_t nl = strlen(e->d_name);
                char path[4096];
                struct stat st;
                ssize_t n;
                int fd;

                if (nl < 9 || strcmp(e->d_name + nl - 8, ".profile") != 0)
                        continue;
                nl -= 8;
                if (!fsd_profile_name_ok(e->d_name, nl)) {
                        r = failf(err, errlen, -EINVAL,
                                  "%s/%s: profile names are 1-32 of "
                                  "a-z 0-9 _ -",
                                  dir, e->d_name);
                        break;
                }
                e->d_name[nl] = '\0';
                if (fsd_sandbox_find(sb, e->d_name)) {
                        r = failf(err, errlen, -EEXIST,
                                  "%s/%s.profile: profile '%s' exists "
                                  "already",
                                  dir, e->d_name, e->d_name);
                        break;
                }
                if (fs_format(path, sizeof(path), "%s/%s.profile", dir, e->d_name) < 0) {
                        r = failf(err, errlen, -ENAMETOOLONG, "%s: path too long", dir);
                        break;
                }
                fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
                if (fd < 0 || fstat(fd, &st) < 0) {
                        r = failf(err, errlen, -errno, "%s: %s", path, strerror(errno));
                        fs_close(fd);
                        break;
                }
                /* A profile decides what workers may do: only we or root may write it. */
                if (!S_ISREG(st.st_mode) || (st.st_uid != geteuid() && st.st_uid != 0) ||
                    (st.st_mode & 022)) {
                        close(fd);
                        r = failf(err, errlen, -EPERM,
                                  "%s: must be a regular file owned by us "
                                  "or root, not writable by group or others",
                                  path);
                        break;
                }
                n = read(fd, text, sizeof(text));
                close(fd);
                if (n < 0) {
                        r = failf(err, errlen, -errno, "%s: %s", path, strerror(errno));
                        break;
                }
                if ((r = fsd_profile_parse(text, (size_t)n, path, &src, err, errlen)) < 0)
                        break;
                struct fsd_profile *p = add_profile(sb, e->d_name, nl);

                if (!p) {
                        r = failf(err, errlen, -E2BIG, "%s: more than %d profiles", dir,
                                  FSD_MAX_PROFILES);
                        break;
                }
                if ((r = compile(p, KIND_FILE, &src)) < 0) {
                        r = failf(err, errlen, r, "%s: cannot compile: %s", path, strerror(-r));
                        break;
                }
                if (src.nfs) {
                        if (!(p->fs = calloc(src.nfs, sizeof(*p->fs)))) {
                                r = failf(err, errlen, -ENOMEM, "%s: out of memory", path);
                                break;
                        }
                        memcpy(p->fs, src.fs, src.nfs * sizeof(*p->fs));
                        p->nfs = src.nfs;
                }
        }
        closedir(d);
        return r;
}

const struct fsd_profile *fsd_sandbox_find(const struct fsd_sandbox *sb, const char *name)
{
        for (size_t i = 0; i < sb->n; i++)
                if (strcmp(sb->profiles[i].name, name) == 0)
                        return &sb->profiles[i];
        return NULL;
}

int fsd_sandbox_init(struct fsd_sandbox *sb, const char *profile_dir, const char *allow,
                     const char *min, char *err, size_t errlen)
{
        char list[1024];
        int r;

        memset(sb, 0, sizeof(*sb));
        sb->landlock_abi = fsd_landlock_abi();
        for (size_t i = 0; i < FS_ARRAY_SIZE(builtins); i++) {
                struct fsd_profile *p = add_profile(sb, builtins[i].name, strlen(builtins[i].name));

                if ((r = compile(p, builtins[i].kind, NULL)) < 0)
                        return failf(err, errlen, r, "cannot compile profile '%s': %s",
                                     builtins[i].name, strerror(-r));
                p->zygote_safe = builtins[i].zygote_safe;
        }
        if (profile_dir && (r = load_dir(sb, profile_dir, err, errlen)) < 0)
                return r;
        if (fs_format(list, sizeof(list), "%s", allow ? allow : "default,strict") < 0)
                return failf(err, errlen, -EINVAL, "--allow-profile: list too long");
        for (char *save, *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                struct fsd_profile *p = (struct fsd_profile *)fsd_sandbox_find(sb, t);

                if (!p)
                        return failf(err, errlen, -ENOENT,
                                     "--allow-profile: unknown profile "
                                     "'%s'",
                                     t);
                p->allowed = true;
        }
        sb->dflt = fsd_sandbox_find(sb, "default");
        if (min) {
                if (!(sb->min = fsd_sandbox_find(sb, min)))
                        return failf(err, errlen, -ENOENT, "--min-profile: unknown profile '%s'",
                                     min);
                if (sb->min->prog.len == 0)
                        sb->min = NULL;
        }
        return 0;
}

void fsd_sandbox_free(struct fsd_sandbox *sb)
{
        for (size_t i = 0; i < sb->n; i++) {
                free(sb->profiles[i].prog.filter);
                free(sb->profiles[i].fs);
        }
        memset(sb, 0, sizeof(*sb));
}

int fsd_sandbox_deny(struct fsd_sandbox *sb, const char *path)
{
        if (sb->ndeny == FSD_MAX_DENY)
                return -E2BIG;
        if (strlen(path) >= sizeof(sb->deny[0].path))
                return -ENAMETOOLONG;
        sb->deny[sb->ndeny] = (struct fsd_fs_rule){.access = FSD_FS_DENY};
        memcpy(sb->deny[sb->ndeny++].path, path, strlen(path) + 1);
        return 0;
}
