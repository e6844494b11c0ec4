"""Interleaved 2-D spirals, one arm per class: a small non-linear classification set.

The function returns plain arrays (x, y); bench splits them (seeded 60/20/20), standardizes on the
training split and caches them. What bench cannot read off the signature, the task, the
DatasetInfo says; the arguments (n_samples, classes, noise) are read off the signature.
"""

from __future__ import annotations

import numpy as np

from bench.registry import DatasetInfo


def spirals(seed: int, n_samples: int = 900, classes: int = 3, noise: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n_samples)
    radius = rng.uniform(0.1, 1.0, n_samples)
    angle = 3 * np.pi * radius + 2 * np.pi * y / classes  # 1.5 turns per arm
    x = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    return x + noise * radius[:, None] * rng.standard_normal((n_samples, 2)), y


SPIRALS = DatasetInfo(factory=spirals, task="multiclass", summary="interleaved 2-D spirals, one arm per class")
