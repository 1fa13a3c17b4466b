"""forkserver.dask against a real Dask cluster on loopback: a dask-scheduler and two
dask-worker processes, each worker with a forkserverd of its own (as on two nodes)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import exttasks
import forkserver
from test_forkserver import HERE, PKG, Daemon

try:
    import distributed
    from distributed.scheduler import KilledWorker
except ImportError:
    distributed = None

WHY = "python3-distributed is not installed (Debian: apt-get install python3-distributed)"
DEADLINE = 90  # seconds for the cluster to come up


def _command(name: str, module: str) -> list:
    """The real console script when installed (Debian's /usr/bin/dask-worker), else its
    module run by this Python."""
    path = shutil.which(name)
    if path:
        with open(path, "rb") as f:
            first = f.readline()
        if first.startswith(b"#!") and b"python3" in first:
            return [sys.executable, path]  # the Python under test, whatever the shebang says
    return [sys.executable, "-m", module]


def _ancestors(pid: int) -> list:
    """pid's parent, its parent, ... up to pid 1."""
    chain = []
    while pid > 1:
        with open(f"/proc/{pid}/stat") as f:
            pid = int(f.read().rsplit(")", 1)[1].split()[1])
        chain.append(pid)
    return chain


def _stop(proc: subprocess.Popen, grace: float = 20) -> None:
    """SIGTERM to the process group, SIGKILL after grace seconds; reaped either way."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # whatever it left in its group
    except ProcessLookupError:
        pass
    proc.wait()


@unittest.skipUnless(distributed, WHY)
class DaskTests(unittest.TestCase):
    """Worker A starts plain and gets the plugin from the client (register_worker_plugin);
    worker B has it from the start (dask-worker --preload forkserver.dask)."""

    @classmethod
    def setUpClass(cls) -> None:
        zygote = ("--python-preload", "json") if os.environ.get("FS_PYZYGOTE") == "1" else ()
        cls.procs: list = []
        cls.daemons = []
        cls.dir = tempfile.mkdtemp(prefix="fs-dask-test-")
        try:
            cls._start(zygote)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def _start(cls, zygote: tuple) -> None:
        cls.daemons = [Daemon(*zygote), Daemon(*zygote)]
        sched_file = os.path.join(cls.dir, "scheduler.json")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([PKG, HERE]),
                   DASK_DISTRIBUTED__WORKER__DAEMON="False")
        log = open(os.path.join(cls.dir, "cluster.log"), "wb")
        cls.log = log

        def start(argv: list, **extra: str) -> subprocess.Popen:
            p = subprocess.Popen(argv, env=dict(env, **extra), stdout=log, stderr=log,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
            cls.procs.append(p)
            return p

        start(_command("dask-scheduler", "distributed.cli.dask_scheduler") +
              ["--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--no-show",
               "--scheduler-file", sched_file])
        deadline = time.monotonic() + DEADLINE
        while not os.path.exists(sched_file):
            if time.monotonic() > deadline or cls.procs[0].poll() is not None:
                raise RuntimeError("dask-scheduler did not start:\n" + cls._log())
            time.sleep(0.1)
        worker = _command("dask-worker", "distributed.cli.dask_worker")
        common = ["--scheduler-file", sched_file, "--host", "127.0.0.1", "--nthreads", "2",
                  "--no-nanny", "--no-dashboard", "--death-timeout", "60"]
        cls.wa = start(worker + common + ["--name", "A"],
                       FORKSERVER_SOCKET=cls.daemons[0].sock,
                       FORKSERVER_KEY_FILE=cls.daemons[0].key)
        cls.wb = start(worker + common + ["--name", "B", "--preload", "forkserver.dask"],
                       FORKSERVER_SOCKET=cls.daemons[1].sock,
                       FORKSERVER_KEY_FILE=cls.daemons[1].key)
        cls.client = distributed.Client(scheduler_file=sched_file, timeout=DEADLINE)
        try:
            cls.client.wait_for_workers(2, timeout=DEADLINE)
        except Exception:
            raise RuntimeError("the dask-workers did not join:\n" + cls._log()) from None
        with open(sched_file) as f:
            assert json.load(f)["address"].startswith("tcp://127.0.0.1:")
        names = {w["name"]: a for a, w in cls.client.scheduler_info()["workers"].items()}
        cls.addr = {"A": names["A"], "B": names["B"]}

    @classmethod
    def _log(cls) -> str:
        cls.log.flush()
        with open(os.path.join(cls.dir, "cluster.log"), errors="replace") as f:
            return f.read()[-6000:]

    @classmethod
    def tearDownClass(cls) -> None:
        client = getattr(cls, "client", None)
        if client is not None:
            client.close(timeout=20)
        for p in reversed(cls.procs):  # workers first, the scheduler last
            _stop(p)
        for d in cls.daemons:
            d.stop()
        if getattr(cls, "log", None):
            cls.log.close()
        shutil.rmtree(cls.dir, ignore_errors=True)

    def run_on(self, name: str, fn, *args):
        return self.client.submit(fn, *args, workers=[self.addr[name]], pure=False,
                                  allow_other_workers=False).result(60)

    def assert_in_forkserver(self, info: dict, name: str) -> None:
        """info (exttasks.where) is from a process of that Dask worker's forkserverd, in
        its sandbox, and not the Dask worker itself."""
        daemon = self.daemons["AB".index(name)].proc.pid
        worker = (self.wa if name == "A" else self.wb).pid
        self.assertNotEqual(info["pid"], worker)
        chain = [info["ppid"]] + _ancestors(info["ppid"])
        self.assertIn(daemon, chain, f"task of worker {name} not under its forkserverd")
        self.assertNotIn(worker, chain)
        self.assertEqual(info["no_new_privs"], "1")
        self.assertEqual(info["seccomp"], "2")

    def test_1_tasks_run_in_forkserver_workers(self) -> None:
        # B has the plugin from its --preload, A not yet: its tasks run in its own threads
        self.assert_in_forkserver(self.run_on("B", exttasks.where), "B")
        info = self.run_on("A", exttasks.where)
        self.assertEqual(info["pid"], self.wa.pid)
        self.assertEqual(info["no_new_privs"], "0")
        from forkserver.dask import ForkserverPlugin
        self.client.register_worker_plugin(ForkserverPlugin())  # every worker, A and B
        for name in "AB":
            with self.subTest(worker=name):
                self.assert_in_forkserver(self.run_on(name, exttasks.where), name)
        # results, a lambda (cloudpickle: Dask's, then forkserver's) and a dependency chain
        futs = self.client.map(exttasks.square, range(20), pure=False)
        self.assertEqual(self.client.gather(futs), [x * x for x in range(20)])
        total = self.client.submit(sum, self.client.map(lambda x: x + 1, range(10)))
        self.assertEqual(total.result(60), 55)
        with self.assertRaises(ValueError) as cm:
            self.client.submit(exttasks.fail, 7, pure=False).result(60)
        self.assertEqual(str(cm.exception), "task failed on 7")
        self.assertIsInstance(cm.exception.__cause__, forkserver.RemoteTraceback)
        self.assertIn("exttasks.py", str(cm.exception.__cause__))

    def test_2_task_crash_is_a_killed_worker(self) -> None:
        from forkserver.dask import ForkserverPlugin, TaskProcessDied
        self.client.register_worker_plugin(ForkserverPlugin())
        for fn, args, how in ((exttasks.kill_self, (), "signal 9"),
                              (exttasks.exit_now, (3,), "exit status 3")):
            for name in "AB":
                with self.subTest(fn=fn.__name__, worker=name):
                    f = self.client.submit(fn, *args, workers=[self.addr[name]], pure=False,
                                           allow_other_workers=False)
                    with self.assertRaises(KilledWorker) as cm:
                        f.result(60)
                    self.assertIsInstance(cm.exception, TaskProcessDied)
                    self.assertIn(how, str(cm.exception))
                    self.assertEqual(cm.exception.task, f.key)
                    self.assertEqual(cm.exception.last_worker, self.addr[name])
        # the Dask workers live on, and so does their forkserver pool
        self.assertIsNone(self.wa.poll())
        self.assertIsNone(self.wb.poll())
        self.assertEqual(len(self.client.scheduler_info()["workers"]), 2)
        for name in "AB":
            self.assertEqual(self.run_on(name, exttasks.square, 6), 36)


if __name__ == "__main__":
    unittest.main()
