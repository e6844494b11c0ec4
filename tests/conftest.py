"""Shared fixtures: temporary MLflow + Optuna stores and a CLI runner bound to them."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.cli import main

warnings.filterwarnings("ignore", category=DeprecationWarning)
REPO = Path(__file__).resolve().parent.parent
STUDIES = REPO / "studies"


@pytest.fixture(scope="session", autouse=True)
def _data_folder(tmp_path_factory):
    """Dataset files and caches (MNIST-1D's) go to a folder of this test session, never the user's
    ~/.cache/bench/data; worker processes inherit it. Tests with their own files set it per test."""
    from bench.data.store import DATA_DIR_ENV

    old = os.environ.get(DATA_DIR_ENV)
    os.environ[DATA_DIR_ENV] = str(tmp_path_factory.mktemp("bench-data"))
    yield
    if old is None:
        os.environ.pop(DATA_DIR_ENV, None)
    else:
        os.environ[DATA_DIR_ENV] = old


@dataclass
class Stores:
    root: Path

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.root}/mlflow.db"

    @property
    def storage(self) -> str:
        return str(self.root / "optuna.journal")

    @property
    def results(self) -> Path:
        return self.root / "results"

    def flags(self) -> list[str]:
        return ["--storage", self.storage, "--tracking-uri", self.tracking_uri, "--results-dir", str(self.results)]

    def run(self, *args: str) -> int:
        """`bench <args>` against these stores (store flags appended for run/report/status)."""
        extra = self.flags() if args and args[0] in ("run", "report", "status") else []
        return main([*args, *extra])


@pytest.fixture
def stores(tmp_path: Path) -> Stores:
    return Stores(tmp_path)


@pytest.fixture(scope="session")
def quick_study(tmp_path_factory) -> Stores:
    """The quickstart's quick variant, run once per session for the report and UI tests."""
    stores = Stores(tmp_path_factory.mktemp("quickstart"))
    assert stores.run("run", str(STUDIES / "quickstart.toml"), "--quick", "--quiet") == 0
    return stores


@pytest.fixture(scope="session")
def postgres(tmp_path_factory):
    """A private PostgreSQL cluster on 127.0.0.1 with databases `optuna` and `mlflow`."""
    import shutil
    import tempfile

    from tests.services import Postgres

    # not under pytest's tmp dir: that one is private to root, and the server runs as `postgres`
    root = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    root.chmod(0o755)
    pg = Postgres(root / "cluster").start()
    yield pg
    pg.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def mlflow_server(postgres, tmp_path_factory):
    """`mlflow server` backed by the PostgreSQL database `mlflow`, artifacts proxied to a temp dir."""
    from tests.services import MlflowServer

    server = MlflowServer(postgres.url("mlflow"), tmp_path_factory.mktemp("mlflow") / "artifacts")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def slurm():
    """A private single-node Slurm cluster (munged, slurmctld, slurmd) on 127.0.0.1."""
    import shutil
    import tempfile

    from tests.services import Slurm

    root = Path(tempfile.mkdtemp(prefix="bench-slurm-"))  # not pytest's tmp dir: munged must reach it
    root.chmod(0o755)
    cluster = Slurm(root / "cluster").start()
    yield cluster
    cluster.stop()
    shutil.rmtree(root, ignore_errors=True)
