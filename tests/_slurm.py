"""A real single-node Slurm cluster for tests, started from Debian's packages without systemd.

``with SlurmCluster(folder) as cluster:`` starts, in this order and each in the foreground as a
child of the test: ``munged`` (as the munge user, its own key and socket), ``mariadbd`` (a fresh
data folder, no grant tables: a throwaway database), ``slurmdbd -D`` (accounting: without ``sacct``
submitit cannot see a cancelled or killed job end), ``slurmctld -D -i`` and ``slurmd -D``, with a
``slurm.conf`` for this one host (``proctrack/linuxproc``, ``task/none``, ``cons_tres``, free ports,
every state, spool and log file in the folder). ``cluster.env`` is the environment in which
``sbatch``, ``squeue`` and friends talk to it (``SLURM_CONF``). On exit, whatever happened, the
jobs are cancelled and the daemons stopped by PID: SIGTERM, then SIGKILL after a grace period (a
``slurmd`` whose controller is gone ignores SIGTERM).

Slurm's own commands block for minutes when the controller is down, so every call has a timeout.
:func:`missing` says why the cluster cannot start here (packages absent and not installable, not
root); tests skip with that reason.
"""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PACKAGES = ("slurm-wlm", "munge", "slurmdbd", "mariadb-server")
BINARIES = ("munged", "mariadbd", "mariadb-install-db", "slurmdbd", "slurmctld", "slurmd", "sbatch", "squeue",
            "sacct", "scontrol", "sinfo")
START_TIMEOUT = 120.0
GRACE = 10.0
COMMAND_TIMEOUT = 30.0


def _which_all() -> list[str]:
    return [b for b in BINARIES if shutil.which(b) is None and not Path("/usr/sbin", b).exists()]


def missing() -> str | None:
    """Why a cluster cannot run here, or None. Installs the packages with apt-get when absent (as
    .ci/run does) where that is possible: root and apt-get present."""
    if os.name != "posix" or os.geteuid() != 0:
        return "the Slurm test starts slurmd and munged, which needs root"
    absent = _which_all()
    if absent and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for command in (["apt-get", "update", "-qq"],
                        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES]):
            try:
                subprocess.run(command, env=env, capture_output=True, timeout=300, check=False)
            except (OSError, subprocess.TimeoutExpired):
                break
        absent = _which_all()
    if absent:
        return (f"Slurm is not installed and could not be ({', '.join(absent)} missing): apt-get install "
                f"{' '.join(PACKAGES)}")
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return "the munge package's user 'munge' does not exist"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _binary(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


class SlurmCluster:
    """One host's Slurm, in ``folder`` (see the module doc)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.node = "hyp2node"
        self.cluster = "hyp2test"
        self.processes: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}
        self.env = dict(os.environ, SLURM_CONF=str(self.folder / "slurm.conf"))
        # munged checks that every folder above its socket and key is safe and reachable for the
        # munge user, so its files live in a folder of their own directly under the temp dir
        self.munge_dir = Path(tempfile.mkdtemp(prefix="hyp2-munge-"))

    # ------------------------------------------------------------------ start

    def __enter__(self) -> "SlurmCluster":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.ports = {name: free_port() for name in ("mysql", "dbd", "ctld", "slurmd")}
        self._munge()
        self._mariadb()
        self._write_configs()
        self._daemon("slurmdbd", [_binary("slurmdbd"), "-D"])
        self._wait(lambda: self._port_open(self.ports["dbd"]), "slurmdbd", "its port")
        self._daemon("slurmctld", [_binary("slurmctld"), "-D", "-i"])
        self._wait(lambda: self.run("scontrol", "ping").returncode == 0, "slurmctld", "scontrol ping")
        self._daemon("slurmd", [_binary("slurmd"), "-D", "-N", self.node])
        self._wait(lambda: self.run("sinfo", "-h", "-n", self.node, "-o", "%t").stdout.strip() == "idle",
                   "slurmd", "the node to be idle")

    def _munge(self) -> None:
        munge = pwd.getpwnam("munge")
        key = self.munge_dir / "munge.key"
        key.write_bytes(os.urandom(1024))
        for path, mode in ((self.munge_dir, 0o755), (key, 0o400)):  # clients reach the socket
            os.chown(path, munge.pw_uid, munge.pw_gid)
            os.chmod(path, mode)
        self.munge_socket = self.munge_dir / "munge.socket"
        self._daemon("munged", [_binary("munged"), "-F", f"--socket={self.munge_socket}", f"--key-file={key}",
                                f"--pid-file={self.munge_dir / 'munged.pid'}",
                                f"--seed-file={self.munge_dir / 'munged.seed'}",
                                f"--log-file={self.munge_dir / 'munged.log'}"],
                     user="munge", log=self.munge_dir / "munged.log")
        self._wait(self.munge_socket.exists, "munged", "its socket")

    def _mariadb(self) -> None:
        data = self.folder / "mysql"
        done = subprocess.run([_binary("mariadb-install-db"), "--no-defaults", f"--datadir={data}", "--user=root",
                               "--auth-root-authentication-method=normal", "--skip-test-db"],
                              capture_output=True, text=True, timeout=START_TIMEOUT)
        if done.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")
        self._daemon("mariadbd", [_binary("mariadbd"), "--no-defaults", f"--datadir={data}", "--user=root",
                                  "--skip-grant-tables", "--bind-address=127.0.0.1", f"--port={self.ports['mysql']}",
                                  f"--socket={self.folder / 'mysql.sock'}", f"--pid-file={self.folder / 'mysql.pid'}",
                                  f"--log-error={self.folder / 'mysql.log'}"], log=self.folder / "mysql.log")
        self._wait(lambda: self._port_open(self.ports["mysql"]), "mariadbd", "its port")

    def _write_configs(self) -> None:
        f, p = self.folder, self.ports
        for sub in ("state", "spool"):
            (f / sub).mkdir(exist_ok=True)
        auth = f"AuthType=auth/munge\nAuthInfo=socket={self.munge_socket},cred_expire=10\n"
        cpus = os.cpu_count() or 1
        (f / "slurm.conf").write_text(
            f"ClusterName={self.cluster}\nSlurmctldHost={socket.gethostname()}(127.0.0.1)\n"
            f"SlurmctldPort={p['ctld']}\nSlurmdPort={p['slurmd']}\nSlurmUser=root\nSlurmdUser=root\n"
            f"StateSaveLocation={f / 'state'}\nSlurmdSpoolDir={f / 'spool'}\n"
            f"SlurmctldPidFile={f / 'slurmctld.pid'}\nSlurmdPidFile={f / 'slurmd.pid'}\n"
            f"SlurmctldLogFile={f / 'slurmctld.log'}\nSlurmdLogFile={f / 'slurmd.log'}\n"
            f"{auth}CredType=cred/munge\nProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\n"
            f"SelectType=select/cons_tres\nSelectTypeParameters=CR_Core\nMpiDefault=none\nMailProg=/bin/true\n"
            f"AccountingStorageType=accounting_storage/slurmdbd\nAccountingStorageHost=127.0.0.1\n"
            f"AccountingStoragePort={p['dbd']}\nAccountingStoragePass={self.munge_socket}\nJobAcctGatherType=jobacct_gather/none\nJobCompType=jobcomp/none\n"
            f"ReturnToService=2\nKillWait=5\nMinJobAge=600\nSchedulerParameters=sched_interval=2\n"
            f"SlurmctldTimeout=30\nSlurmdTimeout=60\n"
            f"NodeName={self.node} NodeHostname=localhost NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN\n"
            f"PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP\n", encoding="utf-8")
        dbd = f / "slurmdbd.conf"
        dbd.write_text(f"{auth}DbdHost=localhost\nDbdAddr=127.0.0.1\nDbdPort={p['dbd']}\nSlurmUser=root\n"
                       f"StorageType=accounting_storage/mysql\nStorageHost=127.0.0.1\nStoragePort={p['mysql']}\n"
                       f"StorageUser=root\nStorageLoc=slurm_acct_db\nPidFile={f / 'slurmdbd.pid'}\n"
                       f"LogFile={f / 'slurmdbd.log'}\n", encoding="utf-8")
        os.chmod(dbd, 0o600)
        for name in ("slurmdbd", "slurmctld", "slurmd"):
            self.logs[name] = f / f"{name}.log"

    def _daemon(self, name: str, command: list[str], user: str | None = None, log: Path | None = None) -> None:
        out = open(self.folder / f"{name}.out", "wb")
        self.processes[name] = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL, env=self.env, user=user,
                                                start_new_session=True)
        out.close()
        self.logs[name] = log or self.folder / f"{name}.out"
        self.logs[f"{name} (console)"] = self.folder / f"{name}.out"

    def _wait(self, ready, name: str, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not ready():
            if self.processes[name].poll() is not None:
                raise RuntimeError(f"{name} exited ({self.processes[name].returncode}) before {what}:\n{self.tails()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}: no {what} after {START_TIMEOUT:.0f} s:\n{self.tails()}")
            time.sleep(0.2)

    @staticmethod
    def _port_open(port: int) -> bool:
        with socket.socket() as s:
            s.settimeout(1)
            return s.connect_ex(("127.0.0.1", port)) == 0

    # ------------------------------------------------------------------ use

    def run(self, *command: str, timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess:
        """A Slurm command against this cluster; a timeout is a failed call, not a hang."""
        try:
            return subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            return subprocess.CompletedProcess(command, 124, e.stdout or "", f"timed out after {timeout} s")

    def tails(self, lines: int = 25) -> str:
        """The last lines of every daemon's log, for a failure's message."""
        parts = []
        for name, path in self.logs.items():
            try:
                text = path.read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                continue
            parts.append(f"--- {name} ({path}) ---\n" + "\n".join(text))
        return "\n".join(parts)

    # ------------------------------------------------------------------ stop

    def stop(self) -> None:
        """Cancel every job, then stop the daemons by PID in reverse order of starting."""
        if "slurmctld" in self.processes and self.processes["slurmctld"].poll() is None:
            self.run("scancel", "--full", f"--clusters={self.cluster}", "-u", "root", timeout=10)
            deadline = time.monotonic() + GRACE * 3
            while time.monotonic() < deadline and self.run("squeue", "-h", timeout=10).stdout.strip():
                time.sleep(0.5)
        for name in reversed(list(self.processes)):
            process = self.processes[name]
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(GRACE)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(GRACE)
        shutil.rmtree(self.munge_dir, ignore_errors=True)
