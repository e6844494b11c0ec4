"""Study design: factorial arm expansion and naming, conditional space entries, per-arm samplers,
sampler/pruner wiring recorded on the Optuna study, importance, and a quick factorial run."""

from __future__ import annotations

import csv
import math
import re

import optuna
import pytest

from bench.cli import main
from bench.hparams import choice, dist
from bench.optim import OPTIMIZERS
from bench.spec import SpecError, load, parse
from bench.tuning import samplers
from bench.tuning.storage import open_storage
from bench.tuning.study import StudyRunner, arms

# every optimizer name (built-in and installed plug-ins) that an unknown-name message lists
KNOWN = ", ".join(OPTIMIZERS.names())


def _factorial(**factorial) -> dict:
    return {"name": "f", "model": "mlp", "dataset": "digits", "factorial": factorial}


def test_factorial_expands_into_named_arms_in_factor_order():
    spec = parse(_factorial(optimizers=["sgd", "adam"], schedules=["constant", "cosine"],
                            regularizers=["none", "l2+dropout"], space={"momentum": {"low": 0.0, "high": 0.9}}))
    cells = arms(spec)
    assert [a.name for a in cells] == [
        "sgd+constant", "sgd+constant+l2+dropout", "sgd+cosine", "sgd+cosine+l2+dropout",
        "adam+constant", "adam+constant+l2+dropout", "adam+cosine", "adam+cosine+l2+dropout",
    ]
    by_name = {a.name: a for a in cells}
    assert by_name["adam+cosine+l2+dropout"].regularizers == ("l2", "dropout")
    assert by_name["adam+cosine+l2+dropout"].schedule == "cosine"
    assert by_name["sgd+constant"].regularizers == ()
    # conditional entry: momentum is tuned where the optimizer has it, nowhere else
    assert set(by_name["sgd+constant"].space) == {"lr", "momentum"}
    assert set(by_name["adam+constant"].space) == {"lr", "eps"}
    assert set(by_name["adam+cosine+l2+dropout"].space) == {"lr", "eps", "weight_decay", "dropout"}


def test_factorial_study_file_has_24_readable_arms():
    spec = load("studies/factorial.toml")
    names = [a.name for a in arms(spec)]
    assert len(names) == len(set(names)) == 24
    assert "adam+cosine+l2" in names and "bgd+step+dropout" in names
    quick = spec.quick_variant()
    assert quick.tuning.n_trials == 1 and quick.epochs == 2 and quick.eval.seeds == 2


def test_explicit_arms_and_factorial_cells_combine():
    spec = parse({**_factorial(optimizers=["adam"], regularizers=["l1"]), "arms": [{"optimizer": "sgd"}]})
    assert [a.name for a in arms(spec)] == ["sgd", "adam+l1"]


@pytest.mark.parametrize(("factorial", "message"), [
    ({"optimizers": ["adamx"]}, r"factorial\.optimizers: unknown 'adamx' \(known: " + re.escape(KNOWN) + r"\)"),
    ({"optimizers": ["adam"], "regularizers": ["l2+l3"]}, r"factorial\.regularizers.*unknown 'l3'"),
    ({"optimizers": ["adam"], "space": {"nesterovv": {"choices": [True]}}},
     r"factorial\.space\.nesterovv: not a hyper-parameter of any factorial cell"),
    ({"optimizers": ["adam"], "schedules": ["cosine", "cosine"]}, r"factorial\[adam\+cosine\]\.name: duplicate arm"),
])
def test_factorial_errors_name_the_field(factorial, message):
    with pytest.raises(SpecError, match=message):
        parse(_factorial(**factorial))


def test_a_study_needs_arms_or_a_factorial():
    with pytest.raises(SpecError, match=r"arms: required \(or a \[factorial\] table\)"):
        parse({"name": "x", "model": "mlp", "dataset": "digits"})


@pytest.mark.parametrize("name", ["tpe", "random", "qmc", "gp", "cmaes"])
def test_samplers_build_with_explicit_recorded_settings(name):
    sampler, settings = samplers.build(samplers.SAMPLERS, name, seed=7, n_startup_trials=4)
    assert isinstance(sampler, optuna.samplers.BaseSampler)
    assert settings["seed"] == 7
    if name in ("tpe", "gp", "cmaes"):
        assert settings["n_startup_trials"] == 4
    if name == "tpe":
        assert settings["multivariate"] is True and settings["constant_liar"] is False


def test_grid_points_from_step_and_choices_and_a_clear_error_otherwise():
    grid = samplers.grid_points({"lr": dist(0.1, 0.3, step=0.1), "batch_size": dist(16, 48, step=16),
                                 "activation": choice("relu", "tanh")},
                                {"lr": "float", "batch_size": "int", "activation": "str"})
    assert grid == {"lr": [0.1, 0.2, 0.3], "batch_size": [16, 32, 48], "activation": ["relu", "tanh"]}
    assert samplers.grid_size(grid) == 18
    with pytest.raises(ValueError, match=r"lr: the grid sampler needs a finite space, but \[0.001, 1\] log is "
                                         r"continuous; give a step"):
        samplers.grid_points({"lr": dist(1e-3, 1.0, log=True)}, {"lr": "float"})
    study = {"name": "g", "model": "mlp", "dataset": "digits", "tuning": {"n_trials": 2},
             "arms": [{"optimizer": "adam", "sampler": "grid"}]}
    with pytest.raises(SpecError, match=r"arms\[0\]\.space\.lr: the grid sampler needs a finite space"):
        parse(study)
    study["arms"][0]["space"] = {"lr": {"choices": [0.01]}}
    with pytest.raises(SpecError, match=r"arms\[0\]: the grid sampler has 1 points but tuning.n_trials = 2"):
        parse(study)


@pytest.mark.parametrize(("name", "cls", "expected"), [
    ("none", optuna.pruners.NopPruner, {}),
    ("median", optuna.pruners.MedianPruner, {"n_startup_trials": 2, "n_warmup_steps": 1}),
    ("percentile", optuna.pruners.PercentilePruner, {"percentile": 40.0, "n_startup_trials": 2}),
    ("successive_halving", optuna.pruners.SuccessiveHalvingPruner, {"min_resource": 2, "reduction_factor": 4}),
    ("hyperband", optuna.pruners.HyperbandPruner, {"min_resource": 2, "max_resource": 12, "reduction_factor": 4}),
])
def test_pruners_build_with_explicit_recorded_settings(name, cls, expected):
    pruner, settings = samplers.build(samplers.PRUNERS, name, startup_trials=2, warmup_epochs=1, percentile=40.0,
                                      reduction_factor=4, min_epochs=2, max_epochs=12)
    assert isinstance(pruner, cls)
    assert expected.items() <= settings.items()


def test_sampler_pruner_settings_and_importance_are_study_user_attrs(tmp_path):
    """A grid arm visits every grid point once under ask/tell (Optuna's GridSampler would call
    study.stop() on exhaustion, which only works inside study.optimize)."""
    spec = parse({
        "name": "wiring", "model": "mlp", "dataset": "digits", "epochs": 2,
        "params": {"hidden_sizes": "16"},
        "tuning": {"n_trials": 3, "pruner": "hyperband", "pruner_reduction_factor": 2},
        "eval": {"seeds": 2},
        "arms": [{"name": "grid", "optimizer": "sgd", "sampler": "grid",
                  "space": {"lr": {"choices": [0.3, 0.03, 0.003]}}},
                 {"name": "qmc", "optimizer": "sgd", "sampler": "qmc", "pruner": "percentile",
                  "space": {"lr": {"low": 1e-3, "high": 1.0, "log": True}}}],
    })
    StudyRunner(spec, tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
                storage_url=str(tmp_path / "optuna.journal")).run()
    storage = open_storage(str(tmp_path / "optuna.journal"))
    grid = optuna.load_study(study_name="wiring/grid", storage=storage)
    attrs = grid.user_attrs
    assert attrs["sampler"] == "grid" and attrs["sampler_settings"]["search_space"] == {"lr": [0.3, 0.03, 0.003]}
    assert attrs["pruner"] == "hyperband"
    assert attrs["pruner_settings"] == {"min_resource": 1, "max_resource": 2, "reduction_factor": 2,
                                        "bootstrap_count": 0}
    assert sorted(t.params["lr"] for t in grid.trials) == [0.003, 0.03, 0.3]
    assert attrs["importance_evaluator"]["name"] == "fanova"
    complete = [t for t in grid.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(complete) >= 2:
        assert attrs["param_importances"] == {"lr": pytest.approx(1.0)}
    else:
        assert attrs["param_importances"] == {} and "completed trial" in attrs["importance_note"]
    qmc = optuna.load_study(study_name="wiring/qmc", storage=storage).user_attrs
    assert qmc["sampler"] == "qmc" and qmc["sampler_settings"]["qmc_type"] == "sobol"
    assert qmc["pruner"] == "percentile" and qmc["pruner_settings"]["percentile"] == 25.0


@pytest.mark.slow
def test_quick_factorial_study_end_to_end(tmp_path):
    rc = main(["run", "studies/factorial.toml", "--quick", "--quiet", "--storage", str(tmp_path / "optuna.journal"),
               "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", "--results-dir", str(tmp_path / "results")])
    assert rc == 0
    out = tmp_path / "results" / "factorial-quick"
    with open(out / "summary.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 24
    assert {r["arm"] for r in rows} == {f"{o}+{s}+{r}" for o in ("sgd", "bgd", "adam", "adagrad")
                                        for s in ("constant", "cosine", "step") for r in ("l2", "dropout")}
    for r in rows:
        assert int(r["trials_complete"]) + int(r["trials_pruned"]) == 1
        assert r["regularizers"] == r["arm"].rsplit("+", 1)[1] and r["schedule"] == r["arm"].split("+")[1]
        assert int(r["eval_seeds"]) + int(r["diverged_evals"]) == 2
    finite = [float(r["test_mean"]) for r in rows if r["test_mean"] and math.isfinite(float(r["test_mean"]))]
    assert len(finite) >= 20 and all(0.0 <= v <= 1.0 for v in finite)
    report = (out / "report.md").read_text()
    assert "## Regularizers" in report and "| l2 | **loss** |" in report and "| dropout | **model** |" in report
    study = optuna.load_study(study_name="factorial-quick/sgd+cosine+l2",
                              storage=open_storage(str(tmp_path / "optuna.journal")))
    assert study.user_attrs["regularizers"] == "l2" and set(study.user_attrs["space"]) == {
        "lr", "momentum", "weight_decay"}
    assert study.user_attrs["param_importances"] == {}  # one trial: nothing to attribute
    assert study.user_attrs["importance_note"].startswith(("1 completed trial", "0 completed trial"))
