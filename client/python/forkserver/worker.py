"""The Pool's worker loop: tasks in, results out, over the worker's channel (fd 3).

Run as `python3 -m forkserver.worker` (exec mode), or called by the Python zygote's fork-mode
entry (forkserver_python_worker) in a fresh fork of an interpreter that already imported
what --python-preload named.

Messages are pickles cut into channel-sized frames (see _frames). The first message is plain
data: the client's sys.path, main module (name or path), cwd, its main script compiled
(bytecode magic, marshalled code, or None), sys.argv and multiprocessing's authkey, set up
before anything else is unpickled, as multiprocessing's spawn does; then (initializer,
initargs, maxtasks); then tasks ("task", id, func, args, kwargs) until EOF. Replies:
("ok", id, value, last), ("err", id, exception or None, traceback text, last), or, for a
result that does not pickle, ("enc-err", id, exception or None, traceback text, last,
repr of the result); last is true when the worker reached maxtasks and exits after this
reply. An initializer that raises is answered ("init-err", 0, exception or None, traceback
text, True), and the worker exits once the pool hangs up.
"""
from __future__ import annotations

import importlib.util
import marshal
import os
import pickle
import runpy
import sys
import traceback
import types
from typing import Any, List, Tuple

from ._frames import dumps, recv_obj, send_obj, send_pickle
from .client import Channel

def _setup_main(sys_path: List[str], main_name: str | None, main_path: str | None,
                cwd: str | None, main_code: Tuple[bytes, bytes] | None = None,
                argv: List[str] | None = None, authkey: bytes | None = None) -> None:
    """Makes the client's modules importable: its sys.path, and its main module as
    __mp_main__ (aliased to __main__) so that its functions unpickle. A package's __main__
    (python -m pkg) is left alone, as multiprocessing leaves it. A script comes compiled by
    the client (main_code: bytecode magic, marshalled code) and runs as runpy.run_path would
    run it; with another Python's bytecode, it is run from its file."""
    if argv is not None:  # as multiprocessing's spawn: the client's, argv[0] included
        sys.argv[:] = argv
    if authkey is not None:  # multiprocessing's, so that Manager proxies connect
        import multiprocessing.process
        multiprocessing.process.current_process().authkey = authkey
    for p in reversed(sys_path):
        if p not in sys.path:
            sys.path.insert(0, p)
    if cwd:
        try:
            os.chdir(cwd)
        except OSError:
            pass
    if main_name:
        if main_name == "__main__" or main_name.endswith(".__main__"):
            return
        code = runpy.run_module(main_name, run_name="__mp_main__", alter_sys=False)
    elif main_path and main_code and main_code[0] == importlib.util.MAGIC_NUMBER:
        mod = types.ModuleType("__mp_main__")
        mod.__dict__.update(__file__=main_path, __cached__=None, __loader__=None,
                            __package__="", __spec__=None)
        sys.modules["__mp_main__"] = mod
        try:
            exec(marshal.loads(main_code[1]), mod.__dict__)
        except BaseException:
            del sys.modules["__mp_main__"]
            raise
        sys.modules["__main__"] = mod
        return
    elif main_path and os.path.exists(main_path):
        code = runpy.run_path(main_path, run_name="__mp_main__")
    else:
        return
    mod = types.ModuleType("__mp_main__")
    mod.__dict__.update(code)
    sys.modules["__mp_main__"] = sys.modules["__main__"] = mod


def _error(tid: int, exc: BaseException, last: bool) -> Tuple:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        pickle.loads(dumps(exc))
        return ("err", tid, exc, tb, last)
    except Exception:  # noqa: BLE001 - an exception that does not survive pickling
        return ("err", tid, None, tb, last)


def _repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception:  # noqa: BLE001
        return object.__repr__(value)


def main(fd: int | None = None) -> int:
    """The loop; returns the exit status."""
    if fd is None:
        fd = int(os.environ.get("FORKSERVER_CHANNEL_FD", "3"))
    ch = Channel(fd)
    try:
        setup = recv_obj(ch)
        _setup_main(*setup)
        initializer, initargs, maxtasks = recv_obj(ch)
        if initializer is not None:
            try:
                initializer(*initargs)
            except BaseException as e:  # noqa: BLE001 - the pool reports it; we end
                send_obj(ch, ("init-err",) + _error(0, e, True)[1:])
                # until the pool hangs up: exiting with its tasks unread would reset the
                # channel, and the pool would lose this message
                try:
                    while ch.recv(maxfds=0):
                        pass
                except (EOFError, OSError):
                    pass
                return 1
        done = 0
        while maxtasks is None or done < maxtasks:
            try:
                msg = recv_obj(ch)
            except EOFError:
                return 0
            _, tid, func, args, kwargs = msg
            done += 1
            last = maxtasks is not None and done >= maxtasks
            try:
                value = func(*args, **kwargs)
            except BaseException as e:  # noqa: BLE001 - every failure goes back
                del msg, func, args, kwargs
                send_obj(ch, _error(tid, e, last))
                continue
            # the task's arguments go before its answer, as in multiprocessing's workers:
            # the caller may wait on what their __del__ does
            del msg, func, args, kwargs
            try:
                # plain pickle, as multiprocessing's workers: a result that does not pickle
                # is the caller's MaybeEncodingError, not cloudpickle's to rescue
                data = pickle.dumps(("ok", tid, value, last), pickle.HIGHEST_PROTOCOL)
            except BaseException as e:  # noqa: BLE001 - a result that does not pickle
                send_obj(ch, ("enc-err",) + _error(tid, e, last)[1:] + (_repr(value),))
                continue
            del value
            send_pickle(ch, data)
        return 0
    except EOFError:
        return 0
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def warm(tasks: int = 100) -> None:
    """Runs the loop once in the zygote, before any worker is forked, over a socketpair: the
    interpreter quickens and specializes the loop's bytecode and fills its caches here, once,
    rather than in every worker, where each of those writes copies a page of the zygote."""
    import socket
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    with ours:
        peer = Channel(ours.fileno())
        send_pickle(peer, pickle.dumps((list(sys.path), None, None, None, None, None, None)))
        send_pickle(peer, pickle.dumps((None, (), tasks)))
        for i in range(tasks):
            send_pickle(peer, pickle.dumps(("task", i, _repr, (i,), {})))
        main(theirs.detach())  # its channel owns the fd, closed when main returns
        for _ in range(tasks):
            recv_obj(peer)


if __name__ == "__main__":
    sys.exit(main())
