"""python3 -m forkserver run [options] -- PROG [ARG]...: as `forkctl run`."""
from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
from typing import List, Optional

from . import client as C


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m forkserver",
                                description="Run a program in a forkserver worker.")
    p.add_argument("--socket")
    p.add_argument("--key-file")
    p.add_argument("--key-fd", type=int)
    p.add_argument("--server-uid", type=int,
                   help="also accept a server (and socket directories) of this uid")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run PROG in a worker with our stdio, cwd and environment")
    r.add_argument("--profile")
    r.add_argument("--cwd")
    r.add_argument("--env", action="append", default=[], metavar="K=V")
    r.add_argument("--fd", action="append", default=[], metavar="CHILD=PARENT")
    r.add_argument("--detach", action="store_true")
    r.add_argument("--entry", metavar="LIBNAME:SYMBOL")
    r.add_argument("prog", nargs=argparse.REMAINDER)
    a = p.parse_args(argv)
    args = a.prog[1:] if a.prog[:1] == ["--"] else a.prog
    if not args and not a.entry:
        p.error("run: no program")
    env = dict(os.environ)
    for kv in a.env:
        if "=" not in kv or kv.startswith("="):
            p.error(f"--env: need K=V, got {kv!r}")
        k, v = kv.split("=", 1)
        env[k] = v
    fds = {}
    for m in a.fd:
        try:
            child, parent = (int(x) for x in m.split("=", 1))
        except ValueError:
            p.error(f"--fd: need CHILD=PARENT, got {m!r}")
        fds[child] = parent
    try:
        client = C.connect(a.socket, a.key_file, a.key_fd, server_uid=a.server_uid)
    except C.ForkserverError as e:
        print(f"python3 -m forkserver: {e.strerror}", file=sys.stderr)
        return 125
    with client:
        try:
            if a.entry:
                w = client.spawn(entry=a.entry, arg=b"".join(x.encode() + b"\0" for x in args),
                                 env=env, cwd=a.cwd or os.getcwd(), stdin=0, stdout=1, stderr=2,
                                 fds=fds, detach=a.detach, profile=a.profile)
            else:
                w = client.spawn(args, env=env, cwd=a.cwd or os.getcwd(), stdin=0, stdout=1,
                                 stderr=2, fds=fds, detach=a.detach, profile=a.profile)
        except C.SpawnError as e:
            print(f"python3 -m forkserver: {e.strerror}", file=sys.stderr)
            return 127 if e.errno == errno.ENOENT else 126 if e.errno in (
                errno.EACCES, errno.ENOEXEC) else 125
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
            signal.signal(sig, lambda s, f: w.kill(s))
        rc = w.wait()
        w.close()
    return rc if rc >= 0 else 128 - rc


if __name__ == "__main__":
    sys.exit(main())
