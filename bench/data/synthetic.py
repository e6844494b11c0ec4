"""Seeded synthetic datasets: a teacher-network regression and algorithmic sequence tasks.

Both are generated from `seed` alone (numpy Generator), so the same data_seed gives the same
examples and the same 60/20/20 split on every machine. Cost: milliseconds at the default sizes.
"""

from __future__ import annotations

import numpy as np
import torch

from bench.data import SEQ_TASKS
from bench.data.bundle import DataBundle
from bench.data.splits import bundle_from_indices, split_indices, standardize_targets


def synthetic_regression(
    seed: int, n_samples: int, n_features: int, n_targets: int, teacher_hidden: int, noise: float
) -> DataBundle:
    """Targets come from a random two-layer sigmoid network (the `sigmoid_net` family, so the task
    is realizable): y = sigmoid(x A / sqrt(d) * 4) B, scaled to unit signal variance, plus noise.
    The factor 4 puts pre-activations in sigmoid's curved range rather than its linear middle.
    The best achievable R² is therefore about 1 / (1 + noise²) (0.99 at the default noise 0.1).
    Targets are then standardized with training statistics (see splits.standardize_targets).
    """
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_samples, n_features))
    a = rng.standard_normal((n_features, teacher_hidden)) * 4.0 / np.sqrt(n_features)
    b = rng.standard_normal((teacher_hidden, n_targets))
    signal = (1.0 / (1.0 + np.exp(-(x @ a)))) @ b
    signal = (signal - signal.mean(axis=0)) / signal.std(axis=0).clip(1e-12)
    y = signal + noise * rng.standard_normal(signal.shape)
    parts = split_indices(n_samples, seed=seed)
    bundle = bundle_from_indices("synthetic_regression", "regression", torch.as_tensor(x, dtype=torch.float32),
                                 torch.as_tensor(y, dtype=torch.float32), parts, n_outputs=n_targets)
    return standardize_targets(bundle)


def sequence_targets(x: np.ndarray, seq_task: str, copy_offset: int) -> np.ndarray:
    """The target sequence for each input row (same length as the input)."""
    if seq_task == "reverse":
        return x[:, ::-1].copy()
    if seq_task == "sort":
        return np.sort(x, axis=1)
    if seq_task == "copy":  # rotate left by copy_offset: y[i] = x[(i + offset) mod L]
        return np.roll(x, -copy_offset, axis=1)
    raise ValueError(f"seq_task must be one of {list(SEQ_TASKS)}, got {seq_task!r}")


def sequences(seed: int, seq_task: str, seq_len: int, vocab_size: int, copy_offset: int,
              n_samples: int) -> DataBundle:
    """x: (N, seq_len) int64 tokens drawn uniformly; y: (N, seq_len) int64 targets.

    `n_outputs` is the data vocabulary size; models add their own special tokens (e.g. a separator)
    above it. Sequences may repeat across splits when vocab_size ** seq_len is small; at the
    default 10 ** 8 that is negligible.
    """
    rng = np.random.default_rng(seed)
    x = rng.integers(0, vocab_size, size=(n_samples, seq_len))
    y = sequence_targets(x, seq_task, copy_offset % seq_len)
    parts = split_indices(n_samples, seed=seed)
    return bundle_from_indices("sequences", "sequence", torch.as_tensor(x, dtype=torch.long),
                               torch.as_tensor(y, dtype=torch.long), parts, n_outputs=vocab_size)
