"""Datasets as in-memory tensor bundles with a train/val/test split fixed by a data seed.

Every dataset returns a DataBundle: three (x, y) tensor pairs, the task kind and shapes. Features
are standardized with statistics of the training split only, so no validation or test
information leaks into training.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from bench.hparams import HParam
from bench.registry import Registry

Task = Literal["multiclass", "binary", "regression", "sequence"]  # sequence: int tokens x, y (N, L)
DATASETS = Registry("dataset")

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


def dataset_args(name: str) -> dict[str, HParam]:
    """Declared arguments of a dataset (e.g. n_samples for synthetic sets)."""
    return {hp.name: hp for hp in DATASETS.get(name).meta.get("args", ())}


def resolve_args(name: str, given: dict[str, Any]) -> dict[str, Any]:
    """Fill defaults and type-check dataset arguments; raises KeyError/ValueError naming the key."""
    declared = dataset_args(name)
    for key in given:
        if key not in declared:
            known = ", ".join(sorted(declared)) or "none"
            raise KeyError(f"{key}: dataset '{name}' has no argument {key!r} (known: {known})")
    return {k: hp.check(given[k]) if k in given else hp.default for k, hp in declared.items()}


def load_dataset(name: str, seed: int = 0, **args: Any) -> DataBundle:
    """Build (or reuse from this process's cache) a dataset bundle."""
    return _cached(name, seed, json.dumps(resolve_args(name, args), sort_keys=True))


@functools.lru_cache(maxsize=8)
def _cached(name: str, seed: int, args_json: str) -> DataBundle:
    return DATASETS.get(name).factory(seed=seed, **json.loads(args_json))


from bench.data import builtin, files, synthetic  # noqa: E402,F401  (registers the built-in datasets)
