"""MNIST-1D (Greydanus 2020): 1-D signals of the ten digits' templates, generated offline.

The `mnist1d` package's `make_dataset(args)` makes the set from its templates (its
`get_dataset` would download the original pickle instead). Defaults are the original's
generation arguments (`get_dataset_args()`: 5,000 signals of length 40, seed 42, ...) and its
train/test split (first 80 % / last 20 %: 4,000 / 1,000); the validation split is a seeded carve
of a tenth of the training signals (400; the data seed picks which), so the default bundle is
3,600 / 400 / 1,000. Inputs are (1, 40): one channel of 40 samples, which a 1-D CNN or a GRU reads
as a signal and MLP / linear flatten. They are standardized with the train split's mean and std
(one channel, so two numbers), on top of the generator's own global standardization.

Generating 5,000 signals takes ~4 s (plus ~2 s to import the package, which imports matplotlib),
so the arrays are cached in the data folder as `mnist1d/<hash of the arguments>.npz` (written
atomically; a folder that cannot be written only means no cache).
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import torch

from bench.data import store
from bench.data.bundle import DataBundle, Split
from bench.data.vision import carve_validation

# The original's generation arguments that the dataset exposes (the rest, template_len 12 and
# padding [36, 60], stay as get_dataset_args() has them).
DEFAULTS = {"num_samples": 5000, "train_split": 0.8, "scale_coeff": 0.4, "max_translation": 48,
            "corr_noise_scale": 0.25, "iid_noise_scale": 2e-2, "shear_scale": 0.75, "shuffle_seq": False,
            "final_seq_length": 40, "seed": 42}


def generate(args: dict) -> dict[str, np.ndarray]:
    """`mnist1d.data.make_dataset` with these arguments -> x, y, x_test, y_test. The generator seeds
    numpy's and Python's global RNGs; their states are restored afterwards (runs seed their own)."""
    from mnist1d.data import get_dataset_args, make_dataset
    from mnist1d.utils import ObjectView

    full = {**get_dataset_args(as_dict=True), **args}
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        out = make_dataset(ObjectView(full))
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return {k: np.asarray(out[k]) for k in ("x", "y", "x_test", "y_test")}


def cache_path(args: dict) -> Path:
    key = hashlib.sha256(json.dumps(args, sort_keys=True).encode()).hexdigest()[:16]
    return store.data_dir() / "mnist1d" / f"{key}.npz"


def arrays(args: dict) -> dict[str, np.ndarray]:
    """The generated arrays, from the cache when they are there."""
    path = cache_path(args)
    if path.is_file():
        try:
            with np.load(path) as cached:
                return {k: cached[k] for k in cached.files}
        except (OSError, ValueError):  # a damaged cache is regenerated
            pass
    out = generate(args)
    try:
        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:  # a file object: np.savez would add .npz to a name
                np.savez(f, **out)

        store.atomic_write(path, write)
    except OSError:
        pass
    return out


def mnist1d(seed: int, num_samples: int, corr_noise_scale: float, iid_noise_scale: float, shear_scale: float,
            max_translation: int, scale_coeff: float, shuffle_seq: bool, final_seq_length: int,
            generation_seed: int) -> DataBundle:
    args = {**DEFAULTS, "num_samples": num_samples, "corr_noise_scale": corr_noise_scale,
            "iid_noise_scale": iid_noise_scale, "shear_scale": shear_scale, "max_translation": max_translation,
            "scale_coeff": scale_coeff, "shuffle_seq": shuffle_seq, "final_seq_length": final_seq_length,
            "seed": generation_seed}
    data = arrays(args)
    x, y = data["x"].astype(np.float64), data["y"].astype(np.int64)
    keep, val = carve_validation(len(x), len(x), seed)  # a tenth of the training signals
    mean, std = x[keep].mean(), x[keep].std() or 1.0
    split = lambda xs, ys: Split(torch.as_tensor((xs - mean) / std, dtype=torch.float32)[:, None],  # noqa: E731
                                 torch.as_tensor(ys, dtype=torch.long))
    return DataBundle(name="mnist1d", task="multiclass", train=split(x[keep], y[keep]), val=split(x[val], y[val]),
                      test=split(data["x_test"].astype(np.float64), data["y_test"].astype(np.int64)),
                      input_shape=(1, x.shape[1]), n_outputs=10)
