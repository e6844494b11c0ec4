"""Image datasets from torchvision's on-disk layout: MNIST, Fashion-MNIST, CIFAR-10, CIFAR-100.

Nothing is downloaded here: the files must be in the data folder (bench/data/store.py;
`bench data fetch NAME` downloads them with torchvision on a machine with internet).

Splits: test = the official test set; validation = a seeded random carve of `val_size` images
(default 5,000; at most a tenth of the training files, so small local copies still split) from the
official training set; train = the rest (MNIST and Fashion-MNIST 55,000 / 5,000 / 10,000, CIFAR
45,000 / 5,000 / 10,000). Pixels are scaled to [0, 1] (value / 255) and then standardized per
channel with the mean and standard deviation of the train split's pixels (never val or test), and
stored as float32 (N, C, H, W). The whole set is one in-memory bundle that `fit` moves to the
training device once (CIFAR-10: ~0.7 GB as float32).

Reading: the files are read here, in the formats torchvision reads (IDX for MNIST and
Fashion-MNIST, plain or gzipped; for CIFAR one pickled dict per batch file with `data` (N, 3072)
uint8 and `labels`, or `fine_labels` for CIFAR-100), not through torchvision's dataset classes:

* its CIFAR classes refuse to load unless every file's md5 equals the official file's
  (`_check_integrity`, also with download=False), so no test could feed them anything but the real
  170 MB; its MNIST classes need the uncompressed IDX files;
* the torchvision 0.28.0 wheel on PyPI is a CUDA build: next to the CPU torch wheel (what a CPU
  machine installs) `import torchvision` fails (`RuntimeError: operator torchvision::nms does not
  exist`), so a CPU machine could not load any data through it.

Reading the formats here keeps one code path for users' files and the tests' small fixture files,
and loading needs no torchvision at all. torchvision does what only it should: `bench data fetch`
downloads with its mirrors and md5 checks (download=True), into this same layout.
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import torch

from bench.data import store
from bench.data.augment import CropFlip
from bench.data.bundle import DataBundle, Split
from bench.data.files import FileDataError, read_idx

CIFAR10_DIR, CIFAR100_DIR = "cifar-10-batches-py", "cifar-100-python"
CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))


def carve_validation(n_train: int, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, val rows) of the official training set: a seeded permutation, the first
    min(val_size, n_train // 10) rows of it are validation. Both sorted (file order kept)."""
    n_val = min(val_size, n_train // 10)
    order = np.random.default_rng(seed).permutation(n_train)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and population std of uint8 (N, C, H, W) images scaled to [0, 1], exact
    (from each channel's 256-bin histogram: no float copy of the whole set)."""
    values = np.arange(256, dtype=np.float64) / 255.0
    means, stds = [], []
    for c in range(images.shape[1]):
        counts = np.bincount(images[:, c].ravel(), minlength=256).astype(np.float64)
        mean = counts @ values / counts.sum()
        means.append(mean)
        stds.append(max(np.sqrt(counts @ (values - mean) ** 2 / counts.sum()), 1e-12))
    return np.array(means), np.array(stds)


def normalize(images: np.ndarray, mean: np.ndarray, std: np.ndarray) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 (value / 255 - mean_c) / std_c."""
    x = torch.from_numpy(images.astype(np.float32)).div_(255.0)  # a copy: IDX arrays are read-only buffers
    shape = (1, -1) + (1,) * (images.ndim - 2)
    return x.sub_(torch.as_tensor(mean, dtype=torch.float32).view(shape)).div_(
        torch.as_tensor(std, dtype=torch.float32).view(shape))


def image_bundle(name: str, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], *,
                 seed: int, val_size: int, n_outputs: int, augment: bool = False) -> DataBundle:
    """uint8 (N, C, H, W) images + labels of the official splits -> a bundle standardized per channel
    with the train split's statistics."""
    x, y = train
    keep, val = carve_validation(len(x), val_size, seed)
    x_train = x[keep]
    mean, std = channel_stats(x_train)
    xs = [normalize(a, mean, std) for a in (x_train, x[val], test[0])]
    labels = [torch.as_tensor(np.asarray(a), dtype=torch.long) for a in (y[keep], y[val], test[1])]
    # the padded border is a black pixel (0 before scaling) in normalized units, as with
    # torchvision's RandomCrop(padding=4) ahead of Normalize
    crop = CropFlip(padding=4, flip=True, fill=tuple(float(v) for v in -mean / std)) if augment else None
    return DataBundle(name=name, task="multiclass", train=Split(xs[0], labels[0]), val=Split(xs[1], labels[1]),
                      test=Split(xs[2], labels[2]), input_shape=tuple(x.shape[1:]), n_outputs=n_outputs,
                      augment=crop)


# --- MNIST and Fashion-MNIST: IDX files (torchvision's <Class>/raw/ layout) ----------------------
def _idx(cls_name: str, root: Path) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    raw = root / cls_name / "raw"
    out = []
    for prefix in ("train", "t10k"):
        found = [store.present(raw / f"{prefix}-{kind}-ubyte") for kind in ("images-idx3", "labels-idx1")]
        if None in found:
            missing = [f"{prefix}-{kind}-ubyte" for kind, f in zip(("images-idx3", "labels-idx1"), found) if f is None]
            raise FileDataError(f"{cls_name} under {root}: no {', '.join(missing)} in {raw}")
        x, y = read_idx(found[0]), read_idx(found[1])
        if x.ndim != 3 or x.dtype != np.uint8 or y.ndim != 1 or len(x) != len(y):
            raise FileDataError(f"{found[0]}: expected uint8 (N, H, W) images and N labels, got {x.shape} {x.dtype} "
                                f"and {y.shape}")
        out.append((x[:, None], y.astype(np.int64)))
    return tuple(out)


def mnist(seed: int, val_size: int) -> DataBundle:
    train, test = _idx("MNIST", store.data_dir())
    return image_bundle("mnist", train, test, seed=seed, val_size=val_size, n_outputs=10)


def fashion_mnist(seed: int, val_size: int) -> DataBundle:
    train, test = _idx("FashionMNIST", store.data_dir())
    return image_bundle("fashion_mnist", train, test, seed=seed, val_size=val_size, n_outputs=10)


# --- CIFAR: the pickled batches, read as torchvision reads them -------------------------------------
def read_cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """One pickled CIFAR file -> uint8 (N, 3, 32, 32) images and int64 labels. Keys may be str (how
    torchvision's `encoding="latin1"` reads the official Python 2 pickles) or bytes."""
    found = store.present(path)
    if found is None:
        raise FileDataError(f"{path}: no such file")
    with (gzip.open if found.suffix == ".gz" else open)(found, "rb") as f:
        try:
            entry = pickle.load(f, encoding="latin1")
        except Exception as err:
            raise FileDataError(f"{found}: not a pickled CIFAR batch ({type(err).__name__}: {err})") from None
    if not isinstance(entry, dict):
        raise FileDataError(f"{found}: not a pickled CIFAR batch (a {type(entry).__name__}, not a dict)")
    entry = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}
    if "data" not in entry or label_key not in entry:
        raise FileDataError(f"{found}: no 'data' and {label_key!r} entries (keys: {', '.join(map(str, entry))})")
    data, labels = np.asarray(entry["data"], dtype=np.uint8), np.asarray(entry[label_key], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise FileDataError(f"{found}: expected data (N, 3072) with N labels, got {data.shape} and {labels.shape}")
    return data.reshape(-1, 3, 32, 32), labels  # rows are R(1024) G(1024) B(1024), row-major 32x32


def _cifar(folder: str, train_files: tuple[str, ...], test_file: str, label_key: str):
    root = store.data_dir() / folder
    parts = [read_cifar_batch(root / f, label_key) for f in train_files]
    train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    return train, read_cifar_batch(root / test_file, label_key)


def cifar10(seed: int, val_size: int, augment: bool) -> DataBundle:
    train, test = _cifar(CIFAR10_DIR, CIFAR10_TRAIN, "test_batch", "labels")
    return image_bundle("cifar10", train, test, seed=seed, val_size=val_size, n_outputs=10, augment=augment)


def cifar100(seed: int, val_size: int, augment: bool) -> DataBundle:
    train, test = _cifar(CIFAR100_DIR, ("train",), "test", "fine_labels")
    return image_bundle("cifar100", train, test, seed=seed, val_size=val_size, n_outputs=100, augment=augment)
