"""Registry-parametrized tests: every registered component is covered without listing it."""

from __future__ import annotations

import math

import pytest
import torch

from bench.data import DATASETS, dataset_args, load_dataset
from bench.models import MODELS
from bench.optim import OPTIMIZERS
from bench.registry import Registry, UnknownNameError
from bench.spec import RunConfig, hparams_for
from bench.train import fit


def test_registry_rejects_duplicates_and_names_known_entries():
    reg = Registry("thing")
    reg.register("b", summary="b")(lambda: 1)
    reg.register("a", summary="a")(lambda: 2)
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a", summary="again")(lambda: 3)
    with pytest.raises(UnknownNameError) as err:
        reg.get("c")
    assert str(err.value) == "unknown 'c' (known: a, b)"
    assert [e.name for e in reg] == ["a", "b"]


# Datasets that load with default arguments (user-file loaders need a path; tested elsewhere).
LOADABLE = [n for n in DATASETS.names() if "path" not in dataset_args(n) and "images" not in dataset_args(n)]


@pytest.mark.parametrize("name", LOADABLE)
def test_dataset_split_is_seeded_and_disjoint(name):
    a = load_dataset(name, seed=0)
    b = load_dataset(name, seed=0)
    c = load_dataset(name, seed=1)
    n = len(a.train) + len(a.val) + len(a.test)
    assert abs(len(a.train) / n - 0.6) < 0.02 and abs(len(a.val) / n - 0.2) < 0.02
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.y, b.test.y)
    assert not torch.equal(a.train.x, c.train.x)
    assert len(a.train.x) == len(a.train.y) and tuple(a.train.x.shape[1:]) == a.input_shape
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


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_optimizer_defaults_space_and_one_step(name):
    entry = OPTIMIZERS.get(name)
    hps = {hp.name: hp for hp in entry.meta["hparams"]}
    assert "lr" in entry.meta["space"] and entry.meta["space"]["lr"].log
    for key, dist in entry.meta["space"].items():
        dist.check_against(hps[key])
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = entry.factory([w], **{k: hp.default for k, hp in hps.items()})
    (w**2).sum().backward()
    opt.step()
    assert (w.detach().abs() < torch.tensor([1.0, 2.0])).all()  # moved toward the minimum


def test_sgd_is_plain_unless_asked():
    hps = {hp.name: hp.default for hp in OPTIMIZERS.get("sgd").meta["hparams"]}
    opt = OPTIMIZERS.get("sgd").factory([torch.nn.Parameter(torch.zeros(1))], **hps)
    group = opt.param_groups[0]
    assert group["momentum"] == 0 and group["nesterov"] is False and group["dampening"] == 0


@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_fits_one_epoch_on_its_default_dataset(name):
    entry = MODELS.get(name)
    dataset = entry.meta["default_dataset"]
    config = RunConfig.build(model=name, dataset=dataset, optimizer="adam", epochs=1, accelerator="cpu",
                             objective="val/loss", evaluate_test=True)
    result = fit(config)
    assert result.status == "completed", result.reason
    assert result.epochs == 1 and result.steps >= 1
    assert math.isfinite(result.final["train/loss"]) and math.isfinite(result.final["test/loss"])
    assert set(hparams_for(name, "adam", "constant")) >= {hp.name for hp in entry.meta["hparams"]}
