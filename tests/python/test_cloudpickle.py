"""cloudpickle in Pool and Executor: lambdas, local functions, an interactive __main__."""
from __future__ import annotations

import multiprocessing.pool
import os
import subprocess
import sys
import unittest

import exttasks
import forkserver
from test_forkserver import HERE, PKG, Daemon

try:
    import cloudpickle
except ImportError:
    cloudpickle = None

ZYGOTE = ("--python-preload", "json") if os.environ.get("FS_PYZYGOTE") == "1" else ()

# a script given with -c: workers cannot import its __main__, so its functions go by value
MAIN_C = """
import sys, forkserver
def cube(x):
    return x ** 3
with forkserver.Pool(2, socket_path=sys.argv[1], key_file=sys.argv[2]) as p:
    print(p.map(cube, range(5)), p.apply(lambda: __name__))
with forkserver.Executor(2, socket_path=sys.argv[1], key_file=sys.argv[2]) as ex:
    print(ex.submit(lambda a, b: a * b, 6, b=7).result(30))
"""


def setUpModule() -> None:
    global DAEMON
    DAEMON = Daemon(*ZYGOTE)


def tearDownModule() -> None:
    DAEMON.stop()


def pool_args() -> dict:
    return {"socket_path": DAEMON.sock, "key_file": DAEMON.key}


@unittest.skipUnless(cloudpickle, "python3-cloudpickle is not installed: lambdas and the "
                     "functions of an interactive __main__ do not pickle")
class CloudpickleTests(unittest.TestCase):
    def test_lambdas_and_local_functions(self) -> None:
        def local(x):
            return x - 1
        with forkserver.Pool(2, **pool_args()) as p:
            self.assertEqual(p.map(lambda x: x * 10, range(5)), [0, 10, 20, 30, 40])
            self.assertEqual(p.apply(local, (5,)), 4)
            # results go back with plain pickle, as from multiprocessing's workers: one that
            # only cloudpickle could carry is the caller's MaybeEncodingError
            with self.assertRaises(multiprocessing.pool.MaybeEncodingError):
                p.apply(lambda: (lambda y: y + 2))
        with forkserver.Pool(1, lambda: os.environ.__setitem__("INIT", "lambda"),
                             **pool_args()) as p:  # an initializer
            self.assertEqual(p.apply(exttasks.getenv, ("INIT",)), "lambda")
        with forkserver.Executor(2, **pool_args()) as ex:
            self.assertEqual(list(ex.map(lambda a, b: a + b, range(4), range(4))),
                             [0, 2, 4, 6])

    def test_functions_of_an_interactive_main(self) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([PKG, HERE]))
        for how in ("-c", "stdin"):
            with self.subTest(how=how):
                argv = [sys.executable, "-c", MAIN_C] if how == "-c" else [sys.executable, "-"]
                r = subprocess.run(argv + [DAEMON.sock, DAEMON.key], env=env, text=True,
                                   input=MAIN_C if how == "stdin" else None,
                                   capture_output=True, timeout=60)
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertEqual(r.stdout.split("\n")[:2], ["[0, 1, 8, 27, 64] __main__", "42"])


if __name__ == "__main__":
    unittest.main()
