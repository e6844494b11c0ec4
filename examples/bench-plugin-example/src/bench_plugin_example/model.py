"""A residual MLP as a plain nn.Module: bench wraps it with the dataset task's loss and metrics.

bench calls it as `ResMLP(input_shape, n_outputs, **hyper-parameters)`; `width` and `blocks` are
read off the signature.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class ResMLP(nn.Module):
    """Linear stem, `blocks` pre-norm residual blocks (LayerNorm -> Linear -> GELU), linear head."""

    def __init__(self, input_shape: tuple[int, ...], n_outputs: int, width: int = 64, blocks: int = 2) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), width))
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.GELU()) for _ in range(blocks))
        self.head = nn.Linear(width, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for block in self.blocks:
            h = h + block(h)
        return self.head(h)
