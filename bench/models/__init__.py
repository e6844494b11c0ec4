"""Model registry: the built-in models' metadata, one LightningModule per file in this package.

Each model is declared here as a ModelInfo whose factory is an import path, so a study file is
validated without importing torch or Lightning; `info.load()` imports the model's file on first
build. A factory is called as `factory(data, configure_optim, **hparams)` and returns a BenchModule
(bench/models/base.py). Plug-in packages add models through the `bench.models` entry-point group
(see bench/plugins.py), with the same `MODELS.register` behind them.
"""

from bench import plugins
from bench.hparams import HParam
from bench.registry import ModelInfo, Registry

MODELS: Registry[ModelInfo] = Registry("model", "bench.models", plugins.model_info, imports=True)

ACTIVATIONS = ("relu", "tanh", "sigmoid", "gelu")  # bench/models/mlp.py maps them to nn modules

MODELS.register(ModelInfo(
    name="linear", factory="bench.models.linear:Linear",
    summary="affine map + task loss: softmax / logistic / linear regression (convex baseline)",
    reference="adam lr=1e-3, 20 epochs, batch 64 on digits: val/acc ~0.95",
))
MODELS.register(ModelInfo(
    name="mlp", factory="bench.models.mlp:MLP",
    summary="multi-layer perceptron: widths, activation and dropout configurable",
    hparams=(
        HParam("hidden_sizes", "str", "128-64", "hidden widths separated by '-' (e.g. '64')"),
        HParam("activation", "str", "relu", "hidden activation", choices=ACTIVATIONS),
        HParam("dropout", "float", 0.0, "dropout rate after each hidden layer", low=0.0, high=0.95),
    ),
    reference="adam lr=1e-3, 20 epochs, batch 64 on digits: val/acc ~0.97",
))
MODELS.register(ModelInfo(
    name="sigmoid_net", factory="bench.models.sigmoid_net:SigmoidNet",
    summary="two-layer sigmoid network (input -> sigmoid hidden -> linear) with MSE loss",
    tasks=("regression",),
    hparams=(HParam("sigmoid_hidden", "int", 64, "hidden sigmoid units", low=1),),
    default_dataset="synthetic_regression",
    reference=(
        "measured: adam lr=1e-3 (defaults), batch 64, 30 epochs on synthetic_regression (1000 -> 10, 4000 samples), "
        "seed 0: val/mse 0.261 (val/r2 0.738; best 0.253 near epoch 16, then over-fits), test/mse 0.266; "
        "on diabetes: val/mse 0.559 (r2 0.415, still improving)"),
    objective="val/mse",  # the natural study objective (metrics without acc need it set)
))
MODELS.register(ModelInfo(
    name="cnn", factory="bench.models.cnn:CNN",
    summary="small CNN: conv blocks (optional residual, batch norm on/off), global pool, linear head; 1-D for (C, L)",
    tasks=("multiclass", "binary"),
    hparams=(
        HParam("cnn_channels", "str", "16-32", "output channels per conv block, separated by '-'"),
        HParam("residual", "bool", False, "add identity/1x1-projection skip connections to each block"),
        HParam("batch_norm", "bool", True, "batch normalization after each convolution"),
    ),
    default_dataset="digits_images",
    reference=("measured: adam lr=1e-3 (defaults), batch 64, 10 epochs on digits_images, seed 0: val/acc 0.978, "
               "test/acc 0.986; 20 epochs on mnist1d (Conv1d): val/acc 0.975, test/acc 0.980"),
    objective="val/acc",
))
MODELS.register(ModelInfo(
    name="autoencoder", factory="bench.models.autoencoder:Autoencoder",
    summary="dense (or conv) autoencoder with MSE reconstruction; configurable code size",
    hparams=(
        HParam("code_size", "int", 16, "bottleneck (code) dimension", low=1),
        HParam("ae_hidden", "str", "128", "dense encoder hidden widths, '-' separated (decoder mirrors)"),
        HParam("ae_conv", "bool", False, "convolutional encoder/decoder (needs (C, H, W) images)"),
    ),
    default_dataset="digits_images",
    reference=("measured: adam lr=1e-3 (defaults), batch 64, 20 epochs on digits_images (dense 128, code 16), "
               "seed 0: val/mse 0.0130, test/mse 0.0125 (pixels in [0, 1])"),
    objective="val/mse",
))
MODELS.register(ModelInfo(
    name="gan", factory="bench.models.gan:GAN",
    summary="MLP generator + discriminator, BCE losses, manual optimization; metric kernel MMD (no download)",
    hparams=(
        HParam("gan_latent", "int", 16, "noise (latent) dimension of the generator", low=1),
        HParam("gan_hidden", "str", "128-128", "hidden widths of G and D, '-' separated"),
        HParam("gan_lr_ratio", "float", 1.0, "discriminator lr / generator lr (lr_scale of D's optimizer)", low=0.0),
        HParam("gan_batch_norm", "bool", True, "batch norm in the generator's hidden layers"),
        HParam("gan_instance_noise", "float", 0.2, "std of Gaussian noise added to D's inputs in training", low=0.0),
    ),
    default_dataset="digits_images",
    reference=("measured: adam lr=1e-3 (defaults) for G and D (gan_lr_ratio 1), batch 64, 60 epochs on "
               "digits_images, seed 0: val/mmd 0.240, test/mmd 0.239 (untrained generator 1.66, real-vs-real "
               "floor |mmd| < 0.002)"),
    objective="val/mmd",
    own_steps=True,  # one D and one G update per batch, stepped by its own training_step
))
MODELS.register(ModelInfo(
    name="transformer", factory="bench.models.transformer:Transformer",
    summary="decoder-only Transformer (causal multi-head attention) on seq2seq tasks; greedy-decoded accuracy",
    tasks=("sequence",),
    hparams=(
        HParam("d_model", "int", 64, "embedding / residual width", low=1),
        HParam("n_heads", "int", 4, "attention heads (must divide d_model)", low=1),
        HParam("n_layers", "int", 2, "Transformer blocks", low=1),
        HParam("ff_dim", "int", 128, "hidden width of each block's feed-forward layer", low=1),
        HParam("tf_dropout", "float", 0.0, "dropout in attention and feed-forward", low=0.0, high=0.95),
    ),
    default_dataset="sequences",
    reference=("measured: adam lr=1e-3 (defaults), batch 64, 10 epochs on sequences (sort, len 8, vocab 10, 3000), "
               "seed 0: val/seq_acc 0.892, val/token_acc 0.975, test/seq_acc 0.895"),
    objective="val/seq_acc",
))
MODELS.register(ModelInfo(
    name="resnet", factory="bench.models.resnet:ResNet",
    summary="CIFAR ResNet (He et al. 2016, sec. 4.2): depth 6n+2 (20/32/56), widths 16-32-64, batch norm",
    tasks=("multiclass", "binary"),
    hparams=(
        HParam("depth", "int", 20, "layers with weights: 6n + 2 (20, 32, 44, 56, 110)", low=8),
        HParam("resnet_width", "int", 16, "channels of the first stage (then 2x and 4x)", low=1),
        HParam("resnet_shortcut", "str", "A", "A: identity + zero-padded channels (the paper's CIFAR nets); "
               "B: 1x1 projection where the shape changes", choices=("A", "B")),
    ),
    default_dataset="digits_images",
    reference=("measured: adam lr=1e-3 (defaults), batch 64, 10 epochs on digits_images (ResNet-20, option A), "
               "seed 0: val/acc 0.994, test/acc 0.975; 2.5 s per epoch on one CPU thread"),
    objective="val/acc",
))
MODELS.register(ModelInfo(
    name="gru", factory="bench.models.gru:GRU",
    summary="GRU classifier: (C, L) signals as L steps of C features (images row by row); last state or mean",
    tasks=("multiclass", "binary", "regression"),
    hparams=(
        HParam("gru_hidden", "int", 64, "hidden units per GRU layer (and direction)", low=1),
        HParam("gru_layers", "int", 1, "stacked GRU layers", low=1),
        HParam("bidirectional", "bool", False, "read the sequence in both directions"),
        HParam("gru_pool", "str", "last", "read-out: the top layer's last hidden state, or the mean of its outputs",
               choices=("last", "mean")),
    ),
    default_dataset="mnist1d",
    reference=("measured: adam lr=1e-3 (defaults), batch 64, 20 epochs on mnist1d (hidden 64, last state), seed 0: "
               "val/acc 0.518, test/acc 0.494, still rising; 3.6 s per epoch on one CPU thread"),
    objective="val/acc",
))
