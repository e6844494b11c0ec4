"""Learning-rate schedules defined over training progress (fraction of the run's budget).

A schedule is a multiplier m(p) of the peak lr for p in [0, 1), the share of the budget spent,
applied through LambdaLR once per optimizer step: p = step / total_steps under an epochs or a
steps budget, samples seen / budget under a samples budget, training seconds / budget under a
seconds budget (evaluation time excluded; the schedule then follows the clock). Because p is a
fraction of the budget, SGD (many steps per epoch) and BGD (one step per epoch) follow the same
curve shape: at the end of epoch e of E both sit at p = e / E.

`plateau` is the one schedule that depends on the run, not only on p: its multiplier drops by
`plateau_factor` when the validation objective stalls. It is an object with an
`on_epoch_end(value, direction)` hook that `train.fit` calls after each epoch's validation pass
(see `epoch_end`); the other schedules have no such hook.

Each entry is a ScheduleInfo: `hparams` are the shape parameters (distinct names;
`final_lr_fraction` means the same thing wherever it appears, lr at the end / peak lr, so it is one
declaration); `space` is empty (shapes stay at their defaults unless a study file tunes them).
Plug-in packages add schedules through the `bench.schedules` entry-point group.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from bench import plugins
from bench.hparams import HParam
from bench.registry import Registry, ScheduleInfo

if TYPE_CHECKING:
    import torch

SCHEDULES: Registry[ScheduleInfo] = Registry("schedule", "bench.schedules", plugins.schedule_info)

Multiplier = Callable[[float], float]

FINAL_LR_FRACTION = HParam("final_lr_fraction", "float", 0.0, "lr at the end / peak lr", low=0.0, high=1.0)
_EPS = 1e-9  # p = k/n divided by an interval like 1/3 may land a hair below an integer


def constant() -> Multiplier:
    return lambda p: 1.0


SCHEDULES.register(ScheduleInfo(
    name="constant", factory=constant,
    summary="lr stays at its peak value",
))


def step(step_interval: float, step_gamma: float) -> Multiplier:
    """m(p) = step_gamma ** floor(p / step_interval)."""
    return lambda p: step_gamma ** math.floor(p / step_interval + _EPS)


SCHEDULES.register(ScheduleInfo(
    name="step", factory=step,
    summary="multiply lr by step_gamma every step_interval of the budget (staircase)",
    hparams=(
        HParam("step_interval", "float", 0.4, "fraction of the budget between drops", low=1e-6, high=1.0),
        HParam("step_gamma", "float", 0.1, "factor applied at each drop", low=0.0, high=1.0),
    ),
))


def exponential(exp_final_fraction: float) -> Multiplier:
    """m(p) = exp_final_fraction ** p, i.e. lr * gamma**t with gamma = f**(1/total_steps)."""
    return lambda p: exp_final_fraction**p


SCHEDULES.register(ScheduleInfo(
    name="exponential", factory=exponential,
    summary="smooth exponential decay to lr*exp_final_fraction at the end of the budget",
    hparams=(HParam("exp_final_fraction", "float", 0.01, "lr at the end / peak lr (> 0)", low=1e-12, high=1.0),),
))


def cosine(final_lr_fraction: float) -> Multiplier:
    """m(p) = f + (1 - f) * (1 + cos(pi p)) / 2."""
    return lambda p: final_lr_fraction + (1 - final_lr_fraction) * 0.5 * (1 + math.cos(math.pi * p))


SCHEDULES.register(ScheduleInfo(
    name="cosine", factory=cosine,
    summary="cosine decay from lr to lr*final_lr_fraction over the budget",
    hparams=(FINAL_LR_FRACTION,),
))


def warmup_cosine(warmup_fraction: float, final_lr_fraction: float) -> Multiplier:
    """m(p) = p / w for p < w; then cosine from 1 to f over the remaining (p - w) / (1 - w)."""
    decay = cosine(final_lr_fraction)

    def m(p: float) -> float:
        if p < warmup_fraction:
            return p / warmup_fraction
        return decay((p - warmup_fraction) / (1 - warmup_fraction))

    return m


SCHEDULES.register(ScheduleInfo(
    name="warmup_cosine", factory=warmup_cosine,
    summary="linear warm-up from 0 over warmup_fraction of the budget, then cosine decay",
    hparams=(
        HParam("warmup_fraction", "float", 0.1, "fraction of the budget spent warming up", low=0.0, high=0.99),
        FINAL_LR_FRACTION,
    ),
))


def linear(poly_power: float, final_lr_fraction: float) -> Multiplier:
    """m(p) = f + (1 - f) * (1 - p) ** poly_power."""
    return lambda p: final_lr_fraction + (1 - final_lr_fraction) * (1 - p) ** poly_power


SCHEDULES.register(ScheduleInfo(
    name="linear", factory=linear,
    summary="polynomial decay (power poly_power; 1 = linear) from lr to lr*final_lr_fraction",
    hparams=(
        HParam("poly_power", "float", 1.0, "exponent of the decay (1 linear, 2 quadratic, ...)", low=0.0),
        FINAL_LR_FRACTION,
    ),
))


def inverse_time(inverse_time_k: float) -> Multiplier:
    """m(p) = 1 / (1 + k p)."""
    return lambda p: 1.0 / (1.0 + inverse_time_k * p)


SCHEDULES.register(ScheduleInfo(
    name="inverse_time", factory=inverse_time,
    summary="lr / (1 + inverse_time_k * p): fast early decay with a long tail",
    hparams=(HParam("inverse_time_k", "float", 10.0, "decay rate per budget (end lr = lr/(1+k))", low=0.0),),
))


class Plateau:
    """Reduce-on-plateau multiplier: scale *= factor after `patience` epochs without an improvement
    of the validation objective by more than `threshold` (relative, as torch's ReduceLROnPlateau
    with threshold_mode='rel'). Constant in p between reductions; never below `min_fraction`."""

    def __init__(self, factor: float, patience: int, threshold: float, min_fraction: float) -> None:
        self.factor, self.patience, self.threshold, self.min_fraction = factor, patience, threshold, min_fraction
        self.scale = 1.0
        self.best: float | None = None
        self.bad_epochs = 0
        self.reductions = 0

    def __call__(self, p: float) -> float:
        return self.scale

    def on_epoch_end(self, value: float, direction: Literal["minimize", "maximize"]) -> bool:
        """Feed one epoch's objective; returns True when the scale was reduced."""
        if not math.isfinite(value):
            return False
        if self.best is None or self._improved(value, direction):
            self.best, self.bad_epochs = value, 0
            return False
        self.bad_epochs += 1
        if self.bad_epochs <= self.patience:
            return False
        self.bad_epochs = 0
        new = max(self.scale * self.factor, self.min_fraction)
        changed = new < self.scale
        self.scale = new
        self.reductions += changed
        return changed

    def _improved(self, value: float, direction: str) -> bool:
        margin = self.threshold * abs(self.best)
        return value > self.best + margin if direction == "maximize" else value < self.best - margin


def plateau(plateau_factor: float, plateau_patience: int, plateau_threshold: float,
            plateau_min_fraction: float) -> Plateau:
    return Plateau(plateau_factor, plateau_patience, plateau_threshold, plateau_min_fraction)


SCHEDULES.register(ScheduleInfo(
    name="plateau", factory=plateau,
    summary="multiply lr by plateau_factor when the validation objective stalls for plateau_patience epochs",
    hparams=(
        HParam("plateau_factor", "float", 0.5, "factor applied at each reduction", low=0.0, high=1.0),
        HParam("plateau_patience", "int", 2, "epochs without improvement before a reduction", low=0),
        HParam("plateau_threshold", "float", 1e-3, "relative improvement that counts", low=0.0),
        HParam("plateau_min_fraction", "float", 1e-3, "floor of lr / peak lr", low=0.0, high=1.0),
    ),
    needs_validation=True,
))


def lambda_scheduler(
    optimizer: torch.optim.Optimizer, multiplier: Multiplier, total_steps: int,
    progress: Callable[[], float] | None = None,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Step-interval scheduler evaluating `multiplier` at progress step/total_steps, or at
    `progress()` when given: the share of the run's budget spent (train.fit passes the budget's
    counter / its value for steps, samples and seconds budgets; for seconds that is the training
    time so far / the budget, so the schedule's shape follows the clock, not a step count)."""
    import torch  # here, not at the top: the registry above is read without torch

    if progress is not None:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: multiplier(min(progress(), 1.0)))
    total = max(total_steps, 1)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: multiplier(min(step / total, 1.0)))


def epoch_end(
    multiplier: Multiplier, scheduler: torch.optim.lr_scheduler.LambdaLR, value: float,
    direction: Literal["minimize", "maximize"],
) -> None:
    """Give a run-dependent schedule (plateau) the epoch's objective. When its multiplier changes,
    the lr of the *next* step is rewritten at once: LambdaLR computed it before this epoch ended,
    and one stale step would be a whole epoch for BGD."""
    hook = getattr(multiplier, "on_epoch_end", None)
    if hook is None or not hook(value, direction):
        return
    step = scheduler.last_epoch
    for group, base, fn in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * fn(step)
    scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]
