/* Writes the seed corpus: one valid message of each kind (run by hand; output committed). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/auth.h"

static void save(const char *dir, const char *name, uint8_t prefix, const uint8_t *m, int n)
{
        char path[512];
        FILE *f;

        snprintf(path, sizeof(path), "%s/%s", dir, name);
        if (!(f = fopen(path, "wbe")))
                return;
        if (prefix != 0xff)
                fputc(prefix, f);
        fwrite(m, 1, (size_t)n, f);
        fclose(f);
}

int main(int argc, char **argv)
{
        static uint8_t m[FS_MAX_MSG], a[FS_MAX_MSG];
        /* the fuzz target's credentials (fuzz-handshake.c) */
        static const struct fs_creds peer = {
            .uid = 1000, .gid = 1000, .pid = 4242, .pidns = {[7] = 4, [12] = 0xf0, [15] = 0x36}};
        struct fs_auth_server s;
        struct fs_auth_client c;
        struct fs_key *k;
        struct fs_msgw w;
        int n, an;

        if (argc != 4 || fs_key_new(&k) < 0)
                return 2;
        memset(k->bytes, 0x5a, sizeof(k->bytes));
        fs_msg_begin(&w, m, sizeof(m), FS_MSG_SPAWN, 1);
        fs_msg_put_str(&w, FS_F_PATH, "/bin/echo");
        fs_msg_put_str(&w, FS_F_ARG, "echo");
        fs_msg_put_str(&w, FS_F_ARG, "hi");
        fs_msg_put_str(&w, FS_F_ENV, "A=1");
        fs_msg_put_str(&w, FS_F_CWD, "/tmp");
        fs_msg_put_u32(&w, FS_F_FLAGS, 1);
        fs_msg_put_u32(&w, FS_F_FD, 1);
        save(argv[1], "spawn", 1, m, fs_msg_finish(&w));
        fs_msg_begin(&w, m, sizeof(m), FS_MSG_SPAWN, 2);
        fs_msg_put_str(&w, FS_F_ENTRY, "libjobs:job_exit");
        fs_msg_put_bytes(&w, FS_F_ARGBYTES, "42", 2);
        fs_msg_put_str(&w, FS_F_PROFILE, "strict");
        fs_msg_put_rlimit(&w, 7, 64, 64);
        fs_msg_put_u32(&w, FS_F_UMASK, 077);
        fs_msg_put_u32(&w, FS_F_FLAGS, 4 | 2);
        save(argv[1], "spawn-fork", 0, m, fs_msg_finish(&w));
        /* GPU: a client's request, the front's forwarded form (0x80: fds for the buffers
         * attached), and the broker's messages */
        fs_msg_begin(&w, m, sizeof(m), FS_MSG_SPAWN, 3);
        fs_msg_put_str(&w, FS_F_PATH, "/bin/true");
        fs_msg_put_str(&w, FS_F_ARG, "true");
        fs_msg_put_gpu(&w, 0, 1 << 20);
        fs_msg_put_u32(&w, FS_F_FD, 1);
        save(argv[1], "spawn-gpu", 1, m, fs_msg_finish(&w));
        /* the daemon's own channels (first byte's top bit) */
        fs_imsg_begin(&w, m, sizeof(m), FS_I_SPAWN, 3);
        fs_msg_put_str(&w, FS_F_PATH, "/bin/true");
        fs_msg_put_str(&w, FS_F_ARG, "true");
        fs_msg_put_u32(&w, FS_F_FD, 1);
        fs_msg_put_gpu(&w, 0, 2 << 20);
        fs_msg_put_bytes(&w, FS_F_UUID, "fakecuda-gpu00\0\0", 16);
        save(argv[1], "spawn-gpu-forwarded", 0x80 | 2, m, fs_msg_finish(&w));
        /* workers as their clients: the front's request with CRED, and SIGNAL by pidfd and
         * by pid */
        {
                static const uint32_t groups[] = {100, 4242};

                fs_imsg_begin(&w, m, sizeof(m), FS_I_SPAWN, 4);
                fs_msg_put_str(&w, FS_F_PATH, "/bin/true");
                fs_msg_put_str(&w, FS_F_ARG, "true");
                fs_msg_put_cred(&w, 65534, 65534, groups, 2);
                save(argv[1], "spawn-cred-forwarded", 0x80, m, fs_msg_finish(&w));
        }
        fs_imsg_begin(&w, m, sizeof(m), FS_I_SIGNAL, 0);
        fs_msg_put_u32(&w, FS_F_STATUS, 15);
        fs_msg_put_cred(&w, 65534, 0, NULL, 0);
        save(argv[1], "signal", 0x80 | 1, m, fs_msg_finish(&w));
        fs_msg_put_u32(&w, FS_F_PID, 4321);
        save(argv[1], "signal-pid", 0x80, m, fs_msg_finish(&w));
        fs_imsg_begin(&w, m, sizeof(m), FS_I_GPU_LEASE, 4);
        fs_msg_put_u64(&w, FS_F_LEASE, 7);
        fs_msg_put_gpu(&w, 0, 2 << 20);
        fs_msg_put_bytes(&w, FS_F_UUID, "fakecuda-gpu00\0\0", 16);
        save(argv[1], "gpu-lease", 0x80 | 1, m, fs_msg_finish(&w));
        fs_imsg_begin(&w, m, sizeof(m), FS_I_GPU_ALLOC, 5);
        fs_msg_put_gpu(&w, 0, 2 << 20);
        save(argv[1], "gpu-alloc", 0x80, m, fs_msg_finish(&w));
        fs_imsg_begin(&w, m, sizeof(m), FS_I_SPAWNED, 6);
        fs_msg_put_u32(&w, FS_F_PID, 4321);
        save(argv[1], "zygote-spawned", 0x80 | 2, m, fs_msg_finish(&w));
        fs_imsg_begin(&w, m, sizeof(m), FS_I_POOL, 0);
        fs_msg_put_u32(&w, FS_F_PID, 4321);
        fs_msg_put_u32(&w, FS_F_STATUS, FS_POOL_ADDED);
        save(argv[1], "pool-added", 0x80 | 1, m, fs_msg_finish(&w));
        fs_imsg_begin_failed(&w, m, sizeof(m), 7, ENOENT, "exec /x");
        fs_msg_put_u32(&w, FS_F_STEP, FS_STEP_EXEC);
        save(argv[1], "zygote-failed", 0x80, m, fs_msg_finish(&w));
        fs_msg_begin(&w, m, sizeof(m), FS_MSG_DATA, 0);
        fs_buf_put_bytes(&w.b, "payload", 7);
        save(argv[1], "data", 0, m, fs_msg_finish(&w));
        fs_msg_begin(&w, m, sizeof(m), FS_MSG_ERROR, 1);
        fs_msg_put_u32(&w, FS_F_ERRNO, 2);
        fs_msg_put_u32(&w, FS_F_STEP, 5);
        fs_msg_put_str(&w, FS_F_REASON, "exec /x: No such file");
        save(argv[1], "error", 0, m, fs_msg_finish(&w));
        fs_msg_begin(&w, m, sizeof(m), FS_MSG_EXITED, 1);
        fs_msg_put_u64(&w, FS_F_WORKER, 1);
        fs_msg_put_u32(&w, FS_F_CODE, 1);
        fs_msg_put_u32(&w, FS_F_STATUS, 3);
        save(argv[1], "exited", 0, m, fs_msg_finish(&w));
        fs_msg_begin(&w, m, sizeof(m), FS_MSG_STATUS_REPLY, 1);
        fs_msg_put_stat(&w, "workers", 3);
        save(argv[1], "status", 0, m, fs_msg_finish(&w));
        n = fs_auth_server_hello(&s, &peer, m, sizeof(m));
        save(argv[1], "hello", 0, m, n);
        an = fs_auth_client_hello(&c, k, &peer, m, (size_t)n, a, sizeof(a), NULL);
        save(argv[1], "auth", 0, a, an);
        save(argv[2], "auth", 0xff, a, an);
        save(argv[2], "hello", 0xff, m, n);
        memcpy(a + an, "FSZZ", 4);
        fs_msg_begin(&w, a + an + 4, sizeof(a) - (size_t)an - 4, FS_MSG_PING, 2);
        save(argv[2], "auth-then-ping", 0xff, a, an + 4 + fs_msg_finish(&w));
        save(argv[3], "hex", 0xff,
             (const uint8_t *)"00112233445566778899aabbccddeeff0011223344"
                              "5566778899aabbccddeeff\n",
             65);
        save(argv[3], "raw", 0xff, k->bytes, 32);
        fs_key_free(k);
        return 0;
}
