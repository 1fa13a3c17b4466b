"""forkserver: start worker processes through forkserverd, from Python.

    import forkserver
    with forkserver.connect() as fs:               # forkctl's defaults; a private server
        w = fs.spawn(["make", "-j8"], stdout=1)    # if none is running
        print(w.wait())

    with forkserver.Pool(4) as pool:               # multiprocessing.Pool's API
        print(pool.map(abs, range(-3, 3)))

Standard library only. See docs/PYTHON.md.
"""
from .client import (AuthenticationError, Channel, Client, ConnectionLost, ForkserverError,
                     SpawnError, Worker, connect, default_key_file, default_socket)
from .pool import AsyncResult, Executor, Pool, RemoteTraceback, WorkerLostError

__all__ = ["connect", "Client", "Worker", "Channel", "Pool", "Executor", "AsyncResult",
           "ForkserverError", "AuthenticationError", "SpawnError", "ConnectionLost",
           "WorkerLostError", "RemoteTraceback", "default_socket", "default_key_file"]
__version__ = "0.1.0"
