"""The optimizer as a tuned factor inside one arm's search space: validation of `optimizer = [...]`
arms, conditional (define-by-run) sampling of each choice's `<optimizer>.<name>` parameters, the
RunConfig a trial gets, and a quick study whose MLflow runs carry the optimizer each trial used."""

from __future__ import annotations

import json

import optuna
import pandas as pd
import pytest
from mlflow import MlflowClient

from bench.optim import OPTIMIZERS
from bench.spec import SpecError, load, parse
from bench.tuning import samplers
from bench.tuning.space import sample
from bench.tuning.storage import open_storage
from bench.tuning.study import arms
from tests.conftest import STUDIES

# every optimizer name (built-in and installed plug-ins) that an unknown-name message lists
KNOWN = ", ".join(OPTIMIZERS.names())

STUDY = STUDIES / "optimizer-choice.toml"


def _study(*arms_: dict, **top) -> dict:
    return {"name": "c", "model": "mlp", "dataset": "digits", "arms": list(arms_), **top}


def test_a_list_of_optimizers_is_one_arm_with_a_conditional_default_space():
    spec = parse(_study({"optimizer": ["sgd", "adam"]}, {"optimizer": "adam"}, regularizers=["l2"]))
    choice, adam = arms(spec)
    assert (choice.name, choice.optimizer, choice.choices) == ("sgd|adam", "sgd|adam", ("sgd", "adam"))
    assert choice.space["optimizer"].choices == ("sgd", "adam")
    # each optimizer's default space under its prefix; the regularizer's stays shared
    assert list(choice.space) == ["optimizer", "sgd.lr", "adam.lr", "adam.eps", "weight_decay"]
    assert choice.tags()["optimizer"] == "sgd|adam" and choice.tags()["optimizer_choice"] == "sgd|adam"
    assert (adam.optimizers, "optimizer_choice" in adam.tags()) == (("adam",), False)


def test_prefixed_params_and_space_also_read_as_toml_tables(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('name = "c"\nmodel = "mlp"\ndataset = "digits"\n[params]\nbatch_size = 32\n'
                    '[[arms]]\noptimizer = ["sgd", "bgd", "adam"]\n'
                    '[arms.params]\nsgd.nesterov = true\n'
                    '[arms.space]\nsgd.lr = { low = 0.01, high = 0.5, log = true }\n'
                    'sgd.momentum = { low = 0.0, high = 0.9 }\n"adam.lr" = { low = 1e-4, high = 1e-2, log = true }\n')
    arm = arms(load(path))[0]
    assert list(arm.space) == ["optimizer", "sgd.lr", "sgd.momentum", "adam.lr"]  # bgd: tuned only by the choice
    assert arm.fixed == {"batch_size": 32, "sgd.nesterov": True}


@pytest.mark.parametrize(("arm", "message"), [
    ({"optimizer": ["sgd", "adamx"]}, f"arms[0].optimizer: unknown 'adamx' (known: {KNOWN})"),
    ({"optimizer": ["sgd"]}, "arms[0].optimizer: a choice needs at least 2 optimizers (got ['sgd'])"),
    ({"optimizer": ["sgd", "adam", "sgd"]}, "arms[0].optimizer: listed twice: ['sgd', 'adam', 'sgd']"),
    ({"optimizer": 3}, "arms[0].optimizer: expected an optimizer name or a list of them, got 3"),
    ({"optimizer": ["sgd", "adam"], "space": {"momentum": {"low": 0.0, "high": 0.9}}},
     "arms[0].space.momentum: not a hyper-parameter of adam; name it per optimizer, e.g. 'sgd.momentum'"),
    ({"optimizer": ["sgd", "adam"], "params": {"bgd.lr": 0.1}},
     "arms[0].params.bgd.lr: 'bgd' is not one of the arm's optimizers (sgd, adam)"),
    ({"optimizer": ["sgd", "adam"], "space": {"adam.momentum": {"low": 0.0, "high": 0.9}}},
     "arms[0].space.adam.momentum: not a hyper-parameter of mlp/adam/constant (known: activation,"),
    ({"optimizer": ["sgd", "adam"], "space": {"lrr": {"low": 0.1, "high": 0.9}}},
     "arms[0].space.lrr: not a hyper-parameter of mlp/sgd|adam/constant"),
    ({"optimizer": ["sgd", "adam"], "params": {"sgd.momentum": 1.5}},
     "arms[0].params.sgd.momentum: 1.5: must be in [0, 1]"),
    ({"optimizer": ["sgd", "adam"], "space": {"optimizer": {"choices": ["sgd"]}}},
     "arms[0].space.optimizer: to tune the optimizer, list the choices as the arm's optimizer = [...]"),
    ({"optimizer": "adam", "space": {"optimizer": {"choices": ["sgd", "adam"]}}},
     "arms[0].space.optimizer: to tune the optimizer, list the choices"),
    ({"optimizer": "sgd", "space": {"sgd.lr": {"low": 0.1, "high": 0.9}}},
     "arms[0].space.sgd.lr: not a hyper-parameter of mlp/sgd/constant"),
    ({"optimizer": ["sgd", "adam"], "sampler": "grid", "space": {"sgd.lr": {"choices": [0.1]}}},
     "arms[0]: the grid sampler needs a fixed search space, but this arm's parameters depend on the chosen "
     "optimizer: use tpe or random"),
])
def test_bad_choice_arms_get_one_line_errors_naming_the_field(arm, message):
    with pytest.raises(SpecError) as err:
        parse(_study(arm))
    text = str(err.value).removeprefix("<study>: ")
    assert "\n" not in text and text.startswith(message), text


def test_study_params_apply_to_the_choices_that_declare_them():
    spec = parse(_study({"optimizer": ["sgd", "bgd", "adam"]}, params={"batch_size": 32, "momentum": 0.5}))
    arm = arms(spec)[0]
    configs = {o: arm.config(spec, {"optimizer": o, f"{o}.lr": 0.1}, seed=0, evaluate_test=False)
               for o in arm.choices}
    assert configs["sgd"].params["momentum"] == 0.5 and configs["sgd"].params["batch_size"] == 32
    assert configs["bgd"].params["momentum"] == 0.5 and "batch_size" not in configs["bgd"].params
    assert "momentum" not in configs["adam"].params and configs["adam"].params["batch_size"] == 32


def _conditional_trials(n: int) -> tuple:
    spec = parse(_study({"optimizer": ["sgd", "adam", "adagrad"], "params": {"sgd.nesterov": True},
                         "space": {"sgd.lr": {"low": 1e-3, "high": 1.0, "log": True},
                                   "sgd.momentum": {"low": 0.0, "high": 0.99},
                                   "adam.lr": {"low": 1e-5, "high": 1e-1, "log": True},
                                   "adam.beta1": {"low": 0.5, "high": 0.99},
                                   "adagrad.lr": {"low": 1e-3, "high": 1.0, "log": True},
                                   "dropout": {"low": 0.0, "high": 0.5}}}))
    arm = arms(spec)[0]
    sampler, settings = samplers.build(samplers.SAMPLERS, "tpe", seed=0, n_startup_trials=6, conditional=True)
    assert settings["group"] is True  # TPE models each branch's parameters jointly
    study = optuna.create_study(direction="maximize", sampler=sampler)
    trials = []
    for _ in range(n):
        trial = study.ask()
        sampled = sample(trial, arm.space, arm.params)
        study.tell(trial, -abs(sampled.get(f"{sampled['optimizer']}.lr", 0.0) - 0.01))
        trials.append((study.trials[-1], sampled, arm.config(spec, sampled, seed=0, evaluate_test=False)))
    return spec, arm, study, trials


def test_each_trial_has_exactly_its_chosen_optimizers_parameters_and_config():
    _, arm, _, trials = _conditional_trials(24)
    own = {"sgd": {"sgd.lr", "sgd.momentum"}, "adam": {"adam.lr", "adam.beta1"}, "adagrad": {"adagrad.lr"}}
    assert {t.params["optimizer"] for t, _, _ in trials} == set(own)  # every branch visited
    for frozen, sampled, config in trials:
        chosen = frozen.params["optimizer"]
        assert set(frozen.params) == set(sampled) == {"optimizer", "dropout", *own[chosen]}
        assert set(frozen.distributions) == set(frozen.params)
        # the run: the chosen optimizer, its own values un-prefixed, nothing of the other branches
        assert config.optimizer == chosen
        assert not [k for k in config.params if "." in k or k == "optimizer"]
        assert config.params["lr"] == frozen.params[f"{chosen}.lr"]
        assert config.params["dropout"] == frozen.params["dropout"]
        assert ("momentum" in config.params) == (chosen == "sgd")
        if chosen == "sgd":
            assert config.params["momentum"] == frozen.params["sgd.momentum"] and config.params["nesterov"] is True
        if chosen == "adam":
            assert config.params["beta1"] == frozen.params["adam.beta1"]


def test_a_requeued_trial_redraws_the_same_branch():
    """A trial whose worker died is enqueued again with its params (StudyRunner.reap)."""
    _, arm, study, trials = _conditional_trials(3)
    old = trials[0][0].params
    study.enqueue_trial(old)
    trial = study.ask()
    assert sample(trial, arm.space, arm.params) == old


@pytest.mark.slow
def test_quick_study_runs_carry_the_optimizer_each_trial_chose(stores):
    quick = load(STUDY).quick_variant()
    assert stores.run("run", str(STUDY), "--quick", "--quiet") == 0
    storage = open_storage(stores.storage)
    study = optuna.load_study(study_name=f"{quick.name}/choice", storage=storage)
    assert study.user_attrs["sampler_settings"]["group"] is True
    assert study.user_attrs["optimizer"] == "sgd|adam|adagrad"
    client = MlflowClient(stores.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name(quick.name).experiment_id], max_results=1000)
    choice = [r for r in runs if r.data.tags["arm"] == "choice"]
    parent = next(r for r in choice if r.data.tags["phase"] == "arm")
    assert parent.data.tags["optimizer"] == parent.data.tags["optimizer_choice"] == "sgd|adam|adagrad"
    by_id = {r.info.run_id: r for r in choice}
    trials = [t for t in study.trials if "mlflow_run_id" in t.user_attrs]
    assert len(trials) == quick.tuning.n_trials
    for trial in trials:
        run = by_id[trial.user_attrs["mlflow_run_id"]]
        chosen = trial.params["optimizer"]
        assert run.data.tags["optimizer"] == chosen and run.data.tags["optimizer_choice"] == "sgd|adam|adagrad"
        assert float(run.data.params["lr"]) == pytest.approx(trial.params[f"{chosen}.lr"])
        assert ("momentum" in run.data.params) == (chosen == "sgd")
    best = study.best_trial
    evals = [r for r in choice if r.data.tags["phase"] == "eval"]
    assert len(evals) == quick.eval.seeds
    for run in evals:
        assert run.data.tags["best_trial"] == str(best.number)
        assert run.data.tags["optimizer"] == best.params["optimizer"]
        assert float(run.data.params["lr"]) == pytest.approx(best.params[f"{best.params['optimizer']}.lr"])
    assert {r.data.tags["optimizer"] for r in runs if r.data.tags["arm"] == "adam"} == {"adam"}
    table = pd.read_csv(stores.results / quick.name / "summary.csv").set_index("arm")
    assert json.loads(table.loc["choice", "best_params"]) == best.params
    assert table.loc["choice", "optimizer"] == "sgd|adam|adagrad"
    assert (table["trials_complete"] + table["trials_pruned"] == quick.tuning.n_trials).all()
    assert (table["eval_seeds"] + table["diverged_evals"] == quick.eval.seeds).all()
