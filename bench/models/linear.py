"""`linear`: the convex baseline — softmax regression, logistic regression or linear regression.

One affine layer; the dataset's task picks the loss (cross-entropy, BCE or MSE), so the same
model is the convex reference point for every tabular dataset.
"""

from __future__ import annotations

import math

from torch import nn

from bench.data.bundle import DataBundle
from bench.models.base import SupervisedModule


class Linear(SupervisedModule):
    def __init__(self, data: DataBundle, configure_optim=None, label_smoothing: float = 0.0):
        net = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(data.input_shape), data.n_outputs))
        super().__init__(net, data, configure_optim, label_smoothing)
