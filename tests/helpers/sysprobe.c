/*
 * Tries one thing and reports by exit status: 0 the call failed with the expected errno
 * (argv[2], default EPERM), 1 it succeeded, 3 it failed with another errno, 2 usage.
 * "Work" actions (files, thread, ...) exit 0 when the work succeeded. Raw syscalls only, so
 * that a seccomp filter sees exactly the call named.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int expect = EPERM;

static int verdict(long r)
{
        if (r >= 0)
                return 1;
        return errno == expect ? 0 : 3;
}

static void *thread_main(void *arg)
{
        return arg;
}

static int work(const char *what, const char *arg)
{
        if (strcmp(what, "files") == 0) {
                char path[256], buf[8];
                int fd;

                snprintf(path, sizeof(path), "%s/probe-file", arg ? arg : "/tmp");
                fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
                if (fd < 0 || write(fd, "data", 4) != 4 || pread(fd, buf, 4, 0) != 4)
                        return 1;
                close(fd);
                return unlink(path) == 0 && memcmp(buf, "data", 4) == 0 ? 0 : 1;
        }
        if (strcmp(what, "socketpair") == 0) {
                int sv[2];
                char c;

                return socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0 &&
                               write(sv[0], "x", 1) == 1 && read(sv[1], &c, 1) == 1
                           ? 0
                           : 1;
        }
        if (strcmp(what, "thread") == 0) {
                pthread_t t;
                void *ret;

                return pthread_create(&t, NULL, thread_main, (void *)7) == 0 &&
                               pthread_join(t, &ret) == 0 && ret == (void *)7
                           ? 0
                           : 1;
        }
        if (strcmp(what, "memory") == 0) {
                size_t n = 64 << 20;
                char *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

                if (p == MAP_FAILED)
                        return 1;
                for (size_t i = 0; i < n; i += 4096)
                        p[i] = 1;
                return munmap(p, n) == 0 ? 0 : 1;
        }
        if (strcmp(what, "fork") == 0) {
                int st;
                pid_t pid = fork();

                if (pid == 0)
                        _exit(0);
                return pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st) ? 0 : 1;
        }
        if (strcmp(what, "writefd") == 0)
                return write(atoi(arg), "ok\n", 3) == 3 ? 0 : 1;
        if (strcmp(what, "getrandom") == 0) {
                char b[8];

                return getrandom(b, sizeof(b), 0) == sizeof(b) ? 0 : 1;
        }
        return -1;
}

/* Probes aimed at something: sysprobe WHAT TARGET ERRNO; -1 if WHAT is not one of them. */
static int target(const char *what, const char *t, int err)
{
        long v = strtol(t, NULL, 0);
        char path[64];
        long r;

        expect = err;
        if (strcmp(what, "mem_read") == 0 || strcmp(what, "mem_write") == 0) {
                /* another process's memory, as a debugger would: open, then read or write */
                bool wr = what[4] == 'w';
                char buf[16] = "probe";

                snprintf(path, sizeof(path), "/proc/%ld/mem", v);
                r = syscall(SYS_openat, AT_FDCWD, path, (wr ? O_RDWR : O_RDONLY) | O_CLOEXEC);
                if (r >= 0) {
                        /* the address of main in the other process too: same binary or not,
                         * reading fails with EIO where nothing is mapped, not EACCES */
                        int fd = (int)r;

                        r = wr ? pwrite(fd, buf, 1, (off_t)(uintptr_t)&expect)
                               : pread(fd, buf, sizeof(buf), (off_t)(uintptr_t)&expect);
                        if (r < 0 && errno == EIO)
                                r = 0; /* opened: access was granted */
                        close(fd);
                }
                return verdict(r);
        }
        if (strcmp(what, "signal") == 0)
                return verdict(syscall(SYS_kill, (pid_t)v, SIGCONT));
        if (strcmp(what, "open") == 0)
                return verdict(syscall(SYS_openat, AT_FDCWD, t, O_RDONLY | O_CLOEXEC));
        if (strcmp(what, "create") == 0) {
                r = syscall(SYS_openat, AT_FDCWD, t, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
                            0600);
                if (r >= 0 && write((int)r, "data", 4) != 4)
                        r = -1;
                return verdict(r);
        }
        if (strcmp(what, "family") == 0) /* a raw 64-bit value: high bits are ours to set */
                return verdict(syscall(SYS_socket, (unsigned long)strtoull(t, NULL, 0),
                                       v == 17 ? SOCK_RAW : SOCK_DGRAM, 0));
        return -1;
}

int main(int argc, char **argv)
{
        const char *w = argc > 1 ? argv[1] : "";
        char c = 'x';
        long r;
        int k;

        if (argc < 2)
                return 2;
        if ((k = work(w, argv[2])) >= 0)
                return k;
        if (argc > 3 && (k = target(w, argv[2], atoi(argv[3]))) >= 0)
                return k;
        if (argc > 2)
                expect = strcmp(argv[2], "ENOSYS") == 0 ? ENOSYS : atoi(argv[2]);

        if (strcmp(w, "ptrace") == 0)
                r = syscall(SYS_ptrace, PTRACE_TRACEME, 0, 0, 0);
        else if (strcmp(w, "process_vm_readv") == 0) {
                char src[4] = "abc", dst[4];
                struct iovec l = {dst, 4}, rm = {src, 4};

                r = syscall(SYS_process_vm_readv, getpid(), &l, 1, &rm, 1, 0);
        } else if (strcmp(w, "bpf") == 0)
                r = syscall(SYS_bpf, 9999, NULL, 0);
        else if (strcmp(w, "perf_event_open") == 0)
                r = syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0);
        else if (strcmp(w, "userfaultfd") == 0)
                r = syscall(SYS_userfaultfd, 0);
        else if (strcmp(w, "kexec_load") == 0)
                r = syscall(SYS_kexec_load, 0, 0, NULL, 0);
        else if (strcmp(w, "init_module") == 0)
                r = syscall(SYS_init_module, NULL, 0, "");
        else if (strcmp(w, "delete_module") == 0)
                r = syscall(SYS_delete_module, "no_such_module_xyz", 0);
        else if (strcmp(w, "mount") == 0)
                r = syscall(SYS_mount, "none", "/nonexistent-xyz", "tmpfs", 0, NULL);
        else if (strcmp(w, "umount2") == 0)
                r = syscall(SYS_umount2, "/nonexistent-xyz", 0);
        else if (strcmp(w, "pivot_root") == 0)
                r = syscall(SYS_pivot_root, "/nonexistent-xyz", "/nonexistent-xyz");
        else if (strcmp(w, "chroot") == 0)
                r = syscall(SYS_chroot, "/nonexistent-xyz");
        else if (strcmp(w, "fsopen") == 0)
                r = syscall(SYS_fsopen, "tmpfs", 0);
        else if (strcmp(w, "unshare") == 0)
                r = syscall(SYS_unshare, CLONE_NEWUSER);
        else if (strcmp(w, "setns") == 0)
                r = syscall(SYS_setns, -1, 0);
        else if (strcmp(w, "clone_newuser") == 0) {
                r = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
                if (r == 0)
                        _exit(0);
                if (r > 0)
                        waitpid((pid_t)r, NULL, 0);
        } else if (strcmp(w, "clone3") == 0)
                r = syscall(SYS_clone3, NULL, 0);
        else if (strcmp(w, "keyctl") == 0)
                r = syscall(SYS_keyctl, 0 /* GET_KEYRING_ID */, -3, 0);
        else if (strcmp(w, "add_key") == 0)
                r = syscall(SYS_add_key, "user", "probe", "v", 1, -2);
        else if (strcmp(w, "io_uring_setup") == 0)
                r = syscall(SYS_io_uring_setup, 0, NULL);
        else if (strcmp(w, "reboot") == 0)
                r = syscall(SYS_reboot, 0, 0, 0, NULL);
        else if (strcmp(w, "swapon") == 0)
                r = syscall(SYS_swapon, "/nonexistent-xyz", 0);
        else if (strcmp(w, "clock_settime") == 0)
                r = syscall(SYS_clock_settime, CLOCK_REALTIME, NULL);
        else if (strcmp(w, "settimeofday") == 0)
                r = syscall(SYS_settimeofday, NULL, NULL);
        else if (strcmp(w, "personality") == 0)
                r = syscall(SYS_personality, 0x0008 /* PER_LINUX32 */);
        else if (strcmp(w, "personality_query") == 0)
                r = syscall(SYS_personality, 0xffffffffUL);
        else if (strcmp(w, "tiocsti") == 0)
                r = syscall(SYS_ioctl, 0, TIOCSTI, &c);
        else if (strcmp(w, "tiocsti_high") == 0) /* high bits must not hide the command */
                r = syscall(SYS_ioctl, 0, (1UL << 32) | TIOCSTI, &c);
        else if (strcmp(w, "tioclinux") == 0)
                r = syscall(SYS_ioctl, 0, TIOCLINUX, &c);
        else if (strcmp(w, "open_by_handle_at") == 0)
                r = syscall(SYS_open_by_handle_at, -1, NULL, 0);
        else if (strcmp(w, "socket") == 0)
                r = syscall(SYS_socket, AF_INET, SOCK_STREAM, 0);
        else if (strcmp(w, "openwrite") == 0)
                r = syscall(SYS_openat, AT_FDCWD, "/tmp/probe-xyz", O_WRONLY | O_CREAT, 0600);
        else if (strcmp(w, "kill") == 0)
                r = syscall(SYS_kill, getppid(), 0);
        else if (strcmp(w, "rawfork") == 0) {
                r = syscall(SYS_fork);
                if (r == 0)
                        _exit(0);
        } else
                return 2;
        return verdict(r);
}
