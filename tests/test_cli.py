"""`bench train` and `bench list`: the contract other tooling relies on."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from bench.cli import main, parse_set
from bench.data import DATASETS
from bench.models import MODELS
from bench.optim import OPTIMIZERS, SCHEDULES


def test_train_logs_one_finished_run_and_prints_its_final_metrics(stores, capsys):
    code = main(["train", "--model", "mlp", "--dataset", "digits", "--optimizer", "adam", "--epochs", "2",
                 "--set", "lr=0.003", "--set", "hidden_sizes='32'", "--set", "activation=tanh",
                 "--tracking-uri", stores.tracking_uri])
    assert code == 0
    out = capsys.readouterr().out
    assert "(completed; maximize val/acc)" in out.splitlines()[0]
    printed = {line.split()[0]: float(line.split()[1]) for line in out.splitlines()[1:]}
    client = MlflowClient(stores.tracking_uri)
    run_id = out.split()[1]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["lr"] == "0.003" and run.data.params["activation"] == "tanh"
    assert run.data.params["hidden_sizes"] == "32"
    assert printed["test/acc"] == pytest.approx(run.data.metrics["test/acc"], rel=1e-5)
    assert len(client.get_metric_history(run_id, "val/loss")) == 2


def test_train_rejects_unknown_names_with_exit_code_2(stores, capsys):
    assert main(["train", "--model", "mlp", "--dataset", "digits", "--optimizer", "adamx",
                 "--tracking-uri", stores.tracking_uri]) == 2
    assert f"unknown 'adamx' (known: {', '.join(OPTIMIZERS.names())})" in capsys.readouterr().err


def test_set_values_use_toml_syntax_with_bare_words_as_strings():
    assert parse_set(["lr=0.1", "nesterov=true", "batch_size=32", "activation=tanh"]) == {
        "lr": 0.1, "nesterov": True, "batch_size": 32, "activation": "tanh"}


def test_list_names_every_registered_component(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for registry in (MODELS, DATASETS, OPTIMIZERS, SCHEDULES):
        for name in registry.names():
            assert f"  {name} " in out, name
    assert "search [0.001, 1] log" in out  # sgd's default lr space
