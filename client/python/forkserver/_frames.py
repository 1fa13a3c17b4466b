"""Objects over a channel: pickles cut into channel-sized frames.

Pickling: the standard pickle, and cloudpickle (when it can be imported) for what pickle
cannot do by reference: lambdas, nested functions, and the functions of a __main__ that
workers cannot import (an interactive session, `python3 -c`). A cloudpickle pickle is read
by plain pickle.loads, provided cloudpickle can be imported where it is read.
"""
from __future__ import annotations

import pickle
import sys
from typing import Any, List, Optional

from .client import Channel

FRAME = Channel.MAX_BYTES - 1  # one byte says whether more follows

_cloudpickle: Any = None  # the module once imported; False: not importable


def _cp() -> Optional[Any]:
    """cloudpickle, imported on first need (not at all for plain pickles: a fresh worker
    would pay for the import), or None."""
    global _cloudpickle
    if _cloudpickle is None:
        try:
            import cloudpickle
            _cloudpickle = cloudpickle
        except ImportError:
            _cloudpickle = False
    return _cloudpickle or None


def _main_unreachable() -> bool:
    """True when workers cannot import our __main__ (see pool._main_module): no script and
    no module name, or a package's __main__, whose functions pickle only by value."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name:
        return spec.name == "__main__" or spec.name.endswith(".__main__")
    path = getattr(main, "__file__", None)
    return not path or path.endswith(("<stdin>", "<string>"))


def dumps(obj: Any) -> bytes:
    """pickle, else cloudpickle for what pickle refused (a lambda, a local function)."""
    try:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, AttributeError, TypeError):
        cp = _cp()
        if cp is None:
            raise
        return cp.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def dumps_for_workers(obj: Any) -> bytes:
    """dumps, and cloudpickle from the start when a function of our __main__ would be
    pickled by a reference that workers cannot resolve."""
    if _main_unreachable():
        cp = _cp()
        if cp is not None:
            return cp.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return dumps(obj)


def send_obj(ch: Channel, obj: Any) -> None:
    """Sends obj (a task: pickled for workers) as one pickle in as many frames as it needs
    ('C' more follows, 'F' last)."""
    send_pickle(ch, dumps_for_workers(obj))


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


