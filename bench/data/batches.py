"""Mini-batches sliced from in-memory tensors (no DataLoader: workers made digits 18x slower).

Lightning accepts any iterable of batches with a length. Each batch is (x, y, weight): the weight
rescales the batch's mean loss so that accumulating several chunks gives the exact mean over the
whole set, which is what full-batch gradient descent (BGD) with a memory cap needs.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


class TensorBatches:
    """Iterate (x, y, weight) batches over tensors, reshuffled every epoch from a fixed seed.

    Args:
        x, y: the training tensors (already on the training device).
        batch_size: examples per batch; the last batch may be smaller.
        shuffle: draw a new permutation each epoch (seeded by `seed` and the epoch number).
        seed: makes the sequence of permutations reproducible.
        accumulate: number of batches accumulated into one optimizer step; the weight undoes the
            division of the loss by it (Lightning's, or the training step's under manual
            optimization) and weights each chunk by its size.
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
        return len(self._bounds(_rank_and_world()[1]))

    def _bounds(self, world: int) -> list[tuple[int, int]]:
        """Global batches as (start, stop); under DDP a tail smaller than the world joins the
        previous batch, so every rank gets at least one example of every batch (and all ranks see
        the same number of batches, which DDP needs to not hang)."""
        n = len(self.x)
        bounds = [(a, min(a + self.batch_size, n)) for a in range(0, n, self.batch_size)]
        if world > 1 and len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < world:
            bounds[-2:] = [(bounds[-2][0], n)]
        return bounds

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, float]]:
        n = len(self.x)
        rank, world = _rank_and_world()
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(n, generator=gen).to(self.x.device)  # same on every rank
        self.epoch += 1
        for start, stop in self._bounds(world):
            # Under DDP each rank takes every world-th example of the global batch: the global
            # (effective) batch size stays `batch_size`, so no learning-rate scaling is needed.
            if self.shuffle:
                idx = order[start + rank : stop : world]
                xb, yb = self.x[idx], self.y[idx]
            else:  # strided views, no copy
                xb, yb = self.x[start + rank : stop : world], self.y[start + rank : stop : world]
            # Mean loss of this shard -> its share of the mean over the examples of one optimizer
            # step (the whole set for chunked BGD); DDP averages over ranks, the step divides by
            # `accumulate`: both are undone here, so every step uses the exact mean gradient.
            step_examples = n if self.accumulate > 1 else stop - start
            weight = len(xb) * world * self.accumulate / step_examples
            yield xb, yb, weight


def _rank_and_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1
