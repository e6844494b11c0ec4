"""Datasets beyond scikit-learn's: MNIST-1D (generated), and MNIST / Fashion-MNIST / CIFAR-10 /
CIFAR-100 in torchvision's on-disk layout (written here as small fixture files), the data folder,
the missing-files refusal, and the CIFAR crop + flip augmentation."""

from __future__ import annotations

import random
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from bench.cli import main
from bench.data import DATASETS, load_dataset
from bench.data import mnist1d as mnist1d_mod
from bench.data.augment import CropFlip, crop_flip
from bench.data.store import DATA_DIR_ENV, data_dir, missing_files
from bench.data.vision import carve_validation
from bench.spec import RunConfig
from bench.train import fit
from tests.conftest import STUDIES
from tests.vision_fixtures import write_cifar10, write_cifar100, write_mnist

SMALL_1D = {"num_samples": 500}  # 400 train (360 + 40 val) / 100 test: generated in ~0.5 s


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    """An empty data folder for this test ($BENCH_DATA_DIR restored afterwards, also when a command
    under test set it through --data-dir)."""
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv(DATA_DIR_ENV, str(root))
    return root


def expected(x_uint8: np.ndarray, train_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of the training rows' pixels / 255 (the documented scaling)."""
    x = x_uint8[train_rows].astype(np.float64) / 255
    axes = (0, *range(2, x.ndim))
    return x.mean(axes, keepdims=True), x.std(axes, keepdims=True)


# --- the data folder -----------------------------------------------------------------------------
def test_data_folder_defaults_to_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert data_dir() == tmp_path / "cache" / "bench" / "data"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_dir() == tmp_path / "home" / ".cache" / "bench" / "data"
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "mine"))
    assert data_dir() == tmp_path / "mine"


# torchvision 0.28's layout (MNIST.resources without .gz, CIFAR10.base_folder / train_list / test_list /
# meta["filename"], CIFAR100 likewise), as its download leaves the files.
TORCHVISION_LAYOUT = {
    "mnist": {f"MNIST/raw/{f}" for f in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")},
    "fashion_mnist": {f"FashionMNIST/raw/{f}" for f in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                                        "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")},
    "cifar10": {f"cifar-10-batches-py/{f}" for f in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4",
                                                     "data_batch_5", "test_batch", "batches.meta")},
    "cifar100": {"cifar-100-python/train", "cifar-100-python/test", "cifar-100-python/meta"},
}


def test_declared_files_are_torchvisions_layout():
    for name, files in TORCHVISION_LAYOUT.items():
        assert set(DATASETS.get(name).files) == files, name
    try:  # where torchvision imports (it does not next to a CPU torch wheel), compare with its own classes
        import torchvision.datasets as tvd
    except Exception:
        return
    for name, cls in (("mnist", tvd.MNIST), ("fashion_mnist", tvd.FashionMNIST)):
        assert TORCHVISION_LAYOUT[name] == {f"{cls.__name__}/raw/{url.removesuffix('.gz')}" for url, _ in cls.resources}
    for name, cls in (("cifar10", tvd.CIFAR10), ("cifar100", tvd.CIFAR100)):
        names = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
        assert TORCHVISION_LAYOUT[name] == {f"{cls.base_folder}/{f}" for f in names}


# --- MNIST and Fashion-MNIST (IDX files) -----------------------------------------------------------
@pytest.mark.parametrize(("name", "cls", "gz"), [("fashion_mnist", "FashionMNIST", True), ("mnist", "MNIST", False)])
def test_mnist_like_sets_load_as_written_and_standardized_on_train(data_root, name, cls, gz):
    written = write_mnist(data_root, cls, n_train=300, n_test=100, gz=gz)
    bundle = load_dataset(name, seed=0)
    keep, val = carve_validation(300, 5000, 0)
    assert len(val) == 30 and len(keep) == 270  # a tenth of a small training set; 5,000 of the real 60,000
    assert carve_validation(60000, 5000, 0)[1].shape == (5000,)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (270, 30, 100)
    assert bundle.input_shape == (1, 28, 28) and bundle.train.x.dtype == torch.float32 and bundle.n_outputs == 10
    assert bundle.augment is None
    mean, std = expected(written["x_train"][:, None], keep)
    for split, x, y in ((bundle.train, written["x_train"][keep], written["y_train"][keep]),
                        (bundle.val, written["x_train"][val], written["y_train"][val]),
                        (bundle.test, written["x_t10k"], written["y_t10k"])):
        want = (x[:, None].astype(np.float64) / 255 - mean) / std
        np.testing.assert_allclose(split.x.numpy(), want, atol=2e-5)
        np.testing.assert_array_equal(split.y.numpy(), y)
    assert abs(bundle.train.x.mean()) < 1e-5 and bundle.train.x.std(unbiased=False) == pytest.approx(1, abs=1e-4)
    assert bundle.test.x.mean() > 0.5  # the brighter test files keep their offset: no test statistics used
    assert sorted(p.name for p in (data_root / cls / "raw").iterdir()) == sorted(  # read where they are, as they are
        f"{f.split('/')[-1]}{'.gz' if gz else ''}" for f in DATASETS.get(name).files)


def test_val_carve_is_seeded_and_test_is_the_official_split(data_root):
    write_mnist(data_root, "FashionMNIST", n_train=300, n_test=50)
    a, b, c = (load_dataset("fashion_mnist", seed=s) for s in (0, 0, 1))
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.val.y, b.val.y)
    assert not torch.equal(a.val.x, c.val.x)  # another data seed, another carve
    assert torch.equal(a.test.y, c.test.y)
    assert len(load_dataset("fashion_mnist", seed=0, val_size=12).val) == 12


# --- CIFAR ---------------------------------------------------------------------------------------
def test_cifar10_batches_load_as_written(data_root):
    written = write_cifar10(data_root, per_batch=40, n_test=60)
    bundle = load_dataset("cifar10", seed=3)
    keep, val = carve_validation(200, 5000, 3)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (180, 20, 60)
    assert bundle.input_shape == (3, 32, 32) and bundle.n_outputs == 10
    images = written["x_train"].reshape(-1, 3, 32, 32)
    mean, std = expected(images, keep)
    np.testing.assert_allclose(bundle.train.x.numpy(), (images[keep] / 255 - mean) / std, atol=2e-5)
    np.testing.assert_array_equal(bundle.val.y.numpy(), written["y_train"][val])
    test = written["x_test"].reshape(-1, 3, 32, 32)
    np.testing.assert_allclose(bundle.test.x.numpy(), (test / 255 - mean) / std, atol=2e-5)
    # channel-major rows: value 1024 of a row is the green pixel (0, 0)
    assert bundle.test.x[0, 1, 0, 0].item() == pytest.approx((written["x_test"][0, 1024] / 255 - mean[0, 1, 0, 0])
                                                             / std[0, 1, 0, 0], abs=1e-5)
    x = bundle.train.x
    assert x.mean((0, 2, 3)).abs().max() < 1e-5 and ((x.std((0, 2, 3), unbiased=False) - 1).abs() < 1e-4).all()
    assert (bundle.test.x.mean((0, 2, 3)) > 0.5).all()
    crop = bundle.augment
    assert isinstance(crop, CropFlip) and crop.padding == 4 and crop.flip
    assert crop.fill == pytest.approx(tuple((-mean / std).flatten()), abs=1e-6)  # a black pixel, normalized
    assert load_dataset("cifar10", seed=3, augment=False).augment is None


def test_cifar100_uses_fine_labels(data_root):
    written = write_cifar100(data_root, n_train=200, n_test=60)
    bundle = load_dataset("cifar100", seed=0)
    keep, _ = carve_validation(200, 5000, 0)
    assert bundle.n_outputs == 100 and bundle.input_shape == (3, 32, 32) and len(bundle.test) == 60
    np.testing.assert_array_equal(bundle.train.y.numpy(), written["y_train"][keep])
    np.testing.assert_array_equal(bundle.test.y.numpy(), written["y_test"])
    assert bundle.augment is not None


def test_a_broken_cifar_file_is_a_one_line_error(data_root):
    write_cifar10(data_root, per_batch=10, n_test=10)
    (data_root / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match=r"data_batch_3: not a pickled CIFAR batch"):
        load_dataset("cifar10")


def test_bundle_to_device_keeps_the_augmentation():
    x = torch.rand(4, 3, 32, 32)
    from bench.data.bundle import DataBundle, Split

    bundle = DataBundle("b", "multiclass", Split(x, torch.arange(4)), Split(x, torch.arange(4)),
                        Split(x, torch.arange(4)), (3, 32, 32), 10, augment=CropFlip())
    moved = bundle.to("cpu", torch.float64)
    assert moved.augment == CropFlip() and moved.train.x.dtype == torch.float64 and moved.train.x.shape == x.shape


# --- missing files: refused before anything is written --------------------------------------------
def test_missing_files_stop_run_and_train_with_one_line_and_nothing_written(stores, data_root, capsys):
    code = stores.run("run", str(STUDIES / "fashion-mnist.toml"), "--quick", "--quiet", "--data-dir", str(data_root))
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    raw = data_root / "FashionMNIST" / "raw"
    assert err.startswith(f"bench run: fashion_mnist: files missing under {raw} (train-images-idx3-ubyte, "
                          "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte")
    assert "`bench data fetch fashion_mnist`" in err
    assert not (stores.root / "mlflow.db").exists() and not (stores.root / "optuna.journal").exists()
    assert not stores.results.exists()

    write_cifar10(data_root, per_batch=5, n_test=5)
    (data_root / "cifar-10-batches-py" / "test_batch").unlink()
    assert main(["train", "--model", "resnet", "--dataset", "cifar10", "--optimizer", "adam",
                 "--tracking-uri", stores.tracking_uri, "--data-dir", str(data_root)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"bench train: cifar10: files missing under {data_root / 'cifar-10-batches-py'} (test_batch; "
                   f"gzipped copies also do): run `bench data fetch cifar10` on a machine with internet, or copy "
                   f"them there (data folder: --data-dir, else ${DATA_DIR_ENV}; now {data_root})")
    assert not (stores.root / "mlflow.db").exists()


def test_gzipped_copies_count_as_present(data_root):
    write_mnist(data_root, "MNIST", n_train=20, n_test=10, gz=True)
    assert missing_files(DATASETS.get("mnist").files, data_root) == []
    assert len(missing_files(DATASETS.get("fashion_mnist").files, data_root)) == 4


# --- bench data ----------------------------------------------------------------------------------
def test_data_fetch_downloads_with_torchvision_and_generates_mnist1d(data_root, monkeypatch, capsys):
    import types

    calls = []

    def cifar10(root, **kw):
        calls.append((root, kw))

    def mnist(root, **kw):
        raise OSError("no route to host")

    # torchvision's dataset classes as `bench data fetch` calls them: the download itself cannot be tested
    # offline (and the torchvision wheel does not import beside the CPU torch), so these stand in for them
    fake = types.SimpleNamespace(CIFAR10=cifar10, MNIST=mnist)
    monkeypatch.setitem(sys.modules, "torchvision", types.ModuleType("torchvision"))
    monkeypatch.setitem(sys.modules, "torchvision.datasets", fake)
    other = data_root / "other"
    assert main(["data", "fetch", "cifar10", "--data-dir", str(other)]) == 0
    assert calls == [(str(other), {"download": True, "train": True}), (str(other), {"download": True, "train": False})]
    assert capsys.readouterr().out.strip() == f"cifar10: files in {other}"
    assert main(["data", "fetch", "nosuch"]) == 2
    assert "unknown 'nosuch'" in capsys.readouterr().err
    assert main(["data", "fetch", "mnist"]) == 1
    assert capsys.readouterr().err.strip() == "bench data fetch mnist: OSError: no route to host"
    monkeypatch.setitem(sys.modules, "torchvision.datasets", None)  # not importable
    assert main(["data", "fetch", "mnist"]) == 2
    assert "fetching needs a torchvision that imports with this torch" in capsys.readouterr().err
    assert main(["data", "fetch", "mnist1d", "--data-dir", str(data_root)]) == 0
    assert len(list(data_root.glob("mnist1d/*.npz"))) == 1
    assert main(["data", "status", "--data-dir", str(data_root)]) == 0
    out = capsys.readouterr().out
    assert f"data folder: {data_root}" in out and "  mnist          4 of 4 files missing" in out


# --- MNIST-1D ------------------------------------------------------------------------------------
def test_mnist1d_defaults_are_the_original_set_and_split(data_root):
    from mnist1d.data import get_dataset_args

    original = get_dataset_args(as_dict=True)
    declared = {hp.name: hp.default for hp in DATASETS.get("mnist1d").args}
    for key in ("num_samples", "corr_noise_scale", "iid_noise_scale", "shear_scale", "max_translation",
                "scale_coeff", "shuffle_seq", "final_seq_length"):
        assert declared[key] == original[key], key
    assert declared["generation_seed"] == original["seed"] == 42 and original["train_split"] == 0.8
    bundle = load_dataset("mnist1d")
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (3600, 400, 1000)
    assert bundle.input_shape == (1, 40) and bundle.train.x.shape == (3600, 1, 40) and bundle.n_outputs == 10
    assert bundle.augment is None
    assert list(data_root.glob("mnist1d/*.npz"))  # cached


def test_mnist1d_values_split_and_standardization(data_root):
    from mnist1d.data import get_dataset_args, make_dataset
    from mnist1d.utils import ObjectView

    state = np.random.get_state()[1].copy(), random.getstate()
    bundle = load_dataset("mnist1d", seed=0, **SMALL_1D)
    assert np.array_equal(np.random.get_state()[1], state[0]) and random.getstate() == state[1]  # globals untouched
    original = make_dataset(ObjectView({**get_dataset_args(as_dict=True), "num_samples": 500}))
    keep, val = carve_validation(400, 400, 0)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (360, 40, 100)
    mean, std = original["x"][keep].mean(), original["x"][keep].std()
    np.testing.assert_allclose(bundle.train.x[:, 0].numpy(), (original["x"][keep] - mean) / std, atol=1e-5)
    np.testing.assert_allclose(bundle.test.x[:, 0].numpy(), (original["x_test"] - mean) / std, atol=1e-5)
    np.testing.assert_array_equal(bundle.val.y.numpy(), original["y"][val])
    assert abs(bundle.train.x.mean()) < 1e-6 and bundle.train.x.std(unbiased=False) == pytest.approx(1, abs=1e-5)
    assert abs(bundle.val.x.mean()) > 1e-4  # standardized with the train split's statistics, not its own


def test_mnist1d_seeds_and_cache(data_root, monkeypatch):
    a, b = load_dataset("mnist1d", seed=0, **SMALL_1D), load_dataset("mnist1d", seed=1, **SMALL_1D)
    assert not torch.equal(a.val.x, b.val.x) and torch.equal(a.test.y, b.test.y)  # data seed: the carve only
    other = load_dataset("mnist1d", seed=0, generation_seed=7, **SMALL_1D)
    assert not torch.equal(other.test.x, a.test.x)  # generation seed: other signals
    shuffled = load_dataset("mnist1d", seed=0, shuffle_seq=True, final_seq_length=30, **SMALL_1D)
    assert shuffled.input_shape == (1, 30)
    cached = sorted(data_root.glob("mnist1d/*.npz"))
    assert len(cached) == 3 and all(p.stat().st_size > 0 for p in cached)
    assert not list(data_root.glob("mnist1d/.*"))  # no temporary file left behind

    def fail(args):
        raise AssertionError("regenerated although cached")

    monkeypatch.setattr(mnist1d_mod, "generate", fail)
    again = mnist1d_mod.mnist1d(seed=1, **{**{hp.name: hp.default for hp in DATASETS.get("mnist1d").args},
                                           **SMALL_1D})
    assert torch.equal(again.val.x, b.val.x)


def test_mnist1d_cache_does_not_import_the_generator(data_root):
    load_dataset("mnist1d", seed=0, **SMALL_1D)
    for mod in [m for m in sys.modules if m == "mnist1d" or m.startswith("mnist1d.")]:
        del sys.modules[mod]
    mnist1d_mod.arrays({**mnist1d_mod.DEFAULTS, "num_samples": 500})
    assert "mnist1d.data" not in sys.modules


# --- augmentation ---------------------------------------------------------------------------------
def one_hot(h: int = 8, w: int = 8, row: int = 2, col: int = 3) -> torch.Tensor:
    x = torch.zeros(1, 1, h, w)
    x[0, 0, row, col] = 1.0
    return x


@pytest.mark.parametrize(("dy", "dx", "flip", "where"), [
    (4, 4, False, (2, 3)),  # the centre window: the image itself
    (0, 0, False, (6, 7)),  # window 4 up and 4 left: content moves 4 down, 4 right
    (5, 2, False, (1, 5)),  # window 1 down, 2 left: up 1, right 2
    (4, 4, True, (2, 4)),  # mirror: column 3 of 8 -> 7 - 3
    (5, 2, True, (1, 2)),  # crop (pixel at column 5), then mirror: 7 - 5
])
def test_crop_shifts_and_flip_mirrors_a_one_hot_pixel(dy, dx, flip, where):
    out = crop_flip(one_hot(), torch.tensor([dy]), torch.tensor([dx]), torch.tensor([flip]), 4)
    assert out.shape == (1, 1, 8, 8) and out.sum() == 1
    assert tuple(out[0, 0].nonzero()[0].tolist()) == where


def test_crop_pads_with_the_fill_value_of_each_channel():
    x = torch.zeros(1, 2, 4, 4)
    out = crop_flip(x, torch.tensor([0]), torch.tensor([0]), torch.tensor([False]), 2, fill=(-1.5, 2.0))
    assert (out[0, 0, :2] == -1.5).all() and (out[0, 0, :, :2] == -1.5).all() and (out[0, 0, 2:, 2:] == 0).all()
    assert (out[0, 1, :2] == 2.0).all() and (out[0, 1, 2:, 2:] == 0).all()


def test_seeded_augmentation_is_a_fixed_outcome():
    crop = CropFlip(padding=4, flip=True)
    dy, dx, flips = crop.draw(4, torch.Generator().manual_seed(0))
    assert dy.tolist() == DRAWN[0] and dx.tolist() == DRAWN[1] and flips.tolist() == DRAWN[2]
    batch = one_hot().repeat(4, 1, 1, 1)
    out = crop.transform(0)(batch)
    where = [tuple(out[i, 0].nonzero()[0].tolist()) if out[i].sum() else None for i in range(4)]
    assert where == EXPECTED_PIXELS
    assert torch.equal(crop.transform(0)(batch), out)  # same seed, same numbers
    assert not torch.equal(crop.transform(1)(batch), out)
    transform = crop.transform(0)
    assert not torch.equal(transform(batch), transform(batch))  # a new draw per batch


# dy, dx, flips of torch.Generator().manual_seed(0) for 4 images (padding 4: offsets in 0..8). The pixel
# at (2, 3) lands on row 2 + 4 - dy and column 3 + 4 - dx, or with a flip on the column j where
# 7 - j + dx = 3 + 4: image 0 row -2 (cropped away); 1: row 6, column 6; 2: row 4, column 7; 3: row 0, column 6.
DRAWN = ([8, 0, 2, 6], [7, 6, 7, 1], [True, True, True, False])
EXPECTED_PIXELS = [None, (6, 6), (4, 7), (0, 6)]


def test_augmentation_runs_on_training_batches_only_and_only_for_cifar(data_root, monkeypatch):
    write_cifar10(data_root, per_batch=20, n_test=30)
    seen: list[int] = []
    apply = CropFlip.apply
    monkeypatch.setattr(CropFlip, "apply", lambda self, x, gen: seen.append(len(x)) or apply(self, x, gen))

    def run(**kw):
        config = RunConfig.build(model="cnn", dataset="cifar10", optimizer="sgd", params={"lr": 0.05,
                                 "batch_size": 32, "cnn_channels": "8"}, epochs=2, objective="val/acc",
                                 evaluate_test=True, accelerator="cpu", **kw)
        return fit(config)

    first = run()
    assert first.status == "completed"
    assert seen == [32, 32, 26] * 2  # 90 training images in batches of 32, twice; never val (10) or test (30)
    second = run()
    assert [h["train/loss"] for h in first.history] == [h["train/loss"] for h in second.history]  # same seed
    seen.clear()
    assert run(data_args={"augment": False}).status == "completed" and seen == []
    write_mnist(data_root, "FashionMNIST", n_train=50, n_test=10)
    config = RunConfig.build(model="cnn", dataset="fashion_mnist", optimizer="adam", params={"cnn_channels": "8"},
                             epochs=1, objective="val/acc", accelerator="cpu")
    assert fit(config).status == "completed" and seen == []


# --- the studies on fixture files --------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(("study", "write"), [
    ("fashion-mnist", lambda root: write_mnist(root, "FashionMNIST", n_train=200, n_test=50)),
    ("cifar10-resnet", lambda root: write_cifar10(root, per_batch=30, n_test=40)),
    ("mnist1d", lambda root: None),  # generated: no files; 16 arms, so one thread matters most here
])
def test_study_runs_at_quick_budget_on_fixture_files(stores, data_root, study, write):
    from bench import spec as spec_mod
    from bench.tuning.study import arms

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: a second thread only waits (and on a shared machine, spins)
    write(data_root)
    path = STUDIES / f"{study}.toml"
    quick = spec_mod.load(path).quick_variant()
    assert stores.run("run", str(path), "--quick", "--quiet", "--data-dir", str(data_root)) == 0
    table = pd.read_csv(stores.results / quick.name / "summary.csv")
    assert sorted(table["arm"]) == sorted(a.name for a in arms(quick))
    assert (table["trials_complete"] + table["trials_pruned"] == quick.tuning.n_trials).all()
    done = table[table["trials_complete"] > 0]
    assert (done["eval_seeds"] + done["diverged_evals"] == quick.eval.seeds).all()
    torch.set_num_threads(threads)
