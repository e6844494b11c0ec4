"""Learning-rate schedules defined over training progress (fraction of the step budget).

A schedule is a multiplier m(p) of the peak lr for p = step / total_steps in [0, 1], applied
through LambdaLR once per optimizer step. Because p is a fraction of the budget, SGD (many steps
per epoch) and BGD (one step per epoch) follow the same curve shape.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from bench.hparams import HParam
from bench.registry import Registry

SCHEDULES = Registry("schedule")

Multiplier = Callable[[float], float]


@SCHEDULES.register("constant", summary="lr stays at its peak value", hparams=())
def constant() -> Multiplier:
    return lambda p: 1.0


@SCHEDULES.register(
    "cosine",
    summary="cosine decay from lr to lr*final_lr_fraction over the budget",
    hparams=(HParam("final_lr_fraction", "float", 0.0, "lr at the end / peak lr", low=0.0, high=1.0),),
)
def cosine(final_lr_fraction: float) -> Multiplier:
    return lambda p: final_lr_fraction + (1 - final_lr_fraction) * 0.5 * (1 + math.cos(math.pi * p))


def lambda_scheduler(
    optimizer: torch.optim.Optimizer, multiplier: Multiplier, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Step-interval scheduler evaluating `multiplier` at progress step/total_steps."""
    total = max(total_steps, 1)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: multiplier(min(step / total, 1.0)))
