"""The forkserverd client: handshake, spawn, workers, channels (standard library only)."""
from __future__ import annotations

import array
import errno as errno_mod
import hmac
import os
import secrets
import selectors
import shutil
import signal
import socket
import stat
import struct
import subprocess
import tempfile
import time
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from . import _protocol as P

__all__ = ["connect", "Client", "Worker", "Channel", "ForkserverError", "AuthenticationError",
           "SpawnError", "ConnectionLost", "default_socket", "default_key_file"]

FdLike = Union[int, "object"]


class ForkserverError(OSError):
    """A failure reported by forkserverd or met on the way; .errno and .strerror say which."""


class AuthenticationError(ForkserverError):
    """The handshake failed: a wrong key, or a server that could not prove it has the key."""


class SpawnError(ForkserverError):
    """The server refused a spawn or the worker's set-up failed (the reason is the server's)."""


class ConnectionLost(ForkserverError):
    """The connection to the server is gone."""


def default_socket() -> str:
    """$FORKSERVER_SOCKET, else $XDG_RUNTIME_DIR/forkserver/forkserverd.sock, else
    /tmp/forkserver-$UID/forkserverd.sock (as forkctl)."""
    env = os.environ.get("FORKSERVER_SOCKET")
    if env:
        return env
    rt = os.environ.get("XDG_RUNTIME_DIR")
    if rt and rt.startswith("/"):
        return os.path.join(rt, "forkserver", "forkserverd.sock")
    return f"/tmp/forkserver-{os.getuid()}/forkserverd.sock"


def default_key_file(socket_path: str) -> str:
    return os.environ.get("FORKSERVER_KEY_FILE") or os.path.join(
        os.path.dirname(socket_path), "key")


def _parse_key(data: bytes, what: str) -> bytes:
    if len(data) == 32:
        return data
    if len(data) == 65 and data.endswith(b"\n"):
        data = data[:-1]
    if len(data) != 64:
        raise AuthenticationError(errno_mod.EINVAL, f"{what}: need 32 raw bytes or 64 hex digits")
    try:
        return bytes.fromhex(data.decode("ascii"))
    except ValueError:
        raise AuthenticationError(errno_mod.EINVAL, f"{what}: not hex digits") from None


def load_key_file(path: str) -> bytes:
    """Reads a key file with forkctl's checks: a regular file you own, no group/other bits."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as e:
        raise AuthenticationError(e.errno, f"key file {path}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise AuthenticationError(errno_mod.EINVAL, f"key file {path} is not a regular file")
        if st.st_uid != os.geteuid():
            raise AuthenticationError(errno_mod.EPERM,
                                      f"key file {path} is not owned by the effective uid")
        if st.st_mode & 0o077:
            raise AuthenticationError(errno_mod.EPERM,
                                      f"key file {path} is readable or writable by others "
                                      "(chmod 600)")
        return _parse_key(os.read(fd, 4096), f"key file {path}")
    finally:
        os.close(fd)


def load_key_fd(fd: int) -> bytes:
    data = b""
    while True:
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
        if len(data) > 4096:
            break
    os.close(fd)
    return _parse_key(data, f"key fd {fd}")


def _close_all(fds: Iterable[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


# as plain ints: the socket module's flags are enums, slow to combine on every message
_CMSG_ROOM = socket.CMSG_SPACE(P.MAX_FDS * 4)
_CLOEXEC = int(socket.MSG_CMSG_CLOEXEC)
_TRUNCATED = int(socket.MSG_CTRUNC | socket.MSG_TRUNC)


def _recv(sock: socket.socket, maxfds: int, flags: int = 0) -> Tuple[bytes, List[int]]:
    """One datagram and its fds (close-on-exec). Truncation of either is an error, with every
    fd that arrived closed."""
    msg, anc, mflags, _ = sock.recvmsg(P.MAX_MSG + 1, _CMSG_ROOM, _CLOEXEC | int(flags))
    if not anc and not mflags & _TRUNCATED:
        return msg, []
    fds: List[int] = []
    foreign = False
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            a = array.array("i")
            a.frombytes(data[:len(data) - len(data) % a.itemsize])
            fds.extend(a)
        else:
            foreign = True
    if foreign or mflags & _TRUNCATED or len(fds) > maxfds:
        _close_all(fds)
        raise P.ProtocolError("truncated message, foreign control data or too many fds")
    return msg, fds


def _send(sock: socket.socket, data: bytes, fds: Sequence[int] = ()) -> None:
    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())] if fds else []
    sock.sendmsg([data], anc)


class Channel:
    """A worker's private channel: messages of bytes plus up to 64 fds, either way."""

    MAX_BYTES = P.MAX_MSG - P.HDR.size

    def __init__(self, fd: int) -> None:
        self._sock = socket.socket(fileno=fd)

    def read_events(self) -> None:
        """Reads what the server sent without waiting: exit events reach their Workers
        (returncode), answers wait for their callers. For callers that watch fileno() in
        their own event loop."""
        self._pump(block=False)

    def fileno(self) -> int:
        """The connection's fd: readable when the server sent something (read_events)."""
        return self._sock.fileno()

    def send(self, data: bytes, fds: Sequence[int] = ()) -> None:
        """Sends one message; fds stay open here (the peer gets copies)."""
        if len(data) > self.MAX_BYTES or len(fds) > P.MAX_FDS:
            raise ValueError(f"at most {self.MAX_BYTES} bytes and {P.MAX_FDS} fds a message")
        _send(self._sock, P.HDR.pack(P.MAGIC, P.VERSION, P.DATA, 0, len(data)) + data, fds)

    def recv(self, maxfds: int = P.MAX_FDS) -> Tuple[bytes, List[int]]:
        """The next message and its fds (yours to close). EOFError when the peer is gone."""
        msg, fds = _recv(self._sock, maxfds)
        if not msg:
            _close_all(fds)
            raise EOFError("the channel's peer is gone")
        try:
            magic, version, mtype, _, length = P.HDR.unpack_from(msg)
            if magic != P.MAGIC or version != P.VERSION or mtype != P.DATA or \
                    length != len(msg) - P.HDR.size:
                raise P.ProtocolError("not a channel message")
        except (struct.error, P.ProtocolError):
            _close_all(fds)
            raise
        return msg[P.HDR.size:], fds

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> "Channel":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Worker:
    """A worker process: pid, pidfd, its channel and GPU buffers, and its exit status."""

    def __init__(self, client: "Client", wid: int, pid: int, pidfd: int,
                 channel: Optional[Channel], gpu: List[Tuple[int, int, int, bytes]]) -> None:
        self._client, self.id, self.pid, self.pidfd = client, wid, pid, pidfd
        self.channel = channel
        self.gpu = gpu  # [(fd, device, size, uuid)]
        self.returncode: Optional[int] = None  # as subprocess: -N for signal N

    def poll(self) -> Optional[int]:
        """The exit status if the worker has ended (reads pending events), else None."""
        if self.returncode is None:
            self._client._pump(block=False)
        return self.returncode

    def wait(self, timeout: Optional[float] = None) -> int:
        """Waits for the worker's end; subprocess.TimeoutExpired after timeout seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.returncode is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(str(self.pid), timeout or 0)
            self._client._pump(block=True, timeout=left)
        return self.returncode

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signals the worker through its pidfd (never by pid alone)."""
        if self.returncode is None and self.pidfd >= 0:
            try:
                signal.pidfd_send_signal(self.pidfd, sig)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        self.kill(signal.SIGTERM)

    def close(self) -> None:
        """Closes this handle's fds (the worker is not affected)."""
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1
        if self.channel:
            self.channel.close()
            self.channel = None
        _close_all(fd for fd, _, _, _ in self.gpu)
        self.gpu = []
        self._client._workers.pop(self.id, None)

    def __enter__(self) -> "Worker":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.returncode is None:
            self.kill()
            self.wait()
        self.close()


def _fileno(x: FdLike) -> int:
    return x if isinstance(x, int) else x.fileno()  # type: ignore[attr-defined]


class Client:
    """An authenticated connection to forkserverd. Use connect()."""

    def __init__(self, sock: socket.socket, private: Optional["_PrivateDaemon"] = None) -> None:
        self._sock = sock
        self._next_id = 0
        self._replies: Dict[int, Tuple[int, List[Tuple[int, bytes]], List[int]]] = {}
        self._workers: Dict[int, Worker] = {}
        self._exits: Dict[int, int] = {}
        self._expected: set = set()  # workers whose SPAWNED was read, not yet picked up
        self._private = private
        self._dead: Optional[ForkserverError] = None
        self._spawning: Dict[int, bool] = {}  # spawn requests in flight: id -> channel
        self._sel = selectors.DefaultSelector()
        self._sel.register(sock, selectors.EVENT_READ)

    # -- plumbing --

    def _id(self) -> int:
        self._next_id = self._next_id % 0xFFFFFFFF + 1
        return self._next_id

    def _pump(self, block: bool, timeout: Optional[float] = None) -> None:
        """Reads what the server sent: replies are kept by id, exit events applied."""
        if self._dead:
            raise self._dead
        first = True
        while True:
            wait = (timeout if first else 0) if block else 0
            # selectors, not select.select: fds above 1,023 are fine
            r = self._sel.select(wait)
            first = False
            if not r:
                return
            try:
                msg, fds = _recv(self._sock, 2 + 8)
                if not msg:
                    raise ConnectionLost(errno_mod.ECONNRESET, "the server closed the connection")
                mtype, mid, fields = P.parse(msg)
            except P.ProtocolError as e:
                self._dead = ConnectionLost(errno_mod.EPROTO, f"protocol error: {e}")
                raise self._dead from None
            except ConnectionLost as e:
                self._dead = e
                raise
            if mtype == P.EXITED:
                _close_all(fds)
                self._on_exit(fields)
            elif mtype == P.ERROR and mid == 0:
                _close_all(fds)
                self._dead = ConnectionLost(P.u(P.first(fields, P.F_ERRNO)),
                                            P.string(P.first(fields, P.F_REASON)))
                raise self._dead
            else:
                if mtype == P.SPAWNED:
                    self._expected.add(P.u(P.first(fields, P.F_WORKER)))
                self._replies[mid] = (mtype, fields, fds)
            block = False

    def _on_exit(self, fields: List[Tuple[int, bytes]]) -> None:
        wid = P.u(P.first(fields, P.F_WORKER))
        code, st = P.u(P.first(fields, P.F_CODE)), P.u(P.first(fields, P.F_STATUS))
        rc = st if code == P.CLD_EXITED else -st
        w = self._workers.get(wid)
        if w:
            w.returncode = rc
        elif wid in self._expected:
            self._exits[wid] = rc  # its SPAWNED is read but not yet picked up
        # else: a worker whose handle was closed

    def _request(self, w: P.Writer, fds: Sequence[int] = ()) -> int:
        if self._dead:
            raise self._dead
        data = w.finish()
        while True:
            try:
                _send(self._sock, data, fds)
                return w.id
            except BlockingIOError:
                self._pump(block=True, timeout=0.05)

    def _reply(self, mid: int) -> Tuple[int, List[Tuple[int, bytes]], List[int]]:
        while mid not in self._replies:
            self._pump(block=True)
        return self._replies.pop(mid)

    # -- requests --

    def ping(self) -> None:
        t, f, fds = self._reply(self._request(P.Writer(P.PING, self._id())))
        _close_all(fds)
        if t != P.OK:
            raise ForkserverError(errno_mod.EPROTO, "unexpected reply to PING")

    def status(self) -> Dict[str, object]:
        """The server's counters, nested as forkctl status prints them."""
        t, fields, fds = self._reply(self._request(P.Writer(P.STATUS, self._id())))
        _close_all(fds)
        if t != P.STATUS_REPLY:
            raise ForkserverError(errno_mod.EPROTO, "unexpected reply to STATUS")
        return P.nest(dict(P.stats(fields)))

    def stop(self) -> None:
        """Asks the server to stop (as SIGTERM): its workers end."""
        t, f, fds = self._reply(self._request(P.Writer(P.STOP, self._id())))
        _close_all(fds)

    def spawn(self, argv: Optional[Sequence[str]] = None, *, entry: Optional[str] = None,
              arg: bytes = b"", env: Optional[Mapping[str, str]] = None,
              cwd: Optional[str] = None, stdin: Optional[FdLike] = None,
              stdout: Optional[FdLike] = None, stderr: Optional[FdLike] = None,
              fds: Optional[Mapping[int, FdLike]] = None, channel: bool = False,
              detach: bool = False, new_process_group: bool = False,
              profile: Optional[str] = None,
              rlimits: Optional[Mapping[int, Tuple[int, int]]] = None,
              umask: Optional[int] = None,
              gpu: Sequence[Tuple[int, int]] = (), gpu_fds: bool = False) -> Worker:
        """Starts a worker: exec mode with argv (argv[0] looked up in $PATH), or fork mode with
        entry="LIBNAME:SYMBOL" and arg bytes. stdio not given is /dev/null; fds maps worker fd
        numbers to your fds or files; env is the worker's whole environment (default: none);
        gpu lists (device, size) buffers; gpu_fds gives you their fds too (Worker.gpu), which
        keeps them charged to you until your connection is closed and your process exited.
        Raises SpawnError with the server's reason."""
        return self.spawn_result(self.spawn_request(
            argv, entry=entry, arg=arg, env=env, cwd=cwd, stdin=stdin, stdout=stdout,
            stderr=stderr, fds=fds, channel=channel, detach=detach,
            new_process_group=new_process_group, profile=profile, rlimits=rlimits,
            umask=umask, gpu=gpu, gpu_fds=gpu_fds))

    def spawn_request(self, argv: Optional[Sequence[str]] = None, *, entry: Optional[str] = None,
                    arg: bytes = b"", env: Optional[Mapping[str, str]] = None,
                    cwd: Optional[str] = None, stdin: Optional[FdLike] = None,
                    stdout: Optional[FdLike] = None, stderr: Optional[FdLike] = None,
                    fds: Optional[Mapping[int, FdLike]] = None, channel: bool = False,
                    detach: bool = False, new_process_group: bool = False,
                    profile: Optional[str] = None,
                    rlimits: Optional[Mapping[int, Tuple[int, int]]] = None,
                    umask: Optional[int] = None,
                    gpu: Sequence[Tuple[int, int]] = (), gpu_fds: bool = False) -> int:
        """spawn split in two, for callers that start many workers without waiting for each:
        sends the request (spawn's arguments) and returns its id, for spawn_ready and
        spawn_result. The fds named are copied by the kernel at once: close yours when you
        like."""
        if (argv is None) == (entry is None):
            raise ValueError("give argv (exec mode) or entry (fork mode)")
        w = P.Writer(P.SPAWN, self._id())
        if argv is not None:
            if not argv:
                raise ValueError("argv needs argv[0]")
            path = argv[0]
            if "/" not in path:
                found = shutil.which(path)
                if not found:
                    raise SpawnError(errno_mod.ENOENT, f"{path}: command not found")
                path = found
            w.str(P.F_PATH, os.path.abspath(path))
            for a in argv:
                w.str(P.F_ARG, a)
        else:
            w.str(P.F_ENTRY, entry)  # type: ignore[arg-type]
            if arg:
                w.raw(P.F_ARGBYTES, bytes(arg))
        for k, v in (env or {}).items():
            w.str(P.F_ENV, f"{k}={v}")
        if cwd is not None:
            w.str(P.F_CWD, os.path.abspath(cwd))
        mapping: Dict[int, int] = {}
        for n, x in ((0, stdin), (1, stdout), (2, stderr)):
            if x is not None:
                mapping[n] = _fileno(x)
        for n, x in (fds or {}).items():
            mapping[int(n)] = _fileno(x)
        for n in mapping:
            w.u32(P.F_FD, n)
        flags = (P.SPAWN_CHANNEL if channel else 0) | (P.SPAWN_DETACH if detach else 0) | \
            (P.SPAWN_NEWPGRP if new_process_group else 0) | (P.SPAWN_GPU_FDS if gpu_fds else 0)
        if flags:
            w.u32(P.F_FLAGS, flags)
        if profile:
            w.str(P.F_PROFILE, profile)
        for res, (soft, hard) in (rlimits or {}).items():
            w.raw(P.F_RLIMIT, struct.pack(">IQQ", res, soft & (2**64 - 1), hard & (2**64 - 1)))
        if umask is not None:
            w.u32(P.F_UMASK, umask & 0o777)
        for dev, size in gpu:
            w.raw(P.F_GPU, struct.pack(">IQ", dev, size))
        mid = self._request(w, list(mapping.values()))
        self._spawning[mid] = channel
        return mid

    def spawn_ready(self, request: int) -> bool:
        """Whether the answer to spawn request `request` has arrived (reads what the server
        sent, without waiting)."""
        if request not in self._replies:
            self._pump(block=False)
        return request in self._replies

    def spawn_result(self, request: int) -> Worker:
        """The Worker that spawn request `request` started, waiting for the answer if need
        be; SpawnError with the server's reason if it was refused."""
        channel = self._spawning.pop(request)
        t, fields, rfds = self._reply(request)
        if t == P.ERROR:
            _close_all(rfds)
            raise SpawnError(P.u(P.first(fields, P.F_ERRNO)),
                             P.string(P.first(fields, P.F_REASON)))
        if t != P.SPAWNED or not rfds:
            _close_all(rfds)
            raise ConnectionLost(errno_mod.EPROTO, "unexpected reply to SPAWN")
        gfields = [v for tag, v in fields if tag == P.F_GPU]
        uuids = [v for tag, v in fields if tag == P.F_UUID]
        nchan = len(rfds) - 1 - len(gfields)
        if nchan not in (0, 1) or nchan != int(channel) or len(uuids) != len(gfields):
            _close_all(rfds)
            raise ConnectionLost(errno_mod.EPROTO, "SPAWNED with the wrong fds")
        bufs = [(rfds[1 + nchan + i], *struct.unpack(">IQ", g), uuids[i])
                for i, g in enumerate(gfields)]
        worker = Worker(self, P.u(P.first(fields, P.F_WORKER)), P.u(P.first(fields, P.F_PID)),
                        rfds[0], Channel(rfds[1]) if nchan else None, bufs)
        self._workers[worker.id] = worker
        self._expected.discard(worker.id)
        if worker.id in self._exits:
            worker.returncode = self._exits.pop(worker.id)
        return worker

    def wait_any(self, timeout: Optional[float] = None) -> Optional[Worker]:
        """A worker of this client that has ended and is not yet closed, or None at timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            for w in self._workers.values():
                if w.returncode is not None:
                    return w
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            self._pump(block=True, timeout=left)

    def read_events(self) -> None:
        """Reads what the server sent without waiting: exit events reach their Workers
        (returncode), answers wait for their callers. For callers that watch fileno() in
        their own event loop."""
        self._pump(block=False)

    def fileno(self) -> int:
        """The connection's fd: readable when the server sent something (read_events)."""
        return self._sock.fileno()

    def close(self) -> None:
        """Closes the connection: workers not detached end; a private server stops."""
        for w in list(self._workers.values()):
            w.close()
        self._sel.close()
        self._sock.close()
        if self._private:
            self._private.stop()
            self._private = None

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_path(path: str, server_uid: Optional[int]) -> None:
    """Refuses a socket path that someone other than root, us or server_uid could swap: each
    directory from / down to the socket's, as written and as resolved, must belong to one of
    them and not be writable by group or others unless sticky (as /tmp). The same walk as
    common/dirtrust.c in the C client and the daemon."""
    trusted = {0, os.geteuid()} | ({server_uid} if server_uid is not None else set())

    def one(p: str) -> None:
        try:
            st = os.lstat(p)
        except OSError as e:
            raise ForkserverError(e.errno, f"cannot connect to {path}: cannot inspect {p}: "
                                  f"{e.strerror}") from None
        why = None
        if st.st_uid not in trusted:
            why = f"{p} is owned by uid {st.st_uid}"
        elif stat.S_ISLNK(st.st_mode):
            return
        elif not stat.S_ISDIR(st.st_mode):
            why = f"{p} is not a directory"
        elif st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
            why = (f"{p} is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}) "
                   f"and not sticky")
        if why:
            named = f", uid {server_uid} (the server uid named)" if server_uid else ""
            raise ForkserverError(errno_mod.EPERM,
                                  f"refusing to connect to {path}: its path can be swapped by "
                                  f"others: {why} (each directory on the way must belong to "
                                  f"root, uid {os.geteuid()} (ours){named}, and not be "
                                  f"writable by group or others unless sticky)")

    def walk(d: str) -> None:
        one("/")
        parts = [x for x in d.split("/") if x]
        for i in range(1, len(parts) + 1):
            one("/" + "/".join(parts[:i]))

    d = os.path.dirname(os.path.join(os.getcwd(), path))
    walk(d)
    real = os.path.realpath(d)
    if real != d:
        walk(real)


def _check_listener(sock: socket.socket, path: str, server_uid: Optional[int]) -> None:
    """The listening socket (SO_PEERCRED of a connected client: whoever called listen()) must
    belong to us, root (socket activation) or server_uid."""
    _, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                    struct.calcsize("3i")))
    uid &= 0xFFFFFFFF
    if uid in (os.geteuid(), 0) or (server_uid is not None and uid == server_uid):
        return
    named = f" or {server_uid} (the server uid named)" if server_uid is not None else ""
    raise AuthenticationError(errno_mod.EACCES,
                              f"refusing the server on {path}: its listening socket belongs to "
                              f"uid {uid}; expected uid {os.geteuid()} (ours), 0 (root){named}")


def _handshake(sock: socket.socket, key: bytes, timeout: float) -> None:
    sock.settimeout(timeout)
    try:
        msg, fds = _recv(sock, 0)
        if not msg:
            raise ConnectionLost(errno_mod.ECONNRESET, "the server closed the connection")
        try:
            t, _, f = P.parse(msg)
        except P.ProtocolError:
            if len(msg) >= 6 and struct.unpack_from(">H", msg, 4)[0] != P.VERSION:
                raise AuthenticationError(errno_mod.EPROTO,
                                          "the server speaks another protocol version (this "
                                          f"client speaks version {P.VERSION} only)") from None
            raise
        if t == P.ERROR:
            raise ForkserverError(P.u(P.first(f, P.F_ERRNO)), P.string(P.first(f, P.F_REASON)))
        if t != P.HELLO:
            raise AuthenticationError(errno_mod.EPROTO, "expected HELLO")
        vmin, vmax = P.u(P.first(f, P.F_VERSION_MIN)), P.u(P.first(f, P.F_VERSION_MAX))
        sn = P.first(f, P.F_NONCE)
        if not (vmin <= P.VERSION <= vmax) or not sn or len(sn) != 32:
            raise AuthenticationError(errno_mod.EPROTO,
                                      f"the server speaks protocol {vmin}..{vmax}, we {P.VERSION}")
        pidns = P.first(f, P.F_PIDNS)
        if pidns is None or len(pidns) != 16:
            raise AuthenticationError(errno_mod.EPROTO, "HELLO without a pid namespace")
        # What the server's SO_PEERCRED reports of us; our pid only means the same to it in
        # the same pid namespace, and the MACs cover the one HELLO announced.
        uid, gid, pid = os.geteuid(), os.getegid(), os.getpid()
        mine = P.pidns_self()
        bind = P.BIND_PID if mine != bytes(16) and mine == pidns else 0
        cn = secrets.token_bytes(32)
        w = P.Writer(P.AUTH, 0).raw(P.F_VERSION, struct.pack(">H", P.VERSION))
        w.raw(P.F_NONCE, cn).u32(P.F_BIND, bind)
        w.raw(P.F_MAC, P.mac(key, P.LABEL_CLIENT, sn, cn, P.VERSION, pidns, bind, uid, gid, pid))
        _send(sock, w.finish())
        msg, fds = _recv(sock, 0)
        if not msg:
            raise AuthenticationError(errno_mod.EACCES, "the server closed the connection")
        t, _, f = P.parse(msg)
        if t == P.AUTH_FAILED:
            raise AuthenticationError(errno_mod.EACCES, "the server refused our key (or did not "
                                      "see us at the other end: a relay?)")
        if t == P.ERROR:
            raise AuthenticationError(P.u(P.first(f, P.F_ERRNO)),
                                      P.string(P.first(f, P.F_REASON)))
        want = P.mac(key, P.LABEL_SERVER, sn, cn, P.VERSION, pidns, bind, uid, gid, pid)
        got = P.first(f, P.F_MAC)
        if t != P.AUTH_OK or not got or not hmac.compare_digest(got, want):
            raise AuthenticationError(errno_mod.EACCES,
                                      "the server could not prove it has the key and sees us "
                                      "as we are (an impostor on the socket path, or a relay?)")
    except socket.timeout:
        raise AuthenticationError(errno_mod.ETIMEDOUT, "handshake timed out") from None
    except P.ProtocolError as e:
        raise AuthenticationError(errno_mod.EPROTO, f"handshake: {e}") from None
    finally:
        sock.settimeout(None)
    sock.setblocking(False)


class _PrivateDaemon:
    """A forkserverd for this client alone: fresh key over a pipe, private 0700 directory."""

    def __init__(self) -> None:
        daemon = _find_daemon()
        rt = os.environ.get("XDG_RUNTIME_DIR")
        self.dir = tempfile.mkdtemp(prefix="forkserver-py-",
                                    dir=rt if rt and rt.startswith("/") else "/tmp")
        self.socket = os.path.join(self.dir, "forkserverd.sock")
        self.key = secrets.token_bytes(32)
        kr, kw = os.pipe()
        rr, rw = os.pipe()
        try:
            # the fds keep their numbers in the child (pass_fds): the key goes over a pipe;
            # a private daemon serves its starter alone, so root's gets root workers
            self.proc = subprocess.Popen(
                [daemon, "--socket", self.socket, "--key-fd", str(kr), "--ready-fd", str(rw),
                 "--foreground", "--log-level", "warning", "--allow-root-workers"],
                pass_fds=(kr, rw))
        finally:
            os.close(kr)
            os.close(rw)
        os.write(kw, self.key.hex().encode() + b"\n")
        os.close(kw)
        with selectors.DefaultSelector() as sel:
            sel.register(rr, selectors.EVENT_READ)
            ready = os.read(rr, 16) if sel.select(10) else b""
        os.close(rr)
        if ready != b"READY\n":
            self.stop()
            raise ForkserverError(errno_mod.EIO, "the private forkserverd did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def _find_daemon() -> str:
    env = os.environ.get("FORKSERVERD")
    if env:
        return env
    here = os.path.dirname(os.path.abspath(__file__))
    for rel in ("../../../sbin/forkserverd", "../../../../sbin/forkserverd",
                "../../../forkserver/forkserverd", "../../../../forkserver/forkserverd"):
        p = os.path.normpath(os.path.join(here, rel))
        if os.access(p, os.X_OK):
            return p
    path = os.environ.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/usr/local/sbin"
    found = shutil.which("forkserverd", path=path)
    if not found:
        raise ForkserverError(errno_mod.ENOENT, "no server is running and forkserverd was not "
                              "found (set FORKSERVERD)")
    return found


def _reachable(path: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def connect(socket_path: Optional[str] = None, key_file: Optional[str] = None,
            key_fd: Optional[int] = None, *, key: Optional[bytes] = None,
            timeout: float = 5.0, server_uid: Optional[int] = None) -> Client:
    """Connects and authenticates, with forkctl's defaults; with nothing named and no server
    reachable at the default socket, starts a private server for this client (stopped by
    close()). server_uid: a uid besides ours and root's that the server may run as (forkctl
    --server-uid): its listening socket and the directories on its path may belong to it.
    Raises AuthenticationError (also for a listener of another uid), ForkserverError (also
    for a socket path others could swap, EPERM)."""
    private = None
    if socket_path is None and key_file is None and key_fd is None and key is None and \
            not os.environ.get("FORKSERVER_SOCKET") and not _reachable(default_socket()):
        private = _PrivateDaemon()
        socket_path, key = private.socket, private.key
    socket_path = socket_path or default_socket()
    try:
        if key is None:
            key = load_key_fd(key_fd) if key_fd is not None else \
                load_key_file(key_file or default_key_file(socket_path))
        _check_path(socket_path, server_uid)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            sock.settimeout(timeout)
            sock.connect(socket_path)
        except OSError as e:
            sock.close()
            raise ForkserverError(e.errno, f"cannot connect to {socket_path}: {e.strerror}") \
                from None
        try:
            _check_listener(sock, socket_path, server_uid)
            _handshake(sock, key, timeout)
        except BaseException:
            sock.close()
            raise
        return Client(sock, private)
    except BaseException:
        if private:
            private.stop()
        raise
