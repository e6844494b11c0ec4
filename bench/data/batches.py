"""Mini-batches sliced from in-memory tensors (no DataLoader: workers made digits 18x slower).

Lightning accepts any iterable of batches with a length. Each batch is (x, y, weight): the weight
rescales the batch's mean loss so that accumulating several chunks gives the exact mean over the
whole set, which is what full-batch gradient descent (BGD) with a memory cap needs.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch


class TensorBatches:
    """Iterate (x, y, weight) batches over tensors, reshuffled every epoch from a fixed seed.

    Args:
        x, y: the training tensors (already on the training device).
        batch_size: examples per batch; the last batch may be smaller.
        shuffle: draw a new permutation each epoch (seeded by `seed` and the epoch number).
        seed: makes the sequence of permutations reproducible.
        accumulate: number of batches Lightning accumulates into one optimizer step; the weight
            undoes Lightning's division of the loss by it and weights each chunk by its size.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int,
        accumulate: int = 1,
    ) -> None:
        self.x, self.y = x, y
        self.batch_size = max(1, min(batch_size, len(x)))
        self.shuffle, self.seed, self.accumulate = shuffle, seed, accumulate
        self.epoch = 0

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, float]]:
        n = len(self.x)
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(n, generator=gen).to(self.x.device)
        self.epoch += 1
        for start in range(0, n, self.batch_size):
            stop = min(start + self.batch_size, n)
            if self.shuffle:
                idx = order[start:stop]
                xb, yb = self.x[idx], self.y[idx]
            else:  # contiguous views, no copy
                xb, yb = self.x[start:stop], self.y[start:stop]
            weight = 1.0 if self.accumulate == 1 else (stop - start) * self.accumulate / n
            yield xb, yb, weight
