"""Optimizers and learning-rate schedules, injected into models by `train.fit`."""

from bench.optim.optimizers import OPTIMIZERS
from bench.optim.schedules import SCHEDULES

__all__ = ["OPTIMIZERS", "SCHEDULES"]
