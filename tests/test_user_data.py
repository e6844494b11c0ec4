"""User data from local files: .npz / .csv / .parquet / IDX loaders, and their one-line errors."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pandas as pd
import pytest
import torch

from bench.data import DATASETS, load_dataset
from bench.data.files import FileDataError, load_file, read_idx
from bench.models import MODELS
from bench.spec import RunConfig, SpecError, parse
from bench.train import fit


def table(n: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3)) * [1.0, 10.0, 0.1] + [0.0, 5.0, -1.0]
    label = np.where(x[:, 0] > 0, "cat", "dog")
    return pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "label": label, "price": x @ [1.0, 0.1, 3.0]})


def write_idx(path, array: np.ndarray) -> None:
    codes = {np.dtype(np.uint8): 0x08, np.dtype(">f4"): 0x0D}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    data = header + array.tobytes()
    if str(path).endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


# --- loading ---------------------------------------------------------------------------------
def test_csv_classification_encodes_labels_and_standardizes_on_train(tmp_path):
    path = tmp_path / "pets.csv"
    table().to_csv(path, index=False)
    bundle = load_dataset("file_binary", path=str(path), target="label")
    assert bundle.task == "binary" and bundle.n_outputs == 1 and bundle.input_shape == (4,)  # a, b, c, price
    assert len(bundle.train) == 36 and len(bundle.val) == 12 and len(bundle.test) == 12
    assert set(bundle.train.y.tolist()) == {0, 1}  # 'cat' -> 0, 'dog' -> 1 (sorted)
    assert bundle.train.x.mean(0).abs().max() < 1e-5 and (bundle.train.x.std(0, unbiased=False) - 1).abs().max() < 1e-4
    multi = load_dataset("file_multiclass", path=str(path), target="label")
    assert multi.n_outputs == 2 and multi.task == "multiclass"


def test_parquet_regression_target_is_standardized_with_train_statistics(tmp_path):
    path = tmp_path / "houses.parquet"
    table(80).drop(columns=["label"]).to_parquet(path)
    bundle = load_dataset("file_regression", path=str(path), target="price")
    assert bundle.task == "regression" and bundle.input_shape == (3,) and bundle.train.y.shape == (48, 1)
    assert abs(bundle.train.y.mean().item()) < 1e-5
    assert bundle.train.y.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-4)


def test_npz_tabular_and_mnist_size_images_feed_the_cnn(tmp_path):
    rng = np.random.default_rng(0)
    tab = tmp_path / "tab.npz"
    np.savez(tab, X=rng.standard_normal((50, 6)), y=np.arange(50) % 5)
    bundle = load_file(str(tab), task="multiclass")
    assert bundle.input_shape == (6,) and bundle.n_outputs == 5
    images = tmp_path / "mnist.npz"
    np.savez(images, x=rng.integers(0, 256, (40, 28, 28)).astype(np.uint8), labels=np.arange(40) % 4)
    bundle = load_dataset("file_multiclass", path=str(images), target="labels", scale="minmax")
    assert bundle.input_shape == (1, 28, 28) and bundle.n_outputs == 4
    assert bundle.train.x.min() == 0 and bundle.train.x.max() == 1
    cnn = MODELS.get("cnn").load()(bundle, None, cnn_channels="4-8", residual=True, batch_norm=True)
    assert cnn(bundle.train.x[:3]).shape == (3, 4)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_images_load_like_mnist(tmp_path, suffix):
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (30, 28, 28)).astype(np.uint8)
    labels = (np.arange(30) % 3).astype(np.uint8)
    write_idx(tmp_path / f"img-idx3-ubyte{suffix}", pixels)
    write_idx(tmp_path / f"lbl-idx1-ubyte{suffix}", labels)
    assert np.array_equal(read_idx(tmp_path / f"img-idx3-ubyte{suffix}"), pixels)
    bundle = load_dataset("idx_images", images=str(tmp_path / f"img-idx3-ubyte{suffix}"),
                          labels=str(tmp_path / f"lbl-idx1-ubyte{suffix}"))
    assert bundle.input_shape == (1, 28, 28) and bundle.n_outputs == 3 and len(bundle.train) == 18
    assert torch.equal(torch.sort(torch.cat([bundle.train.y, bundle.val.y, bundle.test.y])).values,
                       torch.sort(torch.as_tensor(labels, dtype=torch.long)).values)


def test_fit_and_study_file_on_a_csv(tmp_path):
    path = tmp_path / "pets.csv"
    table(200).to_csv(path, index=False)
    config = RunConfig.build(model="mlp", dataset="file_binary", optimizer="adam",
                             data_args={"path": str(path), "target": "label"},
                             params={"hidden_sizes": "16", "lr": 0.01},
                             epochs=10, objective="val/acc", evaluate_test=True)
    result = fit(config)
    assert result.status == "completed" and result.final["test/acc"] > 0.8  # label = sign of column a
    spec = parse({"name": "csv", "model": "mlp", "dataset": "file_binary",
                  "data_args": {"path": str(path), "target": "label"}, "arms": [{"optimizer": "adam"}]})
    assert spec.objective_metric() == "val/acc"
    with pytest.raises(SpecError, match="data_args: file_binary has no argument|has no argument 'column'"):
        parse({"name": "csv", "model": "mlp", "dataset": "file_binary",
               "data_args": {"path": str(path), "column": "label"}, "arms": [{"optimizer": "adam"}]})
    with pytest.raises(SpecError, match="cannot train on binary data 'file_binary'"):
        parse({"name": "csv", "model": "sigmoid_net", "dataset": "file_binary",
               "data_args": {"path": str(path)}, "arms": [{"optimizer": "adam"}]})


# --- errors: one line, naming the file and the problem ------------------------------------------
def error_of(fn) -> str:
    with pytest.raises(FileDataError) as err:
        fn()
    message = str(err.value)
    assert "\n" not in message
    return message


def test_missing_path_and_file_and_unsupported_type(tmp_path):
    assert error_of(lambda: load_dataset("file_multiclass")) == "file_multiclass: no file given: set data_args.path"
    missing = tmp_path / "nope.csv"
    assert error_of(lambda: load_file(str(missing))) == f"{missing}: no such file"
    text = tmp_path / "data.txt"
    text.write_text("1,2\n")
    assert "unsupported file type '.txt'" in error_of(lambda: load_file(str(text)))
    assert error_of(lambda: load_dataset("idx_images")) == (
        "idx_images: set both data_args.images and data_args.labels")


def test_missing_column_and_npz_keys(tmp_path):
    path = tmp_path / "pets.csv"
    table().to_csv(path, index=False)
    assert error_of(lambda: load_file(str(path), target="species")) == (
        f"{path}: no column 'species' (columns: a, b, c, label, price)")
    npz = tmp_path / "arrays.npz"
    np.savez(npz, features=np.zeros((20, 2)), y=np.zeros(20))
    assert error_of(lambda: load_file(str(npz))) == (
        f"{npz}: no array 'X' (or 'x') for the features (arrays: features, y)")
    np.savez(npz, X=np.zeros((20, 2)), label=np.zeros(20))
    assert error_of(lambda: load_file(str(npz))) == f"{npz}: no array 'y' for the target (arrays: X, label)"


def test_mismatched_shapes_and_bad_values(tmp_path):
    npz = tmp_path / "bad.npz"
    np.savez(npz, X=np.zeros((20, 2)), y=np.arange(19) % 2)
    assert error_of(lambda: load_file(str(npz))) == f"{npz}: features have 20 rows but the target has 19"
    np.savez(npz, X=np.zeros((20, 2, 2, 2, 2)), y=np.arange(20) % 2)
    assert "X must be (N, features), (N, H, W) or (N, C, H, W), got shape (20, 2, 2, 2, 2)" in error_of(
        lambda: load_file(str(npz)))
    x = np.zeros((20, 2))
    x[3, 1] = np.nan
    np.savez(npz, X=x, y=np.arange(20) % 2)
    assert error_of(lambda: load_file(str(npz))) == f"{npz}: features contain NaN or infinite values"
    np.savez(npz, X=np.zeros((20, 2)), y=np.arange(20) % 3)
    assert error_of(lambda: load_file(str(npz), task="binary")) == (
        f"{npz}: binary task needs exactly 2 distinct labels, found 3")
    csv = tmp_path / "text.csv"
    frame = table()
    frame["colour"] = "red"
    frame.to_csv(csv, index=False)
    assert error_of(lambda: load_file(str(csv), target="price", task="regression")) == (
        f"{csv}: feature column 'label' is not numeric")
    frame.drop(columns=["label"]).to_csv(csv, index=False)
    assert error_of(lambda: load_file(str(csv), target="colour", task="regression")) == (
        f"{csv}: regression target must be numeric, got dtype object")


def test_bad_idx_files(tmp_path):
    bad = tmp_path / "bad-idx"
    bad.write_bytes(b"\x01\x02\x08\x01" + struct.pack(">i", 3) + b"abc")
    assert error_of(lambda: read_idx(bad)) == f"{bad}: not an IDX file (bad magic number)"
    short = tmp_path / "short-idx"
    short.write_bytes(bytes([0, 0, 0x08, 3]) + struct.pack(">3i", 2, 28, 28) + b"\x00" * 100)
    assert error_of(lambda: read_idx(short)) == (
        f"{short}: IDX header declares shape (2, 28, 28) (1568 bytes) but holds 100")


def test_file_datasets_are_registered_per_task():
    for task in ("multiclass", "binary", "regression"):
        entry = DATASETS.get(f"file_{task}")
        assert entry.task == task
        assert [hp.name for hp in entry.args] == ["path", "target", "scale"]
