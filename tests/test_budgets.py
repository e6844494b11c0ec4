"""Budgets as values (epochs | steps | samples | seconds), evaluation cadence, schedules that follow
the budget, fixed targets, the refusal of impossible budgets, and the report figures that compare
optimizers across budgets."""

from __future__ import annotations

import math
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from bench import spec as spec_mod
from bench.cli import main
from bench.data import DATASETS
from bench.models.base import SupervisedModule
from bench.registry import DatasetInfo
from bench.spec import RunConfig
from bench.spec.budget import Budget
from bench.train import fit
from tests.conftest import STUDIES

N_TRAIN = 1078  # digits training split


def config(**kw) -> RunConfig:
    base = dict(model="mlp", dataset="digits", optimizer="sgd",
                params={"lr": 0.1, "hidden_sizes": "32", "batch_size": 100}, accelerator="cpu")
    base.update(kw)
    return RunConfig.build(**base)


def bgd(**kw) -> RunConfig:
    return config(optimizer="bgd", params={"lr": 0.5, "hidden_sizes": "32"}, **kw)


# --- accounting through fit ----------------------------------------------------------------------
def test_a_steps_budget_counts_optimizer_steps_for_sgd_and_bgd_alike():
    points = []
    sgd = fit(config(steps=25, eval_every=10), reporter=lambda k, m: points.append(k))
    # 11 batches per epoch (10 x 100 + 78): step 25 is the 3rd batch of epoch 3
    assert sgd.steps == 25 and sgd.samples == 2 * N_TRAIN + 3 * 100
    assert [h["steps"] for h in sgd.history] == [10, 20, 25] and points == [1, 2, 3]
    assert sgd.epochs == pytest.approx(2 + 3 / 11) and sgd.history[0]["epoch"] == pytest.approx(10 / 11)
    full = fit(bgd(steps=5, eval_every=2))  # one full-batch step per epoch: 5 steps are 5 epochs
    assert full.steps == 5 and full.epochs == 5 and full.samples == 5 * N_TRAIN
    assert [h["steps"] for h in full.history] == [2, 4, 5]
    assert [h["samples"] for h in full.history] == [2 * N_TRAIN, 4 * N_TRAIN, 5 * N_TRAIN]
    assert {"epoch", "steps", "samples", "train_time_s", "wall_time_s", "lr", "val/acc"} <= set(full.history[-1])
    assert full.extra["budget"] == "steps=5" and full.train_time_s == full.history[-1]["train_time_s"] > 0


def test_a_samples_budget_stops_at_the_first_step_boundary_past_it():
    points = []
    sgd = fit(config(samples=2500, eval_every=1000), reporter=lambda k, m: points.append(k))
    # evaluated at the first step boundary at or after 1000 and 2000 samples, stopped past 2500
    assert [(h["steps"], h["samples"]) for h in sgd.history] == [(10, 1000), (21, 2078), (26, 2556)]
    assert sgd.samples == 2556 and points == [1, 2, 3]
    full = fit(bgd(samples=3000, eval_every=1000))  # 1078 per step; the points are never inside a step
    assert [(h["steps"], h["samples"]) for h in full.history] == [(1, 1078), (2, 2156), (3, 3234)]


def test_a_seconds_budget_counts_training_time_only(monkeypatch):
    """Evaluation is made slow (0.15 s a split): it must neither count nor cut training short."""
    original = SupervisedModule.evaluate

    def slow(self, split):
        time.sleep(0.15)
        return original(self, split)

    monkeypatch.setattr(SupervisedModule, "evaluate", slow)
    budget = 0.6
    result = fit(config(seconds=budget, eval_every=0.2))
    assert result.status == "completed"
    step = result.train_time_s / result.steps  # mean step time (a step here takes milliseconds)
    assert budget <= result.train_time_s <= budget + max(10 * step, 0.1)
    times = [h["train_time_s"] for h in result.history]
    assert times == sorted(times) and len(times) == 3  # points after 0.2 and 0.4 s, and at the end
    # the ~0.15 s of every evaluation is in the wall time, not in the training time
    assert result.history[-1]["wall_time_s"] - result.train_time_s >= 0.15 * len(times)


def test_an_epochs_budget_with_a_cadence_evaluates_every_few_epochs_and_at_the_end():
    points = []
    result = fit(config(epochs=5, eval_every=2), reporter=lambda k, m: points.append(k))
    assert [h["epoch"] for h in result.history] == [2, 4, 5] and points == [1, 2, 3]
    assert result.epochs == 5 and result.steps == 5 * 11


def test_the_default_is_one_evaluation_per_epoch():
    result = fit(config(epochs=3))
    assert config(epochs=3).budget == Budget("epochs", 3, 1)
    assert [h["epoch"] for h in result.history] == [1, 2, 3] and "epoch_time_s" in result.history[0]
    assert RunConfig.build(model="mlp", dataset="digits", optimizer="sgd").budget == Budget("epochs", 10, 1)


def test_a_reporter_prunes_within_an_epoch():
    result = fit(config(steps=100, eval_every=4), reporter=lambda k, m: "pruned: test" if k == 2 else None)
    assert result.status == "pruned" and result.steps == 8 and len(result.history) == 2
    assert result.epochs == pytest.approx(8 / 11)


def test_the_schedule_follows_a_steps_budget():
    """linear decay to 0 over the budget: half the lr after half the steps, for SGD and BGD alike."""
    sgd = fit(config(steps=20, eval_every=10, schedule="linear"))
    assert [h["lr"] for h in sgd.history] == pytest.approx([0.05, 0.0])
    full = fit(bgd(steps=4, eval_every=2, schedule="linear"))
    assert [h["lr"] for h in full.history] == pytest.approx([0.25, 0.0])
    by_samples = fit(config(samples=1000, eval_every=500, schedule="linear"))
    assert [h["lr"] for h in by_samples.history] == pytest.approx([0.05, 0.0])


def test_budget_values_and_points():
    assert Budget.of({"steps": 25}, 10).points == 3
    assert Budget.of({"steps": 200}).eval_every == 10  # 20 points by default
    assert Budget.of({"seconds": 2.0}).eval_every == pytest.approx(0.1)
    assert not Budget.of({"seconds": 2.0}).fixed_reports and Budget.of({}).fixed_reports
    assert Budget.of({"samples": 100}, 10).params() == {"budget": "samples", "samples": 100, "eval_every": 10}
    with pytest.raises(ValueError, match="^steps: one budget per level, but epochs = 3 is set too$"):
        Budget.of({"epochs": 3, "steps": 5})
    with pytest.raises(ValueError, match="^eval_every: an epochs budget evaluates every whole number"):
        Budget.of({"epochs": 3}, 0.5)


# --- fixed targets -------------------------------------------------------------------------------
def test_workload_targets_are_declared_with_the_dataset():
    assert DATASETS.get("digits").target("mlp", "val/acc") == 0.97
    assert DATASETS.get("digits").target("mlp", "val/loss") is None  # another objective: none
    assert DATASETS.get("sequences").target("transformer", "val/seq_acc") == 0.89
    anymodel = DatasetInfo(name="x", factory="m:f", task="multiclass", targets={"*": {"val/acc": 0.5},
                                                                               "mlp": {"val/acc": 0.9}})
    assert anymodel.target("mlp", "val/acc") == 0.9 and anymodel.target("cnn", "val/acc") == 0.5


def _result(**study):
    from bench.report.collect import ArmResult, StudyResult
    from bench.spec import arms

    spec = spec_mod.parse({"name": "t", "model": "mlp", "dataset": "digits", "arms": [{"optimizer": "sgd"},
                                                                                       {"optimizer": "adam"}], **study})
    results = [ArmResult(a, curves={spec.objective_metric(): np.array([[0.5, v]])}) for a, v in
               zip(arms(spec), (0.8, 0.9))]
    direction = spec_mod.direction_of(spec.objective_metric())
    return StudyResult(spec, spec.objective_metric(), "test/acc", direction, results, {})


def test_the_target_comes_from_the_study_file_then_the_workload_then_the_arms():
    from bench.report.tables import task_target

    workload = task_target(r := _result(), r.arms)
    assert (workload.value, workload.source) == (0.97, "workload") and "results/beyond-the-four" in workload.how
    study = task_target(r := _result(target=0.95), r.arms)
    assert (study.value, study.source) == (0.95, "study file")
    derived = task_target(r := _result(objective="val/loss"), r.arms)  # none declared for val/loss
    assert derived.source == "derived" and derived.value == 0.9 and derived.how.startswith("val/loss ≤ 0.9: derived")


# --- bad budgets: one line, exit 2, nothing written ----------------------------------------------
BASE = """
name = "budgets"
model = "linear"
dataset = "digits"
{top}
[tuning]
n_trials = 1
[eval]
seeds = 2
"""


@pytest.mark.parametrize(("extra", "expected"), [
    ("epochs = 2\nsteps = 10|[[arms]]\noptimizer = 'sgd'", "steps: one budget per level, but epochs = 2 is set too"),
    ("|[[arms]]\noptimizer = 'sgd'\nsamples = 100\nseconds = 1.0",
     "arms[0].seconds: one budget per level, but samples = 100 is set too"),
    ("|[[arms]]\noptimizer = 'sgd'\nsteps = 5\neval_every = 10",
     "arms[0].steps: 5 is less than one evaluation interval (eval_every = 10)"),
    ("seconds = 1.0\neval_every = 2.0|[[arms]]\noptimizer = 'sgd'",
     "seconds: 1 is less than one evaluation interval (eval_every = 2)"),
    ("epochs = 3\neval_every = 1.5|[[arms]]\noptimizer = 'sgd'",
     "eval_every: an epochs budget evaluates every whole number of epochs (got 1.5); use a steps budget to "
     "evaluate within epochs"),
    ("|[[arms]]\noptimizer = 'sgd'\nseconds = 1.0\npruner = 'hyperband'",
     "arms[0].pruner: hyperband needs every trial to report at the same evaluation points, but arm 'sgd' has a "
     "budget of 1 training seconds, evaluated every 0.05 training seconds, whose points depend on the machine's "
     "speed: use median, percentile or none"),
])
def test_bad_budgets_are_refused_in_one_line(stores, capsys, extra, expected):
    path = stores.root / "budgets.toml"
    top, arms = extra.split("|")
    path.write_text(textwrap.dedent(BASE).format(top=top) + arms + "\n")
    assert stores.run("run", str(path)) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"{path}: {expected}"
    assert not (stores.root / "mlflow.db").exists() and not Path(stores.storage).exists()


def test_a_study_pruner_that_needs_fixed_reports_is_refused_for_a_seconds_arm(tmp_path):
    path = tmp_path / "x.toml"
    path.write_text(textwrap.dedent(BASE).format(top="").replace("n_trials = 1",
                                                                  "n_trials = 1\npruner = 'successive_halving'")
                    + "[[arms]]\noptimizer = 'sgd'\n[[arms]]\nname = 'fast'\noptimizer = 'sgd'\nseconds = 1.0\n")
    with pytest.raises(spec_mod.SpecError, match=r"tuning.pruner: successive_halving needs every trial"):
        spec_mod.load(path)


def test_bench_train_refuses_two_budgets(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--model", "mlp", "--dataset", "digits", "--optimizer", "sgd", "--epochs", "2",
              "--steps", "3"])
    assert exit_.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_arm_budgets_override_the_study_and_quick_caps_each_kind(tmp_path):
    path = tmp_path / "x.toml"
    path.write_text(textwrap.dedent(BASE).format(top="epochs = 4") + "[quick]\nsteps = 20\nseconds = 0.5\n"
                    "[[arms]]\noptimizer = 'sgd'\n[[arms]]\nname = 's'\noptimizer = 'sgd'\nsteps = 100\n"
                    "eval_every = 10\n[[arms]]\nname = 't'\noptimizer = 'sgd'\nseconds = 2.0\n")
    spec = spec_mod.load(path)
    by_name = {a.name: a.budget for a in spec_mod.arms(spec)}
    assert by_name == {"sgd": Budget("epochs", 4, 1), "s": Budget("steps", 100, 10), "t": Budget("seconds", 2, 0.1)}
    quick = {a.name: a.budget for a in spec_mod.arms(spec.quick_variant())}
    assert quick == {"sgd": Budget("epochs", 3, 1), "s": Budget("steps", 20, 10), "t": Budget("seconds", 0.5, 0.025)}
    config = spec_mod.arms(spec)[1].config(spec, {"lr": 0.1}, seed=0, evaluate_test=False)
    assert (config.steps, config.epochs, config.eval_every) == (100, None, 10)


# --- report figures from a real study ------------------------------------------------------------
@pytest.mark.slow
def test_sensitivity_and_heatmap_data_from_a_real_study(quick_study):
    from bench.report import figures
    from bench.report.collect import collect

    spec = spec_mod.load(STUDIES / "quickstart.toml").quick_variant()
    result = collect(spec, tracking_uri=quick_study.tracking_uri, storage_url=quick_study.storage)
    data = figures.sensitivity_data(result)
    assert set(data) == {"sgd", "bgd", "adam", "adagrad"}  # all tune lr
    for arm in result.arms:
        points = data[arm.arm.name]
        assert len(points) == spec.tuning.n_trials  # every trial: completed, pruned, diverged or failed
        assert [p.number for p in points] == list(range(spec.tuning.n_trials))
        for p in points:
            trial = arm.study.trials[p.number]
            assert p.params["lr"] == trial.params["lr"]
            if p.state == "complete":
                assert p.value == trial.value
    grids = {a.arm.name: figures.heatmap_data(a, result.direction) for a in result.arms}
    assert grids["sgd"] is None and grids["bgd"] is None  # one tuned parameter
    adam = grids["adam"]
    assert {adam.x, adam.y} == {"lr", "eps"} and adam.values.shape == (8, 8) and adam.log == (True, True)
    assert len(adam.points) == spec.tuning.n_trials
    complete = [p for p in adam.points if p.state == "complete"]
    assert np.nanmax(adam.values) == max(p.value for p in complete)
    assert np.count_nonzero(~np.isnan(adam.values)) <= len(complete)
    # learning curves: every axis has one value per evaluation point (3 epochs at --quick)
    for arm in result.arms:
        for key, _label, _log in figures.CURVE_AXES:
            assert figures.curve_x(arm, key, 3).shape == (3,)
        assert figures.curve_x(arm, "epoch", 3).tolist() == [1.0, 2.0, 3.0]
    md = (quick_study.results / "quickstart-quick" / "report.md").read_text()
    assert "## Learning-rate sensitivity" in md and "![adam heatmap](figures/heatmap-adam.png)" in md
    assert (quick_study.results / "quickstart-quick" / "figures" / "lr_sensitivity.png").stat().st_size > 5000


@pytest.mark.slow
def test_bgd_vs_sgd_quick_accounts_every_budget(stores):
    path = STUDIES / "bgd-vs-sgd.toml"
    quick = spec_mod.load(path).quick_variant()
    assert stores.run("run", str(path), "--quick", "--quiet") == 0
    client = MlflowClient(stores.tracking_uri)
    exp = client.get_experiment_by_name(quick.name)
    runs = [r for r in client.search_runs([exp.experiment_id], max_results=5000)
            if r.data.tags.get("phase") == "eval" and r.info.status == "FINISHED"]
    by_kind: dict[str, list] = {}
    for run in runs:
        by_kind.setdefault(run.data.params["budget"], []).append(run)
    assert set(by_kind) == {"epochs", "steps", "seconds"}
    assert {int(r.data.tags["steps"]) for r in by_kind["steps"]} == {quick.quick.steps}  # sgd, bgd, lbfgs alike
    assert {r.data.tags["epochs_run"] for r in by_kind["epochs"]} == {"3"}  # whole epochs stay integers
    sgd_steps = {r.data.tags["epochs_run"] for r in by_kind["steps"] if r.data.tags["arm"] == "sgd-steps"}
    assert sgd_steps == {str(round(quick.quick.steps / math.ceil(3600 / 64), 4))}  # 10 of 57 mini-batches
    for run in by_kind["seconds"]:
        train, steps = float(run.data.tags["train_time_s"]), int(run.data.tags["steps"])
        assert quick.quick.seconds <= train <= quick.quick.seconds + max(5 * train / steps, 0.1), run.data.tags
        assert run.data.params["seconds"] == str(quick.quick.seconds)
    md = (stores.results / quick.name / "report.md").read_text()
    assert "## Budgets side by side" in md and "| optimizer | epochs = 3 | steps = 10 | seconds = 0.3 |" in md
    assert "workload: val/acc ≥ 0.56" in md
    assert math.isfinite(float(by_kind["steps"][0].data.metrics["train_time_s"]))



def test_the_sensitivity_figure_draws_arms_mixing_completed_pruned_and_failed_trials(tmp_path):
    # Regression: an arm with completed *and* pruned trials (the common case at full budget) crashed
    # the report ("truth value of an array ... is ambiguous"); more than 10 arms repeated colours.
    from types import SimpleNamespace

    import optuna

    from bench.report import figures

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    arms = []
    for i in range(12):
        study = optuna.create_study(direction="maximize")
        for n, state in enumerate(["complete", "pruned", "complete", "failed", "pruned"]):
            trial = study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1.0, log=True)})
            if state == "complete":
                study.tell(trial, 0.5 + 0.01 * n)
            elif state == "pruned":
                trial.report(0.3, step=1)
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            else:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
        arms.append(SimpleNamespace(arm=SimpleNamespace(name=f"arm{i}"), study=study))
    result = SimpleNamespace(arms=arms, objective="val/acc", spec=SimpleNamespace(name="mixed"))
    data = figures.sensitivity_data(result)
    assert [len(data[f"arm{i}"]) for i in range(12)] == [5] * 12
    assert [p.state for p in data["arm0"]] == ["complete", "pruned", "complete", "failed", "pruned"]
    assert [p.value for p in data["arm0"]] == [0.5, 0.3, 0.52, None, 0.3]
    path = figures.lr_sensitivity(result, tmp_path / "lr.png")
    assert path is not None and path.stat().st_size > 5000
