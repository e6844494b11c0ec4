"""`sigmoid_net`: the classic two-layer sigmoid network with MSE loss.

input -> Linear(sigmoid_hidden) -> sigmoid -> Linear(outputs); trained on mean squared error.
This is the origin document's "two-layer sigmoid net" (1000 inputs -> 10 outputs on the default
`synthetic_regression` data, whose targets come from a random network of the same family, so the
task is realizable up to the label noise). It also trains on scikit-learn's `diabetes`.
Metrics: loss (= MSE on standardized targets), mse, r2. Cost: ~0.1 s per epoch on 2 CPU cores.

Reference (measured, torch 2.13 CPU; Adam lr=1e-3, betas 0.9/0.999, eps 1e-8, batch 64, seed 0, data
seed 0, 30 epochs): synthetic_regression val/mse 0.261 (val/r2 0.738; the best, 0.253, comes near
epoch 16 and the 2400-example training set is then over-fitted), test/mse 0.266; diabetes val/mse
0.559 (val/r2 0.415, still improving at 30 epochs).
"""

from __future__ import annotations

import math

from torch import nn

from bench.data.bundle import DataBundle
from bench.models.base import SupervisedModule


class SigmoidNet(SupervisedModule):
    def __init__(self, data: DataBundle, configure_optim=None, label_smoothing: float = 0.0, *,
                 sigmoid_hidden: int = 64):
        net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(math.prod(data.input_shape), sigmoid_hidden),
            nn.Sigmoid(),
            nn.Linear(sigmoid_hidden, data.n_outputs),
        )
        super().__init__(net, data, configure_optim, label_smoothing)
