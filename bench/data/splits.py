"""Split and scaling helpers for datasets that `split_arrays` does not cover as-is.

`split_arrays` (bench.data) always standardizes features per column. Images for generative models
([0, 1] pixels), token sequences (integers) and regression targets (standardized with training
statistics) need other treatments; these helpers keep the same seeded 60/20/20 split so every
dataset partitions its examples the same way.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from bench.data import SCALES
from bench.data.bundle import TRAIN_FRACTION, VAL_FRACTION, DataBundle, Split


def split_indices(n: int, *, seed: int, stratify: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """Seeded (train, val, test) index arrays with the same 60/20/20 rule as `split_arrays`."""
    idx = np.arange(n)
    train, rest = train_test_split(idx, train_size=TRAIN_FRACTION, random_state=seed, stratify=stratify)
    val_share = VAL_FRACTION / (1 - TRAIN_FRACTION)
    val, test = train_test_split(rest, train_size=val_share, random_state=seed,
                                 stratify=stratify[rest] if stratify is not None else None)
    return train, val, test


def scale_features(x: np.ndarray, train: np.ndarray, scale: str) -> np.ndarray:
    """Scale features with statistics of the training rows only (no val/test leakage).

    standardize: per feature (per pixel for images) zero mean, unit variance; constant features stay 0.
    minmax: one global affine map sending the training minimum to 0 and maximum to 1 (keeps images
        images: pixel ratios are preserved, which generative models with a sigmoid output need).
    """
    x = x.astype(np.float64)
    if scale == "standardize":
        mean = x[train].mean(axis=0, keepdims=True)
        std = x[train].std(axis=0, keepdims=True)
        std[std == 0] = 1.0
        return (x - mean) / std
    if scale == "minmax":
        low, high = x[train].min(), x[train].max()
        return (x - low) / (high - low if high > low else 1.0)
    raise ValueError(f"scale must be one of {list(SCALES)}, got {scale!r}")


def bundle_from_indices(
    name: str, task: str, x: torch.Tensor, y: torch.Tensor, parts: tuple[np.ndarray, ...], n_outputs: int
) -> DataBundle:
    """A DataBundle whose splits are rows `parts = (train, val, test)` of already-scaled tensors."""
    train, val, test = (Split(x[torch.as_tensor(p)], y[torch.as_tensor(p)]) for p in parts)
    return DataBundle(name=name, task=task, train=train, val=val, test=test,
                      input_shape=tuple(x.shape[1:]), n_outputs=n_outputs)


def standardize_targets(bundle: DataBundle) -> DataBundle:
    """Regression targets to zero mean, unit variance per target, using training statistics only.

    MSE is then in units of the target variance (comparable across datasets, and the optimizers'
    default lr ranges apply); R² is unchanged by this affine map.
    """
    mean = bundle.train.y.mean(dim=0, keepdim=True)
    std = bundle.train.y.std(dim=0, unbiased=False, keepdim=True).clamp_min(1e-12)
    scale = lambda s: Split(s.x, (s.y - mean) / std)  # noqa: E731
    return replace(bundle, train=scale(bundle.train), val=scale(bundle.val), test=scale(bundle.test))
