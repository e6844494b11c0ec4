"""Learning-rate schedules: each curve against its formula, the same shape for SGD and BGD, and
the plateau hook wired into fit's per-epoch validation."""

from __future__ import annotations

import math

import pytest
import torch

from bench.optim import SCHEDULES
from bench.optim.schedules import Plateau, epoch_end, lambda_scheduler
from bench.spec import RunConfig
from bench.train import fit

# name -> (non-default params, independent formula m(p) for those params)
FORMULAS = {
    "constant": ({}, lambda p: 1.0),
    "step": ({"step_interval": 0.25, "step_gamma": 0.5}, lambda p: 0.5 ** math.floor(p / 0.25 + 1e-9)),
    "exponential": ({"exp_final_fraction": 0.05}, lambda p: 0.05**p),
    "cosine": ({"final_lr_fraction": 0.1}, lambda p: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p))),
    "warmup_cosine": ({"warmup_fraction": 0.2, "final_lr_fraction": 0.0},
                      lambda p: p / 0.2 if p < 0.2 else 0.5 * (1 + math.cos(math.pi * (p - 0.2) / 0.8))),
    "linear": ({"poly_power": 2.0, "final_lr_fraction": 0.1}, lambda p: 0.1 + 0.9 * (1 - p) ** 2),
    "inverse_time": ({"inverse_time_k": 4.0}, lambda p: 1 / (1 + 4.0 * p)),
    "plateau": ({}, lambda p: 1.0),  # no validation signal fed: stays at the peak
}


def test_every_registered_schedule_has_a_formula_test():
    assert set(FORMULAS) == set(SCHEDULES.builtin_names())


def _params(name: str, overrides: dict) -> dict:
    return {**{hp.name: hp.default for hp in SCHEDULES.get(name).hparams}, **overrides}


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_lr_curve_follows_formula_over_every_step(name):
    overrides, formula = FORMULAS[name]
    multiplier = SCHEDULES.get(name).load()(**_params(name, overrides))
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.2)
    total = 40
    sched = lambda_scheduler(opt, multiplier, total)
    seen = []
    for _ in range(total):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [0.2 * formula(k / total) for k in range(total)]
    assert seen == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("name", ["step", "warmup_cosine"])
def test_sgd_and_bgd_follow_the_same_shape_over_progress(name):
    """SGD takes 17 steps per digits epoch, BGD one: the lr at each epoch end is m(epoch/epochs)
    for both (step: drops exactly on epoch boundaries; warmup_cosine: warm-up ends at epoch 1)."""
    overrides, formula = FORMULAS[name]
    epochs, lr = 4, 0.05
    histories = {}
    steps = {}
    for optimizer in ("sgd", "bgd"):
        config = RunConfig.build(model="mlp", dataset="digits", optimizer=optimizer, schedule=name,
                                 params={"lr": lr, "hidden_sizes": "16", **overrides}, epochs=epochs)
        result = fit(config)
        histories[optimizer] = [h["lr"] for h in result.history]
        steps[optimizer] = result.steps
    assert steps == {"sgd": 17 * epochs, "bgd": epochs}
    expected = [lr * formula(min(e / epochs, 1.0)) for e in range(1, epochs + 1)]
    assert histories["sgd"] == pytest.approx(expected, rel=1e-9, abs=1e-15)
    assert histories["bgd"] == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_plateau_reduces_after_patience_and_rewrites_the_next_steps_lr():
    plateau = Plateau(factor=0.5, patience=1, threshold=0.0, min_fraction=0.1)
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    sched = lambda_scheduler(opt, plateau, 10)
    lrs = []
    # maximize, patience 1: the second non-improving epoch in a row reduces (and resets the count)
    for value in (0.5, 0.6, 0.6, 0.55, 0.6, 0.59, 0.7, 0.7, 0.7):
        opt.step()
        sched.step()
        epoch_end(plateau, sched, value, "maximize")
        lrs.append(opt.param_groups[0]["lr"])  # the lr the next step will use, right after the hook
    assert lrs == [1.0, 1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.25, 0.125]
    assert plateau.reductions == 3
    # minimize flips the comparison; the floor holds
    low = Plateau(factor=0.1, patience=0, threshold=0.0, min_fraction=0.05)
    for value in (1.0, 1.0, 1.0, 1.0):
        low.on_epoch_end(value, "minimize")
    assert low.scale == pytest.approx(0.05)
    assert low.reductions == 2  # 1 -> 0.1 -> 0.05 (floor), the third changes nothing


def test_plateau_in_fit_reads_the_validation_objective_each_epoch():
    """lr 1e-12 leaves val/acc frozen, so every epoch after the first is a non-improvement:
    patience 1 -> reductions after epochs 3 and 5 (logged lr is the one in use at epoch end)."""
    config = RunConfig.build(model="mlp", dataset="digits", optimizer="bgd", schedule="plateau",
                             params={"lr": 1e-12, "hidden_sizes": "16", "plateau_patience": 1,
                                     "plateau_factor": 0.5, "plateau_threshold": 0.0}, epochs=6)
    result = fit(config)
    accs = {h["val/acc"] for h in result.history}
    assert len(accs) == 1
    assert [h["lr"] / 1e-12 for h in result.history] == pytest.approx([1, 1, 1, 0.5, 0.5, 0.25])
