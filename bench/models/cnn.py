"""`cnn`: small convolutional classifier — conv blocks, optional residual connections and batch norm.

Each block is conv3x3 -> [BN] -> ReLU -> conv3x3 -> [BN] (+ skip when `residual`, with a 1x1
projection when the width changes) -> ReLU; blocks after the first start with a 2x2 max-pool while
the feature map is at least 4x4. A global average pool and one linear layer give the logits, so
the same network takes digits as 1x8x8 images (`digits_images`) and MNIST-size 1x28x28 images
(`mnist`, `fashion_mnist`, `idx_images`, or `file_multiclass` with an (N, 28, 28) npz array).
Inputs of shape (C, L) are 1-D signals (`mnist1d`: 1x40): the same blocks with Conv1d (kernel 3),
BatchNorm1d and MaxPool1d (2) while the signal is at least 4 long, then a global average pool.
Loss: cross-entropy; metrics loss, acc. Cost on 2 CPU cores: ~0.5 s per digits epoch (default widths).

Batch norm and full-batch GD: BGD feeds the whole training set as one chunk when it fits under
`bgd_max_chunk` (digits does), so the batch statistics are full-set statistics; with several chunks
each chunk normalizes with its own statistics, as gradient accumulation always does.

Reference (measured, torch 2.13 CPU; Adam lr=1e-3 defaults, batch 64, default widths 16-32 with batch
norm, seed 0, data seed 0): 10 epochs on digits_images -> val/acc 0.978, test/acc 0.986.
20 epochs on mnist1d (1x40 signals, Conv1d blocks) -> val/acc 0.975, test/acc 0.980, 1.7 s per epoch on one
thread (6.5 s with two threads while other jobs shared the 2 cores: oversubscription).
"""

from __future__ import annotations

from torch import nn

from bench.data.bundle import DataBundle
from bench.models.base import SupervisedModule
from bench.models.mlp import parse_widths


class ConvBlock(nn.Module):
    """Two 3x3 convolutions with optional batch norm and an optional residual connection."""

    def __init__(self, c_in: int, c_out: int, *, residual: bool, batch_norm: bool, dim: int = 2) -> None:
        super().__init__()
        conv, bn = (nn.Conv2d, nn.BatchNorm2d) if dim == 2 else (nn.Conv1d, nn.BatchNorm1d)
        norm = (lambda c: bn(c)) if batch_norm else (lambda c: nn.Identity())
        # Bias is redundant right before batch norm (BN's shift replaces it).
        self.body = nn.Sequential(
            conv(c_in, c_out, 3, padding=1, bias=not batch_norm), norm(c_out), nn.ReLU(),
            conv(c_out, c_out, 3, padding=1, bias=not batch_norm), norm(c_out),
        )
        self.skip = None
        if residual:
            self.skip = nn.Identity() if c_in == c_out else nn.Sequential(
                conv(c_in, c_out, 1, bias=not batch_norm), norm(c_out))
        self.act = nn.ReLU()

    def forward(self, x):
        out = self.body(x)
        return self.act(out + self.skip(x) if self.skip is not None else out)


class CNN(SupervisedModule):
    def __init__(self, data: DataBundle, configure_optim=None, label_smoothing: float = 0.0, *,
                 cnn_channels: str = "16-32", residual: bool = False, batch_norm: bool = True):
        if len(data.input_shape) not in (2, 3):
            raise ValueError(f"cnn needs (C, H, W) images or (C, L) signals, got input shape {data.input_shape}: "
                             "use digits_images, mnist, mnist1d, idx_images or an (N, H, W) npz file")
        widths = parse_widths(cnn_channels)
        if not widths:
            raise ValueError("cnn_channels needs at least one block width, e.g. '16-32'")
        c, *size = data.input_shape
        dim = len(size)  # 2: images (Conv2d), 1: signals (Conv1d)
        pool, global_pool = (nn.MaxPool2d, nn.AdaptiveAvgPool2d) if dim == 2 else (nn.MaxPool1d, nn.AdaptiveAvgPool1d)
        layers: list[nn.Module] = []
        for i, width in enumerate(widths):
            if i > 0 and min(size) >= 4:  # downsample between blocks while the map is large enough
                layers.append(pool(2))
                size = [s // 2 for s in size]
            layers.append(ConvBlock(c, width, residual=residual, batch_norm=batch_norm, dim=dim))
            c = width
        layers += [global_pool(1), nn.Flatten(), nn.Linear(c, data.n_outputs)]
        super().__init__(nn.Sequential(*layers), data, configure_optim, label_smoothing)
