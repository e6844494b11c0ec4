"""Training-batch augmentation on the device: the CIFAR recipe of random crop + horizontal flip.

`CropFlip` is declared by a dataset (`DataBundle.augment`, the `augment` argument of cifar10 and
cifar100) and installed by `fit` as one of the module's `batch_transforms`, which apply to training
batches only: evaluation (val/test) always sees the images as they are.

Per batch, on whatever device the batch is on, with tensor ops only (no PIL, no DataLoader
workers): each image is padded by `padding` pixels on every side with the value a black pixel
has after normalization (torchvision's `RandomCrop(32, padding=4)` before `Normalize`), a
window of the original size is cut at a random offset, and the window is mirrored left-right
with probability 1/2. The random draws (3 integers per image) come from a CPU `torch.Generator`
seeded with the run seed, so a seed gives the same crops and flips on every device and every
rerun; only the gather runs on the batch's device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class CropFlip:
    """Random crop after `padding`-pixel padding with `fill` (one value per channel), and a
    horizontal flip with probability 1/2 when `flip`."""

    padding: int = 4
    flip: bool = True
    fill: tuple[float, ...] = ()  # per channel; () means 0

    def transform(self, seed: int) -> Callable[[torch.Tensor], torch.Tensor]:
        """A batch transform (B, C, H, W) -> (B, C, H, W) drawing from its own seeded generator."""
        gen = torch.Generator().manual_seed(seed)
        return lambda x: self.apply(x, gen)

    def draw(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Row offsets, column offsets (each in [0, 2 * padding]) and flip flags of n images."""
        span = 2 * self.padding + 1
        dy = torch.randint(0, span, (n,), generator=gen)
        dx = torch.randint(0, span, (n,), generator=gen)
        flips = torch.randint(0, 2, (n,), generator=gen).bool() if self.flip else torch.zeros(n, dtype=torch.bool)
        return dy, dx, flips

    def apply(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        dy, dx, flips = (t.to(x.device) for t in self.draw(len(x), gen))
        return crop_flip(x, dy, dx, flips, self.padding, self.fill)


def crop_flip(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flips: torch.Tensor, padding: int,
              fill: tuple[float, ...] = ()) -> torch.Tensor:
    """Image i of (B, C, H, W) padded by `padding`, cut at rows dy[i].., columns dx[i].., then mirrored
    left-right where flips[i]. Offsets (padding, padding) without flip give the image back."""
    b, c, h, w = x.shape
    p = padding
    padded = F.pad(x, (p, p, p, p))  # zeros; then the border takes each channel's fill value
    if fill and any(fill):
        border = torch.ones(1, 1, h + 2 * p, w + 2 * p, dtype=torch.bool, device=x.device)
        border[..., p:p + h, p:p + w] = False
        values = torch.as_tensor(fill, dtype=x.dtype, device=x.device).view(1, c, 1, 1)
        padded = torch.where(border, values, padded)
    cols = torch.arange(w, device=x.device)
    cols = torch.where(flips[:, None], w - 1 - cols, cols) + dx[:, None]  # (B, W): a flip reads right to left
    rows = dy[:, None] + torch.arange(h, device=x.device)  # (B, H)
    out = padded.gather(2, rows[:, None, :, None].expand(b, c, h, w + 2 * p))
    return out.gather(3, cols[:, None, None, :].expand(b, c, h, w))
