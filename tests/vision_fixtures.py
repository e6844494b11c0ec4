"""Small image datasets written in torchvision's exact on-disk formats (for tests; no download).

* MNIST / FashionMNIST: `<root>/<Class>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`, IDX
  files (magic 0x00000803 for uint8 images of 3 dimensions, 0x00000801 for labels; big-endian sizes).
* CIFAR-10: `<root>/cifar-10-batches-py/data_batch_1..5`, `test_batch`, `batches.meta`: pickled
  dicts with `data` (N, 3072) uint8 (the 1024 red, then green, then blue values of each row-major
  32x32 image), `labels` (list of int), `batch_label`, `filenames`; meta `label_names`.
* CIFAR-100: `<root>/cifar-100-python/train`, `test`, `meta` with `fine_labels`, `coarse_labels`
  and meta `fine_label_names`, `coarse_label_names`.

The keys are str, which is how torchvision (`pickle.load(f, encoding="latin1")`) sees the official
Python 2 pickles. Training images are darker than test images (pixels in [0, 200) vs [60, 256)),
so statistics computed on the wrong split are easy to tell apart.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np


def idx_bytes(array: np.ndarray) -> bytes:
    code = {1: 0x08}[array.dtype.itemsize]
    return bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape) + array.tobytes()


def images(rng: np.random.Generator, shape: tuple[int, ...], test: bool) -> np.ndarray:
    low, high = (60, 256) if test else (0, 200)
    return rng.integers(low, high, size=shape, dtype=np.uint8)


def write_mnist(root: Path, cls: str = "FashionMNIST", n_train: int = 300, n_test: int = 100, *, gz: bool = True,
                seed: int = 0) -> dict[str, np.ndarray]:
    """IDX files of uint8 28x28 images and labels 0..9; returns the arrays written."""
    rng = np.random.default_rng(seed)
    raw = root / cls / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    out = {}
    for prefix, n, test in (("train", n_train, False), ("t10k", n_test, True)):
        x = images(rng, (n, 28, 28), test)
        y = (np.arange(n) % 10).astype(np.uint8)
        rng.shuffle(y)
        out[f"x_{prefix}"], out[f"y_{prefix}"] = x, y
        for name, array in ((f"{prefix}-images-idx3-ubyte", x), (f"{prefix}-labels-idx1-ubyte", y)):
            data = idx_bytes(array)
            if gz:
                with gzip.open(raw / f"{name}.gz", "wb") as f:
                    f.write(data)
            else:
                (raw / name).write_bytes(data)
    return out


def _pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar10(root: Path, per_batch: int = 40, n_test: int = 60, seed: int = 0) -> dict[str, np.ndarray]:
    """Five training batches of `per_batch` images, a test batch and batches.meta; returns the
    (N, 3072) data and labels written (training batches concatenated in order)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    xs, ys = [], []
    for i in range(1, 7):
        test = i == 6
        n = n_test if test else per_batch
        x = images(rng, (n, 3072), test)
        y = [int(v) for v in rng.integers(0, 10, size=n)]
        name = "test_batch" if test else f"data_batch_{i}"
        _pickle(folder / name, {"batch_label": f"{'testing' if test else 'training'} batch {i} of 5",
                                "labels": y, "data": x, "filenames": [f"img_{i}_{j}.png" for j in range(n)]})
        if test:
            x_test, y_test = x, np.array(y)
        else:
            xs.append(x)
            ys += y
    _pickle(folder / "batches.meta", {"num_cases_per_batch": per_batch, "num_vis": 3072, "label_names": [
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]})
    return {"x_train": np.concatenate(xs), "y_train": np.array(ys), "x_test": x_test, "y_test": y_test}


def write_cifar100(root: Path, n_train: int = 200, n_test: int = 60, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, n, test in (("train", n_train, False), ("test", n_test, True)):
        x = images(rng, (n, 3072), test)
        fine = [int(v) for v in rng.integers(0, 100, size=n)]
        _pickle(folder / name, {"filenames": [f"{name}_{j}.png" for j in range(n)], "batch_label": f"{name} batch",
                                "fine_labels": fine, "coarse_labels": [v // 5 for v in fine], "data": x})
        out[f"x_{name}"], out[f"y_{name}"] = x, np.array(fine)
    _pickle(folder / "meta", {"fine_label_names": [f"fine{i}" for i in range(100)],
                              "coarse_label_names": [f"coarse{i}" for i in range(20)]})
    return out
