"""Study-file validation: one-line errors naming the field, exit code 2, nothing written."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bench import spec as spec_mod
from bench.optim import OPTIMIZERS

# every optimizer name (built-in and installed plug-ins) that an unknown-name message lists
KNOWN = ", ".join(OPTIMIZERS.names())

VALID = """
name = "t"
model = "mlp"
dataset = "digits"
epochs = 2
[params]
batch_size = 32
[tuning]
n_trials = 2
[[arms]]
optimizer = "sgd"
[[arms]]
optimizer = "bgd"
[[arms]]
optimizer = "adam"
space = { lr = { low = 1e-4, high = 1e-2, log = true } }
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "x.toml"
    path.write_text(textwrap.dedent(text))
    return path


def error_of(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(spec_mod.SpecError) as err:
        spec_mod.load(path)
    return str(err.value).removeprefix(f"{path}: ")


def test_valid_file_resolves_arms_spaces_and_shared_params(tmp_path):
    from bench.tuning.study import arms

    spec = spec_mod.load(write(tmp_path, VALID))
    resolved = {a.name: a for a in arms(spec)}
    assert list(resolved) == ["sgd", "bgd", "adam"]
    assert resolved["sgd"].fixed == {"batch_size": 32}
    assert resolved["bgd"].fixed == {}  # full-batch GD has no batch size
    assert resolved["adam"].space["lr"].high == 1e-2
    assert set(resolved["adam"].space) == {"lr"}  # a given space replaces the default one
    assert set(resolved["sgd"].space) == {"lr"}
    assert spec.objective_metric() == "val/acc"
    quick = spec.quick_variant()
    assert quick.name == "t-quick" and quick.tuning.n_trials == 3 and quick.epochs == 2 and quick.eval.seeds == 2


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (('optimizer = "adam"\nspace', 'optimizer = "adamx"\nspace'),
         f"arms[2].optimizer: unknown 'adamx' (known: {KNOWN})"),
        (('model = "mlp"', 'model = "mlpp"'), "model: unknown 'mlpp'"),
        (('dataset = "digits"', 'dataset = "imagenet"'), "dataset: unknown 'imagenet'"),
        (("epochs = 2", "epochs = 0"), "epochs: must be >= 1"),
        (("epochs = 2", 'epochs = "two"'), "epochs: Input should be a valid integer"),
        (("n_trials = 2", "n_trials = 0"), "tuning.n_trials: must be >= 1"),
        (("[tuning]", "[eval]\nseeds = 1\n[tuning]"), "eval.seeds: must be >= 2"),
        (("epochs = 2", "epochs = 2\nepochz = 3"), "epochz: unknown key"),
        (("n_trials = 2", "n_trials = 2\nsampler = \"bayes\""), "tuning.sampler: unknown 'bayes'"),
        (("batch_size = 32", "batch_size = 32\nmomentun = 0.9"),
         "params.momentun: not a hyper-parameter of any arm"),
        (("log = true }", "log = true }, momentum = { low = 0.0, high = 0.9 }"),
         "arms[2].space.momentum: not a hyper-parameter of mlp/adam/constant"),
        (("low = 1e-4, high = 1e-2", "low = 1e-2, high = 1e-4"), "low (0.01) must be below high (0.0001)"),
        (("low = 1e-4, high = 1e-2, log = true", "low = 0.0, high = 1e-2, log = true"), "log scale needs low > 0"),
        (("space = { lr", "space = {}\nxspace = { lr"), "arms[2].xspace: unknown key"),
        (("batch_size = 32", "batch_size = 0"), "arms[0].params.batch_size: 0: must be >= 1"),
        (("batch_size = 32", "batch_size = 1.5"), "arms[0].params.batch_size: expected int, got 1.5"),
    ],
)
def test_bad_study_files_get_one_line_errors_naming_the_field(tmp_path, change, expected):
    old, new = change
    assert old in VALID
    message = error_of(tmp_path, VALID.replace(old, new, 1))
    assert "\n" not in message
    assert message.startswith(expected) or expected in message, message


def test_empty_search_space_is_rejected(tmp_path):
    no_space = VALID.replace("space = { lr = { low = 1e-4, high = 1e-2, log = true } }", "space = {}")
    message = error_of(tmp_path, no_space)
    assert message == "arms[2].space: empty search space: nothing to tune"


def test_missing_file_and_bad_toml(tmp_path):
    with pytest.raises(spec_mod.SpecError, match="no such study file"):
        spec_mod.load(tmp_path / "nope.toml")
    with pytest.raises(spec_mod.SpecError, match="not valid TOML"):
        spec_mod.load(write(tmp_path, "name = "))


def test_duplicate_arm_names_are_rejected(tmp_path):
    message = error_of(tmp_path, VALID + '\n[[arms]]\noptimizer = "sgd"\n')
    assert message == "arms[3].name: duplicate arm name 'sgd'"


def test_cli_exits_2_with_the_message_and_writes_nothing(tmp_path, stores, capsys):
    path = write(tmp_path, VALID.replace('optimizer = "adam"\nspace', 'optimizer = "adamx"\nspace'))
    before = set(tmp_path.iterdir())
    assert stores.run("run", str(path), "--quiet") == 2
    err = capsys.readouterr().err.strip()
    assert err == f"{path}: arms[2].optimizer: unknown 'adamx' (known: {KNOWN})"
    assert set(tmp_path.iterdir()) == before  # neither mlflow.db nor optuna.journal nor results/
