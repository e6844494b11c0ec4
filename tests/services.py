"""Real PostgreSQL and `mlflow server` processes for scale-out tests (started, never mocked).

PostgreSQL comes from Debian's `postgresql` package (`.ci/run` installs it); a private cluster is
created in a temporary directory, owned by the `postgres` system user when running as root
(initdb refuses root), listening on 127.0.0.1 only.
"""

from __future__ import annotations

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
