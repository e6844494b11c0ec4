"""Optimizers, learning-rate schedules and regularizers, injected into models by `train.fit`.

The registries hold metadata only (no torch); factories are imported on first build.
"""

from bench.optim.optimizers import OPTIMIZERS
from bench.optim.regularizers import REGULARIZERS
from bench.optim.schedules import SCHEDULES

__all__ = ["OPTIMIZERS", "REGULARIZERS", "SCHEDULES"]
