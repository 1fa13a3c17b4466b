/* The code that runs between clone and exec: async-signal-safe calls and raw syscalls only. */
#pragma once

#include <errno.h>
#include <linux/filter.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#include "client/forkserver.h"
#include "common/proto.h"

/*
 * Raw system calls (fsd_sys(nr, args...)), for the child and an idle child: each page of
 * code a new child runs for the first time is a page fault of its own (a fork copies no page-table
 * entries of mappings never written, such as libc's code), and where page faults are dear, as in
 * many virtual machines, the few that libc's wrappers cost (syscall(), getppid, sigprocmask, ...:
 * each on a page of its own) weighed more than all the child's system calls. Each returns the
 * result or -errno; nothing here touches errno (in the thread's TLS page, one more fault).
 * Elsewhere, syscall(2).
 */
#if defined(__x86_64__)
static inline long fsd_sys6(long n, long a, long b, long c, long d, long e, long f)
{
        register long r10 __asm__("r10") = d;
        register long r8 __asm__("r8") = e;
        register long r9 __asm__("r9") = f;
        long ret;

        __asm__ volatile("syscall"
                         : "=a"(ret)
                         : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                         : "rcx", "r11", "memory");
        return ret;
}
#else
static inline long fsd_sys6(long n, long a, long b, long c, long d, long e, long f)
{
        long r = syscall(n, a, b, c, d, e, f);

        return r < 0 ? -errno : r;
}
#endif
#define FSD_SYS_ARGS(n, a, b, c, d, e, f, ...)                                                     \
        fsd_sys6((n), (long)(a), (long)(b), (long)(c), (long)(d), (long)(e), (long)(f))
#define fsd_sys(...) FSD_SYS_ARGS(__VA_ARGS__, 0, 0, 0, 0, 0, 0)

/* What the child does: the request as parsed (req: its options, read straight from it, so that
 * a new spawn option is parsed in common/proto.c and applied in child.c, nothing between),
 * and what the zygote made of it. */
struct fsd_child_plan {
        const struct fs_spawn *req;
        const char *path;
        char *const *argv;
        char *const *envp;
        const int *fds;          /* received fds ... */
        const uint32_t *targets; /* ... and the numbers they get in the worker */
        size_t nfds;
        int devnull;         /* for stdio slots the request left empty ... */
        unsigned null_stdio; /* ... but for those of fds 0-2 (bits) that already are */
        int errpipe;         /* write end: {step, errno} on failure; EOF means exec worked */
        pid_t front;         /* the parent a worker must have */
        /* first of all: the client's credentials, then no capability (creds_child) */
        bool set_creds; /* become uid, gid and groups */
        uid_t uid;
        gid_t gid;
        size_t ngroups;
        const gid_t *groups;
        bool drop_caps;     /* the zygote holds capabilities; the worker keeps none */
        bool pdeathsig_set; /* forked ahead: the parent-death signal is set already */
        int umask;          /* -1: keep the parent's */
        int landlock_fd;    /* ruleset for a Landlock domain of the worker's own; -1: none */
        const struct sock_fprog *filters[2]; /* installed in order; both apply */
        size_t nfilters;
        /* fork mode */
        int (*entry)(const struct forkserver_worker *w);
        bool channel; /* fd 3 is the channel */
        size_t nreq;  /* fds[0..nreq) are the request's own; GPU buffers and channel follow */
        size_t ngpu;
        struct forkserver_gpu_buf gpu[FS_MAX_GPU]; /* .fd: the number in the worker */
};

struct fsd_child_error {
        int32_t step; /* enum fs_spawn_step */
        int32_t err;  /* positive errno */
};

/* clone(2) as glibc's clone() makes it, fn(arg) run on the stack ending at stack_top (16-byte
 * aligned), with CLONE_PIDFD's fd in *pidfd; the pid, or -errno. Where the assembly is ours
 * (x86-64) it writes nothing on the child's stack and runs no libc code in the child. */
pid_t fsd_clone(int (*fn)(void *), void *stack_top, unsigned long flags, void *arg, int *pidfd);

/* A child's set-up failed at e->step with -r: tells the zygote through the error pipe, exits
 * 127. */
__attribute__((noreturn)) void fsd_child_fail(int errfd, struct fsd_child_error *e, long r);

/* Once, in the zygote, before any child: what the children look up ahead. */
void fsd_child_init(void);

/* clone() entry under CLONE_VM|CLONE_VFORK: writes only its own stack; never returns. */
int fsd_child_exec(void *plan);

/* clone() entry for fork mode (a copy of the zygote, no CLONE_VM): sets up like exec mode,
 * closes every fd not asked for, reports success by closing the error pipe, then calls the
 * entry, flushes stdio and _exits with its value (atexit handlers are the zygote's). The
 * zygote is single-threaded, so the copy may use libc freely once set up. */
int fsd_child_entry(void *plan);
