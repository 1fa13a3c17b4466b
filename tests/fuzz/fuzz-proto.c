/* libFuzzer target: every message parser, of the client protocol and of the daemon's own
 * channels. First byte: the top bit picks the daemon's protocol, the rest the number of fds. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/proto.h"

static const char *ptrs[FS_SPAWN_PTRS];

static int ignore_stat(void *ud, const char *name, uint64_t v)
{
        (void)ud;
        (void)name;
        (void)v;
        return 0;
}

/* A datagram of the daemon's own channels, as whichever end may receive its type parses it. */
static int internal(const uint8_t *data, size_t size, size_t nfds)
{
        static const unsigned chans[] = {FS_ICHAN_ZYGOTE, FS_ICHAN_BROKER, FS_ICHAN_HELPER};
        const char *why;
        struct fs_hdr h;
        struct fs_buf p;
        int r = -1;

        for (size_t i = 0; i < 6 && r < 0; i++)
                r = fs_iproto_parse_hdr(data, size, chans[i / 2],
                                        i % 2 ? FS_ISIDE_HELPER : FS_ISIDE_FRONT, nfds, &h, &p);
        if (r < 0)
                return 0;
        switch (h.type) {
        case FS_I_SPAWN: {
                struct fs_spawn sp;

                /* as the zygote parses it: its GPU buffers' fds attached */
                if (fs_proto_parse_spawn(&p, nfds, true, ptrs, FS_SPAWN_PTRS, &sp, &why) == 0 &&
                    (sp.ngpu > FS_MAX_GPU || sp.nfds + sp.ngpu != nfds ||
                     sp.ngroups > FS_MAX_GROUPS || (sp.ngroups && !sp.has_cred)))
                        __builtin_trap();
                break;
        }
        case FS_I_SPAWNED: {
                uint32_t pid;

                if (fs_iproto_parse_spawned(&p, &pid, &why) == 0 && (pid == 0 || pid > INT32_MAX))
                        __builtin_trap();
                break;
        }
        case FS_I_FAILED: {
                struct fs_msg_error e;

                fs_proto_parse_error(&p, &e, &why);
                break;
        }
        case FS_I_READY:
                fs_proto_parse_status(&p, ignore_stat, NULL, &why);
                break;
        case FS_I_SIGNAL: {
                struct fs_msg_signal sg;

                if (fs_proto_parse_signal(&p, nfds, &sg, &why) == 0 &&
                    (sg.signo == 0 || sg.signo > 64 || (sg.pid == 0) != (nfds == 1)))
                        __builtin_trap();
                break;
        }
        case FS_I_POOL: {
                struct fs_msg_pool pm;

                fs_proto_parse_pool(&p, nfds, &pm, &why);
                break;
        }
        case FS_I_GPU_ALLOC: {
                struct fs_msg_gpu_alloc g;

                fs_proto_parse_gpu_alloc(&p, &g, &why);
                break;
        }
        case FS_I_GPU_LEASE: {
                struct fs_msg_lease l;

                fs_proto_parse_lease(&p, &l, &why);
                break;
        }
        case FS_I_GPU_FREE: {
                uint64_t lease;

                fs_proto_parse_gpu_free(&p, &lease, &why);
                break;
        }
        default:
                __builtin_trap(); /* the table let through a type nobody parses */
        }
        return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        union {
                struct fs_msg_hello hello;
                struct fs_msg_auth auth;
                struct fs_msg_error error;
                struct fs_msg_spawned spawned;
                struct fs_msg_exited exited;
        } m;
        struct fs_spawn sp;
        const uint8_t *mac;
        const char *why;
        struct fs_hdr h;
        struct fs_buf p;
        size_t nfds;

        if (size < 1)
                return 0;
        nfds = (data[0] & 0x7f) % (FS_MAX_MSG_FDS + 2);
        if (data[0] & 0x80)
                return internal(data + 1, size - 1, nfds);
        if (fs_proto_parse_hdr(data + 1, size - 1, &h, &p) < 0)
                return 0;
        switch (h.type) {
        case FS_MSG_HELLO:
                fs_proto_parse_hello(&p, &m.hello, &why);
                break;
        case FS_MSG_AUTH:
                fs_proto_parse_auth(&p, &m.auth, &why);
                break;
        case FS_MSG_AUTH_OK:
                fs_proto_parse_auth_ok(&p, &mac, &why);
                break;
        case FS_MSG_ERROR:
                fs_proto_parse_error(&p, &m.error, &why);
                break;
        case FS_MSG_SPAWN: {
                if (nfds <= FS_MAX_MSG_FDS &&
                    fs_proto_parse_spawn(&p, nfds, false, ptrs, FS_SPAWN_PTRS, &sp, &why) == 0) {
                        /* a parse that succeeded must hand out valid, terminated arrays */
                        volatile size_t n = 0;

                        for (size_t i = 0; sp.argv[i]; i++)
                                n += __builtin_strlen(sp.argv[i]);
                        for (size_t i = 0; sp.envp[i]; i++)
                                n += __builtin_strlen(sp.envp[i]);
                        /* exec mode: an absolute path and argv[0]; fork mode: an entry, no argv */
                        bool exec_ok = sp.path && !sp.entry && sp.argc > 0 && sp.path[0] == '/';
                        bool fork_ok =
                            sp.entry && !sp.path && sp.argc == 0 && fs_proto_entry_ok(sp.entry);

                        /* CRED comes only from the front */
                        if (n == SIZE_MAX || sp.nfds != nfds || !(exec_ok || fork_ok) ||
                            sp.nrlimits > FS_MAX_RLIMITS || sp.umask > 0777 ||
                            sp.ngpu > FS_MAX_GPU || sp.has_cred)
                                __builtin_trap();
                        for (size_t i = 0; i < sp.ngpu; i++)
                                if (sp.gpu[i].size == 0)
                                        __builtin_trap();
                }
                break;
        }
        case FS_MSG_SPAWNED:
                fs_proto_parse_spawned(&p, &m.spawned, &why);
                break;
        case FS_MSG_EXITED:
                fs_proto_parse_exited(&p, &m.exited, &why);
                break;
        case FS_MSG_STATUS_REPLY:
                fs_proto_parse_status(&p, ignore_stat, NULL, &why);
                break;
        default:
                fs_proto_parse_empty(&p, &why);
                break;
        }
        return 0;
}
