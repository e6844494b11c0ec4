"""`gan`: generator + discriminator (MLPs) with BCE losses, trained by Lightning manual optimization.

G: latent -> [Linear -> BatchNorm (gan_batch_norm) -> ReLU] per hidden width -> Linear -> sigmoid
(when the data lies in [0, 1], as digits_images does; linear otherwise). D: [Linear -> LeakyReLU(0.2)]
per hidden width -> one logit. In training, D's inputs (real and generated) get Gaussian instance
noise of std gan_instance_noise (0.2 by default): without it D separates the exact zeros of real
digit borders from any sigmoid output and wins (measured in a plain loop, Adam lr 1e-3, batch 64:
MMD 0.43 after 4000 steps without noise and batch norm, 0.07 after 3000 steps with both).

Both networks get the arm's optimizer and schedule (the optimizer is injected twice through
`_configure_optim`); the discriminator's learning rate is `lr * gan_lr_ratio`, the generator's
`lr`, so the D/G balance is a tunable hyper-parameter instead of a hidden choice. Lightning does
not step schedulers under manual optimization, so each scheduler is stepped right after its
optimizer. Losses: D minimizes BCE(D(x), 1) + BCE(D(G(z)), 0); G minimizes the non-saturating
BCE(D(G(z)), 1). One training step = one D update, then one G update against the updated D.

Full batch (BGD, optimizer meta full_batch=True): one D step and one G step per epoch, each on the
exact gradient of its full-set objective. D's objective is the mean over all N training examples
plus the mean over N generated samples; fit feeds the set as `accumulate` contiguous chunks of at
most `bgd_max_chunk` examples with weights w = chunk * accumulate / N, and this model backpropagates
loss * w / accumulate = loss * chunk / N per chunk, steps D after the last chunk, then runs the G
objective over N fresh noise vectors in chunks of the same sizes and steps G. Each update's latent
and instance noise is drawn whole (N rows) and sliced per chunk, so the result does not depend on
the chunk size (tested, with gan_batch_norm off: batch norm normalizes per chunk, as in any
gradient accumulation). (Lightning's accumulate_grad_batches is refused under manual optimization;
train.fit passes 1 for such models and they accumulate themselves.) Mini-batch optimizers (SGD,
Adam, Adagrad) take one D and one G step per batch. `steps` counts both (2 per update round).

Metric `mmd` (objective, lower is better): the unbiased estimate of the squared maximum mean
discrepancy between generated samples and the held-out real samples of the evaluated split, with
a sum of Gaussian kernels at bandwidths {0.5, 1, 2} x the median pairwise distance of that real
split. Why it is sound: (1) the Gaussian kernel (and a positive sum of them) is characteristic, so
MMD is a metric on distributions — zero exactly when the generator's distribution equals the
data's — and it penalizes mode collapse, which the D/G losses cannot show; (2) the real samples
are the validation (or test) split, which neither network trains on, so a generator that
memorizes the training set earns the train-vs-held-out floor, not zero; (3) the estimator is
unbiased (it can dip slightly below 0 when the distributions are close); (4) the generated samples
come from a fixed noise seed and the bandwidths from the real split only, so the yardstick is
deterministic for given weights and does not move with the generator; (5) no download or
pretrained feature network is needed (unlike FID). Measured on digits_images, val split (359
images): 359 real training images vs val give -0.0007 (the floor; two disjoint halves: -0.0018),
the untrained generator 1.66, the mean training image plus small noise 0.47, a single digit class
0.59, and Adam with its defaults after 60 epochs 0.240 (test split 0.239; `mmd` still falling).
tests/test_zoo.py checks that training separates from the untrained generator on this metric.
At most MMD_MAX_SAMPLES real and generated samples are scored (O(n^2) kernel matrices).
Also reported: d_loss, g_loss on the split (no instance noise), and loss = d_loss + g_loss
(train/loss is the same sum averaged over the epoch's updates).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from bench.data.bundle import DataBundle, Split
from bench.models.base import BenchModule
from bench.models.mlp import parse_widths

EVAL_NOISE_SEED = 12345  # fixed noise for evaluation samples: the metric is a function of the weights
MMD_SCALES = (0.5, 1.0, 2.0)
MMD_MAX_SAMPLES = 2000


def median_distance(x: torch.Tensor) -> float:
    """Median pairwise Euclidean distance between distinct rows of x (the kernel bandwidth scale)."""
    d = torch.cdist(x, x)
    iu = torch.triu_indices(len(x), len(x), offset=1, device=x.device)
    return d[iu[0], iu[1]].median().item()


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor, bandwidths: tuple[float, ...]) -> float:
    """Unbiased squared MMD between samples x (n, d) and y (m, d) with a sum of Gaussian kernels."""
    def kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        d2 = torch.cdist(a, b).pow(2)
        return sum(torch.exp(-d2 / (2 * s * s)) for s in bandwidths)

    n, m = len(x), len(y)
    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    xx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    yy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return (xx + yy - 2 * kxy.mean()).item()


class GAN(BenchModule):
    def __init__(self, data: DataBundle, configure_optim=None, *, gan_latent: int = 16,
                 gan_hidden: str = "128-128", gan_lr_ratio: float = 1.0, gan_batch_norm: bool = True,
                 gan_instance_noise: float = 0.2):
        super().__init__(configure_optim)
        self.automatic_optimization = False
        self.latent, self.lr_ratio, self.instance_noise = gan_latent, gan_lr_ratio, gan_instance_noise
        self.shape = tuple(data.input_shape)
        d = math.prod(self.shape)
        widths = parse_widths(gan_hidden)
        g_layers: list[nn.Module] = []
        width = gan_latent
        for hidden in widths:
            g_layers += [nn.Linear(width, hidden), nn.BatchNorm1d(hidden) if gan_batch_norm else nn.Identity(),
                         nn.ReLU()]
            width = hidden
        # Data scaled to [0, 1] (digits_images) gets a sigmoid output, so samples live where data does.
        unit = bool(data.train.x.min() >= 0 and data.train.x.max() <= 1)
        self.generator = nn.Sequential(*g_layers, nn.Linear(width, d), nn.Sigmoid() if unit else nn.Identity(),
                                       nn.Unflatten(1, self.shape))
        d_layers: list[nn.Module] = [nn.Flatten()]
        width = d
        for hidden in widths:
            d_layers += [nn.Linear(width, hidden), nn.LeakyReLU(0.2)]
            width = hidden
        self.discriminator = nn.Sequential(*d_layers, nn.Linear(width, 1))
        self._group: list[int] = []  # sizes of the chunks accumulated since the last update
        self._noise: dict[str, torch.Tensor] = {}
        self._d_sum = torch.zeros(())
        self._g_sum = torch.zeros(())
        self._d_count = self._g_count = 0

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator(z)

    def configure_optimizers(self):
        if self._configure_optim is None:
            raise RuntimeError("no optimizer builder was injected (train.fit injects one)")
        # G first: fit logs trainer.optimizers[0]'s lr, which is then the arm's lr (x schedule).
        g = self._configure_optim(self, params=self.generator.parameters(), lr_scale=1.0)
        d = self._configure_optim(self, params=self.discriminator.parameters(), lr_scale=self.lr_ratio)
        return [g, d]

    # --- losses --------------------------------------------------------------------------
    @staticmethod
    def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))

    def d_loss(self, real: torch.Tensor, fake: torch.Tensor, noise_real=None, noise_fake=None) -> torch.Tensor:
        """D's BCE on real (target 1) and generated (target 0) inputs, with optional instance noise."""
        real = real if noise_real is None else real + noise_real
        fake = fake if noise_fake is None else fake + noise_fake
        return self._bce(self.discriminator(real), 1.0) + self._bce(self.discriminator(fake), 0.0)

    def g_loss(self, z: torch.Tensor, noise=None) -> torch.Tensor:
        """Non-saturating generator loss: BCE of D on generated inputs against target 1."""
        fake = self.generator(z)
        return self._bce(self.discriminator(fake if noise is None else fake + noise), 1.0)

    def training_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """D + G loss on one batch with fresh latent noise, no instance noise (inspection only)."""
        z = torch.randn(len(x), self.latent, device=x.device, dtype=x.dtype)
        return self.d_loss(x, self.generator(z)) + self.g_loss(z)

    # --- manual optimization -----------------------------------------------------------------
    def _accumulation(self, batch_idx: int, batch_len: int) -> tuple[int, int]:
        """(chunks per update, examples per update) for the group holding batch `batch_idx`."""
        batches = self.trainer.train_dataloader
        acc = getattr(batches, "accumulate", 1)
        if acc == 1:
            return 1, batch_len
        n, bs = len(batches.x), batches.batch_size
        first = (batch_idx // acc) * acc
        return acc, min(n, (first + acc) * bs) - first * bs

    def _draw(self, n: int, device: torch.device, *names: str) -> dict[str, torch.Tensor]:
        """One update's noise, drawn whole and sliced per chunk (so chunking cannot change it)."""
        out = {}
        for name in names:
            if name.startswith("z"):
                out[name] = torch.randn(n, self.latent, device=device, dtype=self.dtype)  # the model's (precision)
            elif self.instance_noise > 0:
                out[name] = torch.randn(n, *self.shape, device=device, dtype=self.dtype) * self.instance_noise
        return out

    def _penalty(self) -> torch.Tensor | float:
        """Regularization penalties injected by fit (absent on a bare module): added once per update
        to D's loss (only D's gradients survive: G's are reset before its pass) and to G's (D frozen)."""
        return sum((penalty(self) for penalty in getattr(self, "loss_penalties", ())), 0.0)

    def training_step(self, batch: tuple, batch_idx: int) -> None:
        x, _, weight = batch
        for transform in getattr(self, "batch_transforms", ()):  # augmentation of the real data only
            x = transform(x)
        acc, total = self._accumulation(batch_idx, len(x))
        opt_g, opt_d = self.optimizers()
        sched_g, sched_d = self.lr_schedulers()
        if not self._group:  # first chunk of an update: fresh gradients and this update's D noise
            opt_d.zero_grad(set_to_none=True)
            self._noise = self._draw(total, x.device, "z_d", "real", "fake")
        rows = slice(sum(self._group), sum(self._group) + len(x))
        self._group.append(len(x))
        noise = {k: v[rows] for k, v in self._noise.items()}
        with torch.no_grad():
            fake = self.generator(noise["z_d"])
        d_loss = self.d_loss(x, fake, noise.get("real"), noise.get("fake"))
        # weight / acc = chunk / N under full batch (exact full-set mean), 1 for mini-batches.
        self.manual_backward((d_loss + self._penalty()) * (weight / acc))
        self._d_sum = self._d_sum.to(x.device) + d_loss.detach() * len(x)
        self._d_count += len(x)
        self.samples_seen += len(x)
        if (batch_idx + 1) % acc and batch_idx + 1 != self.trainer.num_training_batches:
            return  # more chunks of this update to come
        opt_d.step()
        sched_d.step()

        # G update against the updated D, over as many noise vectors as D saw real examples.
        sizes, self._group = self._group, []
        n = sum(sizes)
        noise = self._draw(n, x.device, "z_g", "g")
        opt_g.zero_grad(set_to_none=True)
        self.discriminator.requires_grad_(False)  # G's backward needs no D parameter gradients
        g_total = torch.zeros((), device=x.device)
        start = 0
        for size in sizes:
            rows = slice(start, start + size)
            g_loss = self.g_loss(noise["z_g"][rows], noise["g"][rows] if "g" in noise else None)
            self.manual_backward((g_loss + self._penalty()) * (size / n))
            g_total = g_total + g_loss.detach() * size
            start += size
        self.discriminator.requires_grad_(True)
        opt_g.step()
        sched_g.step()
        self._g_sum = self._g_sum.to(x.device) + g_total / n
        self._g_count += 1

    def pop_train_loss(self) -> float:
        """Mean D loss + mean G loss since the last call (one host sync per epoch)."""
        d = (self._d_sum / max(self._d_count, 1)).item()
        g = (self._g_sum / max(self._g_count, 1)).item()
        self._d_sum, self._g_sum, self._d_count, self._g_count = torch.zeros(()), torch.zeros(()), 0, 0
        return d + g

    # --- evaluation ------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, seed: int = EVAL_NOISE_SEED) -> torch.Tensor:
        """n generated samples from a fixed noise seed (generator in eval mode by the caller)."""
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.latent, generator=gen).to(self.device, self.dtype)
        return self.generator(z)

    @torch.no_grad()
    def evaluate(self, split: Split) -> dict[str, float]:
        """MMD to the split's real samples, plus D/G losses on them (no instance noise)."""
        was_training = self.training
        self.eval()
        real = split.x.to(self.device)
        fake = self.sample(len(real))
        d_real, d_fake = self.discriminator(real), self.discriminator(fake)
        d_loss = (self._bce(d_real, 1.0) + self._bce(d_fake, 0.0)).item()
        g_loss = self._bce(d_fake, 1.0).item()
        # O(n^2) kernel matrices: score at most MMD_MAX_SAMPLES (the split's first rows, deterministic).
        # The metric in at least float32 whatever the training precision (bf16 distances are coarse).
        wide = torch.promote_types(real.dtype, torch.float32)
        flat_real, flat_fake = real[:MMD_MAX_SAMPLES].flatten(1).to(wide), fake[:MMD_MAX_SAMPLES].flatten(1).to(wide)
        bandwidths = tuple(s * median_distance(flat_real) for s in MMD_SCALES)
        mmd = mmd2_unbiased(flat_fake, flat_real, bandwidths)
        self.train(was_training)
        return {"loss": d_loss + g_loss, "d_loss": d_loss, "g_loss": g_loss, "mmd": mmd}
