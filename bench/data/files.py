"""User data from local files (never downloaded): .npz, .csv, .parquet, and IDX (MNIST format).

Study files name the file through `data_args`, e.g.

    dataset = "file_multiclass"
    data_args = { path = "data/mnist.npz" }                     # arrays X (N, ...) and y (N,)
    data_args = { path = "data/houses.csv", target = "price" }  # dataset = "file_regression"

A dataset's task is registry metadata (the study-file schema checks it against the model before
anything runs), so there is one registered name per task: `file_multiclass`, `file_binary`,
`file_regression`; they share the loader `load_file`. `idx_images` reads an images/labels pair of
IDX files (optionally .gz) such as MNIST's `train-images-idx3-ubyte`.

Layout rules: .npz holds the features under `X` (or `x`) and the target under the `target` key
(default `y`); (N, H, W) arrays become (N, 1, H, W) images, (N, C, H, W) stay as they are.
.csv/.parquet: the `target` column is y, every other column a numeric feature.
Classification labels (numbers or strings) are encoded to 0..K-1 in sorted order; binary needs
exactly two distinct labels. Every problem raises FileDataError with a one-line message.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch

from bench.data.bundle import DataBundle
from bench.data.splits import bundle_from_indices, scale_features, split_indices, standardize_targets

FILE_SUFFIXES = (".npz", ".csv", ".parquet")


class FileDataError(ValueError):
    """A problem with a user data file; str() is a one-line message naming the file."""


def _read_table(path: Path, target: str) -> tuple[np.ndarray, np.ndarray]:
    import pandas as pd

    try:
        frame = pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
    except Exception as err:  # parser errors are multi-line: keep the first line
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise FileDataError(f"{path}: cannot read: {first}") from None
    if target not in frame.columns:
        raise FileDataError(f"{path}: no column {target!r} (columns: {', '.join(map(str, frame.columns))})")
    features = frame.drop(columns=[target])
    if features.shape[1] == 0:
        raise FileDataError(f"{path}: no feature columns besides the target {target!r}")
    bad = [str(c) for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    if bad:
        raise FileDataError(f"{path}: feature column {bad[0]!r} is not numeric")
    return features.to_numpy(dtype=np.float64), frame[target].to_numpy()


def _read_npz(path: Path, target: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        arrays = np.load(path, allow_pickle=False)
    except Exception as err:
        raise FileDataError(f"{path}: cannot read: {str(err).strip().splitlines()[0]}") from None
    with arrays:
        keys = list(arrays.files)
        x_key = next((k for k in ("X", "x") if k in keys), None)
        if x_key is None:
            raise FileDataError(f"{path}: no array 'X' (or 'x') for the features (arrays: {', '.join(keys)})")
        if target not in keys:
            raise FileDataError(f"{path}: no array {target!r} for the target (arrays: {', '.join(keys)})")
        x, y = arrays[x_key], arrays[target]
    if x.ndim == 3:  # (N, H, W) grayscale images -> (N, 1, H, W)
        x = x[:, None]
    if x.ndim not in (2, 4):
        raise FileDataError(f"{path}: X must be (N, features), (N, H, W) or (N, C, H, W), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number):
        raise FileDataError(f"{path}: X must be numeric, got dtype {x.dtype}")
    return x.astype(np.float64), y


def _encode_labels(path: Path, y: np.ndarray, task: str) -> tuple[np.ndarray, int]:
    if task == "regression":
        try:
            y = y.astype(np.float64)
        except (TypeError, ValueError):
            raise FileDataError(f"{path}: regression target must be numeric, got dtype {y.dtype}") from None
        if y.ndim > 2:
            raise FileDataError(f"{path}: regression target must be (N,) or (N, targets), got shape {y.shape}")
        return y, 1 if y.ndim == 1 else y.shape[1]
    if y.ndim != 1:
        raise FileDataError(f"{path}: class labels must be one per example (N,), got shape {y.shape}")
    classes, codes = np.unique(y, return_inverse=True)
    if task == "binary" and len(classes) != 2:
        raise FileDataError(f"{path}: binary task needs exactly 2 distinct labels, found {len(classes)}")
    if len(classes) < 2:
        raise FileDataError(f"{path}: classification needs at least 2 distinct labels, found {len(classes)}")
    return codes, 1 if task == "binary" else len(classes)


def _bundle(name: str, task: str, path: Path, x: np.ndarray, y: np.ndarray, seed: int, scale: str) -> DataBundle:
    if len(x) != len(y):
        raise FileDataError(f"{path}: features have {len(x)} rows but the target has {len(y)}")
    if len(x) < 10:
        raise FileDataError(f"{path}: {len(x)} examples is too few for a train/val/test split (need >= 10)")
    if not np.isfinite(x).all():
        raise FileDataError(f"{path}: features contain NaN or infinite values")
    y, n_outputs = _encode_labels(path, y, task)
    if task == "regression" and not np.isfinite(y).all():
        raise FileDataError(f"{path}: target contains NaN or infinite values")
    try:
        parts = split_indices(len(x), seed=seed, stratify=y if task != "regression" else None)
    except ValueError as err:  # e.g. a class with a single example cannot be stratified
        raise FileDataError(f"{path}: cannot split: {str(err).splitlines()[0]}") from None
    xt = torch.as_tensor(scale_features(x, parts[0], scale), dtype=torch.float32)
    if task == "regression":
        yt = torch.as_tensor(y, dtype=torch.float32)
        yt = yt.unsqueeze(-1) if yt.ndim == 1 else yt
        return standardize_targets(bundle_from_indices(name, task, xt, yt, parts, n_outputs))
    return bundle_from_indices(name, task, xt, torch.as_tensor(y, dtype=torch.long), parts, n_outputs)


def load_file(path: str, *, target: str = "y", task: str = "multiclass", seed: int = 0,
              scale: str = "standardize", name: str = "file") -> DataBundle:
    """Load a .npz/.csv/.parquet file into a DataBundle (seeded 60/20/20 split, train-only scaling).

    Args:
        path: the file; its suffix picks the reader.
        target: column (.csv/.parquet) or array key (.npz) holding the target.
        task: multiclass, binary or regression (regression targets are standardized).
        seed: the split seed (the study's data_seed).
        scale: feature scaling, "standardize" (per feature) or "minmax" (global [0, 1]).
    """
    if not path:
        raise FileDataError(f"{name}: no file given: set data_args.path")
    file = Path(path).expanduser()
    if file.suffix not in FILE_SUFFIXES:
        raise FileDataError(f"{file}: unsupported file type {file.suffix or '(none)'!r} "
                            f"(use {', '.join(FILE_SUFFIXES)}, or idx_images for IDX files)")
    if not file.is_file():
        raise FileDataError(f"{file}: no such file")
    x, y = _read_npz(file, target) if file.suffix == ".npz" else _read_table(file, target)
    return _bundle(name, task, file, x, y, seed, scale)


def file_multiclass(seed: int, path: str, target: str, scale: str) -> DataBundle:
    return load_file(path, target=target, task="multiclass", seed=seed, scale=scale, name="file_multiclass")


def file_binary(seed: int, path: str, target: str, scale: str) -> DataBundle:
    return load_file(path, target=target, task="binary", seed=seed, scale=scale, name="file_binary")


def file_regression(seed: int, path: str, target: str, scale: str) -> DataBundle:
    return load_file(path, target=target, task="regression", seed=seed, scale=scale, name="file_regression")


# IDX (LeCun's MNIST format): magic = 0, 0, dtype code, number of dimensions; then big-endian int32 sizes.
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (plain or .gz) into an array of its declared shape."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileDataError(f"{file}: no such file")
    raw = (gzip.open if file.suffix == ".gz" else open)(file, "rb").read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise FileDataError(f"{file}: not an IDX file (bad magic number)")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise FileDataError(f"{file}: truncated IDX header")
    shape = struct.unpack(f">{ndim}i", raw[4 : 4 + 4 * ndim])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    body = raw[4 + 4 * ndim :]
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(body) != expected:
        raise FileDataError(f"{file}: IDX header declares shape {shape} ({expected} bytes) but holds {len(body)}")
    return np.frombuffer(body, dtype=dtype).reshape(shape)


def idx_images(seed: int, images: str, labels: str, scale: str) -> DataBundle:
    if not images or not labels:
        raise FileDataError("idx_images: set both data_args.images and data_args.labels")
    x, y = read_idx(images), read_idx(labels)
    if x.ndim != 3:
        raise FileDataError(f"{images}: expected (N, H, W) images, got shape {x.shape}")
    return _bundle("idx_images", "multiclass", Path(images), x[:, None].astype(np.float64), y, seed, scale)
