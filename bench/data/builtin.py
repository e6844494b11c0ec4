"""Built-in datasets: scikit-learn's bundled sets (no download). Declared in bench/data/__init__.py."""

from __future__ import annotations

from sklearn import datasets as skd

from bench.data.bundle import DataBundle, split_arrays


def digits(seed: int, train_fraction: float = 1.0) -> DataBundle:
    x, y = skd.load_digits(return_X_y=True)
    bundle = split_arrays(x, y, task="multiclass", seed=seed, name="digits", n_outputs=10)
    if train_fraction >= 1.0:
        return bundle
    # Val/test stay whole, so a smaller training set shows over-fitting (and regularization) honestly;
    # standardization keeps the full training split's statistics (training rows only, no leak).
    from dataclasses import replace

    from sklearn.model_selection import train_test_split

    from bench.data.bundle import Split

    keep, _ = train_test_split(range(len(bundle.train)), train_size=train_fraction, random_state=seed,
                               stratify=bundle.train.y.numpy())
    keep = sorted(keep)
    return replace(bundle, train=Split(bundle.train.x[keep], bundle.train.y[keep]))


def breast_cancer(seed: int) -> DataBundle:
    x, y = skd.load_breast_cancer(return_X_y=True)
    return split_arrays(x, y, task="binary", seed=seed, name="breast_cancer", n_outputs=1)


def synthetic_classification(
    seed: int, n_samples: int, n_features: int, n_classes: int, class_sep: float
) -> DataBundle:
    if n_classes > 2 ** n_features:
        raise ValueError(f"n_classes={n_classes} needs more than {n_features} features")
    x, y = skd.make_classification(
        n_samples=n_samples,
        n_features=n_features,
        n_informative=n_features,
        n_redundant=0,
        n_classes=n_classes,
        n_clusters_per_class=1,
        class_sep=class_sep,
        random_state=seed,
    )
    return split_arrays(
        x, y, task="multiclass", seed=seed, name="synthetic_classification", n_outputs=n_classes
    )


def digits_images(seed: int, scale: str) -> DataBundle:
    import torch

    from bench.data.splits import bundle_from_indices, scale_features, split_indices

    x, y = skd.load_digits(return_X_y=True)
    parts = split_indices(len(x), seed=seed, stratify=y)  # same rows per split as `digits`
    images = scale_features(x, parts[0], scale).reshape(-1, 1, 8, 8)
    return bundle_from_indices("digits_images", "multiclass", torch.as_tensor(images, dtype=torch.float32),
                               torch.as_tensor(y, dtype=torch.long), parts, n_outputs=10)


def diabetes(seed: int) -> DataBundle:
    from bench.data.splits import standardize_targets

    x, y = skd.load_diabetes(return_X_y=True)
    return standardize_targets(split_arrays(x, y, task="regression", seed=seed, name="diabetes", n_outputs=1))
