"""The joblib backend "forkserver": joblib.Parallel, and scikit-learn when present."""
from __future__ import annotations

import os
import unittest

import exttasks
import forkserver
from test_forkserver import Daemon

try:
    import cloudpickle
except ImportError:
    cloudpickle = None
try:
    import joblib
except ImportError:
    joblib = None
try:
    import sklearn
except ImportError:
    sklearn = None

ZYGOTE = ("--python-preload", "json") if os.environ.get("FS_PYZYGOTE") == "1" else ()


def setUpModule() -> None:
    global DAEMON
    DAEMON = Daemon(*ZYGOTE)


def tearDownModule() -> None:
    DAEMON.stop()


def pool_args() -> dict:
    return {"socket_path": DAEMON.sock, "key_file": DAEMON.key}


@unittest.skipUnless(joblib, "python3-joblib is not installed")
class JoblibTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        import forkserver.joblib  # noqa: F401 - registers "forkserver"

    def test_parallel(self) -> None:
        from joblib import Parallel, delayed
        from forkserver.joblib import ForkserverBackend
        out = Parallel(n_jobs=2, backend=ForkserverBackend(**pool_args()))(
            delayed(exttasks.square)(i) for i in range(30))
        self.assertEqual(out, [i * i for i in range(30)])
        with joblib.parallel_backend("forkserver", n_jobs=2, **pool_args()):
            infos = Parallel()(delayed(exttasks.where)(i) for i in range(6))
            self.assertNotIn(os.getpid(), {i["pid"] for i in infos})
            for i in infos:  # forkserver workers of this test's daemon, in its sandbox
                self.assertEqual((i["no_new_privs"], i["seccomp"]), ("1", "2"))
            if cloudpickle:
                self.assertEqual(Parallel()(delayed(lambda x: -x)(i) for i in range(3)),
                                 [0, -1, -2])
            with self.assertRaises(ValueError) as cm:
                Parallel()(delayed(exttasks.fail)(i) for i in range(4))
            self.assertIn("task failed on", str(cm.exception))
            with self.assertRaises(forkserver.WorkerLostError):
                Parallel()(delayed(exttasks.kill_self)(i) for i in range(2))
            # the backend is usable again after a failed call
            self.assertEqual(Parallel()(delayed(abs)(-i) for i in range(3)), [0, 1, 2])
        with DAEMON.connect() as fs:
            self.assertGreaterEqual(fs.status()["spawns"], 2)

    def test_one_job_runs_here(self) -> None:
        from joblib import Parallel, delayed
        self.assertEqual(Parallel(n_jobs=1, backend="forkserver")(
            delayed(os.getpid)() for _ in range(2)), [os.getpid()] * 2)

    @unittest.skipUnless(sklearn, "python3-sklearn is not installed")
    def test_sklearn_cross_validation(self) -> None:
        from sklearn.datasets import make_classification
        from sklearn.model_selection import cross_val_score
        from sklearn.tree import DecisionTreeClassifier
        X, y = make_classification(n_samples=200, n_features=8, random_state=0)
        model = DecisionTreeClassifier(random_state=0)
        want = cross_val_score(model, X, y, cv=4, n_jobs=1)
        with DAEMON.connect() as fs:
            before = fs.status()["spawns"]
        with joblib.parallel_backend("forkserver", n_jobs=2, **pool_args()):
            got = cross_val_score(model, X, y, cv=4)
        self.assertEqual(list(got), list(want))
        with DAEMON.connect() as fs:
            self.assertGreaterEqual(fs.status()["spawns"] - before, 2)


if __name__ == "__main__":
    unittest.main()
