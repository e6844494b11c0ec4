"""Store URLs and connections: fresh stores raced by two commands, unreachable and slow tracking
servers, both PostgreSQL URL spellings, one SQLite file for both stores. Real processes and
servers; each bad input ends in one line, exit code 2, no credentials, nothing written."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from bench.cli import main
from tests.conftest import REPO
from tests.services import SECRET, free_port

ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def tiny_study(root, name: str = "tiny") -> str:
    path = root / f"{name}.toml"
    path.write_text(textwrap.dedent(f"""
        name = "{name}"
        model = "linear"
        dataset = "digits"
        epochs = 1
        [tuning]
        n_trials = 2
        pruner = "none"
        [eval]
        seeds = 2
        [[arms]]
        optimizer = "sgd"
        """))
    return str(path)


def bench(root, *args: str, env: dict | None = None, timeout: float = 120) -> tuple[int, str, float]:
    """`bench ARGS` as a separate process in `root`: (exit code, stderr, seconds)."""
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "bench.cli", *args], cwd=root, env=env or ENV,
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stderr, time.monotonic() - start


@pytest.mark.slow
def test_two_runs_started_together_on_fresh_sqlite_stores_both_complete(tmp_path):
    path = tiny_study(tmp_path)
    flags = ["--storage", f"sqlite:///{tmp_path}/optuna.db", "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"]
    procs = [subprocess.Popen([sys.executable, "-m", "bench.cli", "run", path, "--quiet", *flags,
                               "--results-dir", str(tmp_path / f"results-{k}")], cwd=tmp_path, env=ENV,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for k in range(2)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors  # before: "table alembic_version already exists"
    study = optuna.load_study(study_name="tiny/sgd", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert Counter(t.state for t in study.trials)[TrialState.COMPLETE] == 2  # shared, not doubled
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    assert len(client.search_experiments(filter_string="name = 'tiny'")) == 1


def test_a_tracking_server_that_refuses_fails_in_seconds_with_one_line_and_no_password(tmp_path):
    uri = f"http://user:{SECRET}@127.0.0.1:{free_port()}"  # nothing listens there
    code, err, took = bench(tmp_path, "run", tiny_study(tmp_path), "--quiet", "--tracking-uri", uri,
                            "--storage", str(tmp_path / "optuna.journal"), timeout=90)  # before: 258 s
    assert code == 2 and SECRET not in err
    assert err.splitlines() == [f"bench run: MLflow tracking URI {uri.replace(SECRET, '***')}: connection refused "
                                f"({uri.rsplit('@', 1)[1]})"]
    assert took < 30  # the start-up imports, then one refused connect
    assert not (tmp_path / "optuna.journal").exists()


class _SlowHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's naming
        time.sleep(3)  # longer than the client waits
        self.send_response(200)
        self.end_headers()

    do_POST = do_GET  # noqa: N815

    def log_message(self, *args):
        pass


def test_retries_against_a_slow_tracking_server_are_bounded_and_each_one_is_shown(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    uri = f"http://user:{SECRET}@127.0.0.1:{server.server_address[1]}"
    # the suite's retry count (3) applies; a shorter timeout and no backoff keep the test short
    env = {**ENV, "MLFLOW_HTTP_REQUEST_TIMEOUT": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0"}
    env.pop("MLFLOW_HTTP_REQUEST_MAX_RETRIES", None)
    try:
        code, err, took = bench(tmp_path, "run", tiny_study(tmp_path), "--quiet", "--tracking-uri", uri,
                                "--storage", str(tmp_path / "optuna.journal"), env=env, timeout=120)
    finally:
        server.shutdown()
    lines = err.splitlines()
    assert code == 2 and SECRET not in err, err
    assert lines[:3] == [f"MLflow tracking server: ReadTimeoutError on /api/2.0/mlflow/experiments/get-by-name; "
                         f"retry {k} of 3" for k in (1, 2, 3)], lines
    assert len(lines) == 4 and lines[3].startswith(f"bench run: MLflow tracking URI {uri.replace(SECRET, '***')}: ")
    assert took < 45  # start-up + 4 attempts of 1 s (MLflow's own defaults: 7 retries of 120 s each)


@pytest.mark.parametrize("storage", ["sqlite:///{d}/x.db", "{d}/x.db"])
def test_one_sqlite_file_for_both_stores_is_refused_before_anything_is_written(stores, capsys, storage):
    target = stores.root / "x.db"
    code = main(["run", tiny_study(stores.root), "--storage", storage.format(d=stores.root),
                 "--tracking-uri", f"sqlite:///{target}", "--results-dir", str(stores.results)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "--storage and --tracking-uri are the same file" in err
    assert not target.exists() and not list(stores.root.glob("x.db*"))  # nothing created


def test_an_existing_store_named_twice_is_left_unchanged(stores, capsys):
    target = stores.root / "x.db"
    assert main(["run", tiny_study(stores.root), "--quiet", "--storage", str(stores.root / "optuna.journal"),
                 "--tracking-uri", f"sqlite:///{target}", "--results-dir", str(stores.results)]) == 0
    before = {p.name: p.read_bytes() for p in stores.root.glob("x.db*")}
    capsys.readouterr()
    assert main(["run", tiny_study(stores.root), "--storage", f"sqlite:///{target}",
                 "--tracking-uri", f"sqlite:///{target}", "--results-dir", str(stores.results)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert {p.name: p.read_bytes() for p in stores.root.glob("x.db*")} == before


def test_a_refused_postgresql_storage_is_one_line_without_the_password(stores, capsys):
    url = f"postgresql://bench:{SECRET}@127.0.0.1:{free_port()}/optuna"
    assert main(["run", tiny_study(stores.root), "--storage", url, "--tracking-uri", stores.tracking_uri,
                 "--results-dir", str(stores.results)]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"bench run: Optuna storage {url.replace(SECRET, '***')}: connection refused "
                                f"({url.split('@')[1].split('/')[0]})"]


@pytest.mark.slow
def test_both_postgresql_spellings_work_for_the_optuna_storage_and_the_mlflow_store(stores, postgres, capsys,
                                                                                   monkeypatch):
    """SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3 (not installed); the suite maps it to psycopg2."""
    monkeypatch.chdir(stores.root)  # a database tracking URI keeps artifacts in ./mlruns
    path = tiny_study(stores.root)
    psycopg2_url = postgres.url("optuna")  # postgresql+psycopg2://...
    bare = psycopg2_url.replace("postgresql+psycopg2://", "postgresql://")
    tracking = postgres.url(postgres.create_db("mlflow_direct")).replace("postgresql+psycopg2://", "postgres://")
    assert main(["run", path, "--quiet", "--storage", bare, "--tracking-uri", tracking,
                 "--results-dir", str(stores.results)]) == 0
    out, err = capsys.readouterr()
    assert SECRET not in out + err and "Traceback" not in err
    study = optuna.load_study(study_name="tiny/sgd", storage=psycopg2_url)  # the same database, either spelling
    assert Counter(t.state for t in study.trials)[TrialState.COMPLETE] == 2
    client = MlflowClient(tracking.replace("postgres://", "postgresql+psycopg2://"))
    exp = client.get_experiment_by_name("tiny")
    runs = client.search_runs([exp.experiment_id])
    assert Counter(r.data.tags["phase"] for r in runs) == {"arm": 1, "tune": 2, "eval": 2}
    assert {r.info.status for r in runs} == {"FINISHED"}
    parent = next(r for r in runs if r.data.tags["phase"] == "arm")
    assert parent.data.tags["optuna_storage"] == bare.replace(SECRET, "***")
