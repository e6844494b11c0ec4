"""`gru`: a small recurrent classifier (GRU) for sequences and signals.

An input of shape (C, L) is read as L time steps of C features (MNIST-1D: 40 steps of 1 value);
an image (C, H, W) as H steps of C x W features (row by row, as in "row-wise sequential MNIST").
A stack of `gru_layers` GRU layers of `gru_hidden` units (optionally bidirectional) reads the
steps; the classifier is one linear layer on

* `gru_pool = "last"` (default): the top layer's final hidden state h_L (for a bidirectional GRU,
  the forward direction's h_L and the backward direction's h_1, each of which has read the whole
  sequence), the usual read-out of a recurrent classifier, or
* `gru_pool = "mean"`: the mean of the top layer's outputs over all steps (less sensitive to where
  in the sequence the evidence is).

Loss: cross-entropy (or the task's); metrics as for every supervised model. Cost on 2 CPU cores:
~3.6 s per mnist1d epoch on one thread (3,600 signals of 40 steps, batch 64 or 128, hidden 64):
the 40 steps run one after another.

Reference (measured, torch 2.13 CPU; Adam lr=1e-3 defaults, batch 64, hidden 64, 1 layer,
unidirectional, last state, seed 0, data seed 0): 20 epochs on mnist1d -> val/acc 0.518, test/acc 0.494,
still rising (the MNIST-1D paper's GRU reaches ~0.9 after far more steps); Adam lr=3e-3, batch 128,
10 epochs: val/acc 0.485, test/acc 0.490.
"""

from __future__ import annotations

import torch
from torch import nn

from bench.data.bundle import DataBundle
from bench.models.base import SupervisedModule

POOLS = ("last", "mean")


class GRUNet(nn.Module):
    def __init__(self, features: int, n_outputs: int, *, hidden: int, layers: int, bidirectional: bool,
                 pool: str) -> None:
        super().__init__()
        self.gru = nn.GRU(features, hidden, num_layers=layers, batch_first=True, bidirectional=bidirectional)
        self.pool = pool
        self.head = nn.Linear(hidden * (2 if bidirectional else 1), n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            steps = x.transpose(1, 2)  # (B, L, C): L steps of C features
        else:
            steps = x.permute(0, 2, 1, 3).flatten(2)  # (B, C, H, W) -> (B, H, C*W): one row per step
        out, h = self.gru(steps)
        if self.pool == "mean":
            return self.head(out.mean(1))
        last = h[-2:] if self.gru.bidirectional else h[-1:]  # top layer: (directions, B, hidden)
        return self.head(last.transpose(0, 1).flatten(1))


class GRU(SupervisedModule):
    def __init__(self, data: DataBundle, configure_optim=None, label_smoothing: float = 0.0, *,
                 gru_hidden: int = 64, gru_layers: int = 1, bidirectional: bool = False, gru_pool: str = "last"):
        if len(data.input_shape) not in (2, 3):
            raise ValueError(f"gru reads (C, L) signals or (C, H, W) images as sequences, got input shape "
                             f"{data.input_shape}: use mnist1d, digits_images, mnist, ...")
        if gru_pool not in POOLS:
            raise ValueError(f"gru_pool must be one of {list(POOLS)}, got {gru_pool!r}")
        shape = data.input_shape
        features = shape[0] if len(shape) == 2 else shape[0] * shape[2]
        net = GRUNet(features, data.n_outputs, hidden=gru_hidden, layers=gru_layers, bidirectional=bidirectional,
                     pool=gru_pool)
        super().__init__(net, data, configure_optim, label_smoothing)
