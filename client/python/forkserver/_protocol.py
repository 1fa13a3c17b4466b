"""The wire protocol of forkserverd (docs/PROTOCOL.md): framing, fields, the handshake MACs."""
from __future__ import annotations

import hashlib
import hmac
import os
import struct
from typing import Dict, Iterator, List, Optional, Tuple

MAGIC = 0x464B5356
VERSION = 2  # 2: the handshake binds the client's credentials; 1 is refused
HDR = struct.Struct(">IHHII")
MAX_MSG = 65536
MAX_FDS = 64

# message types
HELLO, AUTH, AUTH_OK, AUTH_FAILED, ERROR, OK, PING, SPAWN, SPAWNED, EXITED = range(1, 11)
STATUS, STATUS_REPLY, STOP, DATA = range(11, 15)

# fields
(F_VERSION_MIN, F_VERSION_MAX, F_NONCE, F_MAC, F_VERSION, F_ERRNO, F_REASON, F_PATH, F_ARG,
 F_ENV, F_CWD, F_FD, F_FLAGS, F_WORKER, F_PID, F_CODE, F_STATUS, F_STAT, F_STEP, F_PROFILE,
 F_RLIMIT, F_UMASK, F_ENTRY, F_ARGBYTES, F_GPU, F_LEASE, F_UUID, F_PIDNS, F_BIND) = range(1, 30)

SPAWN_DETACH, SPAWN_NEWPGRP, SPAWN_CHANNEL, SPAWN_GPU_FDS = 1, 2, 4, 8
CLD_EXITED, CLD_KILLED, CLD_DUMPED = 1, 2, 3

LABEL_CLIENT = b"forkserver-v2 client\0"
LABEL_SERVER = b"forkserver-v2 server\0"
BIND_PID = 1  # AUTH's BIND: the client's pid is bound (it shares the server's pid namespace)


class ProtocolError(Exception):
    """The peer sent something this protocol does not allow."""


def mac(key: bytes, label: bytes, snonce: bytes, cnonce: bytes, version: int, pidns: bytes,
        bind: int, uid: int, gid: int, pid: int) -> bytes:
    """HMAC-SHA256 over label, nonces, version and who the client is (docs/PROTOCOL.md):
    the pid namespace HELLO announced, the BIND bits, uid, gid, and the pid (0 unless bound)."""
    if len(pidns) != 16:
        raise ValueError("a pid namespace identity is 16 bytes")
    who = pidns + struct.pack(">IIII", bind, uid, gid, pid if bind & BIND_PID else 0)
    return hmac.new(key, label + snonce + cnonce + struct.pack(">H", version) + who,
                    hashlib.sha256).digest()


def pidns_self() -> bytes:
    """This process's pid namespace as HELLO carries it: st_dev, st_ino of /proc/self/ns/pid
    (u64 each, big-endian); zeros when unknown."""
    try:
        st = os.stat("/proc/self/ns/pid")
    except OSError:
        return bytes(16)
    return struct.pack(">QQ", st.st_dev, st.st_ino)


class Writer:
    """Builds one message: header, then typed fields."""

    def __init__(self, mtype: int, mid: int) -> None:
        self.type, self.id, self.parts = mtype, mid, []  # type: ignore[var-annotated]

    def raw(self, tag: int, value: bytes) -> "Writer":
        if len(value) > 0xFFFF:
            raise ValueError("field too long")
        self.parts.append(struct.pack(">HH", tag, len(value)) + value)
        return self

    def str(self, tag: int, s: str) -> "Writer":
        b = s.encode()
        if b"\0" in b:
            raise ValueError("string with a NUL byte")
        return self.raw(tag, b + b"\0")

    def u32(self, tag: int, v: int) -> "Writer":
        return self.raw(tag, struct.pack(">I", v))

    def finish(self) -> bytes:
        payload = b"".join(self.parts)
        msg = HDR.pack(MAGIC, VERSION, self.type, self.id, len(payload)) + payload
        if len(msg) > MAX_MSG:
            raise ValueError("request larger than 64 KiB")
        return msg


def parse(msg: bytes) -> Tuple[int, int, List[Tuple[int, bytes]]]:
    """Checks a datagram's header and splits its fields: (type, id, [(tag, value)])."""
    if len(msg) < HDR.size:
        raise ProtocolError("short message")
    magic, version, mtype, mid, length = HDR.unpack_from(msg)
    if magic != MAGIC or version != VERSION or length != len(msg) - HDR.size:
        raise ProtocolError("bad header")
    fields, at = [], HDR.size
    while at < len(msg):
        if at + 4 > len(msg):
            raise ProtocolError("truncated field")
        tag, n = struct.unpack_from(">HH", msg, at)
        if at + 4 + n > len(msg):
            raise ProtocolError("truncated field")
        fields.append((tag, msg[at + 4:at + 4 + n]))
        at += 4 + n
    return mtype, mid, fields


def first(fields: List[Tuple[int, bytes]], tag: int) -> Optional[bytes]:
    for t, v in fields:
        if t == tag:
            return v
    return None


def u(v: Optional[bytes]) -> int:
    if v is None or len(v) not in (2, 4, 8):
        raise ProtocolError("bad integer field")
    return int.from_bytes(v, "big")


def string(v: Optional[bytes]) -> str:
    if not v or v[-1] != 0:
        raise ProtocolError("bad string field")
    return v[:-1].decode(errors="replace")


def stats(fields: List[Tuple[int, bytes]]) -> Iterator[Tuple[str, int]]:
    for t, v in fields:
        if t == F_STAT:
            if len(v) < 9:
                raise ProtocolError("bad STAT field")
            yield string(v[8:]), int.from_bytes(v[:8], "big")


# Counters that stand for a word, which status() gives instead (as forkctl status prints).
STAT_WORDS = {"workers_run_as": {1: "daemon", 2: "client"}}


def nest(flat: Dict[str, int]) -> Dict[str, object]:
    """{"a.b": 1} -> {"a": {"b": 1}}, as forkctl status prints it."""
    out: Dict[str, object] = {}
    for name, value in flat.items():
        node = out
        *path, leaf = name.split(".")
        for p in path:
            node = node.setdefault(p, {})  # type: ignore[assignment]
        node[leaf] = STAT_WORDS.get(name, {}).get(value, value)
    return out
