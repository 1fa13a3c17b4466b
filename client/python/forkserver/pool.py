"""Pool and Executor: multiprocessing.Pool and concurrent.futures APIs on forkserver workers.

Workers are Python processes the daemon starts: a fresh fork of its Python zygote when it
has one (forkserverd --python-preload; a fork, not an interpreter start), else
`python3 -m forkserver.worker` in exec mode. Each is fed pickled tasks over its private
channel. One thread per pool talks to the daemon and the workers; callers only queue work
and wait for results.
"""
from __future__ import annotations

import collections
import concurrent.futures
import errno as errno_mod
import functools
import importlib.util
import itertools
import marshal
import os
import pickle
import logging
import multiprocessing
import multiprocessing.pool as mp_pool
import multiprocessing.process as mp_process
import selectors
import sys
import threading
import time
import traceback
import weakref
from concurrent.futures.process import BrokenProcessPool
from concurrent.futures.process import _RemoteTraceback as _ExecutorRemoteTraceback
from typing import Any, Callable, Deque, Dict, Iterable, Iterator, List, Optional, Tuple

from . import client as C
from ._frames import FRAME, dumps_for_workers, recv_pickle, send_pickle

__all__ = ["Pool", "Executor", "AsyncResult", "IMapIterator", "WorkerLostError",
           "RemoteTraceback"]

ZYGOTE_ENTRY = "libforkserver-python:forkserver_python_worker"


class WorkerLostError(RuntimeError):
    """The worker running a task died before answering (its exit status is in the message)."""


# A Pool task's exception has the worker's traceback text as its __cause__, in the class
# multiprocessing.pool uses (an Executor's: concurrent.futures.process._RemoteTraceback).
RemoteTraceback = mp_pool.RemoteTraceback


class _Task:
    __slots__ = ("id", "func", "args", "kwargs", "done", "start")

    def __init__(self, tid: int, func: Callable, args: tuple, kwargs: dict,
                 done: Callable[[bool, Any], None],
                 start: Optional[Callable[[], bool]]) -> None:
        self.id, self.func, self.args, self.kwargs = tid, func, args, kwargs
        self.done, self.start = done, start


# A worker whose last task took less than this from being sent (or from the end of the task
# before it) to its answer is given its next task while it runs the current one: for tasks
# this short the round trip through the pool's thread is a large part of their cost, and a
# task queued behind one waits little. Only a task that fits one frame is queued so (its send
# never waits on a busy worker), and a queued task's answer can only come after the one
# running.
_QUICK = 0.001


class _Slot:
    """One worker as the pool sees it."""

    def __init__(self, worker: C.Worker) -> None:
        self.worker = worker
        # the tasks it was given, in order: the first runs, the others wait on its channel
        self.tasks: Deque[_Task] = collections.deque()
        self.since = 0.0  # when its first task was sent, or the one before it answered
        self.quick = False  # its last task answered within _QUICK
        self.assigned = 0
        self.retiring = False  # given its last task (maxtasksperchild): gets no more


_live: "weakref.WeakSet[_Core]" = weakref.WeakSet()
_exiting = False


def _python_exit() -> None:
    """At interpreter exit, before threads are joined (as concurrent.futures does it): an
    Executor's queued work completes, a Pool is terminated (as multiprocessing's)."""
    global _exiting
    _exiting = True
    for core in list(_live):
        if core.executor:
            core.close()
        else:
            core.terminate()
    for core in list(_live):
        core.join()


threading._register_atexit(_python_exit)  # type: ignore[attr-defined]


class _Core:
    """The pool's engine, run by one thread: starts workers, feeds them, collects results."""

    def __init__(self, processes: int, initializer: Optional[Callable],
                 initargs: tuple, maxtasksperchild: Optional[int], profile: Optional[str],
                 mode: str, connect_kwargs: Dict[str, Any], executor: bool) -> None:
        self.n = processes
        self.maxtasks, self.profile = maxtasksperchild, profile
        # the Executor's rules: a lost worker or a failed initializer breaks the pool
        self.executor = executor
        self.client = C.connect(**connect_kwargs)
        self.mode = mode
        self.pending: Deque[_Task] = collections.deque()
        self.slots: List[_Slot] = []
        self.lock = threading.Lock()
        self.wake_r, self.wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self.sel = selectors.DefaultSelector()  # not select.select: fds above 1,023 work
        self.sel.register(self.wake_r, selectors.EVENT_READ, None)
        self.sel.register(self.client.fileno(), selectors.EVENT_READ, None)
        self.next_id = 0
        self.closing = self.terminating = self.finished = False
        self.woken = False  # a byte is in the wake pipe that the engine has not read
        self.error: Optional[BaseException] = None
        name, path = _main_module()
        # the same two messages start every worker: pickled once. multiprocessing's authkey
        # goes with them, as its spawn method sends it, so that Manager proxies connect.
        self.setup_blob = pickle.dumps((list(sys.path), name, path, os.getcwd(),
                                        _main_code(path), list(sys.argv),
                                        bytes(mp_process.current_process().authkey)),
                                       pickle.HIGHEST_PROTOCOL)
        try:
            self.init_blob = dumps_for_workers((initializer, initargs, maxtasksperchild))
        except BaseException:
            self._close_fds()
            raise
        self.starting: Dict[int, str] = {}  # spawn requests in flight: id -> "zygote"/"exec"
        self._start_first()  # errors (no daemon, bad profile) reach the constructor's caller
        self.thread = threading.Thread(target=self._run, name="forkserver-pool", daemon=True)
        self.thread.start()
        _live.add(self)

    def _close_fds(self) -> None:
        self.sel.close()
        self.client.close()
        os.close(self.wake_r)
        os.close(self.wake_w)

    # -- starting workers --

    def _start_worker(self) -> None:
        """Asks the daemon for a worker; it joins the pool when the answer comes (_started),
        and the engine goes on meanwhile."""
        mode = "exec" if self.mode == "exec" else "zygote"
        env = {k: v for k, v in os.environ.items()
               if k.startswith(("PYTHON", "LANG", "LC_", "HOME", "PATH", "FAKECUDA",
                                "FORKSERVER_LIBCUDA", "OPENBLAS", "OMP_", "MKL_"))}
        if mode == "zygote":
            mid = self.client.spawn_request(entry=ZYGOTE_ENTRY, env=env, channel=True,
                                            profile=self.profile, stdout=1, stderr=2)
        else:
            pkg = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
            env["PYTHONPATH"] = os.pathsep.join([pkg] + ([env["PYTHONPATH"]]
                                                         if env.get("PYTHONPATH") else []))
            mid = self.client.spawn_request([sys.executable, "-m", "forkserver.worker"],
                                            env=env, channel=True, profile=self.profile,
                                            stdout=1, stderr=2)
        self.starting[mid] = mode

    def _started(self, mid: int) -> None:
        """Takes the daemon's answer to the spawn request mid (waiting for it if need be)."""
        mode = self.starting.pop(mid)
        try:
            w = self.client.spawn_result(mid)
        except C.SpawnError as e:
            if mode == "zygote" and self.mode == "auto" and \
                    e.errno in (errno_mod.EPERM, errno_mod.ENOENT):
                self.mode = "exec"  # no Python zygote in this server
                self._start_worker()
                return
            raise
        try:
            send_pickle(w.channel, self.setup_blob)  # type: ignore[arg-type]
            send_pickle(w.channel, self.init_blob)  # type: ignore[arg-type]
        except OSError:
            pass  # it died at once: found at its EOF like any other death
        s = _Slot(w)
        self.slots.append(s)
        self.sel.register(w.channel.fileno(), selectors.EVENT_READ, s)  # type: ignore

    def _started_all(self) -> None:
        while self.starting:
            self._started(next(iter(self.starting)))

    def _start_first(self) -> None:
        try:
            self._start_worker()
            self._started_all()
        except BaseException:
            self._close_fds()
            raise

    # -- the caller's side --

    def submit(self, func: Callable, args: tuple, kwargs: dict,
               done: Callable[[bool, Any], None],
               start: Optional[Callable[[], bool]] = None) -> None:
        """Queues a task; start(), if given, is called when a worker takes it (False: the
        task was cancelled, drop it); done(ok, value or exception) when it ends."""
        with self.lock:
            if self.error:
                raise self.error
            if self.closing or self.terminating:
                raise ValueError("Pool not running")
            self.next_id += 1
            self.pending.append(_Task(self.next_id, func, args, kwargs, done, start))
            self._wake_locked()

    def take_pending(self) -> List[_Task]:
        """The tasks no worker has taken yet, removed from the queue (for cancellation)."""
        with self.lock:
            tasks = list(self.pending)
            self.pending.clear()
        return tasks

    def _wake(self) -> None:
        with self.lock:
            self._wake_locked()

    def _wake_locked(self) -> None:
        """Wakes the engine, once until it next reads the pipe: a map of many tasks writes
        one byte, not one a task. Never once the engine closed the pipe (fd reuse)."""
        if self.finished or self.woken:
            return
        self.woken = True
        try:
            os.write(self.wake_w, b"x")
        except BlockingIOError:
            pass

    def close(self) -> None:
        with self.lock:
            self.closing = True
        self._wake()

    def terminate(self) -> None:
        with self.lock:
            self.terminating = True
        self._wake()

    def join(self, timeout: Optional[float] = None) -> None:
        if threading.current_thread() is not self.thread:
            self.thread.join(timeout)

    # -- the engine --

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as e:  # noqa: BLE001 - anything here breaks the pool
            self.error = e
            self._fail_all(e)
        finally:
            for s in self.slots:
                s.worker.kill()
            try:
                self.client.close()
            except OSError:
                pass
            with self.lock:
                self.finished = True
                self.sel.close()
                os.close(self.wake_r)
                os.close(self.wake_w)
            _live.discard(self)

    @staticmethod
    def _deliver(t: _Task, ok: bool, value: Any) -> None:
        """Ends a task: its callbacks run here, and one that raises is reported, not let
        loose on the engine (which would break every later task). The task's references go
        at once."""
        done = t.done
        t.func = t.args = t.kwargs = t.done = t.start = None  # type: ignore[assignment]
        try:
            done(ok, value)
        except BaseException:  # noqa: BLE001 - the caller's callback
            sys.stderr.write("forkserver.Pool: exception in a result callback:\n")
            traceback.print_exc()

    def _fail_all(self, e: BaseException) -> None:
        tasks = self.take_pending() + [t for s in self.slots for t in s.tasks]
        for s in self.slots:
            s.tasks.clear()
        for t in tasks:
            self._deliver(t, False, e)

    def _break(self, why: str) -> None:
        """The Executor's rule, as ProcessPoolExecutor's: a worker lost breaks the pool;
        its tasks, queued and running, fail with BrokenProcessPool, and so does submit."""
        e = BrokenProcessPool(why)
        with self.lock:
            self.error = e
            self.terminating = True
        self._fail_all(e)

    def _remove(self, s: _Slot) -> None:
        if s.worker.channel:
            self.sel.unregister(s.worker.channel.fileno())
        s.worker.close()
        self.slots.remove(s)

    def _loop(self) -> None:
        while True:
            with self.lock:
                terminating, closing = self.terminating, self.closing
            for mid in [m for m in self.starting if self.client.spawn_ready(m)]:
                self._started(mid)
            if terminating:
                self._fail_all(RuntimeError("the pool was terminated"))
                self._started_all()
                for s in self.slots:
                    s.worker.kill()
                for s in list(self.slots):
                    s.worker.wait()
                    self._remove(s)
                return
            self._assign()
            busy = any(s.tasks for s in self.slots)
            if closing and not busy and not self.pending:
                self._started_all()
                for s in self.slots:  # EOF on their channels: they exit 0
                    if s.worker.channel:
                        self.sel.unregister(s.worker.channel.fileno())
                        s.worker.channel.close()
                        s.worker.channel = None
                for s in list(self.slots):
                    s.worker.wait()
                    self._remove(s)
                return
            for key, _ in self.sel.select():
                if key.data is not None:
                    if key.data in self.slots:
                        self._collect(key.data)
                elif key.fd == self.wake_r:
                    try:
                        while os.read(self.wake_r, 4096):
                            pass
                    except BlockingIOError:
                        pass
                    # the pipe empty, then the flag: a wake-up in between wrote nothing,
                    # and what it was for (a task, a flag) the next pass reads
                    with self.lock:
                        self.woken = False
                else:
                    self.client.read_events()

    def _assign(self) -> None:
        # keep n workers (fewer while there is little to do), and feed the idle ones
        with self.lock:
            want = min(self.n, max(len(self.pending) + sum(1 for s in self.slots if s.tasks),
                                   1))
        # a retiring worker (given its last task) is replaced at once, not at its exit
        while sum(1 for s in self.slots if not s.retiring) + len(self.starting) < want:
            self._start_worker()
        # the idle workers first; then a second task for each quick one, as long as tasks
        # wait (an Executor's: no more than its n + 1, ProcessPoolExecutor's call queue)
        for s in self.slots:
            if not self._feed(s, 1):
                return
        for s in self.slots:
            if s.quick and not self._feed(s, 2):
                return

    def _feed(self, s: _Slot, depth: int) -> bool:
        """Sends s tasks until it has depth of them (one queued behind a running task only
        if it pickles into one frame); False when no task is left to send."""
        while len(s.tasks) < depth and not s.retiring and s.worker.channel:
            with self.lock:
                if not self.pending:
                    return False
                if depth > 1 and self.executor and \
                        sum(len(x.tasks) for x in self.slots) > self.n:
                    return False
                t = self.pending.popleft()
            if s.tasks:  # queued behind a running task only if it pickles into one frame
                try:
                    data = dumps_for_workers(("task", t.id, t.func, t.args, t.kwargs))
                except Exception:  # noqa: BLE001 - reported when an idle worker takes it
                    data = b""
                if not data or len(data) > FRAME:
                    with self.lock:
                        self.pending.appendleft(t)
                    return True
                if self._cancelled(t):
                    continue
            else:
                # a task that fails to pickle or was cancelled leaves the worker idle: it
                # takes the next one in this same pass (no pass would come while all idle)
                if self._cancelled(t):
                    continue
                try:
                    data = dumps_for_workers(("task", t.id, t.func, t.args, t.kwargs))
                except Exception as e:  # noqa: BLE001 - the task cannot be pickled
                    self._deliver(t, False, e)
                    continue
            try:
                send_pickle(s.worker.channel, data)  # type: ignore[arg-type]
            except OSError:
                with self.lock:
                    self.pending.appendleft(t)  # the worker is gone: another one takes it
                t.start = None  # running already
                s.retiring = True
                return True
            if not s.tasks:
                s.since = time.monotonic()
            s.tasks.append(t)
            s.assigned += 1
            # its last task: its successor starts now, while this one runs
            s.retiring = self.maxtasks is not None and s.assigned >= self.maxtasks
        return True

    @staticmethod
    def _cancelled(t: _Task) -> bool:
        """Marks t started as a worker takes it; True (its references dropped) when it was
        cancelled, which its future knows already."""
        if t.start is None or t.start():
            return False
        t.func = t.args = t.kwargs = t.done = t.start = None  # type: ignore[assignment]
        return True

    def _collect(self, s: _Slot) -> None:
        try:
            data = recv_pickle(s.worker.channel)  # type: ignore[arg-type]
        except (EOFError, OSError):
            self._lost(s)
            return
        t = s.tasks.popleft() if s.tasks else None
        now = time.monotonic()
        s.quick, s.since = now - s.since < _QUICK, now  # the next one ran from now
        try:
            msg = pickle.loads(data)
        except BaseException as e:  # noqa: BLE001 - a result that fails to unpickle here
            if t is None:
                raise RuntimeError("a worker answered a task it was not given") from None
            if self.executor:  # ProcessPoolExecutor's answer for that future
                err: BaseException = BrokenProcessPool(
                    f"the result of task {t.id} failed to unpickle: {e!r}")
                err.__cause__ = e
            else:
                err = e if isinstance(e, Exception) else RuntimeError(
                    f"the result of task {t.id} failed to unpickle: {e!r}")
            self._deliver(t, False, err)
            return
        kind, tid = msg[0], msg[1]
        if kind == "init-err":  # the worker's initializer raised; the worker exits
            if t:
                s.tasks.appendleft(t)  # it ran none of them
            if self.executor:
                logging.getLogger("concurrent.futures").critical(
                    "Exception in initializer:\n%s", msg[3])
                self._break("A child process terminated abruptly, the process pool is not "
                            "usable anymore (its initializer failed)")
            else:  # multiprocessing's rule: the worker is replaced, its task waits
                sys.stderr.write(f"forkserver.Pool: exception in initializer:\n{msg[3]}")
                self._requeue(s)
                self._remove(s)  # its channel closed: it exits
            return
        if t is None or t.id != tid:
            raise RuntimeError("a worker answered a task it was not given")
        if kind == "ok":
            self._deliver(t, True, msg[2])
            return
        exc, tb = msg[2], msg[3]
        if kind == "enc-err" and not self.executor:  # as multiprocessing.pool reports it
            exc = mp_pool.MaybeEncodingError(exc, msg[5])
        elif exc is None:
            exc = RuntimeError(tb.strip().splitlines()[-1] if tb else "task failed")
        exc.__cause__ = (_ExecutorRemoteTraceback if self.executor else RemoteTraceback)(
            '\n"""\n%s"""' % tb)
        self._deliver(t, False, exc)

    def _requeue(self, s: _Slot) -> None:
        """The tasks s was given and has not started go back to the head of the queue, in
        their order."""
        for t in s.tasks:
            t.start = None  # running already, as far as its caller knows
        with self.lock:
            self.pending.extendleft(reversed(s.tasks))
        s.tasks.clear()

    def _lost(self, s: _Slot) -> None:
        """A worker's channel ended: it exited (maxtasks) or died; replace it."""
        w = s.worker
        if s.retiring and not s.tasks:  # an orderly exit: no need to wait for it
            self._remove(s)
            return
        try:
            rc = w.wait(timeout=5)
        except Exception:  # noqa: BLE001
            w.kill()
            rc = w.wait()
        how = f"exit status {rc}" if rc >= 0 else f"signal {-rc}"
        t = s.tasks.popleft() if s.tasks else None
        self._requeue(s)  # those queued behind t never started
        self._remove(s)
        if self.executor and (t or rc != 0):
            if t:
                with self.lock:
                    self.pending.appendleft(t)  # fails below with the others
            self._break(f"A process in the process pool (pid {w.pid}) was terminated "
                        f"abruptly while the future was running or pending ({how})")
        elif t:
            self._deliver(t, False, WorkerLostError(
                f"the worker (pid {w.pid}) running task {t.id} died ({how})"))


def _main_module() -> Tuple[Optional[str], Optional[str]]:
    """How workers find the caller's __main__, as multiprocessing's spawn does: by module
    name when run with -m, else by the script's path (neither for an interactive session)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name:
        return spec.name, None
    path = getattr(main, "__file__", None)
    if path and not path.endswith(("<stdin>", "<string>")):
        return None, os.path.abspath(path)
    return None, None


def _main_code(path: Optional[str]) -> Optional[Tuple[bytes, bytes]]:
    """The main script compiled once here, for every worker: (bytecode magic, marshalled
    code). Compiling it again in each new worker would cost that worker more than its fork.
    None when there is no script or it cannot be read or compiled (workers then run it from
    its file, as multiprocessing does, and report what goes wrong there)."""
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            code = compile(f.read(), path, "exec", dont_inherit=True)
        return importlib.util.MAGIC_NUMBER, marshal.dumps(code)
    except (OSError, SyntaxError, ValueError):
        return None


class AsyncResult:
    """As multiprocessing.pool.AsyncResult: get, wait, ready, successful."""

    def __init__(self, callback: Optional[Callable] = None,
                 error_callback: Optional[Callable] = None) -> None:
        self._event = threading.Event()
        self._ok = False
        self._value: Any = None
        self._callback, self._error_callback = callback, error_callback

    def _set(self, ok: bool, value: Any) -> None:
        self._ok, self._value = ok, value
        cb = self._callback if ok else self._error_callback
        self._callback = self._error_callback = None
        try:
            if cb:
                cb(value)
        finally:  # a callback that raises still lets get() return
            self._event.set()

    def ready(self) -> bool:
        return self._event.is_set()

    def successful(self) -> bool:
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self._ok

    def wait(self, timeout: Optional[float] = None) -> None:
        self._event.wait(timeout)

    def get(self, timeout: Optional[float] = None) -> Any:
        if not self._event.wait(timeout):
            raise multiprocessing.TimeoutError
        if self._ok:
            return self._value
        raise self._value


class _MapResult(AsyncResult):
    def __init__(self, n: int, callback: Optional[Callable],
                 error_callback: Optional[Callable]) -> None:
        super().__init__(callback, error_callback)
        self._left, self._values = n, [None] * n
        self._lock = threading.Lock()
        if n == 0:
            self._set(True, [])

    def _part(self, i: int, ok: bool, values: Any) -> None:
        """The results of items i, i+1, ... (a chunk's list), or the chunk's exception."""
        with self._lock:
            if self.ready() or self._left < 0:
                return
            if not ok:
                self._left = -1
                final = (False, values)
            else:
                self._values[i:i + len(values)] = values
                self._left -= len(values)
                final = (True, self._values) if self._left == 0 else None
        if final:
            self._set(*final)


class IMapIterator:
    """What imap returns, as multiprocessing's: next(timeout) raises
    multiprocessing.TimeoutError; results in order (imap_unordered: as they come)."""

    def __init__(self, ordered: bool) -> None:
        self._cond = threading.Condition()
        self._ordered = ordered
        self._items: Dict[int, Tuple[bool, Any]] = {}
        self._done: Deque[Tuple[bool, Any]] = collections.deque()
        self._next = 0
        self._length: Optional[int] = None  # chunks, once the input is read to its end

    def _set(self, i: int, ok: bool, values: Any) -> None:
        with self._cond:
            if self._ordered:
                self._items[i] = (ok, values)
            else:
                self._done.append((ok, values))
            self._cond.notify_all()

    def _set_length(self, n: int) -> None:
        with self._cond:
            self._length = n
            self._cond.notify_all()

    def __iter__(self) -> "IMapIterator":
        return self

    def _buffer(self) -> Deque[Any]:
        b = getattr(self, "_buf", None)
        if b is None:
            b = self._buf = collections.deque()
        return b

    def next(self, timeout: Optional[float] = None) -> Any:
        buf = self._buffer()
        while not buf:
            with self._cond:
                while True:
                    if self._length is not None and self._next >= self._length:
                        raise StopIteration
                    if self._ordered and self._next in self._items:
                        ok, v = self._items.pop(self._next)
                        break
                    if not self._ordered and self._done:
                        ok, v = self._done.popleft()
                        break
                    if not self._cond.wait(timeout):
                        raise multiprocessing.TimeoutError
                self._next += 1
            if not ok:
                raise v
            buf.extend(v)
        return buf.popleft()

    __next__ = next


def _run_chunk(func: Callable, argses: List[tuple]) -> list:
    """Runs in a worker: one task for a chunk of map work, the chunk's results in order."""
    return [func(*a) for a in argses]


def _run_map(func: Callable, items: list) -> list:
    """_run_chunk for map's chunks: one argument an item, as multiprocessing's mapstar."""
    return list(map(func, items))


def _run_starmap(func: Callable, argses: list) -> list:
    return list(itertools.starmap(func, argses))


def _chunks(items: Iterable, size: int) -> Iterator[Tuple[int, list]]:
    """(index of its first item, chunk) for chunks of size items, read lazily."""
    if size < 1:
        raise ValueError(f"chunksize must be 1 or more, not {size}")
    if isinstance(items, list):  # slices: no item-by-item copy
        for i in range(0, len(items), size):
            yield i, items[i:i + size]
        return
    it = iter(items)
    i = 0
    while True:
        chunk = list(itertools.islice(it, size))
        if not chunk:
            return
        yield i, chunk
        i += len(chunk)


class Pool:
    """multiprocessing.Pool on forkserver workers.

    Pool(processes=None, initializer=None, initargs=(), maxtasksperchild=None, profile=None,
         *, mode="auto", socket_path=None, key_file=None, key_fd=None)

    mode: "zygote" (fork-mode workers of the server's Python zygote), "exec" (each worker
    runs `python3 -m forkserver.worker`), or "auto" (the zygote when the server has one).
    Functions and arguments must pickle; functions of your main script work as with
    multiprocessing's spawn method (the script is run as __mp_main__ in each worker, so keep
    its work under `if __name__ == "__main__":`). An exception in a task is re-raised by
    get() with the worker's traceback as its __cause__; a worker that dies mid-task fails
    that task with WorkerLostError and is replaced.
    """

    _executor = False

    def __init__(self, processes: Optional[int] = None, initializer: Optional[Callable] = None,
                 initargs: Iterable = (), maxtasksperchild: Optional[int] = None,
                 profile: Optional[str] = None, *, mode: str = "auto", **connect_kwargs: Any):
        if mode not in ("auto", "zygote", "exec"):
            raise ValueError("mode is auto, zygote or exec")
        # multiprocessing.Pool's checks and messages
        if processes is None:
            processes = os.cpu_count() or 1
        if processes < 1:
            raise ValueError("Number of processes must be at least 1")
        if maxtasksperchild is not None:
            if not isinstance(maxtasksperchild, int) or maxtasksperchild <= 0:
                raise ValueError("maxtasksperchild must be a positive int or None")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        self._core = _Core(processes, initializer, tuple(initargs), maxtasksperchild, profile,
                           mode, connect_kwargs, self._executor)
        self._state = "RUN"

    def __del__(self) -> None:
        core = getattr(self, "_core", None)
        if core is not None and getattr(self, "_state", None) == "RUN":
            core.terminate()  # as multiprocessing's finalizer: the workers end with the pool

    def _check_running(self) -> None:
        if self._state != "RUN":
            raise ValueError("Pool not running")

    @property
    def mode(self) -> str:
        """How workers start: "zygote" or "exec" (decided at the first worker with "auto")."""
        return "exec" if self._core.mode == "exec" else "zygote"

    def apply_async(self, func: Callable, args: Iterable = (), kwds: Optional[dict] = None,
                    callback: Optional[Callable] = None,
                    error_callback: Optional[Callable] = None) -> AsyncResult:
        self._check_running()
        r = AsyncResult(callback, error_callback)
        self._core.submit(func, tuple(args), dict(kwds or {}), r._set)
        return r

    def apply(self, func: Callable, args: Iterable = (), kwds: Optional[dict] = None) -> Any:
        return self.apply_async(func, args, kwds).get()

    def map_async(self, func: Callable, iterable: Iterable, chunksize: Optional[int] = None,
                  callback: Optional[Callable] = None,
                  error_callback: Optional[Callable] = None) -> AsyncResult:
        self._check_running()
        return self._map_async(func, list(iterable), False, chunksize, callback,
                               error_callback)

    def starmap_async(self, func: Callable, iterable: Iterable, chunksize: Optional[int] = None,
                      callback: Optional[Callable] = None,
                      error_callback: Optional[Callable] = None) -> AsyncResult:
        self._check_running()
        return self._map_async(func, [tuple(x) for x in iterable], True, chunksize, callback,
                               error_callback)

    def _map_async(self, func: Callable, items: list, star: bool, chunksize: Optional[int],
                   callback: Optional[Callable],
                   error_callback: Optional[Callable]) -> AsyncResult:
        if chunksize is None:  # multiprocessing's choice: about 4 chunks per worker
            chunksize = max(1, -(-len(items) // (self._core.n * 4)))
        r = _MapResult(len(items), callback, error_callback)
        for i, chunk in _chunks(items, chunksize):
            self._submit_chunk(func, chunk, star, functools.partial(r._part, i))
        return r

    def _submit_chunk(self, func: Callable, chunk: list, star: bool,
                      done: Callable[[bool, Any], None]) -> None:
        """A chunk as one task; done gets the list of its results. Items go as they are
        (star: argument tuples), not each wrapped in a tuple: that costs pickling at both
        ends, the per-item cost of a map of tiny tasks. A chunk of one item is the item's own
        task (its traceback shows no chunk runner)."""
        if len(chunk) == 1:
            args = tuple(chunk[0]) if star else (chunk[0],)
            self._core.submit(func, args, {}, lambda ok, v: done(ok, [v] if ok else v))
        else:
            self._core.submit(_run_starmap if star else _run_map, (func, chunk), {}, done)

    def map(self, func: Callable, iterable: Iterable, chunksize: Optional[int] = None) -> list:
        return self.map_async(func, iterable, chunksize).get()

    def starmap(self, func: Callable, iterable: Iterable,
                chunksize: Optional[int] = None) -> list:
        return self.starmap_async(func, iterable, chunksize).get()

    def _imap(self, func: Callable, iterable: Iterable, chunksize: int,
              ordered: bool) -> IMapIterator:
        """As multiprocessing: the input is read by a thread of its own, as workers take
        it; an exception the input raises is delivered at its chunk's place."""
        self._check_running()
        if chunksize < 1:
            raise ValueError(f"Chunksize must be 1+, not {chunksize:n}")
        it = IMapIterator(ordered)
        submit_chunk = self._submit_chunk

        def feed() -> None:
            n = 0
            try:
                for _, chunk in _chunks(iterable, chunksize):
                    submit_chunk(func, chunk, False, functools.partial(it._set, n))
                    n += 1
            except BaseException as e:  # noqa: BLE001 - the input's, for its reader
                it._set(n, False, e)
                n += 1
            it._set_length(n)
        threading.Thread(target=feed, name="forkserver-pool-imap", daemon=True).start()
        return it

    def imap(self, func: Callable, iterable: Iterable, chunksize: int = 1) -> IMapIterator:
        return self._imap(func, iterable, chunksize, True)

    def imap_unordered(self, func: Callable, iterable: Iterable,
                       chunksize: int = 1) -> IMapIterator:
        return self._imap(func, iterable, chunksize, False)

    def close(self) -> None:
        if self._state == "RUN":
            self._state = "CLOSE"
        self._core.close()

    def terminate(self) -> None:
        self._state = "TERMINATE"
        self._core.terminate()
        self._core.join()

    def join(self) -> None:
        if self._state == "RUN":
            raise ValueError("Pool is still running")
        self._core.join()

    def __enter__(self) -> "Pool":
        self._check_running()
        return self

    def __exit__(self, *exc: object) -> None:
        self.terminate()


class _ExecutorPool(Pool):
    _executor = True


class Executor(concurrent.futures.Executor):
    """concurrent.futures.Executor on forkserver workers (arguments as Pool's), with
    ProcessPoolExecutor's rules: a worker that dies or an initializer that fails breaks the
    pool (BrokenProcessPool for its futures and for submit), futures stay pending until a
    worker takes them (so cancel() works), and work submitted is completed at interpreter
    exit."""

    def __init__(self, max_workers: Optional[int] = None, initializer: Optional[Callable] = None,
                 initargs: Iterable = (), max_tasks_per_child: Optional[int] = None,
                 profile: Optional[str] = None, *, mode: str = "auto",
                 **connect_kwargs: Any) -> None:
        if max_workers is not None and max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if max_tasks_per_child is not None:
            if not isinstance(max_tasks_per_child, int):
                raise TypeError("max_tasks_per_child must be an integer")
            if max_tasks_per_child <= 0:
                raise ValueError("max_tasks_per_child must be >= 1")
        self._pool = _ExecutorPool(max_workers, initializer, initargs, max_tasks_per_child,
                                   profile, mode=mode, **connect_kwargs)
        self._max_workers = self._pool._core.n
        self._shutdown_thread = False
        self._shutdown_lock = threading.Lock()

    @property
    def _broken(self) -> Any:
        """As ProcessPoolExecutor's: False, or why the pool is broken."""
        e = self._pool._core.error
        return str(e) if isinstance(e, BrokenProcessPool) else False

    def __del__(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:  # its engine finishes the work queued, then ends
            pool._state = "CLOSE"
            pool._core.close()

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        with self._shutdown_lock:
            core = self._pool._core
            if isinstance(core.error, BrokenProcessPool):
                raise BrokenProcessPool(str(core.error))
            if self._shutdown_thread:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if _exiting:
                raise RuntimeError("cannot schedule new futures after interpreter shutdown")
            f: concurrent.futures.Future = concurrent.futures.Future()

            def done(ok: bool, v: Any) -> None:
                if ok:
                    f.set_result(v)
                elif isinstance(v, WorkerLostError):
                    f.set_exception(BrokenProcessPool(str(v)))
                else:
                    f.set_exception(v)
            # pending until a worker takes it: running then, or dropped if cancelled
            core.submit(fn, args, kwargs, done, f.set_running_or_notify_cancel)
            return f

    def map(self, fn: Callable, *iterables: Iterable, timeout: Optional[float] = None,
            chunksize: int = 1) -> Iterator:
        """As ProcessPoolExecutor.map: chunks of chunksize items, each one task."""
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        if chunksize == 1:
            return super().map(fn, *iterables, timeout=timeout)
        chunks = (c for _, c in _chunks(zip(*iterables), chunksize))
        results = super().map(functools.partial(_run_chunk, fn), chunks, timeout=timeout)
        return itertools.chain.from_iterable(results)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._shutdown_lock:
            self._shutdown_thread = True
            core = self._pool._core
            if cancel_futures:
                # the tasks no worker took, but for the next max_workers + 1: those would be
                # in ProcessPoolExecutor's call queue, marked running already
                tasks = core.take_pending()
                keep = max(0, core.n + 1 - sum(len(s.tasks) for s in core.slots))
                for t in tasks[keep:]:
                    if t.start is not None:
                        t.start.__self__.cancel()  # type: ignore[union-attr]
                with core.lock:
                    core.pending.extendleft(reversed(tasks[:keep]))
        self._pool.close()
        if wait:
            self._pool.join()
