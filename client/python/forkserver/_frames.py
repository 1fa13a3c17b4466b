"""Objects over a channel: pickles cut into channel-sized frames."""
from __future__ import annotations

import pickle
from typing import Any, List

from .client import Channel

FRAME = Channel.MAX_BYTES - 1  # one byte says whether more follows


def send_obj(ch: Channel, obj: Any) -> None:
    """Sends obj as one pickle in as many frames as it needs ('C' more follows, 'F' last)."""
    send_pickle(ch, pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def send_pickle(ch: Channel, data: bytes) -> None:
    """send_obj for an object pickled already."""
    for at in range(0, max(len(data), 1), FRAME):
        last = at + FRAME >= len(data)
        ch.send((b"F" if last else b"C") + data[at:at + FRAME])


def recv_obj(ch: Channel) -> Any:
    """The next object; EOFError when the peer is gone."""
    return pickle.loads(recv_pickle(ch))


def recv_pickle(ch: Channel) -> bytes:
    """The next object's pickle, not yet unpickled; EOFError when the peer is gone."""
    parts: List[bytes] = []
    while True:
        msg, fds = ch.recv(maxfds=0)
        if not msg or msg[:1] not in (b"C", b"F"):
            raise EOFError("bad frame")
        parts.append(msg[1:])
        if msg[:1] == b"F":
            return b"".join(parts)


