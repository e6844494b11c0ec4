"""Several worker processes on one study: exact budgets, no lost or duplicated work, killed workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def study_file(root, name: str, *, n_trials: int, epochs: int | None = None, seconds: float | None = None,
               model: str = "linear", seeds: int = 3) -> str:
    """Two arms (sgd, adam) on digits. Each run trains `epochs` epochs, or `seconds` seconds (a
    floor on its wall time whatever the machine's speed, evaluated every second)."""
    assert (epochs is None) != (seconds is None), "one budget: epochs or seconds"
    budget = f"epochs = {epochs}" if seconds is None else f"seconds = {seconds}\n        eval_every = 1.0"
    path = root / f"{name}.toml"
    path.write_text(textwrap.dedent(f"""
        name = "{name}"
        model = "{model}"
        dataset = "digits"
        {budget}
        [params]
        batch_size = 256
        [tuning]
        n_trials = {n_trials}
        pruner = "none"
        [eval]
        seeds = {seeds}
        [[arms]]
        optimizer = "sgd"
        [[arms]]
        optimizer = "adam"
        """))
    return str(path)


def check_exact(stores, name: str, storage, *, n_trials: int, seeds: int, allow_failed: int = 0) -> None:
    client = MlflowClient(stores.tracking_uri)
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id], max_results=5000)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    for arm in ("sgd", "adam"):
        trials = optuna.load_study(study_name=f"{name}/{arm}", storage=storage).trials
        states = Counter(t.state for t in trials)
        assert states[TrialState.COMPLETE] + states[TrialState.PRUNED] == n_trials
        assert states[TrialState.RUNNING] == 0 and states[TrialState.FAIL] <= allow_failed
        configs = [tuple(sorted(t.params.items())) for t in trials if t.state != TrialState.FAIL]
        assert len(set(configs)) == len(configs) == n_trials  # no worker redrew another's configuration
        tune = [r for r in runs if r.data.tags.get("arm") == arm and r.data.tags.get("phase") == "tune"]
        finished = [r for r in tune if r.info.status == "FINISHED"]
        assert len(finished) == states[TrialState.COMPLETE]
        assert len({r.data.tags["optuna_trial"] for r in tune}) == len(tune)  # one run per trial
        evals = [r for r in runs if r.data.tags.get("arm") == arm and r.data.tags.get("phase") == "eval"
                 and r.info.status == "FINISHED"]
        assert sorted(int(r.data.tags["seed"]) for r in evals) == [1000 + k for k in range(seeds)]
    parents = [r for r in runs if r.data.tags.get("phase") == "arm"]
    assert len(parents) == 2 and all(r.info.status == "FINISHED" for r in parents)


def test_four_workers_fifty_trials_on_the_embedded_stores(stores, capfd):
    path = study_file(stores.root, "w4", n_trials=25, epochs=2)
    assert stores.run("run", path, "--workers", "4", "--quiet") == 0
    err = capfd.readouterr().err
    assert "database is locked" not in err and "Traceback" not in err
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(stores.storage))
    check_exact(stores, "w4", storage, n_trials=25, seeds=3)
    workers = {t.user_attrs["worker"] for arm in ("sgd", "adam")
               for t in optuna.load_study(study_name=f"w4/{arm}", storage=storage).trials}
    assert len(workers) == 4  # the work was really shared


def test_a_worker_killed_mid_trial_is_retried_and_the_budget_stays_exact(stores):
    path = study_file(stores.root, "wkill", n_trials=4, epochs=200, model="mlp", seeds=2)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "bench.cli", "run", path, "--workers", "2", "--quiet",
                             *stores.flags()], env=env, cwd=stores.root,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(stores.storage))
    victim = None
    deadline = time.time() + 180
    while victim is None and time.time() < deadline and proc.poll() is None:
        try:
            trials = optuna.load_study(study_name="wkill/sgd", storage=storage).trials
        except KeyError:
            trials = []
        running = [t for t in trials if t.state == TrialState.RUNNING and "mlflow_run_id" in t.user_attrs]
        if running:
            victim = running[0]
        else:
            time.sleep(0.1)
    assert victim is not None, "no running trial to kill"
    os.kill(int(victim.user_attrs["worker"].rsplit(":", 1)[1]), signal.SIGKILL)
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 1 and "workers exited with codes" in err  # the loss is reported ...
    dead = optuna.load_study(study_name="wkill/sgd", storage=storage).trials[victim.number]
    assert dead.state == TrialState.FAIL and dead.user_attrs["fail_reason"].startswith("orphaned")
    retry = [t for t in optuna.load_study(study_name="wkill/sgd", storage=storage).trials
             if t.user_attrs.get("retry_of") == victim.number]
    assert len(retry) == 1 and retry[0].params == dead.params and retry[0].state == TrialState.COMPLETE
    client = MlflowClient(stores.tracking_uri)
    assert client.get_run(victim.user_attrs["mlflow_run_id"]).info.status == "FAILED"
    check_exact(stores, "wkill", storage, n_trials=4, seeds=2, allow_failed=1)  # ... and the study completed
