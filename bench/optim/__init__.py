"""Optimizers, learning-rate schedules and regularizers, injected into models by `train.fit`."""

from bench.optim.optimizers import OPTIMIZERS
from bench.optim.regularization import REGULARIZERS
from bench.optim.schedules import SCHEDULES

__all__ = ["OPTIMIZERS", "REGULARIZERS", "SCHEDULES"]
