"""Dataset registry: the built-in datasets' metadata, their arguments and the cached loader.

Every dataset becomes a DataBundle (bench/data/bundle.py): train/val/test tensors with a split
fixed by the data seed, features standardized on the training split. The infos below name their
factories by import path, so a study file is validated without importing torch, numpy or
scikit-learn; `load_dataset` imports the factory's module on first use. Plug-in packages add
datasets through the `bench.datasets` entry-point group.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from bench import plugins
from bench.hparams import HParam
from bench.registry import DatasetInfo, Registry

DATASETS: Registry[DatasetInfo] = Registry("dataset", "bench.datasets", plugins.dataset_info, imports=True)
SCALES = ("standardize", "minmax")  # feature scalings (bench/data/splits.py)
SEQ_TASKS = ("reverse", "sort", "copy")  # sequence mappings (bench/data/synthetic.py)

_FILE_ARGS = (
    HParam("path", "str", "", "local .npz, .csv or .parquet file"),
    HParam("target", "str", "y", "target column (.csv/.parquet) or array key (.npz)"),
    HParam("scale", "str", "standardize", "feature scaling from training statistics", choices=SCALES),
)

DATASETS.register(DatasetInfo(
    name="digits", factory="bench.data.builtin:digits", task="multiclass",
    summary="scikit-learn 8x8 handwritten digits: 1797 images, 64 features, 10 classes",
    args=(HParam("train_fraction", "float", 1.0,
                 "share of the training split kept (stratified, seeded): small values over-fit", low=0.01, high=1.0),),
    targets={"mlp": {"val/acc": 0.97}, "linear": {"val/acc": 0.90}},
    targets_source=("mlp: results/beyond-the-four (15 epochs), tuned sgd / adam / adagrad end at mean val/acc "
                    "0.975 / 0.974 / 0.972; linear: adam lr=1e-3, batch 64, 20 epochs, seed 0 reaches 0.905"),
))
DATASETS.register(DatasetInfo(
    name="breast_cancer", factory="bench.data.builtin:breast_cancer", task="binary",
    summary="scikit-learn Wisconsin breast cancer: 569 cases, 30 features, binary",
    targets={"mlp": {"val/acc": 0.95}, "linear": {"val/acc": 0.90}},
    targets_source="adam lr=1e-3, batch 64, 20 epochs, seed 0: mlp 128-64 val/acc 0.956, linear 0.904",
))
DATASETS.register(DatasetInfo(
    name="synthetic_classification", factory="bench.data.builtin:synthetic_classification", task="multiclass",
    summary="seeded Gaussian-cluster classification (make_classification), default 10 features x 10 classes",
    args=(
        HParam("n_samples", "int", 3000, "number of examples", low=30),
        HParam("n_features", "int", 10, "input features", low=2),
        HParam("n_classes", "int", 10, "classes", low=2),
        HParam("class_sep", "float", 1.5, "cluster separation (larger is easier)", low=0.0),
    ),
    targets={"mlp": {"val/acc": 0.87}, "linear": {"val/acc": 0.72}},  # at the default arguments
    targets_source=("default arguments, adam lr=1e-3, batch 64, 20 epochs, seed 0: mlp 128-64 val/acc 0.877, "
                    "linear 0.728"),
))
DATASETS.register(DatasetInfo(
    name="digits_images", factory="bench.data.builtin:digits_images", task="multiclass",
    summary="scikit-learn digits as 1x8x8 images (CNN, autoencoder, GAN); pixels scaled to [0, 1] by default",
    args=(HParam("scale", "str", "minmax", "pixel scaling from training statistics", choices=SCALES),),
    targets={"cnn": {"val/acc": 0.975}, "autoencoder": {"val/mse": 0.013}, "gan": {"val/mmd": 0.25}},
    targets_source=("the models' reference runs (bench list), adam lr=1e-3, batch 64, seed 0: cnn val/acc 0.978 "
                    "(10 epochs), autoencoder val/mse 0.0130 (20 epochs), gan val/mmd 0.240 (60 epochs)"),
))
DATASETS.register(DatasetInfo(
    name="diabetes", factory="bench.data.builtin:diabetes", task="regression",
    summary="scikit-learn diabetes progression: 442 patients, 10 features, 1 target (standardized)",
    targets={"sigmoid_net": {"val/mse": 0.56}},
    targets_source="sigmoid_net's reference run (bench list): adam lr=1e-3, batch 64, 30 epochs, seed 0: val/mse 0.559",
))
DATASETS.register(DatasetInfo(
    name="synthetic_regression", factory="bench.data.synthetic:synthetic_regression", task="regression",
    summary="seeded teacher-network regression: x ~ N(0, I), y = sigmoid-net(x) + noise; default 1000 -> 10",
    args=(
        HParam("n_samples", "int", 4000, "number of examples", low=30),
        HParam("n_features", "int", 1000, "input dimension", low=1),
        HParam("n_targets", "int", 10, "output dimension", low=1),
        HParam("teacher_hidden", "int", 16, "hidden sigmoid units of the random teacher network", low=1),
        HParam("noise", "float", 0.1, "std of Gaussian label noise relative to the signal's std", low=0.0),
    ),
    targets={"sigmoid_net": {"val/mse": 0.26}},
    targets_source="sigmoid_net's reference run (bench list): adam lr=1e-3, batch 64, 30 epochs, seed 0: val/mse 0.261",
))
DATASETS.register(DatasetInfo(
    name="sequences", factory="bench.data.synthetic:sequences", task="sequence",
    summary="seeded algorithmic seq2seq tasks on random tokens: reverse, sort, copy (rotated by an offset)",
    args=(
        HParam("seq_task", "str", "sort", "the mapping from input to target tokens", choices=SEQ_TASKS),
        HParam("seq_len", "int", 8, "tokens per input (and target) sequence", low=1),
        HParam("vocab_size", "int", 10, "distinct data tokens (ids 0 .. vocab_size-1)", low=2),
        HParam("copy_offset", "int", 0, "copy task: target is the input rotated left by this many positions", low=0),
        HParam("n_samples", "int", 3000, "number of sequences", low=30),
    ),
    targets={"transformer": {"val/seq_acc": 0.89}},
    targets_source=("transformer's reference run (bench list): adam lr=1e-3, batch 64, 10 epochs, seed 0: "
                    "val/seq_acc 0.892"),
))
# A user file's task is metadata too (checked against the model before anything runs): one name per task.
DATASETS.register(DatasetInfo(
    name="file_multiclass", factory="bench.data.files:file_multiclass", task="multiclass", args=_FILE_ARGS,
    summary="user file (.npz/.csv/.parquet), class labels in `target`; data_args.path required",
))
DATASETS.register(DatasetInfo(
    name="file_binary", factory="bench.data.files:file_binary", task="binary", args=_FILE_ARGS,
    summary="user file (.npz/.csv/.parquet), two-valued labels in `target`; data_args.path required",
))
DATASETS.register(DatasetInfo(
    name="file_regression", factory="bench.data.files:file_regression", task="regression", args=_FILE_ARGS,
    summary="user file (.npz/.csv/.parquet), numeric `target` (standardized); path required",
))
DATASETS.register(DatasetInfo(
    name="idx_images", factory="bench.data.files:idx_images", task="multiclass",
    summary="local IDX image/label files (MNIST format, .gz ok) as 1xHxW images; data_args images and labels",
    args=(
        HParam("images", "str", "", "IDX images file, e.g. train-images-idx3-ubyte(.gz)"),
        HParam("labels", "str", "", "IDX labels file, e.g. train-labels-idx1-ubyte(.gz)"),
        HParam("scale", "str", "minmax", "pixel scaling from training statistics", choices=SCALES),
    ),
))

DATASETS.register(DatasetInfo(
    name="mnist1d", factory="bench.data.mnist1d:mnist1d", task="multiclass",
    summary=("MNIST-1D (Greydanus 2020), generated offline: 10 digit templates as (1, 40) signals; "
             "3600/400/1000 (val carved from the original 4000 training signals)"),
    args=(
        HParam("num_samples", "int", 5000, "signals generated (80 % train, 20 % test, as the original)", low=100),
        HParam("corr_noise_scale", "float", 0.25, "scale of the correlated (smooth) noise", low=0.0),
        HParam("iid_noise_scale", "float", 0.02, "scale of the per-sample i.i.d. noise", low=0.0),
        HParam("shear_scale", "float", 0.75, "largest shear of the template", low=0.0),
        HParam("max_translation", "int", 48, "largest shift of the template (samples, before resampling)", low=0),
        HParam("scale_coeff", "float", 0.4, "random scaling of the template: 1 +- this", low=0.0),
        HParam("shuffle_seq", "bool", False, "permute the 40 positions (one fixed permutation): kills locality"),
        HParam("final_seq_length", "int", 40, "samples per signal", low=4),
        HParam("generation_seed", "int", 42, "seed of the generator (42: the original set)"),
    ),
    # At the default arguments. ~97 % of what each model's best arm ends at (mean final val/acc over its
    # eval seeds) in the reference run of studies/mnist1d.toml, so a well-tuned optimizer reaches it.
    targets={"linear": {"val/acc": 0.29}, "mlp": {"val/acc": 0.56}, "cnn": {"val/acc": 0.92},
             "gru": {"val/acc": 0.92}},
    targets_source=("results/mnist1d (10 epochs, batch 128): best arms end at mean val/acc linear-adam 0.298, "
                    "mlp-adam 0.576, cnn-adam 0.948, gru-adam 0.947; targets are ~97 % of those"),
))
_VAL_SIZE = HParam("val_size", "int", 5000, "validation images carved from the training files (seeded; at most "
                   "a tenth of them)", low=1)
_AUGMENT = HParam("augment", "bool", True, "random 32x32 crop of the 4-pixel padded image + horizontal flip, "
                  "per training batch on the device (seeded by the run seed)")
DATASETS.register(DatasetInfo(
    name="mnist", factory="bench.data.vision:mnist", task="multiclass", args=(_VAL_SIZE,),
    summary="MNIST 1x28x28 digits from the data folder (torchvision layout): 55000/5000/10000, standardized",
    files=tuple(f"MNIST/raw/{f}" for f in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                           "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")),
))
DATASETS.register(DatasetInfo(
    name="fashion_mnist", factory="bench.data.vision:fashion_mnist", task="multiclass", args=(_VAL_SIZE,),
    summary="Fashion-MNIST 1x28x28 clothing images (torchvision layout): 55000/5000/10000, 10 classes",
    files=tuple(f"FashionMNIST/raw/{f}" for f in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                                  "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")),
))
DATASETS.register(DatasetInfo(
    name="cifar10", factory="bench.data.vision:cifar10", task="multiclass", args=(_VAL_SIZE, _AUGMENT),
    summary="CIFAR-10 3x32x32 images (torchvision layout): 45000/5000/10000, crop + flip augmentation by default",
    files=tuple(f"cifar-10-batches-py/{f}" for f in (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch",
                                                     "batches.meta")),
))
DATASETS.register(DatasetInfo(
    name="cifar100", factory="bench.data.vision:cifar100", task="multiclass", args=(_VAL_SIZE, _AUGMENT),
    summary="CIFAR-100 3x32x32 images, 100 fine classes (torchvision layout): 45000/5000/10000, crop + flip",
    files=("cifar-100-python/train", "cifar-100-python/test", "cifar-100-python/meta"),
))


def dataset_args(name: str) -> dict[str, HParam]:
    """Declared arguments of a dataset (e.g. n_samples for synthetic sets)."""
    return {hp.name: hp for hp in DATASETS.get(name).args}


def resolve_args(name: str, given: dict[str, Any]) -> dict[str, Any]:
    """Fill defaults and type-check dataset arguments; raises ValueError naming the key."""
    declared = dataset_args(name)
    for key in given:
        if key not in declared:
            known = ", ".join(sorted(declared)) or "none"
            raise ValueError(f"{key}: dataset '{name}' has no argument {key!r} (known: {known})")
    out = {}
    for key, hp in declared.items():
        try:
            out[key] = hp.check(given[key]) if key in given else hp.default
        except ValueError as err:
            raise ValueError(f"{key}: {err}") from None
    return out


def load_dataset(name: str, seed: int = 0, **args: Any) -> Any:
    """Build (or reuse from this process's cache) a dataset's DataBundle."""
    from bench.data.store import data_dir

    # the data folder is part of the key: the same name may mean other files there
    return _cached(name, seed, json.dumps(resolve_args(name, args), sort_keys=True), str(data_dir()))


@functools.lru_cache(maxsize=8)
def _cached(name: str, seed: int, args_json: str, folder: str = "") -> Any:
    import inspect

    from bench.data.bundle import DataBundle, bundle_from_arrays

    info = DATASETS.get(name)
    factory, args = info.load(), json.loads(args_json)
    if "seed" in inspect.signature(factory).parameters:
        args["seed"] = seed
    out = factory(**args)
    return out if isinstance(out, DataBundle) else bundle_from_arrays(out, task=info.task, seed=seed, name=name)


def __getattr__(name: str) -> Any:
    """DataBundle, Split, split_arrays, ... from bench.data.bundle, imported only when asked for."""
    if name in ("DataBundle", "Split", "split_arrays", "bundle_from_arrays", "TRAIN_FRACTION", "VAL_FRACTION"):
        from bench.data import bundle

        return getattr(bundle, name)
    raise AttributeError(f"module 'bench.data' has no attribute {name!r}")
