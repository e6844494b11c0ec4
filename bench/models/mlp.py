"""`mlp`: fully connected network with configurable widths, activation and dropout.

The origin document's 64-64-10 classifier is `hidden_sizes = "64"` on 64 inputs and 10 classes.
"""

from __future__ import annotations

import math

from torch import nn

from bench.data.bundle import DataBundle
from bench.models.base import SupervisedModule

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU}


def parse_widths(text: str) -> list[int]:
    """'128-64' -> [128, 64]; '' -> [] (a linear model)."""
    try:
        widths = [int(part) for part in text.split("-") if part.strip()]
    except ValueError:
        raise ValueError(f"hidden_sizes must look like '128-64', got {text!r}") from None
    if any(w < 1 for w in widths):
        raise ValueError(f"hidden_sizes must be positive, got {text!r}")
    return widths


class MLP(SupervisedModule):
    def __init__(
        self,
        data: DataBundle,
        configure_optim=None,
        label_smoothing: float = 0.0,
        *,
        hidden_sizes: str = "128-64",
        activation: str = "relu",
        dropout: float = 0.0,
    ):
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(data.input_shape)
        for hidden in parse_widths(hidden_sizes):
            layers += [nn.Linear(width, hidden), ACTIVATIONS[activation]()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = hidden
        layers.append(nn.Linear(width, data.n_outputs))
        super().__init__(nn.Sequential(*layers), data, configure_optim, label_smoothing)
