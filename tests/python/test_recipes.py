"""The cluster recipes of docs/OPERATIONS.md, run from examples/: the Slurm scripts (alone,
under a stand-in srun, and on a one-node Slurm started here when Debian's slurm-wlm and
munge are installed) and the Kubernetes pod (its syntax and structure, and its containers'
commands run here against a directory made as an emptyDir is)."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import unittest

import forkserver
from test_forkserver import HERE, PKG

ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
NODE = os.path.join(ROOT, "examples", "slurm", "forkserver-node.sh")
JOB = os.path.join(ROOT, "examples", "slurm", "forkserver-job.sh")
POD = os.path.join(ROOT, "examples", "kubernetes", "forkserver-pod.yaml")
OPERATIONS = os.path.join(ROOT, "docs", "OPERATIONS.md")
FSD = os.environ["FORKSERVERD"]
CTL = os.environ["FORKCTL"]
BIN = os.pathsep.join([os.path.dirname(FSD), os.path.dirname(CTL)])

try:
    import yaml
except ImportError:
    yaml = None

# a stand-in for srun: runs the step's command once, here (one node)
FAKE_SRUN = """#!/usr/bin/env bash
while [ $# -gt 0 ]; do
        case $1 in --*) shift ;; *) break ;; esac
done
exec "$@"
"""

# the job's command: a Pool on the node's daemon, whose workers report their ancestors
JOB_PY = """
import json, os, forkserver
def where(_):
    chain, pid = [], os.getppid()
    while pid > 1:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)
        with open(f"/proc/{pid}/comm") as f:
            chain.append(f.read().strip())
        pid = int(rest[1].split()[1])
    return os.getpid(), chain
if __name__ == "__main__":
    with forkserver.Pool(2) as p:
        out = p.map(where, range(4))
    print("JOB", json.dumps({"socket": os.environ["FORKSERVER_SOCKET"], "where": out,
                             "job": os.environ.get("SLURM_JOB_ID")}))
"""


def env(**extra: str) -> dict:
    e = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin"),
             PYTHONPATH=os.pathsep.join([PKG, HERE]), FORKSERVERD=FSD, FORKCTL=CTL)
    e.update(extra)
    return e


def no_process_uses(path: str) -> bool:
    """No process has path in its command line (the daemons of a recipe all name it)."""
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if path.encode() in f.read():
                        return False
            except OSError:
                pass
    return True


class NodeScriptTests(unittest.TestCase):
    """examples/slurm/forkserver-node.sh alone: what each node of a job runs."""

    def setUp(self) -> None:
        self.base = tempfile.mkdtemp(prefix="fs-recipe-")
        self.addCleanup(shutil.rmtree, self.base, ignore_errors=True)
        self.dir = os.path.join(self.base, "forkserver-42")

    def start(self, *args: str) -> subprocess.Popen:
        p = subprocess.Popen([NODE, self.dir, *args], env=env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: p.poll() is None and (p.kill(), p.wait()))
        return p

    def test_daemon_ready_served_and_stopped(self) -> None:
        p = self.start("--max-workers", "8")
        self.assertEqual(p.stdout.readline(), f"READY {socket.gethostname()}\n")
        st = os.stat(self.dir)
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o700)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(self.dir, "key")).st_mode), 0o600)
        sock, key = os.path.join(self.dir, "fs.sock"), os.path.join(self.dir, "key")
        with forkserver.connect(sock, key) as fs:
            self.assertEqual(fs.spawn(["/bin/true"]).wait(10), 0)
        r = subprocess.run([CTL, "run", "--", "sh", "-c", "exit 5"], timeout=30,
                           env=env(FORKSERVER_SOCKET=sock, FORKSERVER_KEY_FILE=key))
        self.assertEqual(r.returncode, 5)
        p.send_signal(signal.SIGTERM)  # what srun forwards when the step is cancelled
        self.assertEqual(p.wait(15), 0)
        self.assertFalse(os.path.exists(self.dir))
        self.assertTrue(no_process_uses(self.dir))
        p.stdout.close()
        p.stderr.close()

    def test_existing_directory_refused(self) -> None:
        os.mkdir(self.dir, 0o700)
        p = self.start()
        out, err = p.communicate(timeout=15)
        self.assertNotEqual(p.returncode, 0)
        self.assertEqual(out, "")
        self.assertTrue(os.path.isdir(self.dir))  # not ours: left alone

    def test_daemon_failure_reported_at_once(self) -> None:
        t0 = time.monotonic()
        p = self.start("--max-workers", "0")
        out, err = p.communicate(timeout=25)
        self.assertLess(time.monotonic() - t0, 20)  # EOF on the fifo, not its 30 s timeout
        self.assertEqual(p.returncode, 1)
        self.assertEqual(out, "")
        self.assertIn("forkserverd did not start", err)
        self.assertFalse(os.path.exists(self.dir))

    def test_shared_socket_directory_refused_with_advice(self) -> None:
        """The old recipe's --socket $TMPDIR/fs.sock: the daemon says what to do instead."""
        shared = os.path.join(self.base, "shared")
        os.mkdir(shared)
        os.chmod(shared, 0o777)
        r = subprocess.run([FSD, "--foreground", "--socket", os.path.join(shared, "fs.sock"),
                            "--key-fd", "0", "--allow-root-workers"], input=b"00" * 32,
                           capture_output=True, timeout=15)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(b"writable by group or others: use a private subdirectory", r.stderr)


class JobScriptTests(unittest.TestCase):
    """examples/slurm/forkserver-job.sh with a stand-in srun (one node, no Slurm)."""

    def test_job_script_under_fake_srun(self) -> None:
        base = tempfile.mkdtemp(prefix="fs-recipe-job-")
        self.addCleanup(shutil.rmtree, base, ignore_errors=True)
        with open(os.path.join(base, "srun"), "w") as f:
            f.write(FAKE_SRUN)
        os.chmod(os.path.join(base, "srun"), 0o755)
        e = env(SLURM_JOB_ID="77", SLURM_JOB_NUM_NODES="1", TMPDIR=base,
                FORKSERVER_NODE_SCRIPT=NODE)
        e["PATH"] = base + os.pathsep + e["PATH"]
        r = subprocess.run([JOB, sys.executable, "-c", JOB_PY + "\nraise SystemExit(3)"],
                           env=e, capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 3, r.stderr)  # the command's status
        job = json.loads(r.stdout.split("JOB ", 1)[1])
        self.assertEqual(job["socket"], os.path.join(base, "forkserver-77", "fs.sock"))
        for pid, chain in job["where"]:
            self.assertIn("forkserverd", chain)
        self.assertEqual(os.listdir(base), ["srun"])  # the node's directory and the fifo gone
        self.assertTrue(no_process_uses(base))

    def test_job_script_outside_slurm(self) -> None:
        e = env()
        e.pop("SLURM_JOB_ID", None)
        r = subprocess.run([JOB, "true"], env=e, capture_output=True, text=True, timeout=30)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("not in a Slurm job", r.stderr)


def _blocks(section: str) -> list:
    """The code blocks of a section of docs/OPERATIONS.md (from its heading to the next)."""
    with open(OPERATIONS) as f:
        text = f.read()
    start = text.index(section)
    end = text.find("\n#", start + len(section))
    return re.findall(r"```\w*\n(.*?)```", text[start:end if end > 0 else None], re.S)


class DocsTests(unittest.TestCase):
    """docs/OPERATIONS.md quotes the scripts the suite runs, line for line."""

    def assert_excerpt(self, block: str, path: str) -> None:
        with open(path) as f:
            lines = f.read().splitlines()
        at = 0
        for line in block.splitlines():
            if line == "...":
                continue
            self.assertIn(line, lines[at:], f"{line!r} is not in {path} (in this order)")
            at = lines.index(line, at) + 1

    def test_slurm_recipe_is_the_scripts(self) -> None:
        blocks = _blocks("### Slurm")
        self.assertEqual(len(blocks), 3)
        self.assert_excerpt(blocks[1], JOB)
        self.assert_excerpt(blocks[2], NODE)

    def test_kubernetes_recipe_is_the_manifest(self) -> None:
        with open(POD) as f:
            pod = f.read()
        text = "".join(_blocks("### Kubernetes"))
        self.assertIn("kubectl apply -f examples/kubernetes/forkserver-pod.yaml", text)
        with open(OPERATIONS) as f:
            ops = f.read()
        chmod = '["chmod", "1777", "/run/forkserver"]'
        for doc, manifest in (("chmod 1777 /run/forkserver", chmod),
                              ("--socket /run/forkserver/d/fs.sock",) * 2,
                              ("3</etc/forkserver/key",) * 2, ("defaultMode: 0440",) * 2,
                              ("restartPolicy: Always",) * 2):
            self.assertIn(doc, ops)
            self.assertIn(manifest, pod)


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


SLURM_TOOLS = ("munged", "slurmctld", "slurmd", "sbatch", "sinfo")
HAVE_SLURM = all(shutil.which(t, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
                 for t in SLURM_TOOLS)


@unittest.skipUnless(HAVE_SLURM and os.geteuid() == 0,
                     "needs Debian's slurm-wlm (slurmctld, slurmd, slurm-client) and munge, "
                     "as root: a one-node Slurm is started here")
class SlurmTests(unittest.TestCase):
    """A one-node Slurm on localhost (munged, slurmctld, slurmd, all started here with their
    own files and ports), and the job script submitted to it with sbatch."""

    @classmethod
    def setUpClass(cls) -> None:
        cls.procs: list = []
        cls.t = tempfile.mkdtemp(prefix="fs-slurm-")
        os.chmod(cls.t, 0o711)
        try:
            cls._start()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def _start(cls) -> None:
        t = cls.t
        sbin = "/usr/sbin:/sbin:" + os.environ.get("PATH", "")
        which = lambda n: shutil.which(n, path=sbin)  # noqa: E731
        key = os.path.join(t, "munge.key")
        with open(os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
            f.write(os.urandom(1024))
        cls.munge = os.path.join(t, "munge.sock")
        log = open(os.path.join(t, "daemons.log"), "wb")
        cls.log = log

        def start(*argv: str) -> subprocess.Popen:
            p = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                 env=cls.env(), start_new_session=True)
            cls.procs.append(p)
            return p

        start(which("munged"), "--foreground", "--force", f"--socket={cls.munge}",
              f"--key-file={key}", f"--pid-file={t}/munged.pid", f"--log-file={t}/munged.log",
              f"--seed-file={t}/munged.seed")
        cls.wait_for(lambda: os.path.exists(cls.munge), "munged")
        host = socket.gethostname().split(".")[0]
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2 ** 20 // 2
        for d in ("state", "spool"):
            os.mkdir(os.path.join(t, d))
        cls.conf = os.path.join(t, "slurm.conf")
        with open(cls.conf, "w") as f:
            f.write(f"""ClusterName=fstest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={cls.munge}
StateSaveLocation={t}/state
SlurmdSpoolDir={t}/spool
SlurmctldPidFile={t}/slurmctld.pid
SlurmdPidFile={t}/slurmd.pid
SlurmctldLogFile={t}/slurmctld.log
SlurmdLogFile={t}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
InactiveLimit=0
KillWait=5
NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory={mem} State=UNKNOWN
PartitionName=fstest Nodes=ALL Default=YES MaxTime=10 State=UP
""")
        start(which("slurmctld"), "-D", "-f", cls.conf)
        start(which("slurmd"), "-D", "-f", cls.conf)

        def idle() -> bool:
            r = subprocess.run(["sinfo", "-h", "-o", "%t"], env=cls.env(), capture_output=True,
                               text=True, timeout=10)
            return r.stdout.strip() == "idle"
        cls.wait_for(idle, "the Slurm node")

    @classmethod
    def env(cls, **extra: str) -> dict:
        return env(SLURM_CONF=os.path.join(cls.t, "slurm.conf"), **extra)

    @classmethod
    def wait_for(cls, ok, what: str, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while not ok():
            if time.monotonic() > deadline or any(p.poll() is not None for p in cls.procs):
                raise RuntimeError(f"{what} did not start:\n" + cls.logs())
            time.sleep(0.2)

    @classmethod
    def logs(cls) -> str:
        out = []
        for name in ("daemons.log", "munged.log", "slurmctld.log", "slurmd.log"):
            try:
                with open(os.path.join(cls.t, name), errors="replace") as f:
                    out.append(f"--- {name}\n" + f.read()[-3000:])
            except OSError:
                pass
        return "\n".join(out)

    @classmethod
    def tearDownClass(cls) -> None:
        for p in reversed(cls.procs):  # slurmd, slurmctld, then munged
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
        if getattr(cls, "log", None):
            cls.log.close()
        # slurmstepd outlives slurmd for a moment at most; nothing may be left
        deadline = time.monotonic() + 15
        while not no_process_uses(cls.t) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = no_process_uses(cls.t)
        shutil.rmtree(cls.t, ignore_errors=True)
        assert left, "processes of the test's Slurm were left running"

    def test_job_with_a_daemon_per_node(self) -> None:
        out = os.path.join(self.t, "job.out")
        jobtmp = os.path.join(self.t, "jobtmp")
        os.mkdir(jobtmp, 0o755)
        script = os.path.join(self.t, "job.py")
        with open(script, "w") as f:
            f.write(JOB_PY)
        r = subprocess.run(["sbatch", "--wait", "-N", "1", "-t", "2", "-o", out, JOB,
                            sys.executable, script],
                           env=self.env(FORKSERVER_NODE_SCRIPT=NODE, TMPDIR=jobtmp),
                           capture_output=True, text=True, timeout=150)
        with open(out, errors="replace") as f:
            text = f.read()
        self.assertEqual(r.returncode, 0, r.stderr + text + self.logs())
        jobid = re.search(r"Submitted batch job (\d+)", r.stdout).group(1)
        job = json.loads(text.split("JOB ", 1)[1].splitlines()[0])
        self.assertEqual(job["job"], jobid)
        self.assertEqual(job["socket"], os.path.join(jobtmp, f"forkserver-{jobid}", "fs.sock"))
        self.assertIn("forkserver-job: a forkserverd on each of 1 node(s)", text)
        for pid, chain in job["where"]:
            # the workers' daemon is the job's own: it runs under the step's slurmstepd
            self.assertIn("forkserverd", chain)
            self.assertIn("slurmstepd", chain)
            self.assertLess(chain.index("forkserverd"), chain.index("slurmstepd"))
        self.assertEqual(os.listdir(jobtmp), [])  # the node's directory removed at the end
        self.assertIn("stopping (stop request)", text)


@unittest.skipUnless(yaml, "python3-yaml is not installed: the pod's structure is not checked")
class KubernetesTests(unittest.TestCase):
    """examples/kubernetes/forkserver-pod.yaml: valid, coherent, and its commands work on a
    directory made as an emptyDir is (root's, mode 0777, not sticky)."""

    @classmethod
    def setUpClass(cls) -> None:
        with open(POD) as f:
            cls.pod = yaml.safe_load(f)
        spec = cls.pod["spec"]
        cls.init = {c["name"]: c for c in spec["initContainers"]}
        cls.app = spec["containers"][0]
        cls.sidecar = cls.init["forkserverd"]
        cls.mount = {m["name"]: m["mountPath"] for m in cls.sidecar["volumeMounts"]}

    def test_structure(self) -> None:
        self.assertEqual((self.pod["apiVersion"], self.pod["kind"]), ("v1", "Pod"))
        vols = {v["name"]: v for v in self.pod["spec"]["volumes"]}
        self.assertIn("emptyDir", vols["forkserver-run"])
        self.assertEqual(vols["forkserver-key"]["secret"]["defaultMode"], 0o440)
        run = self.mount["forkserver-run"]
        # the init step makes the emptyDir sticky, before the sidecar starts
        names = list(self.init)
        self.assertLess(names.index("socket-dir"), names.index("forkserverd"))
        self.assertEqual(self.init["socket-dir"]["command"], ["chmod", "1777", run])
        self.assertEqual(self.sidecar["restartPolicy"], "Always")
        cmd = self.sidecar["command"][-1]
        sock = re.search(r"--socket (\S+)", cmd).group(1)
        self.assertEqual(os.path.dirname(os.path.dirname(sock)), run)  # a subdirectory
        self.assertIn(f"3<{self.mount['forkserver-key']}/key", cmd)
        self.assertIn("--key-fd 3", cmd)
        self.assertIn(f"--socket {sock}", self.sidecar["startupProbe"]["exec"]["command"][-1])
        env = {e["name"]: e["value"] for e in self.app["env"]}
        self.assertEqual(env["FORKSERVER_SOCKET"], sock)
        for c in (self.app, self.sidecar):
            self.assertIn({"name": "forkserver-run", "mountPath": run},
                          [{k: m[k] for k in ("name", "mountPath")} for m in c["volumeMounts"]])

    def test_commands_on_an_emptydir(self) -> None:
        base = tempfile.mkdtemp(prefix="fs-recipe-pod-")
        self.addCleanup(shutil.rmtree, base, ignore_errors=True)
        run, keydir = os.path.join(base, "run"), os.path.join(base, "secret")
        os.mkdir(run)
        os.chmod(run, 0o777)  # as the kubelet makes an emptyDir
        os.mkdir(keydir)
        subprocess.run([CTL, "keygen", "-o", os.path.join(keydir, "key")], check=True,
                       capture_output=True, timeout=10)

        def here(cmd: str) -> str:  # the pod's paths under base
            return cmd.replace(self.mount["forkserver-run"], run).replace(
                self.mount["forkserver-key"], keydir)

        def sidecar() -> subprocess.Popen:
            return subprocess.Popen(["sh", "-c", here(self.sidecar["command"][-1])],
                                    env=env(), stderr=subprocess.PIPE, text=True)

        # without the init step the daemon refuses the emptyDir above its directory
        p = sidecar()
        err = p.communicate(timeout=15)[1]
        self.assertNotEqual(p.returncode, 0)
        self.assertIn(f"{run} is writable by group or others (mode 0777) and not sticky", err)
        r = subprocess.run([here(a) for a in self.init["socket-dir"]["command"]], timeout=10)
        self.assertEqual(r.returncode, 0)
        p = sidecar()
        try:
            probe = ["sh", "-c", here(self.sidecar["startupProbe"]["exec"]["command"][-1])]
            deadline = time.monotonic() + 15
            while subprocess.run(probe, env=env(), capture_output=True, timeout=10).returncode:
                self.assertLess(time.monotonic(), deadline, "the startupProbe never passed")
                self.assertIsNone(p.poll(), p.stderr.read() if p.poll() is not None else "")
                time.sleep(0.1)
            sock = os.path.join(run, "d", "fs.sock")
            self.assertEqual(stat.S_IMODE(os.stat(os.path.dirname(sock)).st_mode), 0o700)
            app_env = env(**{e["name"]: here(e["value"]) for e in self.app["env"]})
            r = subprocess.run(["sh", "-c", here(self.app["command"][-1])], env=app_env,
                               capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertRegex(r.stdout, r"^worker \d+ in the sidecar\n$")
        finally:
            p.terminate()
            p.wait(15)
            p.stderr.close()


if __name__ == "__main__":
    unittest.main()
