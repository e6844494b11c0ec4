"""Real PostgreSQL and `mlflow server` processes for scale-out tests (started, never mocked).

PostgreSQL comes from Debian's `postgresql` package (`.ci/run` installs it); a private cluster is
created in a temporary directory, owned by the `postgres` system user when running as root
(initdb refuses root), listening on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

SECRET = "s3cret-pw"  # must never show up in MLflow, logs or reports


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _missing(what: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{what} is required in CI (apt-get install postgresql)")
    pytest.skip(reason=f"{what} not installed here (apt-get install postgresql); CI fails instead")


class Postgres:
    def __init__(self, root: Path) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not bins:
            _missing("PostgreSQL server")
        self.bin = Path(bins[-1]).parent
        self.root, self.port = root, free_port()
        self.data = root / "pgdata"
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def _run(self, *cmd: str) -> None:
        subprocess.run([*self.as_user, *cmd], check=True, capture_output=True, text=True, cwd="/")

    def start(self) -> Postgres:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.as_user:
            shutil.chown(self.root, "postgres")
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "bench", "--auth=trust", "-E", "UTF8")
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-l", str(self.root / "pg.log"), "-o",
                  f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=200", "start")
        for db in ("optuna", "mlflow"):
            self.create_db(db)
        return self

    def create_db(self, db: str) -> str:
        self._run(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "bench", db)
        return db

    def url(self, db: str) -> str:
        # trust auth ignores the password; it is there to prove that it is redacted everywhere
        return f"postgresql+psycopg2://bench:{SECRET}@127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        subprocess.run([*self.as_user, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop"],
                       capture_output=True, cwd="/")


class MlflowServer:
    def __init__(self, backend: str, artifacts: Path) -> None:
        self.port = free_port()
        self.log = open(artifacts.parent / "mlflow-server.log", "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend, "--artifacts-destination",
             artifacts.as_uri(), "--host", "127.0.0.1", "--port", str(self.port), "--workers", "2"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"mlflow server did not come up: {Path(self.log.name).read_text()[-2000:]}")

    def stop(self) -> None:
        import signal

        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()


class Slurm:
    """A private single-node Slurm cluster on 127.0.0.1: its own munged, slurmctld and slurmd,
    with a slurm.conf written here (Debian's `slurm-wlm` and `munge`, installed by `.ci/run`).

    Jobs run as root (SlurmUser=root) with the submitter's environment, so they import `bench`
    from this checkout with this interpreter. Without accounting storage `sacct` fails; the
    launcher follows jobs with `squeue`/`scontrol` only.
    """

    CPUS = 2

    def __init__(self, root: Path) -> None:
        missing = None
        if not (shutil.which("slurmctld") and shutil.which("slurmd") and shutil.which("munged")):
            missing = "slurm-wlm and munge (apt-get install slurm-wlm munge)"
        elif os.geteuid() != 0:
            missing = "root (the private cluster's daemons and its jobs run as root)"
        if missing and os.environ.get("CI"):
            pytest.fail(f"the Slurm tests need {missing} in CI")
        if missing:
            pytest.skip(reason=f"the Slurm tests need {missing}; CI fails instead")
        self.root = root
        self.conf = root / "slurm.conf"
        self.procs: list[subprocess.Popen] = []

    def _munged(self) -> str:
        # munged wants its socket folder world-searchable and its key in a folder only it can read
        sock_dir, key_dir = self.root / "munge", self.root / "munge" / "key"
        key_dir.mkdir(parents=True)
        sock_dir.chmod(0o755)
        key_dir.chmod(0o700)
        key = key_dir / "munge.key"
        key.write_bytes(os.urandom(128))
        key.chmod(0o600)
        for path in (sock_dir, key_dir, key):
            shutil.chown(path, "munge", "munge")
        socket_path = sock_dir / "munge.socket"
        subprocess.run(["runuser", "-u", "munge", "--", "munged", f"--socket={socket_path}", f"--key-file={key}",
                        f"--pid-file={sock_dir / 'munged.pid'}", f"--log-file={sock_dir / 'munged.log'}",
                        f"--seed-file={sock_dir / 'munged.seed'}"], check=True, capture_output=True, cwd="/")
        return str(socket_path)

    def start(self) -> Slurm:
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        socket_path = self._munged()
        host = socket.gethostname()
        for sub in ("state", "spool", "log"):
            (self.root / sub).mkdir()
        self.conf.write_text("\n".join([
            "ClusterName=bench-test",
            f"SlurmctldHost={host}(127.0.0.1)",
            f"SlurmctldPort={free_port()}",
            f"SlurmdPort={free_port()}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            # cred_expire is also how long Slurm holds a requeued job before it may start again (default 120 s)
            f"AuthInfo=socket={socket_path},cred_expire=10",
            f"StateSaveLocation={self.root / 'state'}",
            f"SlurmdSpoolDir={self.root / 'spool'}",
            f"SlurmctldPidFile={self.root / 'slurmctld.pid'}",
            f"SlurmdPidFile={self.root / 'slurmd.pid'}",
            f"SlurmctldLogFile={self.root / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={self.root / 'log' / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",  # no cgroups needed
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/none",
            "MpiDefault=none",
            "SchedulerType=sched/backfill",
            # once its hold is over a requeued job waits for the scheduler's next pass over the queue:
            # every 5 s here (default 60 s)
            "SchedulerParameters=sched_interval=5",
            "ReturnToService=2",
            "KillWait=30",  # SIGTERM ... SIGKILL: a worker's grace period must fit in it
            "JobRequeue=1",
            "SlurmdParameters=config_overrides",
            f"NodeName={host} NodeAddr=127.0.0.1 CPUs={self.CPUS} RealMemory=4000 State=UNKNOWN",
            # 2 CPUs, but up to 4 one-CPU jobs at once: three workers run side by side, as they would on
            # three nodes (the tests' trials are tiny)
            f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4",
            "",
        ]))
        os.environ["SLURM_CONF"] = str(self.conf)  # for sbatch/squeue/scontrol here and in the jobs
        for daemon in ("slurmctld", "slurmd"):
            log = open(self.root / "log" / f"{daemon}.out", "w")
            self.procs.append(subprocess.Popen([daemon, "-D", "-f", str(self.conf)], stdout=log,
                                               stderr=subprocess.STDOUT, cwd=self.root, start_new_session=True))
        deadline = time.time() + 60
        while time.time() < deadline:
            out = subprocess.run(["sinfo", "--noheader", "--format=%t"], capture_output=True, text=True).stdout
            if out.strip() == "idle":
                return self
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"Slurm did not come up: {(self.root / 'log' / 'slurmctld.log').read_text()[-2000:]}")

    def jobs(self) -> dict[str, str]:
        """{task id: state} of every job still known to squeue."""
        out = subprocess.run(["squeue", "--noheader", "--array", "--format=%i %T"], capture_output=True,
                             text=True).stdout
        return dict(line.split() for line in out.splitlines() if line.strip())

    def wait_idle(self, timeout: float = 120) -> None:
        """Until no job is left (a test's jobs must not run into the next test)."""
        deadline = time.time() + timeout
        while self.jobs() and time.time() < deadline:
            time.sleep(1)
        assert not self.jobs(), f"jobs left: {self.jobs()}"

    def stop(self) -> None:
        import signal

        subprocess.run(["scancel", "--full", "--user=root"], capture_output=True)
        for proc in reversed(self.procs):
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
        pid_file = self.root / "munge" / "munged.pid"
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
        os.environ.pop("SLURM_CONF", None)
