"""DataBundle: a dataset as in-memory train/val/test tensors, and the seeded split that makes one.

Features are standardized with statistics of the training split only, so no validation or test
information leaks into training. `bundle_from_arrays` turns what a plug-in dataset returns
(arrays, split or not) into a bundle by the same rules as the built-ins.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from bench.registry import Task

# Fractions of the whole set; the rest is the test split.
TRAIN_FRACTION, VAL_FRACTION = 0.6, 0.2


@dataclass(frozen=True)
class Split:
    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.x)


@dataclass(frozen=True)
class DataBundle:
    """Train/val/test tensors plus what a model needs to size itself."""

    name: str
    task: Task
    train: Split
    val: Split
    test: Split
    input_shape: tuple[int, ...]  # per-example shape, e.g. (64,) or (1, 8, 8)
    n_outputs: int  # classes for multiclass, 1 for binary, targets for regression
    # Training-batch augmentation the dataset asks for (bench/data/augment.py; cifar10/cifar100).
    augment: Any = None

    def augmentations(self, seed: int) -> list:
        """Batch transforms for the training batches of a run with this seed ([] for most data)."""
        return [self.augment.transform(seed)] if self.augment is not None else []

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> DataBundle:
        """On `device`; floating tensors (features, regression targets) cast to `dtype` when given:
        a "64-true" / "bf16-true" / "16-true" model computes in that dtype and needs inputs in it."""
        cast = lambda t: t.to(device, dtype) if dtype is not None and t.is_floating_point() else t.to(device)  # noqa: E731
        move = lambda s: Split(cast(s.x), cast(s.y))  # noqa: E731
        return replace(self, train=move(self.train), val=move(self.val), test=move(self.test))

    def split(self, name: str) -> Split:
        return {"train": self.train, "val": self.val, "test": self.test}[name]


def split_arrays(
    x: np.ndarray, y: np.ndarray, *, task: Task, seed: int, name: str, n_outputs: int
) -> DataBundle:
    """Stratified (for classification) seeded 60/20/20 split, standardized on the train split."""
    stratify = y if task != "regression" else None
    x_train, x_rest, y_train, y_rest = train_test_split(
        x, y, train_size=TRAIN_FRACTION, random_state=seed, stratify=stratify
    )
    val_share = VAL_FRACTION / (1 - TRAIN_FRACTION)
    x_val, x_test, y_val, y_test = train_test_split(
        x_rest,
        y_rest,
        train_size=val_share,
        random_state=seed,
        stratify=y_rest if stratify is not None else None,
    )
    mean = x_train.mean(axis=0, keepdims=True)
    std = x_train.std(axis=0, keepdims=True)
    std[std == 0] = 1.0  # constant pixels (digits' border) stay 0 instead of NaN

    def tensors(xs: np.ndarray, ys: np.ndarray) -> Split:
        xt = torch.as_tensor((xs - mean) / std, dtype=torch.float32)
        if task == "regression":
            yt = torch.as_tensor(ys, dtype=torch.float32)
            yt = yt.unsqueeze(-1) if yt.ndim == 1 else yt
        else:
            yt = torch.as_tensor(ys, dtype=torch.long)
        return Split(xt, yt)

    return DataBundle(
        name=name,
        task=task,
        train=tensors(x_train, y_train),
        val=tensors(x_val, y_val),
        test=tensors(x_test, y_test),
        input_shape=tuple(x.shape[1:]),
        n_outputs=n_outputs,
    )


def bundle_from_arrays(out: Any, *, task: str, seed: int, name: str) -> DataBundle:
    """A plug-in dataset's arrays as a bundle: `(x, y)` is split like the built-ins (seeded, stratified
    60/20/20); `((x, y), (x, y), (x, y))` is taken as train/val/test. Features are standardized and
    regression targets too (training statistics only); class labels become 0..K-1 in sorted order."""
    from bench.data.splits import standardize_targets

    if task == "sequence":
        raise ValueError(f"{name}: sequence data must come as a DataBundle (no feature scaling applies)")
    parts = [tuple(np.asarray(a) for a in p) for p in out] if len(out) == 3 else [tuple(np.asarray(a) for a in out)]
    if any(len(p) != 2 or len(p[0]) != len(p[1]) for p in parts):
        raise ValueError(f"{name}: expected (x, y) or ((x, y), (x, y), (x, y)) with as many labels as rows")
    ys = np.concatenate([p[1] for p in parts])
    if task == "regression":
        codes, n_outputs = ys.astype(np.float64), (1 if ys.ndim == 1 else ys.shape[1])
    else:
        classes, codes = np.unique(ys, return_inverse=True)
        if task == "binary" and len(classes) != 2:
            raise ValueError(f"{name}: binary data needs exactly 2 distinct labels, found {len(classes)}")
        n_outputs = 1 if task == "binary" else len(classes)
    if len(parts) == 1:
        bundle = split_arrays(parts[0][0].astype(np.float64), codes, task=task, seed=seed, name=name,
                              n_outputs=n_outputs)
    else:
        bounds = np.cumsum([0] + [len(p[1]) for p in parts])
        xs = [p[0].astype(np.float64) for p in parts]
        mean, std = xs[0].mean(axis=0, keepdims=True), xs[0].std(axis=0, keepdims=True)
        std[std == 0] = 1.0
        dtype = torch.float32 if task == "regression" else torch.long

        def split(i: int) -> Split:
            y = torch.as_tensor(codes[bounds[i]:bounds[i + 1]], dtype=dtype)
            return Split(torch.as_tensor((xs[i] - mean) / std, dtype=torch.float32),
                         y.unsqueeze(-1) if task == "regression" and y.ndim == 1 else y)

        bundle = DataBundle(name=name, task=task, train=split(0), val=split(1), test=split(2),
                            input_shape=tuple(xs[0].shape[1:]), n_outputs=n_outputs)
    return standardize_targets(bundle) if task == "regression" else bundle
