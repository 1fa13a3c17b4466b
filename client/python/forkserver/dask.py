"""Dask: run a distributed worker's tasks in forkserver workers.

    from distributed import Client
    from forkserver.dask import ForkserverPlugin

    client = Client("tcp://scheduler:8786")
    client.register_worker_plugin(ForkserverPlugin())   # every worker, present and future

or, on each worker's command line, `dask-worker --preload forkserver.dask ADDRESS`.

Each Dask worker then hands its tasks to a forkserver.Pool on the forkserverd of its own
node (the default socket and key, or those named), so that they run in sandboxed worker
processes, as many at a time as the Dask worker has threads. The Dask worker keeps its data,
its scheduling and its threads; only the task's function runs in the forkserver worker. A
forkserver worker that dies mid-task (a signal, os._exit) fails that task with TaskProcessDied,
a KilledWorker (Dask's exception for a worker that died running a task); the Dask worker
and its other tasks go on, and a fresh forkserver worker takes the next task.

Needs Dask's `distributed` (Debian: python3-distributed). See docs/PYTHON.md, "Dask".
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from typing import Any, Callable, Dict, Optional

from distributed.diagnostics.plugin import WorkerPlugin
from distributed.scheduler import KilledWorker
from distributed.worker import apply_function_simple

from .pool import Pool, WorkerLostError

__all__ = ["ForkserverPlugin", "TaskExecutor", "TaskProcessDied", "dask_setup"]

logger = logging.getLogger("forkserver.dask")


class TaskProcessDied(KilledWorker, WorkerLostError):
    """The forkserver worker process running a task died (a signal, os._exit): raised by
    the task's future, as Dask raises KilledWorker for a Dask worker that died running it.
    task is the task's key, last_worker the Dask worker's address (a string), detail how the
    process ended. Not retried by Dask unless the task was submitted with retries=N."""

    def __init__(self, task: str, last_worker: str, detail: str) -> None:
        Exception.__init__(self, task, last_worker, detail)

    @property
    def detail(self) -> str:
        return self.args[2]

    @property
    def allowed_failures(self) -> int:
        return 0

    def __str__(self) -> str:
        return (f"the forkserver worker process running task {self.task} on Dask worker "
                f"{self.last_worker} died: {self.detail}")


def _current_key() -> str:
    """The key of the task being executed, from the name the Dask worker gives the asyncio
    task that runs it ("execute(KEY)"); submit() is called from that task."""
    try:
        name = asyncio.current_task().get_name()  # type: ignore[union-attr]
    except RuntimeError:
        return "?"
    return name[len("execute("):-1] if name.startswith("execute(") else "?"


class _InForkserver:
    """Stands for a task's function in the Dask worker: calling it runs the function in a
    forkserver worker and waits. Dask's own wrapper (apply_function_simple) calls it in a
    thread of ours and so times it, sizes the result and reports errors as for any task."""

    def __init__(self, executor: "TaskExecutor", function: Callable, key: str) -> None:
        self.executor, self.function, self.key = executor, function, key

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self.executor._pool_for_task().apply(self.function, args, kwargs)
        except WorkerLostError as e:
            if isinstance(e, TaskProcessDied):
                raise
            raise TaskProcessDied(self.key, self.executor.address, str(e)) from None


def _broken(pool: Optional[Pool]) -> Optional[BaseException]:
    """What broke the pool's engine (its daemon went away, ...), or None."""
    return getattr(getattr(pool, "_core", None), "error", None)


class TaskExecutor(concurrent.futures.Executor):
    """The executor a ForkserverPlugin installs in a Dask worker: the Dask worker's task
    calls (distributed.worker.apply_function_simple) run their function in a forkserver
    worker; anything else the Dask worker submits (its benchmarks, ...) runs in a thread
    here. processes: how many forkserver workers at once (the Dask worker's nthreads by
    default); the other arguments are forkserver.Pool's."""

    def __init__(self, processes: int, address: str = "?", **pool_kwargs: Any) -> None:
        self.processes, self.address, self.pool_kwargs = processes, address, pool_kwargs
        self._lock = threading.Lock()
        self._pool: Optional[Pool] = Pool(processes, **pool_kwargs)  # errors reach setup()
        # one thread per task in flight (each waits for its forkserver worker), and one more
        self._threads = concurrent.futures.ThreadPoolExecutor(processes + 1,
                                                              thread_name_prefix="forkserver")
        self._shutdown = False

    def _pool_for_task(self) -> Pool:
        """The pool; a new one if the last one broke (its daemon went away)."""
        with self._lock:
            if self._shutdown:
                raise RuntimeError("the forkserver executor is shut down")
            broken = _broken(self._pool)
            if self._pool is None or broken is not None:
                if self._pool is not None:
                    logger.warning("forkserver pool broken (%s): starting a new one", broken)
                    self._pool.terminate()
                self._pool = Pool(self.processes, **self.pool_kwargs)
            return self._pool

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        if fn is apply_function_simple and args:
            args = (_InForkserver(self, args[0], _current_key()),) + args[1:]
        return self._threads.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.terminate()  # tasks in flight fail; the workers are killed
        self._threads.shutdown(wait=wait, cancel_futures=cancel_futures)


class ForkserverPlugin(WorkerPlugin):
    """A Dask WorkerPlugin: each worker runs its tasks in forkserver workers on its node.

    ForkserverPlugin(executor="default", processes=None, maxtasksperchild=None,
                     profile=None, mode="auto", socket_path=None, key_file=None,
                     server_uid=None)

    executor: the name the executor gets in the Dask worker; "default" runs every task in
    forkserver workers (the worker's thread pool stays available as "threads"), another
    name only the tasks annotated with it (`with dask.annotate(executor="forkserver"):`).
    processes: forkserver workers at once (the Dask worker's nthreads by default).
    socket_path, key_file, server_uid: as forkserver.connect, as seen on each Dask worker's
    node ($FORKSERVER_SOCKET and $FORKSERVER_KEY_FILE there by default; with nothing
    named and no daemon there, each Dask worker starts a private forkserverd).
    The others are forkserver.Pool's.
    """

    name = "forkserver"

    def __init__(self, executor: str = "default", processes: Optional[int] = None,
                 maxtasksperchild: Optional[int] = None, profile: Optional[str] = None,
                 mode: str = "auto", socket_path: Optional[str] = None,
                 key_file: Optional[str] = None, server_uid: Optional[int] = None) -> None:
        self.executor, self.processes = executor, processes
        self.pool_kwargs: Dict[str, Any] = {"maxtasksperchild": maxtasksperchild,
                                            "profile": profile, "mode": mode}
        for k, v in (("socket_path", socket_path), ("key_file", key_file),
                     ("server_uid", server_uid)):
            if v is not None:
                self.pool_kwargs[k] = v

    def setup(self, worker: Any) -> None:
        n = self.processes or getattr(getattr(worker, "state", worker), "nthreads", 1)
        ex = TaskExecutor(n, worker.address, **self.pool_kwargs)
        old = worker.executors.get(self.executor)
        if self.executor == "default" and old is not None and "threads" not in worker.executors:
            worker.executors["threads"] = old  # for tasks that need the Dask worker itself
        elif isinstance(old, TaskExecutor):
            old.shutdown(wait=False)
        worker.executors[self.executor] = ex
        logger.info("tasks of executor %r run in forkserver workers (%d at a time, %s mode)",
                    self.executor, n, ex._pool.mode if ex._pool else "?")

    def teardown(self, worker: Any) -> None:
        ex = worker.executors.get(self.executor)
        if isinstance(ex, TaskExecutor):
            ex.shutdown(wait=False)
            if self.executor == "default" and "threads" in worker.executors:
                worker.executors["default"] = worker.executors.pop("threads")
            else:
                del worker.executors[self.executor]


async def dask_setup(worker: Any) -> None:
    """`dask-worker --preload forkserver.dask`: the plugin with its defaults on this worker
    (the daemon at $FORKSERVER_SOCKET with $FORKSERVER_KEY_FILE, or a private one)."""
    await worker.plugin_add(ForkserverPlugin(), name=ForkserverPlugin.name, catch_errors=False)
