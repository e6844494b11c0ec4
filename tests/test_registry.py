"""Registry-parametrized tests: every registered component (built-in or installed plug-in) is
covered without listing it."""

from __future__ import annotations

import inspect
import math

import pytest
import torch

from bench.data import DATASETS, dataset_args, load_dataset
from bench.hparams import HParam
from bench.models import MODELS
from bench.optim import OPTIMIZERS, REGULARIZERS, SCHEDULES
from bench.optim.torch_optimizers import build
from bench.registry import ModelInfo, Registry, RegistryError, Source, UnknownNameError
from bench.routing import Owners
from bench.spec import RunConfig
from bench.train import fit


def test_registry_rejects_duplicates_and_bad_names_and_names_known_entries():
    reg = Registry("thing")
    reg.register(ModelInfo(name="b", factory="x:y"))
    reg.register(ModelInfo(name="a", factory="x:y"))
    with pytest.raises(ValueError, match="registered twice"):
        reg.register(ModelInfo(name="a", factory="x:z"))
    with pytest.raises(ValueError, match="use lower-case letters"):
        reg.register(ModelInfo(name="torch.thing", factory="x:z"))  # dotted names are import paths
    with pytest.raises(UnknownNameError) as err:
        reg.get("c")
    assert str(err.value) == "unknown 'c' (known: a, b)"
    assert [e.name for e in reg] == ["a", "b"]


def test_builtin_factories_stay_unimported_until_built():
    info = MODELS.get("mlp")
    assert info.factory == "bench.models.mlp:MLP" and info.source == Source()
    assert info.load().__name__ == "MLP" and info.source.describe() == "built-in"


# Datasets that load with default arguments. Not here: user-file loaders (they need a path) and the
# datasets whose files must be in the data folder (MNIST, CIFAR, ...: absent on a machine without
# internet); tests/test_datasets.py covers both kinds with files it writes.
LOADABLE = [n for n in DATASETS.names() if "path" not in dataset_args(n) and "images" not in dataset_args(n)
            and not DATASETS.get(n).files]
# Datasets with their own split instead of the seeded 60/20/20: (train, val) shares of all examples.
OWN_SPLIT = {"mnist1d": (0.72, 0.08)}  # the original's 80/20 train/test, a tenth of train carved for val


@pytest.mark.parametrize("name", LOADABLE)
def test_dataset_split_is_seeded_and_disjoint(name):
    a = load_dataset(name, seed=0)
    b = load_dataset(name, seed=0)
    c = load_dataset(name, seed=1)
    n = len(a.train) + len(a.val) + len(a.test)
    train_share, val_share = OWN_SPLIT.get(name, (0.6, 0.2))
    assert abs(len(a.train) / n - train_share) < 0.02 and abs(len(a.val) / n - val_share) < 0.02
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.y, b.test.y)
    assert not torch.equal(a.train.x, c.train.x)
    assert len(a.train.x) == len(a.train.y) and tuple(a.train.x.shape[1:]) == a.input_shape
    assert a.task == DATASETS.get(name).task
    # no training example reappears in the test split (rows compared exactly)
    train_rows = {tuple(r.tolist()) for r in a.train.x.flatten(1)[:200]}
    assert not any(tuple(r.tolist()) in train_rows for r in a.test.x.flatten(1))


@pytest.mark.parametrize("name", ["digits", "breast_cancer", "synthetic_classification"])
def test_tabular_features_are_standardized_on_the_training_split_only(name):
    a = load_dataset(name, seed=0)
    x = a.train.x.flatten(1)
    std = x.std(0, unbiased=False)
    assert x.mean(0).abs().max() < 1e-4
    assert ((std - 1).abs()[std > 0] < 1e-3).all()
    assert a.val.x.mean(0).abs().max() > 1e-3  # other splits use the train statistics, not their own


def _quadratic_step(info, values) -> torch.Tensor:
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = build(info, [w], values)
    if info.mode_switch:
        opt.train()

    def closure():
        opt.zero_grad()
        loss = (w**2).sum()
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    return w.detach()


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_optimizer_defaults_space_and_steps_toward_the_minimum(name):
    info = OPTIMIZERS.get(name)
    hps = {hp.name: hp for hp in info.hparams}
    assert "lr" in info.space and info.space["lr"].log
    for key, dist in info.space.items():
        dist.check_against(hps[key])
    lr = info.space["lr"]
    values = {**{k: hp.default for k, hp in hps.items()}, "lr": math.sqrt(lr.low * lr.high)}  # mid-range lr
    moved = _quadratic_step(info, values)
    assert (moved.abs() < torch.tensor([1.0, 2.0])).all(), moved  # moved toward the minimum


def test_sgd_is_plain_unless_asked():
    hps = {hp.name: hp.default for hp in OPTIMIZERS.get("sgd").hparams}
    opt = build(OPTIMIZERS.get("sgd"), [torch.nn.Parameter(torch.zeros(1))], hps)
    group = opt.param_groups[0]
    assert group["momentum"] == 0 and group["nesterov"] is False and group["dampening"] == 0


def _keyword_args(fn, skip: int) -> set[str]:
    params = list(inspect.signature(fn).parameters.values())[skip:]
    return {p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


@pytest.mark.parametrize(("registry", "skip"), [(MODELS, 2), (OPTIMIZERS, 1), (SCHEDULES, 0), (REGULARIZERS, 0)],
                         ids=lambda r: getattr(r, "kind", ""))
def test_declared_hyperparameters_are_the_factories_keyword_arguments(registry, skip):
    """The metadata is declared apart from the (lazily imported) factory: they must not drift."""
    for name in registry.names():
        info = registry.get(name)
        taken = _keyword_args(info.load(), skip)
        if registry is MODELS:
            taken -= {"label_smoothing"}  # set by the regularizer of that name, not a model hyper-parameter
        declared = {hp.name.split(".")[0] for hp in info.hparams}  # betas.0, betas.1 -> betas
        assert declared == taken, name


def test_dataset_arguments_are_the_factories_keyword_arguments():
    for name in DATASETS.names():
        info = DATASETS.get(name)
        assert {hp.name for hp in info.args} == _keyword_args(info.load(), 0) - {"seed"}, name


@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_fits_one_epoch_on_its_default_dataset(name):
    info = MODELS.get(name)
    config = RunConfig.build(model=name, dataset=info.default_dataset, optimizer="adam", epochs=1,
                             accelerator="cpu", objective="val/loss", evaluate_test=True)
    result = fit(config)
    assert result.status == "completed", result.reason
    assert result.epochs == 1 and result.steps >= 1
    assert math.isfinite(result.final["train/loss"]) and math.isfinite(result.final["test/loss"])
    assert set(Owners.of(name, "adam").declared()) >= {hp.name for hp in info.hparams}


def test_a_name_two_components_of_a_run_declare_is_refused():
    # torch's RAdam has its own boolean `decoupled_weight_decay`; the regularizer of that name a float
    with pytest.raises(ValueError, match="'decoupled_weight_decay' is a hyper-parameter of both "
                                         "torch.optim.RAdam and decoupled_wd"):
        Owners.of("mlp", "torch.optim.RAdam", "constant", ["decoupled_wd"]).declared()


def test_an_unknown_plugin_or_import_path_is_a_one_line_error():
    with pytest.raises(RegistryError, match=r"^unknown 'nope' \(known: .*adam"):
        OPTIMIZERS.get("nope")
    with pytest.raises(RegistryError, match=r"^cannot import 'torch.optim.AdamX': module 'torch.optim' has no "
                                            r"attribute 'AdamX'$"):
        OPTIMIZERS.get("torch.optim.AdamX")


def test_hparam_bounds_messages():
    hp = HParam("x", "float", 0.5, "", low=0.0, high=1.0)
    with pytest.raises(ValueError, match=r"^1.5: must be in \[0, 1\]$"):
        hp.check(1.5)
    with pytest.raises(ValueError, match=r"^-1: must be >= 0$"):
        HParam("y", "int", 1, "", low=0).check(-1)
    with pytest.raises(ValueError, match=r"^expected float, got 'abc'$"):
        hp.check("abc")
