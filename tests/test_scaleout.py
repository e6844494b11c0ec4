"""Several workers against a real PostgreSQL (Optuna RDB with heartbeats) and a real `mlflow server`."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import sqlalchemy
from mlflow import MlflowClient

from bench.cli import main
from bench.tuning.coordination import heartbeats_on
from bench.tuning.storage import open_storage
from tests.services import SECRET
from tests.test_workers import check_exact, study_file

pytestmark = pytest.mark.slow


def test_four_workers_on_postgresql_and_an_mlflow_server_without_leaking_credentials(
        stores, postgres, mlflow_server, capfd):
    path = study_file(stores.root, "pg4", n_trials=25, epochs=2)
    storage_url = postgres.url("optuna")
    assert main(["run", path, "--workers", "4", "--quiet", "--storage", storage_url,
                 "--tracking-uri", mlflow_server.url, "--results-dir", str(stores.results)]) == 0
    out, err = capfd.readouterr()
    assert "database is locked" not in err and "Traceback" not in err
    storage = open_storage(storage_url)
    assert isinstance(storage, optuna.storages.RDBStorage) and heartbeats_on(storage)
    with sqlalchemy.create_engine(storage_url).connect() as conn:  # every trial recorded heartbeats
        beating = conn.execute(sqlalchemy.text("SELECT COUNT(DISTINCT trial_id) FROM trial_heartbeats")).scalar()
        trials = conn.execute(sqlalchemy.text("SELECT COUNT(*) FROM trials")).scalar()
    assert beating == trials == 2 * 25

    class Server:  # check_exact reads MLflow through the server
        tracking_uri = mlflow_server.url

    check_exact(Server, "pg4", storage, n_trials=25, seeds=3)
    client = MlflowClient(mlflow_server.url)
    exp = client.get_experiment_by_name("pg4")
    splits = {"tune": {"train", "val"}, "eval": {"train", "val", "test"}, "arm": {"train", "val", "test"}}
    for run in client.search_runs([exp.experiment_id], max_results=5000):
        assert SECRET not in str(run.data.tags) and SECRET not in str(run.data.params)
        # dataset inputs go through the server's API too (the client path)
        contexts = {t.value for i in run.inputs.dataset_inputs for t in i.tags if t.key == "mlflow.data.context"}
        assert contexts == splits[run.data.tags["phase"]], run.info.run_name
        if run.data.tags.get("phase") == "arm":
            assert run.data.tags["optuna_storage"] == storage_url.replace(SECRET, "***")
    assert SECRET not in out + err
    for file in (stores.results / "pg4").rglob("*"):
        if file.is_file() and file.suffix in (".md", ".csv", ".html", ".json"):
            assert SECRET not in file.read_text(errors="ignore"), file
    assert not Path(stores.storage).exists()  # nothing went to the embedded default store
