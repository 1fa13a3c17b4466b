"""The Python client and Pool against the real forkserverd (unittest, standard library)."""
from __future__ import annotations

import concurrent.futures
import gc
import itertools
import multiprocessing
import multiprocessing.pool
import os
import secrets
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from unittest import mock
import weakref

import forkserver
from forkserver import _protocol as P
import pooltasks

DAEMON = os.environ["FORKSERVERD"]
HERE = os.path.dirname(os.path.abspath(__file__))
PKG = os.path.normpath(os.path.join(HERE, "..", "..", "client", "python"))


MAIN_SCRIPT = """
import os, sys
import forkserver
import forkserver.pool

def cube(x):
    return x ** 3

def where(_):
    import __main__
    return f"{__name__} {__main__.__name__} {__file__}", os.getpid()

if __name__ == "__main__":
    sock, key, mode, stale = sys.argv[1:5]
    if stale:  # as if the workers ran another Python: they get no usable bytecode
        forkserver.pool._main_code = lambda path: (b"????", b"")
    with forkserver.Pool(2, maxtasksperchild=1, socket_path=sock, key_file=key,
                         mode=mode) as p:
        print(p.map(cube, range(6)))
        text, pid = p.apply(where, (0,))
        print(text)
        print("other pids" if pid != os.getpid() else "same pid")
"""


class Daemon:
    """A forkserverd on a temporary socket, with a fresh key file."""

    def __init__(self, *args: str, env: dict | None = None) -> None:
        self.dir = tempfile.mkdtemp(prefix="fs-py-test-")
        self.sock = os.path.join(self.dir, "s.sock")
        self.key = os.path.join(self.dir, "key")
        with open(os.open(self.key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write(secrets.token_hex(32) + "\n")
        r, w = os.pipe()
        e = dict(os.environ, PYTHONPATH=os.pathsep.join([PKG, HERE]), **(env or {}))
        # --allow-root-workers: CI runs as root, and a root daemon needs a plan (tests/daemon.h)
        self.proc = subprocess.Popen([DAEMON, "--foreground", "--socket", self.sock,
                                      "--key-file", self.key, "--ready-fd", str(w),
                                      "--log-level", "warning", "--allow-root-workers", *args],
                                     pass_fds=(w,), env=e, stderr=subprocess.PIPE)
        os.close(w)
        ready = os.read(r, 16)
        os.close(r)
        if ready != b"READY\n":
            err = self.proc.stderr.read().decode()
            self.proc.stderr.close()
            self.proc.wait()
            shutil.rmtree(self.dir, ignore_errors=True)
            raise RuntimeError(f"forkserverd did not start: {err}")

    def connect(self, **kw) -> forkserver.Client:
        return forkserver.connect(self.sock, self.key, **kw)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.proc.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class ClientTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.d = Daemon()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.d.stop()

    def test_spawn_exit_codes_and_stdio(self) -> None:
        with self.d.connect() as fs:
            r, w = os.pipe()
            wk = fs.spawn(["sh", "-c", "echo out $X; exit 7"], env={"X": "1"}, stdout=w)
            os.close(w)
            with os.fdopen(r) as f:
                self.assertEqual(f.read(), "out 1\n")
            self.assertEqual(wk.wait(5), 7)
            wk.close()
            wk = fs.spawn(["sleep", "30"])
            self.assertIsNone(wk.poll())
            wk.kill()
            self.assertEqual(wk.wait(5), -9)
            wk.close()
            with self.assertRaises(forkserver.SpawnError) as cm:
                fs.spawn(["/nonexistent/prog"])
            self.assertIn("exec /nonexistent/prog", cm.exception.strerror)
            self.assertEqual(fs.status()["spawn_failures_by_cause"]["setup"], 1)
            # as root the suite's daemon has --allow-root-workers: workers run as their clients
            self.assertEqual(fs.status()["workers_run_as"],
                             "client" if os.geteuid() == 0 else "daemon")

    def test_wrong_key_refused(self) -> None:
        with self.assertRaises(forkserver.AuthenticationError) as cm:
            forkserver.connect(self.d.sock, key=b"\x01" * 32)
        self.assertIn("refused our key", cm.exception.strerror)
        with self.d.connect() as fs:  # the next honest client is served
            fs.ping()

    def test_impostor_server_detected(self) -> None:
        path = os.path.join(self.d.dir, "impostor.sock")
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        srv.bind(path)
        srv.listen(1)

        def impostor() -> None:
            c, _ = srv.accept()
            hello = P.Writer(P.HELLO, 0).raw(P.F_VERSION_MIN, struct.pack(">H", P.VERSION))
            hello.raw(P.F_VERSION_MAX, struct.pack(">H", P.VERSION)).raw(P.F_NONCE, b"\x07" * 32)
            hello.raw(P.F_PIDNS, P.pidns_self())
            c.send(hello.finish())
            c.recv(65536)  # the client's AUTH: useless without the key
            c.send(P.Writer(P.AUTH_OK, 0).raw(P.F_MAC, b"\x00" * 32).finish())
            time.sleep(0.5)
            c.close()

        t = threading.Thread(target=impostor)
        t.start()
        with self.assertRaises(forkserver.AuthenticationError) as cm:
            forkserver.connect(path, self.d.key)
        self.assertIn("could not prove", cm.exception.strerror)
        t.join()
        srv.close()

    def test_fds_both_ways_over_channel(self) -> None:
        script = ("import os, forkserver\n"
                  "ch = forkserver.Channel(int(os.environ['FORKSERVER_CHANNEL_FD']))\n"
                  "data, fds = ch.recv()\n"
                  "text = os.pread(fds[0], 100, 0)\n"
                  "r, w = os.pipe()\n"
                  "ch.send(data + b':' + text.upper(), [r])\n"
                  "os.write(w, b'through a pipe')\n")
        env = {"PYTHONPATH": PKG}
        with self.d.connect() as fs:
            wk = fs.spawn([sys.executable, "-c", script], env=env, channel=True, stderr=2)
            mfd = os.memfd_create("t")
            os.write(mfd, b"memfd contents")
            wk.channel.send(b"hello", [mfd])
            os.close(mfd)
            data, fds = wk.channel.recv()
            self.assertEqual(data, b"hello:MEMFD CONTENTS")
            self.assertEqual(len(fds), 1)
            self.assertEqual(os.read(fds[0], 100), b"through a pipe")
            os.close(fds[0])
            self.assertEqual(wk.wait(10), 0)
            with self.assertRaises(EOFError):
                wk.channel.recv()
            wk.close()

    def test_module_run_mirrors_forkctl(self) -> None:
        env = dict(os.environ, PYTHONPATH=PKG, FORKSERVER_SOCKET=self.d.sock,
                   FORKSERVER_KEY_FILE=self.d.key)
        r = subprocess.run([sys.executable, "-m", "forkserver", "run", "--env", "Y=2", "--",
                            "sh", "-c", "echo $Y; exit 3"], env=env, capture_output=True,
                           text=True, timeout=30)
        self.assertEqual((r.returncode, r.stdout), (3, "2\n"))
        r = subprocess.run([sys.executable, "-m", "forkserver", "run", "--", "sh", "-c",
                            "kill -TERM $$"], env=env, timeout=30)
        self.assertEqual(r.returncode, 128 + 15)
        r = subprocess.run([sys.executable, "-m", "forkserver", "run", "--",
                            "no-such-command-xyz"], env=env, capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 127)


@unittest.skipUnless(os.environ.get("FS_PYZYGOTE") == "1",
                     "no Python zygote in this build (python3-dev missing)")
class PoolTests(unittest.TestCase):
    """Run against a server with a Python zygote and, for the fallback, one without."""

    @classmethod
    def setUpClass(cls) -> None:
        cls.zd = Daemon("--python-preload", "json")
        cls.plain = Daemon()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.zd.stop()
        cls.plain.stop()

    def pool(self, *args, zygote: bool = True, **kw) -> forkserver.Pool:
        d = self.zd if zygote else self.plain
        return forkserver.Pool(*args, socket_path=d.sock, key_file=d.key, **kw)

    @staticmethod
    def same_calls(p) -> tuple:
        """The calls whose results must equal multiprocessing.Pool's, on pool p."""
        return (p.map(pooltasks.square, range(50)),
                p.starmap(pooltasks.add, [(i, i) for i in range(20)]),
                list(p.imap(pooltasks.square, range(10))),
                sorted(p.imap_unordered(pooltasks.square, range(10))),
                p.apply(pooltasks.add, (2, 3)),
                p.apply_async(pooltasks.square, (9,)).get(10),
                p.map(pooltasks.square, []))

    @staticmethod
    def chunked_calls(p) -> list:
        """The same with chunks: map by default chunks and given ones, starmap, imap(s)."""
        items = list(range(23))
        return [*(p.map(pooltasks.square, items, chunksize=c) for c in (None, 1, 5)),
                p.starmap(pooltasks.add, [(i, 1) for i in items], chunksize=4),
                list(p.imap(pooltasks.square, items, chunksize=6)),
                sorted(p.imap_unordered(pooltasks.square, items, chunksize=6))]

    def test_results_equal_multiprocessing(self) -> None:
        with multiprocessing.get_context("fork").Pool(2) as mp:
            want = self.same_calls(mp)
        for zygote in (True, False):
            with self.subTest(zygote=zygote), self.pool(2, zygote=zygote) as p:
                self.assertEqual(self.same_calls(p), want)
                self.assertEqual(p.mode, "zygote" if zygote else "exec")
                self.assertNotIn(os.getpid(), p.map(pooltasks.pid, range(4)))
                # large arguments and results cross in several channel frames
                self.assertEqual(len(p.apply(pooltasks.big, (300_000,))), 300_000)

    def test_chunks_as_multiprocessing(self) -> None:
        with multiprocessing.get_context("fork").Pool(2) as mp:
            want = self.chunked_calls(mp)
        with self.pool(2) as p:
            self.assertEqual(self.chunked_calls(p), want)
            # a chunk is one task: its items run in one worker, one after the other
            self.assertEqual(len(set(p.map(pooltasks.slow_pid, range(8), chunksize=8))), 1)
            self.assertEqual(len(set(p.map(pooltasks.slow_pid, range(8), chunksize=1))), 2)
            # an item's exception fails its chunk, and so the map, as in multiprocessing
            with self.assertRaises(ValueError) as cm:
                p.map(pooltasks.fail_on, [1, 2, 3, 4], chunksize=2)
            self.assertEqual(str(cm.exception), "task failed on 3")
            with self.assertRaises(ValueError):
                list(p.imap(pooltasks.fail_on, [1, 2, 3, 4], chunksize=3))
            with self.assertRaises(ValueError):
                p.map(pooltasks.square, range(23), chunksize=0)
            self.assertEqual(p.map(pooltasks.square, [], chunksize=3), [])

    def test_exceptions_carry_the_remote_traceback(self) -> None:
        with self.pool(1) as p:
            with self.assertRaises(ValueError) as cm:
                p.apply(pooltasks.fail, (4,))
            self.assertEqual(str(cm.exception), "task failed on 4")
            self.assertIsInstance(cm.exception.__cause__, forkserver.RemoteTraceback)
            self.assertIn("pooltasks.py", str(cm.exception.__cause__))
            errors = []
            r = p.map_async(pooltasks.fail, [1], error_callback=errors.append)
            with self.assertRaises(ValueError):
                r.get(10)
            self.assertEqual(len(errors), 1)
            self.assertEqual(p.apply(pooltasks.square, (5,)), 25)  # the worker goes on

    def test_worker_crash_reported_and_replaced(self) -> None:
        with self.pool(2) as p:
            with self.assertRaises(forkserver.WorkerLostError) as cm:
                p.apply(pooltasks.kill_self)
            self.assertIn("signal 9", str(cm.exception))
            with self.assertRaises(forkserver.WorkerLostError):
                p.apply(pooltasks.die, (3,))
            self.assertEqual(p.map(pooltasks.square, range(8)), [x * x for x in range(8)])
        with forkserver.Executor(2, socket_path=self.zd.sock, key_file=self.zd.key) as ex:
            self.assertEqual(list(ex.map(pooltasks.square, range(5))), [0, 1, 4, 9, 16])
            self.assertEqual(ex.submit(pooltasks.add, 1, b=2).result(10), 3)
            for c in (1, 3):  # iterators are read once
                self.assertEqual(list(ex.map(pooltasks.add, iter(range(10)), iter(range(10)),
                                             chunksize=c)), [2 * i for i in range(10)])
            self.assertEqual(len(set(ex.map(pooltasks.slow_pid, range(6), chunksize=6))), 1)
            with self.assertRaises(ValueError):
                ex.map(pooltasks.square, range(3), chunksize=0)

    def executor(self, *args, zygote: bool = True, **kw) -> forkserver.Executor:
        d = self.zd if zygote else self.plain
        return forkserver.Executor(*args, socket_path=d.sock, key_file=d.key, **kw)

    def test_executor_broken_after_a_worker_dies(self) -> None:
        """As ProcessPoolExecutor: a worker killed, or an initializer that fails, breaks the
        pool: its futures and every later submit raise BrokenProcessPool."""
        Broken = concurrent.futures.process.BrokenProcessPool
        with self.executor(2) as ex:
            slow = ex.submit(pooltasks.nap, 30)
            f = ex.submit(pooltasks.kill_self)
            with self.assertRaises(Broken):
                f.result(10)
            with self.assertRaises(Broken):
                slow.result(10)
            with self.assertRaises(Broken):
                ex.submit(pooltasks.square, 2)
            self.assertTrue(ex._broken)
        with self.executor(2, initializer=pooltasks.fail, initargs=(1,)) as ex, \
                self.assertLogs("concurrent.futures", "CRITICAL") as logs:
            with self.assertRaises(Broken):
                ex.submit(pooltasks.square, 2).result(10)
            with self.assertRaises(Broken):
                ex.submit(pooltasks.square, 2)
        self.assertIn("ValueError: task failed on 1", logs.output[0])

    def test_unpicklable_argument_does_not_stall(self) -> None:
        """A task whose argument does not pickle fails alone; the next map runs (it used to
        stall: the failed pickle used up the idle worker's turn)."""
        lock = threading.Lock()
        for zygote in (True, False):
            with self.subTest(zygote=zygote), self.pool(2, zygote=zygote) as p:
                for _ in range(3):
                    with self.assertRaises(TypeError):
                        p.map(pooltasks.square, [lock] * 4, chunksize=1)
                    with self.assertRaises(TypeError):
                        p.apply(pooltasks.square, (lock,))
                    self.assertEqual(p.map(pooltasks.square, range(4)), [0, 1, 4, 9])

    def test_cancel_pending_futures(self) -> None:
        """Futures stay pending until a worker takes one: cancel() works, and
        shutdown(cancel_futures=True) cancels the queued ones without killing those that
        run."""
        ex = self.executor(1)
        running = ex.submit(pooltasks.nap, 0.5)
        queued = [ex.submit(pooltasks.nap, 0.5) for _ in range(6)]
        time.sleep(0.2)
        self.assertTrue(running.running())
        self.assertTrue(queued[0].cancel())
        ex.shutdown(cancel_futures=True)
        self.assertEqual(running.result(10), 0.5)
        self.assertGreaterEqual(sum(f.cancelled() for f in queued), 5)

    def test_constructor_arguments_as_cpython(self) -> None:
        for bad, exc in (({"processes": 0}, ValueError), ({"processes": -1}, ValueError),
                         ({"initializer": 1}, TypeError),
                         ({"maxtasksperchild": "x"}, ValueError),
                         ({"maxtasksperchild": 0.5}, ValueError)):
            with self.subTest(**bad), self.assertRaises(exc):
                self.pool(**bad)
        for n in (0, -1):
            with self.assertRaisesRegex(ValueError, "max_workers must be greater than 0"):
                self.executor(n)
        with self.assertRaises(TypeError):
            self.executor(1, max_tasks_per_child="x")
        p = self.pool(1)
        p.close()
        with self.assertRaises(ValueError):
            p.map_async(pooltasks.square, [])
        p.join()
        with self.pool(1) as p:
            pass
        with self.assertRaises(ValueError):
            with p:
                pass
        with self.assertRaises(ValueError):
            p.apply(pooltasks.square, (1,))

    def test_errors_of_the_cpython_types(self) -> None:
        with self.pool(1) as p:
            with self.assertRaises(ValueError) as cm:
                p.apply(pooltasks.fail, (1,))
            self.assertIs(type(cm.exception.__cause__), multiprocessing.pool.RemoteTraceback)
            with self.assertRaises(multiprocessing.TimeoutError):
                p.apply_async(pooltasks.nap, (1,)).get(0.1)
            with self.assertRaises(multiprocessing.pool.MaybeEncodingError):
                p.apply(pooltasks.unpicklable_result)
            with self.assertRaisesRegex(ValueError, "on unpickling"):  # unpickled here
                p.apply(pooltasks.bad_unpickle)
            self.assertEqual(p.apply(pooltasks.square, (3,)), 9)  # the worker goes on
        with self.executor(1) as ex:
            with self.assertRaises(ValueError) as cm:
                ex.submit(pooltasks.fail, 1).result(10)
            self.assertIs(type(cm.exception.__cause__),
                          concurrent.futures.process._RemoteTraceback)
            with self.assertRaises(concurrent.futures.process.BrokenProcessPool):
                ex.submit(pooltasks.bad_unpickle).result(10)

    def test_raising_callback_breaks_nothing(self) -> None:
        def boom(_):
            raise KeyError("callback")
        with self.pool(1) as p:
            r = p.apply_async(pooltasks.square, (2,), callback=boom)
            self.assertEqual(r.get(10), 4)
            self.assertEqual(p.map(pooltasks.square, range(3)), [0, 1, 4])

    def test_imap_lazy_and_input_errors(self) -> None:
        def gen():
            yield 1
            yield 2
            raise KeyError("input")
        with self.pool(2) as p:
            it = p.imap(pooltasks.square, gen())
            self.assertEqual([next(it), next(it)], [1, 4])  # the error at its place
            with self.assertRaises(KeyError):
                next(it)
            with self.assertRaises(KeyError):  # as they come: the error among them
                list(p.imap_unordered(pooltasks.square, gen()))
            endless = itertools.count()  # read as workers take it, not up front
            it = p.imap(pooltasks.square, endless)
            self.assertEqual([next(it) for _ in range(5)], [0, 1, 4, 9, 16])
            with self.assertRaises(multiprocessing.TimeoutError):
                p.imap(pooltasks.nap, [2]).next(timeout=0.1)

    def test_task_references_released(self) -> None:
        objs = [pooltasks.Counted() for _ in range(10)]
        refs = [weakref.ref(o) for o in objs]
        with self.pool(2) as p:
            p.map(pooltasks.identity, objs)
            del objs
            gc.collect()
            time.sleep(0.1)
            self.assertEqual({r() for r in refs}, {None})
            ex = self.executor(1)
            o = pooltasks.Counted()
            ref = weakref.ref(o)
            ex.submit(pooltasks.identity, o).result(10)
            del o
            gc.collect()
            time.sleep(0.1)
            self.assertIsNone(ref())
            ex.shutdown()

    def test_argv_and_manager_proxies(self) -> None:
        for zygote in (True, False):
            with self.subTest(zygote=zygote), self.pool(1, zygote=zygote) as p:
                self.assertEqual(p.apply(pooltasks.argv), sys.argv)
        with multiprocessing.Manager() as m:
            ns = m.Namespace()
            ns.n = 0
            with self.pool(1, pooltasks.bump, (ns,)) as p:
                p.apply(pooltasks.bump, (ns,))
                self.assertEqual(ns.n, 2)
            q = multiprocessing.Queue()  # by inheritance only, as multiprocessing says
            with self.pool(1) as p:
                with self.assertRaisesRegex(RuntimeError, "inheritance"):
                    p.apply(pooltasks.square, (q,))
            q.close()

    def test_many_fds(self) -> None:
        """selectors, not select.select: the engine works with fds above 1,023."""
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and hard < 1100:
            self.skipTest("RLIMIT_NOFILE below 1,100")
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1100), hard))
        fds = []
        try:
            while not fds or fds[-1] < 1030:
                fds.append(os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC))
            with self.pool(1) as p:
                self.assertEqual(p.map(pooltasks.square, range(4)), [0, 1, 4, 9])
        finally:
            for fd in fds:
                os.close(fd)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    def test_executor_at_interpreter_exit(self) -> None:
        """Work left to interpreter exit completes; submit from an atexit hook raises
        CPython's RuntimeError; as test_concurrent_futures checks ProcessPoolExecutor."""
        code = ("import atexit, forkserver, pooltasks, sys\n"
                "ex = forkserver.Executor(2, socket_path=sys.argv[1], key_file=sys.argv[2])\n"
                "@atexit.register\n"
                "def last():\n"
                "    try:\n"
                "        ex.submit(id, None)\n"
                "    except RuntimeError as e:\n"
                "        print(e)\n"
                "ex.submit(pooltasks.say, 0.5, 'apple')\n")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([PKG, HERE]))
        r = subprocess.run([sys.executable, "-c", code, self.zd.sock, self.zd.key], env=env,
                           capture_output=True, text=True, timeout=60)
        # but for what a sanitizer's runtime says in an instrumented worker
        noise = ("==", "False positive error reports", "For details see")
        self.assertEqual([ln for ln in r.stderr.splitlines() if not ln.startswith(noise)], [])
        self.assertEqual(r.stdout.split("\n")[:2],
                         ["apple", "cannot schedule new futures after interpreter shutdown"])

    def test_executor_threads_end_at_del(self) -> None:
        ex = self.executor(2)
        res = ex.map(abs, range(-5, 5))
        thread = ex._pool._core.thread
        del ex
        gc.collect()
        thread.join(10)
        self.assertFalse(thread.is_alive())
        self.assertEqual(list(res), [abs(v) for v in range(-5, 5)])

    def test_terminate_with_tasks_in_flight(self) -> None:
        p = self.pool(2)
        results = [p.apply_async(pooltasks.nap, (30,)) for _ in range(4)]
        time.sleep(0.5)
        t0 = time.monotonic()
        p.terminate()
        self.assertLess(time.monotonic() - t0, 10)
        for r in results:
            with self.assertRaises(Exception):
                r.get(5)
        with self.assertRaises(ValueError):
            p.apply_async(pooltasks.square, (1,))

    def test_close_join_finishes_queued_work(self) -> None:
        p = self.pool(2)
        r = p.map_async(pooltasks.nap, [0.05] * 6)
        p.close()
        p.join()
        self.assertEqual(r.get(1), [0.05] * 6)

    def test_maxtasksperchild_and_initializer(self) -> None:
        for zygote in (True, False):
            with self.subTest(zygote=zygote), self.pool(1, pooltasks.init, ("ready",),
                                                        maxtasksperchild=2,
                                                        zygote=zygote) as p:
                pids = [p.apply(pooltasks.pid) for _ in range(6)]
                self.assertEqual(len(set(pids)), 3)  # a new worker every 2 tasks
                self.assertEqual(p.apply(pooltasks.init_seen), ["ready"])

    def quick_workers(self, p, n: int) -> None:
        """Makes every task count as quick (forkserver.pool._QUICK) and has each of p's n
        workers answer one, so that each is given its next task while it runs one."""
        patch = mock.patch.object(forkserver.pool, "_QUICK", 60.0)
        patch.start()
        self.addCleanup(patch.stop)
        p.map(pooltasks.nap, [0.5] * n, chunksize=1)
        self.assertEqual(len(p._core.slots), n)
        self.assertTrue(all(s.quick for s in p._core.slots))

    @staticmethod
    def queued(p) -> int:
        return sum(len(s.tasks) for s in p._core.slots)

    def wait_queued(self, p, n: int) -> None:
        deadline = time.monotonic() + 10
        while self.queued(p) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        self.assertEqual(self.queued(p), n)

    def test_task_queued_behind_one_that_dies(self) -> None:
        """The task queued behind one that kills its worker never started: another worker
        runs it, and only the running one is lost."""
        with self.pool(1) as p:
            self.quick_workers(p, 1)
            first = p.apply(pooltasks.pid)
            dying = p.apply_async(pooltasks.nap_die, (0.5, 3))
            after = [p.apply_async(pooltasks.pid) for _ in range(2)]
            self.wait_queued(p, 2)  # one running, one behind it; the third waits here
            with self.assertRaises(forkserver.WorkerLostError):
                dying.get(10)
            pids = [r.get(10) for r in after]
            self.assertNotIn(first, pids)

    def test_a_burst_of_tasks_wakes_the_engine_once(self) -> None:
        # a map of many tasks writes to the engine's wake pipe until the engine reads it,
        # not once a task (each write a system call and a wake-up of the engine)
        real, writes = os.write, []
        with self.pool(2) as p:
            wake = p._core.wake_w

            def counted(fd: int, data: bytes) -> int:
                if fd == wake:
                    writes.append(fd)
                return real(fd, data)

            with mock.patch("os.write", counted):
                self.assertEqual(p.map(pooltasks.square, range(2000), chunksize=1),
                                 [x * x for x in range(2000)])
        self.assertLess(len(writes), 500)

    def test_no_wake_up_lost_to_a_submit_while_the_engine_reads(self) -> None:
        # the flag that saves a burst's writes to the wake pipe must never outlive the byte
        # it stands for: a task submitted while the engine empties the pipe (forced here:
        # from inside its read), and any task after it, must still be taken
        real, injected = os.read, []
        with self.pool(2) as p:
            core = p._core

            def read(fd: int, n: int) -> bytes:
                if fd == core.wake_r and not injected:
                    injected.append(p.apply_async(pooltasks.square, (3,)))
                return real(fd, n)

            try:
                with mock.patch("os.read", read):
                    self.assertEqual(p.apply_async(pooltasks.square, (2,)).get(10), 4)
                    self.assertEqual(injected[0].get(10), 9)
                for i in range(3):  # nothing else would wake the engine now
                    self.assertEqual(p.apply_async(pooltasks.square, (i,)).get(10), i * i)
            except BaseException:
                os.write(core.wake_w, b"x")  # a lost wake-up would hang terminate too
                raise

    def test_big_task_not_queued_behind_a_busy_worker(self) -> None:
        """A task of several frames waits for an idle worker: sent behind a running task it
        would block the pool's thread until that task ends."""
        with self.pool(2) as p:
            self.quick_workers(p, 2)
            slow = p.apply_async(pooltasks.nap, (6,))  # the first worker
            short = p.apply_async(pooltasks.nap, (0.3,))  # the second
            self.wait_queued(p, 2)
            t0 = time.monotonic()
            big = p.apply_async(pooltasks.identity, (b"x" * 600_000,))
            self.assertEqual(len(big.get(4)), 600_000)  # from the second, once it is free
            self.assertLess(time.monotonic() - t0, 4)
            self.assertEqual(short.get(1), 0.3)
            self.assertEqual(slow.get(10), 6)

    def test_executor_queues_as_its_call_queue(self) -> None:
        """An Executor hands its workers no more than n + 1 tasks at once: the others stay
        pending, and cancel() works on them."""
        with self.executor(2) as ex:
            self.quick_workers(ex._pool, 2)
            busy = [ex.submit(pooltasks.nap, 3) for _ in range(2)]
            later = [ex.submit(pooltasks.square, i) for i in range(3)]
            self.wait_queued(ex._pool, 3)
            time.sleep(0.2)
            self.assertEqual([f.cancel() for f in later], [False, True, True])
            self.assertEqual(later[0].result(10), 0)
            self.assertEqual([f.result(10) for f in busy], [3, 3])

    def test_functions_of_the_main_script(self) -> None:
        """A script's own functions reach the workers, the script compiled once by the
        client; with bytecode the worker's Python does not take, the worker runs the file."""
        # not in a daemon's own directory: workers cannot reach that one (Landlock)
        scripts = tempfile.mkdtemp(prefix="fs-py-script-")
        self.addCleanup(shutil.rmtree, scripts, ignore_errors=True)
        script = os.path.join(scripts, "mainscript.py")
        with open(script, "w") as f:
            f.write(MAIN_SCRIPT)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([PKG, HERE]))
        for d, mode in ((self.zd, "zygote"), (self.plain, "exec")):
            for stale in ("", "stale"):
                with self.subTest(mode=mode, stale=stale):
                    r = subprocess.run([sys.executable, script, d.sock, d.key, mode, stale],
                                       env=env, capture_output=True, text=True, timeout=60)
                    self.assertEqual(r.returncode, 0, r.stderr)
                    lines = r.stdout.splitlines()
                    self.assertEqual(lines[0], "[0, 1, 8, 27, 64, 125]")
                    self.assertEqual(lines[1], f"__mp_main__ __mp_main__ {script}")
                    self.assertEqual(lines[2], "other pids")

    def test_thread_starting_module_refused(self) -> None:
        with self.assertRaises(RuntimeError) as cm:
            Daemon("--python-preload", "json,threader")
        self.assertIn("importing threader started a thread", str(cm.exception))
        self.assertIn("OPENBLAS_NUM_THREADS", str(cm.exception))


class WorkerTests(unittest.TestCase):
    def test_warm_leaves_no_trace(self) -> None:
        # the Python zygote runs the worker's loop once before it forks any worker: nothing
        # of that run may stay behind for the workers to inherit
        code = """
import os, sys
import forkserver.worker as w
def state():
    import __main__
    return (sorted(os.listdir("/proc/self/fd")), list(sys.path), list(sys.argv), os.getcwd(),
            id(__main__), sys.modules.get("__mp_main__"))
before = state()
w.warm()
after = state()
print("same" if before == after else f"{before} != {after}")
"""
        r = subprocess.run([sys.executable, "-c", code], cwd=HERE, capture_output=True,
                           text=True, timeout=60, env=dict(os.environ, PYTHONPATH=PKG))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), "same")
        self.assertEqual(r.stderr, "")


class BindingTests(unittest.TestCase):
    """The handshake binds who is at each end; the socket path must be one nobody else can
    swap (docs/PROTOCOL.md "Handshake"). As root the relay is uid 65534; as a normal user it
    is another process of the same uid, stopped by the pid binding."""

    ROOT = os.geteuid() == 0
    OTHER = 65534

    def test_documented_vectors(self) -> None:
        k, sn, cn = b"\x5a" * 32, b"\x01" * 32, b"\x02" * 32
        ns = struct.pack(">QQ", 4, 4026531836)
        self.assertEqual(P.VERSION, 2)
        for bind, pid, c, s in (
                (1, 4242, "4471fb32d288ec335f4d8007f149d08264de46496a920affb559d731d6cc320a",
                 "bbb9d326f908787af6ac968896586dac734ac1c6f6db87d5f8b11e9ac2e7ad3b"),
                (0, 0, "cde09240f2af8420579fce2a50fd0d175793afa41c856171f86bf12e5ffa5387",
                 "5de78c46e272178ba3a61ef58ca2a3f83b1451b3972c69685ca1fbee628c75c1")):
            self.assertEqual(P.mac(k, P.LABEL_CLIENT, sn, cn, 2, ns, bind, 1000, 1000, pid).hex(), c)
            self.assertEqual(P.mac(k, P.LABEL_SERVER, sn, cn, 2, ns, bind, 1000, 1000, pid).hex(), s)

    def _drop(self) -> None:
        os.setgroups([])
        os.setresgid(self.OTHER, self.OTHER, self.OTHER)
        os.setresuid(self.OTHER, self.OTHER, self.OTHER)

    def test_relay_refused_by_both_ends(self) -> None:
        d = Daemon(*(["--allow-uid", str(self.OTHER)] if self.ROOT else []))
        try:
            os.chmod(d.dir, 0o711)
            path = os.path.join(d.dir, "relay.sock")
            marker = os.path.join(d.dir, "relayed-spawn-ran")
            # listening before the relay drops root, as systemd makes a socket-activated
            # daemon's: the victim's listener check passes, the MACs must stop the relay
            lsock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            lsock.bind(path)
            os.chmod(path, 0o666)
            lsock.listen(1)
            rr, rw = os.pipe()
            pid = os.fork()
            if pid == 0:  # the relay
                code = 1
                try:
                    os.close(rr)
                    if self.ROOT:
                        self._drop()
                    v, _ = lsock.accept()
                    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                    s.connect(d.sock)
                    v.send(s.recv(65536))  # HELLO, unchanged
                    s.send(v.recv(65536))  # AUTH, unchanged
                    spawn = P.Writer(P.SPAWN, 1).str(P.F_PATH, "/usr/bin/touch")
                    try:  # right after AUTH, as a client may; the daemon may be gone
                        s.send(spawn.str(P.F_ARG, "touch").str(P.F_ARG, marker).finish())
                    except BrokenPipeError:
                        pass
                    # the daemon's answers until it hangs up; closing with our SPAWN
                    # unread, it resets the connection, maybe ahead of the queued answer
                    closed = False
                    for _ in range(6):
                        try:
                            reply = s.recv(65536)
                        except ConnectionResetError:
                            closed = True
                            continue
                        if not reply:
                            closed = True
                            break
                        t = P.parse(reply)[0]
                        if t == P.AUTH_FAILED:
                            os.write(rw, b"F")
                            v.send(reply)
                        elif t == P.SPAWNED:
                            os.write(rw, b"S")
                    if closed:
                        os.write(rw, b"E")
                    v.recv(65536)
                    code = 0
                except BaseException:
                    import traceback
                    traceback.print_exc()
                finally:
                    os._exit(code)
            os.close(rw)
            lsock.close()
            with self.assertRaises(forkserver.AuthenticationError) as cm:
                forkserver.connect(path, d.key)
            self.assertIn("refused our key", cm.exception.strerror)
            self.assertEqual(os.waitpid(pid, 0)[1], 0)
            with os.fdopen(rr, "rb") as f:
                self.assertEqual(f.read(), b"FE")
            self.assertFalse(os.path.exists(marker))
            with d.connect() as fs:  # the honest client is served
                self.assertEqual(fs.status()["auth_failed"], 1)
                self.assertEqual(fs.spawn(["/bin/true"]).wait(5), 0)
        finally:
            d.stop()

    def test_forged_auth_ok_refused(self) -> None:
        # The best a relay could get: AUTH_OK from a server fooled into taking the relayed
        # AUTH, made with the key for the peer that server saw (another pid or uid).
        key = secrets.token_bytes(32)
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                a.close()
                ns = P.pidns_self()
                sn = b"\x07" * 32
                hello = P.Writer(P.HELLO, 0).raw(P.F_VERSION_MIN, struct.pack(">H", P.VERSION))
                hello.raw(P.F_VERSION_MAX, struct.pack(">H", P.VERSION)).raw(P.F_NONCE, sn)
                b.send(hello.raw(P.F_PIDNS, ns).finish())
                _, _, f = P.parse(b.recv(65536))
                cn, bind = P.first(f, P.F_NONCE), P.u(P.first(f, P.F_BIND))
                mac = P.mac(key, P.LABEL_SERVER, sn, cn, P.VERSION, ns, bind, os.geteuid(),
                            os.getegid(), os.getpid())  # this process, not the client
                b.send(P.Writer(P.AUTH_OK, 0).raw(P.F_MAC, mac).finish())
                b.recv(1)
                code = 0
            finally:
                os._exit(code)
        b.close()
        try:
            with self.assertRaises(forkserver.AuthenticationError) as cm:
                forkserver.client._handshake(a, key, 5)
            self.assertIn("could not prove", cm.exception.strerror)
        finally:
            a.close()
            os.waitpid(pid, 0)

    @unittest.skipUnless(os.geteuid() == 0, "needs a second uid (root)")
    def test_listener_of_another_uid_refused(self) -> None:
        d = tempfile.mkdtemp(prefix="fs-py-listener-")
        path = os.path.join(d, "other.sock")
        key = os.path.join(d, "key")
        with open(os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write(secrets.token_hex(32) + "\n")
        lsock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        lsock.bind(path)
        pid = os.fork()
        if pid == 0:
            try:
                self._drop()
                lsock.listen(4)  # the listener's credentials are those of listen()
                while True:
                    lsock.accept()[0].close()
            finally:
                os._exit(0)
        lsock.close()
        try:
            time.sleep(0.2)
            with self.assertRaises(forkserver.AuthenticationError) as cm:
                forkserver.connect(path, key)
            self.assertIn("belongs to uid 65534", cm.exception.strerror)
            self.assertIn("expected uid 0 (ours)", cm.exception.strerror)
            with self.assertRaises(forkserver.ForkserverError) as cm:
                forkserver.connect(path, key, server_uid=self.OTHER)
            self.assertNotIn("belongs to uid", cm.exception.strerror)
        finally:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            shutil.rmtree(d, ignore_errors=True)

    def test_swappable_socket_directory_refused(self) -> None:
        d = Daemon()
        try:
            for mode in (0o777, 0o770):
                os.chmod(d.dir, mode)
                with self.assertRaises(forkserver.ForkserverError) as cm:
                    d.connect()
                self.assertEqual(cm.exception.errno, 1)  # EPERM
                self.assertIn(d.dir + " is writable by group or others", cm.exception.strerror)
            os.chmod(d.dir, 0o1777)  # sticky, as /tmp
            with d.connect() as fs:
                fs.ping()
            via = d.dir + "-link"
            os.symlink(d.dir, via)
            try:
                os.chmod(d.dir, 0o777)
                with self.assertRaises(forkserver.ForkserverError) as cm:
                    forkserver.connect(os.path.join(via, "s.sock"), d.key)
                self.assertIn(d.dir, cm.exception.strerror)
            finally:
                os.unlink(via)
            if self.ROOT:
                os.chmod(d.dir, 0o700)
                os.chown(d.dir, self.OTHER, self.OTHER)
                with self.assertRaises(forkserver.ForkserverError) as cm:
                    d.connect()
                self.assertIn("is owned by uid 65534", cm.exception.strerror)
                with d.connect(server_uid=self.OTHER) as fs:  # named: trusted
                    fs.ping()
                os.chown(d.dir, 0, 0)
            os.chmod(d.dir, 0o700)
            with d.connect() as fs:
                fs.ping()
        finally:
            d.stop()


if __name__ == "__main__":
    unittest.main()
