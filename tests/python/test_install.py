"""`pip install client/python` with no network: the pyproject.toml builds with the installed
setuptools (Debian's python3-setuptools), in a venv that sees the system's packages."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import unittest

from test_forkserver import PKG

try:
    import venv  # noqa: F401
    import ensurepip  # noqa: F401 - Debian's python3-venv
    HAVE_VENV = True
except ImportError:
    HAVE_VENV = False


@unittest.skipUnless(HAVE_VENV, "python3-venv is not installed")
class PipInstallTests(unittest.TestCase):
    def test_pip_install_offline(self) -> None:
        t = tempfile.mkdtemp(prefix="fs-pip-")
        self.addCleanup(shutil.rmtree, t, ignore_errors=True)
        src = os.path.join(t, "src")  # a copy: pip builds in the source tree
        shutil.copytree(PKG, src, ignore=shutil.ignore_patterns("__pycache__", "build"))
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages",
                        os.path.join(t, "venv")], check=True, timeout=120)
        py = os.path.join(t, "venv", "bin", "python3")
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.update(PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
        r = subprocess.run([py, "-m", "pip", "install", "--no-build-isolation", src], env=env,
                           capture_output=True, text=True, timeout=240)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        r = subprocess.run([py, "-c", "import forkserver, forkserver.pool, forkserver.worker; "
                            "print(forkserver.__version__, forkserver.__file__)"],
                           env=env, cwd=t, capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        version, path = r.stdout.split()
        self.assertEqual(version, "0.1.0")
        self.assertTrue(path.startswith(os.path.join(t, "venv")), path)


if __name__ == "__main__":
    unittest.main()
