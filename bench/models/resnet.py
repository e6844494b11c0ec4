"""`resnet`: the CIFAR ResNet of He et al. 2016 (§4.2), ResNet-20/32/44/56/110: depth = 6n + 2.

A 3x3 convolution to `resnet_width` (16) channels, then three stages of n basic blocks each
(conv3x3 -> BN -> ReLU -> conv3x3 -> BN, + shortcut, -> ReLU) with widths w, 2w, 4w (16-32-64); the
first block of stages 2 and 3 halves the feature map (stride 2). Global average pool, one linear
layer. Batch norm after every convolution; convolutions have no bias (BN's shift replaces it);
weights He-initialized (Kaiming normal, fan_out) as in the paper. ResNet-20 has 0.27 M parameters.

Shortcuts: option A by default, as in the paper's CIFAR experiments ("we use identity shortcuts in
all cases", §4.2): where a stage halves the map and doubles the width, the shortcut subsamples the
input by 2 and pads the new channels with zeros, so the net has exactly the paper's parameter
count and the numbers optimizer comparisons quote for ResNet-20/32/56 (e.g. 91.25 % for ResNet-20
with SGD momentum 0.9, lr 0.1, weight decay 1e-4, batch 128, 164 epochs with step decay) are the
architecture trained here. Option B (`resnet_shortcut = "B"`, 1x1 convolution with stride + BN
where the shape changes) is the common variant of other implementations; it adds ~1 % parameters.

Inputs: any (C, H, W) images: 3x32x32 CIFAR, 1x28x28 MNIST / Fashion-MNIST and 1x8x8 digits
(8 -> 4 -> 2 through the stages). Cost: ~2.5 s per digits epoch (1078 images) for ResNet-20 on one CPU
thread; a CIFAR-10 epoch (45,000 images) needs a GPU (studies/cifar10-resnet.toml).

Reference (measured, torch 2.13 CPU; Adam lr=1e-3 defaults, batch 64, ResNet-20, option A, seed 0,
data seed 0): 10 epochs on digits_images -> val/acc 0.994, test/acc 0.975, 2.5 s per epoch on one
thread of the 2-core CPU machine. No CIFAR-10 figure was measured here (no data and no GPU on
that machine); the paper's 91.25 % is for its 164-epoch SGD schedule.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from bench.data.bundle import DataBundle
from bench.models.base import SupervisedModule

SHORTCUTS = ("A", "B")


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm, and the shortcut of the chosen option."""

    def __init__(self, c_in: int, c_out: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.stride, self.pad = stride, c_out - c_in
        self.project = None
        if (stride != 1 or c_in != c_out) and shortcut == "B":
            self.project = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def shortcut(self, x):
        if self.project is not None:
            return self.project(x)
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]  # option A: subsample ...
        if self.pad:
            x = F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))  # ... and zero-pad channels
        return x

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(SupervisedModule):
    def __init__(self, data: DataBundle, configure_optim=None, label_smoothing: float = 0.0, *,
                 depth: int = 20, resnet_width: int = 16, resnet_shortcut: str = "A"):
        if len(data.input_shape) != 3:
            raise ValueError(f"resnet needs (C, H, W) images, got input shape {data.input_shape}: "
                             "use cifar10, mnist, digits_images, ... (cnn also reads 1-D signals)")
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"resnet depth must be 6n + 2 (20, 32, 44, 56, 110), got {depth}")
        if resnet_shortcut not in SHORTCUTS:
            raise ValueError(f"resnet_shortcut must be one of {list(SHORTCUTS)}, got {resnet_shortcut!r}")
        n, w = (depth - 2) // 6, resnet_width
        layers: list[nn.Module] = [nn.Conv2d(data.input_shape[0], w, 3, padding=1, bias=False),
                                   nn.BatchNorm2d(w), nn.ReLU()]
        c = w
        for stage, width in enumerate((w, 2 * w, 4 * w)):
            for block in range(n):
                layers.append(BasicBlock(c, width, 2 if stage > 0 and block == 0 else 1, resnet_shortcut))
                c = width
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, data.n_outputs)]
        net = nn.Sequential(*layers)
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        super().__init__(net, data, configure_optim, label_smoothing)
