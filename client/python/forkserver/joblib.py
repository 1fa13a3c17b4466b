"""joblib: a "forkserver" parallel backend, registered on import.

    import joblib
    import forkserver.joblib                       # registers the backend "forkserver"

    with joblib.parallel_backend("forkserver", n_jobs=4):
        joblib.Parallel()(joblib.delayed(f)(x) for x in xs)   # and scikit-learn's n_jobs
    joblib.Parallel(n_jobs=4, backend="forkserver")(...)

Each Parallel call gets a forkserver.Pool of n_jobs workers on the daemon that
forkserver.connect finds (keyword arguments of parallel_backend go to the Pool:
socket_path, key_file, server_uid, profile, mode, maxtasksperchild). joblib's batches are
its tasks; a worker that dies mid-batch fails the call with forkserver.WorkerLostError.
Needs joblib (Debian: python3-joblib). See docs/PYTHON.md, "joblib".
"""
from __future__ import annotations

import os
from typing import Any, Optional

from joblib import register_parallel_backend
from joblib._parallel_backends import (AutoBatchingMixin, FallbackToBackend,
                                       ParallelBackendBase, PoolManagerMixin,
                                       SequentialBackend)

from .pool import Pool

__all__ = ["ForkserverBackend", "register"]

NAME = "forkserver"


class ForkserverBackend(PoolManagerMixin, AutoBatchingMixin, ParallelBackendBase):
    """joblib's MultiprocessingBackend with a forkserver.Pool in place of
    multiprocessing's (no memmapping of large arrays: they are pickled to the workers)."""

    supports_timeout = True  # AsyncResult.get(timeout)

    def __init__(self, nesting_level: Optional[int] = None,
                 inner_max_num_threads: Optional[int] = None, **pool_kwargs: Any) -> None:
        super().__init__(nesting_level=nesting_level,
                         inner_max_num_threads=inner_max_num_threads)
        self.pool_kwargs = pool_kwargs

    def effective_n_jobs(self, n_jobs: Optional[int]) -> int:
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is None:
            return 1
        if n_jobs < 0:
            return max((os.cpu_count() or 1) + 1 + n_jobs, 1)
        return n_jobs

    def configure(self, n_jobs: int = 1, parallel: Any = None, prefer: Any = None,
                  require: Any = None, **backend_args: Any) -> int:
        n_jobs = self.effective_n_jobs(n_jobs)
        if n_jobs == 1:
            raise FallbackToBackend(SequentialBackend(nesting_level=self.nesting_level))
        self._pool = Pool(n_jobs, **self.pool_kwargs)
        self.parallel = parallel
        return n_jobs

    def terminate(self) -> None:
        super().terminate()
        self.reset_batch_stats()


def register(name: str = NAME, make_default: bool = False) -> None:
    """Registers the backend under name (again; importing this module did it once)."""
    register_parallel_backend(name, ForkserverBackend, make_default=make_default)


register()
