"""End-to-end studies on temporary stores: Optuna <-> MLflow lineage, report numbers, resume."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import optuna
import pandas as pd
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from bench.cli import main
from tests.conftest import REPO, STUDIES

pytestmark = pytest.mark.slow
ARMS = ["sgd", "bgd", "adam", "adagrad"]
CHILD_TAGS = {"study", "arm", "phase", "model", "dataset", "optimizer", "schedule", "seed", "config_hash",
              "git_sha", "git_dirty", "version.torch", "version.pytorch-lightning", "version.mlflow",
              "version.optuna", "status", "device", "steps", "samples", "epochs_run", "mlflow.parentRunId"}


def all_runs(client: MlflowClient, name: str):
    exp = client.get_experiment_by_name(name)
    return client.search_runs([exp.experiment_id], max_results=5000)


def test_quickstart_end_to_end_lineage_report_and_rerun(stores):
    study_file = str(STUDIES / "quickstart.toml")
    assert stores.run("run", study_file, "--quick", "--quiet") == 0
    client = MlflowClient(stores.tracking_uri)
    runs = all_runs(client, "quickstart-quick")
    by_phase = {p: [r for r in runs if r.data.tags.get("phase") == p] for p in ("arm", "tune", "eval")}
    assert len(by_phase["arm"]) == 4 and len(by_phase["tune"]) == 4 * 3 and len(by_phase["eval"]) == 4 * 2
    assert not [r for r in runs if r.info.status == "RUNNING"]
    parents = {r.data.tags["arm"]: r for r in by_phase["arm"]}
    assert set(parents) == set(ARMS) and all(r.info.status == "FINISHED" for r in parents.values())

    for run in by_phase["tune"] + by_phase["eval"]:
        tags, params = run.data.tags, run.data.params
        assert CHILD_TAGS <= set(tags), CHILD_TAGS - set(tags)
        assert tags["mlflow.parentRunId"] == parents[tags["arm"]].info.run_id
        assert {"lr", "hidden_sizes", "epochs", "seed"} <= set(params)
        assert ("batch_size" in params) == (tags["optimizer"] != "bgd")
        assert params["hidden_sizes"] == "128-64"
        if run.info.status == "FINISHED":
            history = client.get_metric_history(run.info.run_id, "val/acc")
            assert sorted(m.step for m in history) == [1, 2, 3]
            for key in ("train/loss", "val/loss", "lr", "epoch_time_s", "steps", "wall_time_s"):
                assert key in run.data.metrics
        artifact = client.download_artifacts(run.info.run_id, "config.json", str(stores.root / "dl"))
        assert '"model": "mlp"' in open(artifact).read()
    names = sorted(r.info.run_name for r in by_phase["eval"] if r.data.tags["arm"] == "adam")
    assert names == ["adam/seed-0", "adam/seed-1"]
    assert all("test/acc" in r.data.metrics for r in by_phase["eval"])

    # Optuna <-> MLflow cross-links, statuses and budgets
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(stores.storage))
    run_by_id = {r.info.run_id: r for r in runs}
    for arm in ARMS:
        study = optuna.load_study(study_name=f"quickstart-quick/{arm}", storage=storage)
        trials = study.get_trials()
        assert len(trials) == 3 and all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
        assert study.user_attrs["sampler"] == "tpe" and study.user_attrs["sampler_settings"]["multivariate"] is True
        for t in trials:
            run = run_by_id[t.user_attrs["mlflow_run_id"]]
            assert run.data.tags["optuna_trial"] == str(t.number)
            assert run.data.tags["optuna_study"] == study.study_name
            assert run.info.status == ("FINISHED" if t.state == TrialState.COMPLETE else "KILLED")
            if t.state == TrialState.COMPLETE:
                assert run.data.metrics["val/acc"] == pytest.approx(t.value)
                assert run.info.run_name == f"{arm}/trial-{t.number:03d}"

    # The report's numbers are MLflow's numbers
    out = stores.results / "quickstart-quick"
    table = pd.read_csv(out / "summary.csv").set_index("arm")
    assert set(table.index) == set(ARMS)
    for arm in ARMS:
        evals = [r for r in by_phase["eval"] if r.data.tags["arm"] == arm]
        values = [r.data.metrics["test/acc"] for r in evals]
        assert table.loc[arm, "test_mean"] == pytest.approx(np.mean(values), abs=1e-12)
        assert table.loc[arm, "eval_seeds"] == 2
        assert set(table.loc[arm, "eval_run_ids"].split()) == {r.info.run_id for r in evals}
        assert table.loc[arm, "parent_run_id"] == parents[arm].info.run_id
        half = table.loc[arm, "test_ci95_high"] - table.loc[arm, "test_mean"]
        assert half == pytest.approx(12.7062 * np.std(values, ddof=1) / np.sqrt(2), rel=1e-3)
        best = optuna.load_study(study_name=f"quickstart-quick/{arm}", storage=storage).best_value
        assert table.loc[arm, "best_val/acc"] == pytest.approx(best)
    assert table.loc["bgd", "steps"] == 3 and table.loc["sgd", "steps"] == 3 * math.ceil(3600 / 64)  # 57 per epoch
    report = (out / "report.md").read_text()
    assert "| 1 |" in report and "learning_curves.png" in report and (out / "figures/learning_curves.png").exists()

    # Rerunning continues where it stopped: nothing left to do, nothing added
    assert stores.run("run", study_file, "--quick", "--quiet") == 0
    assert len(all_runs(client, "quickstart-quick")) == len(runs)
    for arm in ARMS:
        assert len(optuna.load_study(study_name=f"quickstart-quick/{arm}", storage=storage).trials) == 3

    # `bench report` alone rebuilds the same numbers from the stores
    (out / "summary.csv").unlink()
    assert stores.run("report", study_file, "--quick") == 0
    again = pd.read_csv(out / "summary.csv").set_index("arm")
    pd.testing.assert_series_equal(again["test_mean"], table["test_mean"])


DIVERGING = """
name = "diverge"
model = "mlp"
dataset = "digits"
epochs = 3
[params]
hidden_sizes = "32"
[tuning]
n_trials = 3
[eval]
seeds = 2
[[arms]]
name = "sgd-huge-lr"
optimizer = "sgd"
space = { lr = { low = 1e4, high = 1e6, log = true } }
[[arms]]
optimizer = "adam"
"""


def test_diverging_trials_are_pruned_with_reason_and_the_study_goes_on(stores):
    path = stores.root / "diverge.toml"
    path.write_text(DIVERGING)
    assert stores.run("run", str(path), "--quiet") == 0
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(stores.storage))
    bad = optuna.load_study(study_name="diverge/sgd-huge-lr", storage=storage)
    assert [t.state for t in bad.trials] == [TrialState.PRUNED] * 3
    assert all(t.user_attrs["pruned_reason"].startswith("diverged: train/loss=") for t in bad.trials)
    client = MlflowClient(stores.tracking_uri)
    runs = all_runs(client, "diverge")
    killed = [r for r in runs if r.data.tags.get("arm") == "sgd-huge-lr" and r.data.tags.get("phase") == "tune"]
    assert len(killed) == 3 and all(r.info.status == "KILLED" and r.data.tags["pruned"] == "true" for r in killed)
    assert all("loss=nan" in r.data.tags["stop_reason"] or "inf" in r.data.tags["stop_reason"] for r in killed)
    parent = [r for r in runs if r.data.tags.get("phase") == "arm" and r.data.tags["arm"] == "sgd-huge-lr"][0]
    assert parent.data.tags["eval_skipped"] == "no completed trial"
    good = optuna.load_study(study_name="diverge/adam", storage=storage)
    assert sum(t.state == TrialState.COMPLETE for t in good.trials) == 3
    table = pd.read_csv(stores.results / "diverge" / "summary.csv").set_index("arm")
    assert table.loc["adam", "eval_seeds"] == 2 and table.loc["sgd-huge-lr", "eval_seeds"] == 0
    assert table.index[0] == "adam"  # arms without results rank last


def test_a_killed_run_is_resumed_without_losing_or_redoing_work(stores):
    """SIGKILL mid-study, rerun: orphaned trial failed + retried, exact budgets, no RUNNING runs."""
    path = stores.root / "resume.toml"
    path.write_text(textwrap.dedent("""
        name = "resume"
        model = "mlp"
        dataset = "digits"
        epochs = 30
        [params]
        hidden_sizes = "256-256"
        [tuning]
        n_trials = 3
        pruner = "none"
        [eval]
        seeds = 2
        [[arms]]
        optimizer = "adam"
        """))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "bench.cli", "run", str(path), "--quiet", *stores.flags()],
                            env=env, cwd=stores.root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(stores.storage))
    deadline = time.time() + 120
    killed_trial = None
    while time.time() < deadline and proc.poll() is None:
        try:
            trials = optuna.load_study(study_name="resume/adam", storage=storage).get_trials()
        except KeyError:
            trials = []
        done = [t for t in trials if t.state == TrialState.COMPLETE]
        running = [t for t in trials if t.state == TrialState.RUNNING and "mlflow_run_id" in t.user_attrs]
        if done and running:
            time.sleep(0.3)  # let it train a little
            killed_trial = running[0].number
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait(30)
    assert killed_trial is not None, "the study finished before it could be killed"

    assert stores.run("run", str(path), "--quiet") == 0
    study = optuna.load_study(study_name="resume/adam", storage=storage)
    states = [t.state for t in study.trials]
    assert states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED) == 3
    orphan = study.trials[killed_trial]
    assert orphan.state == TrialState.FAIL and orphan.user_attrs["fail_reason"].startswith("orphaned")
    retry = [t for t in study.trials if t.user_attrs.get("retry_of") == killed_trial]
    assert len(retry) == 1 and retry[0].params == orphan.params and retry[0].state == TrialState.COMPLETE
    client = MlflowClient(stores.tracking_uri)
    runs = all_runs(client, "resume")
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert client.get_run(orphan.user_attrs["mlflow_run_id"]).info.status == "FAILED"
    assert len([r for r in runs if r.data.tags.get("phase") == "eval" and r.info.status == "FINISHED"]) == 2
    assert len([r for r in runs if r.data.tags.get("phase") == "arm"]) == 1
    # the restart redrew no configuration: the finished trials are those of an uninterrupted study
    resumed = [t.params for t in study.trials if t.state != TrialState.FAIL]
    fresh = stores.root / "fresh"
    assert main(["run", str(path), "--quiet", "--storage", str(fresh / "o.journal"),
                 "--tracking-uri", f"sqlite:///{fresh}/m.db", "--results-dir", str(fresh / "r")]) == 0
    fresh_storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(fresh / "o.journal")))
    uninterrupted = optuna.load_study(study_name="resume/adam", storage=fresh_storage)
    assert resumed == [t.params for t in uninterrupted.trials] and len({str(p) for p in resumed}) == 3
