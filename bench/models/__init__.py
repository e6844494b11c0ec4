"""Model registry: one LightningModule per file, registered by name.

A model factory is called as `factory(data, configure_optim, **hparams)` and returns a
BenchModule. Registry metadata: `hparams` (HParam tuple), `tasks` (dataset tasks it accepts),
`default_dataset`, `reference` (a measured result of Adam with its defaults, for `bench list`).
"""

from bench.registry import Registry

MODELS = Registry("model")

from bench.models import autoencoder, cnn, gan, linear, mlp, sigmoid_net, transformer  # noqa: E402,F401  (registration side effects)
