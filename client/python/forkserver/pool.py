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
import queue
import select
import sys
import threading
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Deque, Dict, Iterable, Iterator, List, Optional, Tuple

from . import client as C
from ._frames import recv_obj, send_obj, send_pickle

__all__ = ["Pool", "Executor", "AsyncResult", "WorkerLostError", "RemoteTraceback"]

ZYGOTE_ENTRY = "libforkserver-python:forkserver_python_worker"


class WorkerLostError(RuntimeError):
    """The worker running a task died before answering (its exit status is in the message)."""


class RemoteTraceback(Exception):
    """Attached as __cause__ of a task's exception: the traceback text from the worker."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


class _Task:
    __slots__ = ("id", "func", "args", "kwargs", "done")

    def __init__(self, tid: int, func: Callable, args: tuple, kwargs: dict,
                 done: Callable[[bool, Any], None]) -> None:
        self.id, self.func, self.args, self.kwargs, self.done = tid, func, args, kwargs, done


class _Slot:
    """One worker as the pool sees it."""

    def __init__(self, worker: C.Worker) -> None:
        self.worker = worker
        self.task: Optional[_Task] = None
        self.assigned = 0
        self.retiring = False  # given its last task (maxtasksperchild): gets no more


class _Core:
    """The pool's engine, run by one thread: starts workers, feeds them, collects results."""

    def __init__(self, processes: Optional[int], initializer: Optional[Callable],
                 initargs: tuple, maxtasksperchild: Optional[int], profile: Optional[str],
                 mode: str, connect_kwargs: Dict[str, Any]) -> None:
        if processes is not None and processes < 1:
            raise ValueError("processes must be at least 1")
        if maxtasksperchild is not None and maxtasksperchild < 1:
            raise ValueError("maxtasksperchild must be a positive int or None")
        self.n = processes or os.cpu_count() or 1
        self.maxtasks, self.profile = maxtasksperchild, profile
        self.client = C.connect(**connect_kwargs)
        self.mode = mode
        self.pending: Deque[_Task] = collections.deque()
        self.slots: List[_Slot] = []
        self.lock = threading.Lock()
        self.wake_r, self.wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self.next_id = 0
        self.closing = self.terminating = self.finished = False
        self.error: Optional[BaseException] = None
        name, path = _main_module()
        # the same two messages start every worker: pickled once
        self.setup_blob = pickle.dumps((list(sys.path), name, path, os.getcwd(),
                                        _main_code(path)), pickle.HIGHEST_PROTOCOL)
        self.init_blob = pickle.dumps((initializer, initargs, maxtasksperchild),
                                      pickle.HIGHEST_PROTOCOL)
        self.starting: Dict[int, str] = {}  # spawn requests in flight: id -> "zygote"/"exec"
        self._start_first()  # errors (no daemon, bad profile) reach the constructor's caller
        self.thread = threading.Thread(target=self._run, name="forkserver-pool", daemon=True)
        self.thread.start()

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
            mid = self.client.spawn_request([sys.executable, "-m", "forkserver.worker"], env=env,
                                          channel=True, profile=self.profile, stdout=1,
                                          stderr=2)
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
        self.slots.append(_Slot(w))

    def _started_all(self) -> None:
        while self.starting:
            self._started(next(iter(self.starting)))

    def _start_first(self) -> None:
        try:
            self._start_worker()
            self._started_all()
        except BaseException:
            self.client.close()
            os.close(self.wake_r)
            os.close(self.wake_w)
            raise

    # -- the caller's side --

    def submit(self, func: Callable, args: tuple, kwargs: dict,
               done: Callable[[bool, Any], None]) -> None:
        with self.lock:
            if self.closing or self.terminating:
                raise ValueError("Pool not running")
            if self.error:
                raise self.error
            self.next_id += 1
            self.pending.append(_Task(self.next_id, func, args, kwargs, done))
        self._wake()

    def _wake(self) -> None:
        with self.lock:  # never write to the pipe once the engine closed it (fd reuse)
            if self.finished:
                return
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
                os.close(self.wake_r)
                os.close(self.wake_w)

    def _fail_all(self, e: BaseException) -> None:
        with self.lock:
            tasks = list(self.pending)
            self.pending.clear()
        tasks += [s.task for s in self.slots if s.task]
        for t in tasks:
            t.done(False, e)

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
                for s in self.slots:
                    s.worker.wait()
                    s.worker.close()
                self.slots = []
                return
            self._assign()
            busy = any(s.task for s in self.slots)
            if closing and not busy and not self.pending:
                self._started_all()
                for s in self.slots:  # EOF on their channels: they exit 0
                    if s.worker.channel:
                        s.worker.channel.close()
                        s.worker.channel = None
                for s in self.slots:
                    s.worker.wait()
                    s.worker.close()
                self.slots = []
                return
            fds = [self.wake_r, self.client.fileno()] + \
                [s.worker.channel.fileno() for s in self.slots if s.worker.channel]
            ready, _, _ = select.select(fds, [], [])
            if self.wake_r in ready:
                try:
                    while os.read(self.wake_r, 4096):
                        pass
                except BlockingIOError:
                    pass
            if self.client.fileno() in ready:
                self.client.read_events()
            for s in list(self.slots):
                if s.worker.channel and s.worker.channel.fileno() in ready:
                    self._collect(s)

    def _assign(self) -> None:
        # keep n workers (fewer while there is little to do), and feed the idle ones
        with self.lock:
            want = min(self.n, max(len(self.pending) + sum(1 for s in self.slots if s.task), 1))
        # a retiring worker (given its last task) is replaced at once, not at its exit
        while sum(1 for s in self.slots if not s.retiring) + len(self.starting) < want:
            self._start_worker()
            want = min(want, self.n)
        for s in self.slots:
            if s.task or s.retiring or not s.worker.channel:
                continue
            with self.lock:
                if not self.pending:
                    return
                t = self.pending.popleft()
            try:
                send_obj(s.worker.channel, ("task", t.id, t.func, t.args, t.kwargs))
                s.task = t
                s.assigned += 1
                # its last task: its successor starts now, while this one runs
                s.retiring = self.maxtasks is not None and s.assigned >= self.maxtasks
            except OSError:
                with self.lock:
                    self.pending.appendleft(t)  # the worker is gone: another one takes it
                s.retiring = True
            except Exception as e:  # noqa: BLE001 - the task cannot be pickled
                t.done(False, e)

    def _collect(self, s: _Slot) -> None:
        try:
            msg = recv_obj(s.worker.channel)  # type: ignore[arg-type]
        except (EOFError, OSError):
            self._lost(s)
            return
        kind, tid = msg[0], msg[1]
        t, s.task = s.task, None
        if t is None or t.id != tid:
            raise RuntimeError("a worker answered a task it was not given")
        if kind == "ok":
            t.done(True, msg[2])
        else:
            exc, tb = msg[2], msg[3]
            if exc is None:
                exc = RuntimeError(tb.strip().splitlines()[-1] if tb else "task failed")
            exc.__cause__ = RemoteTraceback(tb)
            t.done(False, exc)

    def _lost(self, s: _Slot) -> None:
        """A worker's channel ended: it exited (maxtasks) or died; replace it."""
        w = s.worker
        if s.retiring and not s.task:  # an orderly exit: no need to wait for it
            w.close()
            self.slots.remove(s)
            return
        try:
            rc = w.wait(timeout=5)
        except Exception:  # noqa: BLE001
            w.kill()
            rc = w.wait()
        if s.task:
            how = f"exit status {rc}" if rc >= 0 else f"signal {-rc}"
            s.task.done(False, WorkerLostError(
                f"the worker (pid {w.pid}) running task {s.task.id} died ({how})"))
            s.task = None
        w.close()
        self.slots.remove(s)


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
        self._event.set()
        cb = self._callback if ok else self._error_callback
        if cb:
            cb(value)

    def ready(self) -> bool:
        return self._event.is_set()

    def successful(self) -> bool:
        if not self.ready():
            raise ValueError("result is not ready")
        return self._ok

    def wait(self, timeout: Optional[float] = None) -> None:
        self._event.wait(timeout)

    def get(self, timeout: Optional[float] = None) -> Any:
        if not self._event.wait(timeout):
            raise TimeoutError("result not ready")
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
            if self.ready():
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


def _run_chunk(func: Callable, argses: List[tuple]) -> list:
    """Runs in a worker: one task for a chunk of map work, the chunk's results in order."""
    return [func(*a) for a in argses]


def _chunks(argses: List[tuple], size: int) -> Iterator[Tuple[int, List[tuple]]]:
    if size < 1:
        raise ValueError(f"chunksize must be 1 or more, not {size}")
    for i in range(0, len(argses), size):
        yield i, argses[i:i + size]


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

    def __init__(self, processes: Optional[int] = None, initializer: Optional[Callable] = None,
                 initargs: Iterable = (), maxtasksperchild: Optional[int] = None,
                 profile: Optional[str] = None, *, mode: str = "auto", **connect_kwargs: Any):
        if mode not in ("auto", "zygote", "exec"):
            raise ValueError("mode is auto, zygote or exec")
        self._core = _Core(processes, initializer, tuple(initargs), maxtasksperchild, profile,
                           mode, connect_kwargs)

    @property
    def mode(self) -> str:
        """How workers start: "zygote" or "exec" (decided at the first worker with "auto")."""
        return "exec" if self._core.mode == "exec" else "zygote"

    def apply_async(self, func: Callable, args: Iterable = (), kwds: Optional[dict] = None,
                    callback: Optional[Callable] = None,
                    error_callback: Optional[Callable] = None) -> AsyncResult:
        r = AsyncResult(callback, error_callback)
        self._core.submit(func, tuple(args), dict(kwds or {}), r._set)
        return r

    def apply(self, func: Callable, args: Iterable = (), kwds: Optional[dict] = None) -> Any:
        return self.apply_async(func, args, kwds).get()

    def map_async(self, func: Callable, iterable: Iterable, chunksize: Optional[int] = None,
                  callback: Optional[Callable] = None,
                  error_callback: Optional[Callable] = None) -> AsyncResult:
        return self._map_async(func, [(x,) for x in iterable], chunksize, callback,
                               error_callback)

    def starmap_async(self, func: Callable, iterable: Iterable, chunksize: Optional[int] = None,
                      callback: Optional[Callable] = None,
                      error_callback: Optional[Callable] = None) -> AsyncResult:
        return self._map_async(func, [tuple(x) for x in iterable], chunksize, callback,
                               error_callback)

    def _map_async(self, func: Callable, argses: List[tuple], chunksize: Optional[int],
                   callback: Optional[Callable],
                   error_callback: Optional[Callable]) -> AsyncResult:
        if chunksize is None:  # multiprocessing's choice: about 4 chunks per worker
            chunksize = max(1, -(-len(argses) // (self._core.n * 4)))
        r = _MapResult(len(argses), callback, error_callback)
        for i, chunk in _chunks(argses, chunksize):
            self._submit_chunk(func, chunk, lambda ok, v, i=i: r._part(i, ok, v))
        return r

    def _submit_chunk(self, func: Callable, chunk: List[tuple],
                      done: Callable[[bool, Any], None]) -> None:
        """A chunk as one task; done gets the list of its results. A chunk of one item is the
        item's own task (its traceback shows no chunk runner)."""
        if len(chunk) == 1:
            self._core.submit(func, chunk[0], {}, lambda ok, v: done(ok, [v] if ok else v))
        else:
            self._core.submit(_run_chunk, (func, chunk), {}, done)

    def map(self, func: Callable, iterable: Iterable, chunksize: Optional[int] = None) -> list:
        return self.map_async(func, iterable, chunksize).get()

    def starmap(self, func: Callable, iterable: Iterable,
                chunksize: Optional[int] = None) -> list:
        return self.starmap_async(func, iterable, chunksize).get()

    def imap(self, func: Callable, iterable: Iterable, chunksize: int = 1) -> Iterator:
        results = []
        for _, chunk in _chunks([(x,) for x in iterable], chunksize):
            r = AsyncResult()
            self._submit_chunk(func, chunk, r._set)
            results.append(r)
        return (v for r in results for v in r.get())

    def imap_unordered(self, func: Callable, iterable: Iterable, chunksize: int = 1) -> Iterator:
        q: "queue.Queue[Tuple[bool, Any]]" = queue.Queue()
        n = 0
        for _, chunk in _chunks([(x,) for x in iterable], chunksize):
            self._submit_chunk(func, chunk, lambda ok, v: q.put((ok, v)))
            n += 1

        def gen() -> Iterator:
            for _ in range(n):
                ok, v = q.get()
                if not ok:
                    raise v
                yield from v
        return gen()

    def close(self) -> None:
        self._core.close()

    def terminate(self) -> None:
        self._core.terminate()
        self._core.join()

    def join(self) -> None:
        if not (self._core.closing or self._core.terminating):
            raise ValueError("Pool is still running")
        self._core.join()

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.terminate()


class Executor(concurrent.futures.Executor):
    """concurrent.futures.Executor on forkserver workers (arguments as Pool's). A worker that
    dies mid-task fails that future with BrokenProcessPool; the others go on."""

    def __init__(self, max_workers: Optional[int] = None, initializer: Optional[Callable] = None,
                 initargs: Iterable = (), max_tasks_per_child: Optional[int] = None,
                 profile: Optional[str] = None, *, mode: str = "auto",
                 **connect_kwargs: Any) -> None:
        self._pool = Pool(max_workers, initializer, initargs, max_tasks_per_child, profile,
                          mode=mode, **connect_kwargs)
        self._shutdown = False

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        f: concurrent.futures.Future = concurrent.futures.Future()
        f.set_running_or_notify_cancel()

        def done(ok: bool, v: Any) -> None:
            if ok:
                f.set_result(v)
            else:
                f.set_exception(BrokenProcessPool(str(v)) if isinstance(v, WorkerLostError)
                                else v)
        self._pool._core.submit(fn, args, kwargs, done)
        return f

    def map(self, fn: Callable, *iterables: Iterable, timeout: Optional[float] = None,
            chunksize: int = 1) -> Iterator:
        """As ProcessPoolExecutor.map: chunks of chunksize items, each one task."""
        if chunksize == 1:
            return super().map(fn, *iterables, timeout=timeout)
        chunks = [c for _, c in _chunks(list(zip(*iterables)), chunksize)]  # < 1: ValueError
        results = super().map(functools.partial(_run_chunk, fn), chunks, timeout=timeout)
        return itertools.chain.from_iterable(results)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._shutdown = True
        if cancel_futures:
            self._pool.terminate()
            return
        self._pool.close()
        if wait:
            self._pool.join()
