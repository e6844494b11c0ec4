"""Regularizer registry: what each one changes, its hyper-parameters, and what it switches on.

A run lists regularizers by name (`regularizers = ["l2", "dropout"]`); several combine. Each entry
says which part of training it changes (`changes`), because that is what separates them:

| name           | changes  | how                                                                     |
|----------------|----------|-------------------------------------------------------------------------|
| l2             | loss     | coupled L2: optimizer adds weight_decay*w to the gradient (= +wd/2 ||w||^2) |
| decoupled_wd   | update   | w <- w (1 - lr*decoupled_weight_decay) before each step (AdamW-style, any optimizer) |
| l1             | loss     | + l1_strength * sum |w| over weight matrices (biases excluded)          |
| label_smoothing| loss     | cross-entropy / BCE against smoothed targets (classification)           |
| dropout        | model    | the model's dropout rate (a stochastic training-time network)           |
| noise          | data     | gaussian noise on each training batch's inputs                          |
| shift          | data     | random translations of image inputs by up to max_shift pixels           |
| grad_clip      | update   | rescale the gradient to total L2 norm <= grad_clip_norm (Trainer)       |
| early_stopping | stopping | stop after early_stop_patience epochs without a better val objective |

Each entry is a RegularizerInfo (bench/registry.py): `hparams` are its own (flat, globally unique
names), `borrows` the model/optimizer knobs it switches on with the value used when the study
neither fixes nor tunes them (`l2` -> weight_decay), `space` the default search space added to an
arm's, `changes` / `how` the table above (shown by `bench list` and in reports), `tasks` the
dataset tasks it applies to (None: all). The hooks live in bench/optim/regularization.py, imported
on first build. Plug-in packages add regularizers through the `bench.regularizers` entry-point group.
"""

from __future__ import annotations

from bench import plugins
from bench.hparams import HParam, dist
from bench.registry import Registry, RegularizerInfo

REGULARIZERS: Registry[RegularizerInfo] = Registry("regularizer", "bench.regularizers", plugins.regularizer_info)

REGULARIZERS.register(RegularizerInfo(
    name="l2", factory="bench.optim.regularization:l2",
    summary="coupled L2 penalty (the optimizer's weight_decay)", changes="loss",
    how="optimizer adds weight_decay*w to the gradient, i.e. the loss gains weight_decay/2*||w||^2; "
        "Adam/Adagrad then rescale it per coordinate",
    borrows={"weight_decay": 5e-4}, space={"weight_decay": dist(1e-6, 1e-2, log=True)},
))
REGULARIZERS.register(RegularizerInfo(
    name="dropout", factory="bench.optim.regularization:dropout",
    summary="dropout in the model (its `dropout` rate)", changes="model",
    how="zeroes hidden units with probability dropout during training (inverted scaling)",
    borrows={"dropout": 0.2}, space={"dropout": dist(0.0, 0.5)},
))
REGULARIZERS.register(RegularizerInfo(
    name="l1", factory="bench.optim.regularization:l1",
    summary="explicit L1 penalty on weight matrices (sparsity)", changes="loss",
    how="loss += l1_strength * sum|w| over weight matrices (biases excluded)",
    hparams=(HParam("l1_strength", "float", 1e-4, "L1 coefficient", low=0.0),),
    space={"l1_strength": dist(1e-6, 1e-2, log=True)},
))
REGULARIZERS.register(RegularizerInfo(
    name="label_smoothing", factory="bench.optim.regularization:label_smoothing",
    summary="train against smoothed class targets", changes="loss",
    how="cross-entropy (or BCE) against targets mixed with the uniform distribution",
    hparams=(HParam("label_smoothing", "float", 0.1, "mass moved to the uniform target", low=0.0, high=0.5),),
    space={"label_smoothing": dist(0.0, 0.3)}, tasks=("multiclass", "binary"),
))
REGULARIZERS.register(RegularizerInfo(
    name="noise", factory="bench.optim.regularization:noise",
    summary="gaussian input noise (tabular data; features are standardized)", changes="data",
    how="x + input_noise_std * N(0, 1) on every training batch (validation/test untouched)",
    hparams=(HParam("input_noise_std", "float", 0.1, "noise std in standardized feature units", low=0.0),),
    space={"input_noise_std": dist(0.01, 1.0, log=True)},
))
REGULARIZERS.register(RegularizerInfo(
    name="shift", factory="bench.optim.regularization:shift",
    summary="random small translations of image inputs (augmentation)", changes="data",
    how="each training image moved by up to max_shift pixels per axis, zero fill",
    hparams=(HParam("max_shift", "int", 1, "largest translation in pixels", low=0, high=8),),
    input_rank=2,
))
REGULARIZERS.register(RegularizerInfo(
    name="decoupled_wd", factory="bench.optim.regularization:decoupled_wd",
    summary="decoupled weight decay (AdamW-style; also for sgd, bgd, adagrad)",
    changes="update",
    how="w <- w*(1 - lr*decoupled_weight_decay) before each optimizer update, outside the "
        "adaptive scaling (Adam + this = AdamW)",
    hparams=(HParam("decoupled_weight_decay", "float", 1e-2, "decay per unit lr per step", low=0.0),),
    space={"decoupled_weight_decay": dist(1e-5, 0.3, log=True)},
))
REGULARIZERS.register(RegularizerInfo(
    name="grad_clip", factory="bench.optim.regularization:grad_clip",
    summary="gradient-norm clipping", changes="update",
    how="gradient rescaled to total L2 norm <= grad_clip_norm before each step (Lightning Trainer)",
    hparams=(HParam("grad_clip_norm", "float", 1.0, "largest total gradient norm", low=1e-12),),
    space={"grad_clip_norm": dist(0.1, 10.0, log=True)},
))
REGULARIZERS.register(RegularizerInfo(
    name="early_stopping", factory="bench.optim.regularization:early_stopping",
    summary="stop on a validation plateau, keep the best epoch's weights",
    changes="stopping",
    how="stop after early_stop_patience epochs without improving the objective by > early_stop_min_delta; "
        "restore the best epoch (spent epochs still count)",
    hparams=(
        HParam("early_stop_patience", "int", 3, "epochs without improvement before stopping", low=1),
        HParam("early_stop_min_delta", "float", 0.0, "smallest improvement that counts (absolute)", low=0.0),
    ),
))
