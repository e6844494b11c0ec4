"""Optimizer registry: sgd (mini-batch), bgd (true full-batch GD), adam, adagrad; any other by name.

Every argument of the torch optimizer is set explicitly from a declared hyper-parameter (their
defaults are the torch defaults) and each entry ships a default search space (AlgoPerf-style
ranges; lr always log-scale) that a study file may override. The factories live in
bench/optim/torch_optimizers.py and are imported on first build, so this module imports no torch.

Beyond the four: a study file may name any optimizer by import path (`torch.optim.AdamW`,
`mypkg.optim:Lion`) and a plug-in package may add names (entry-point group `bench.optimizers`);
both become OptimizerInfos read off the class signature (bench/plugins.py).
"""

from __future__ import annotations

from bench import plugins
from bench.hparams import HParam, dist
from bench.registry import OptimizerInfo, Registry

OPTIMIZERS: Registry[OptimizerInfo] = Registry("optimizer", "bench.optimizers", plugins.optimizer_info, imports=True)

LR = HParam("lr", "float", 0.01, "learning rate (peak value when a schedule is used)", low=0.0)
WEIGHT_DECAY = HParam("weight_decay", "float", 0.0, "coupled L2 penalty added to the gradient", low=0.0)
MOMENTUM = HParam("momentum", "float", 0.0, "heavy-ball momentum (0 = plain gradient descent)", low=0.0, high=1.0)
NESTEROV = HParam("nesterov", "bool", False, "Nesterov momentum (needs momentum > 0)")

OPTIMIZERS.register(OptimizerInfo(
    name="sgd", factory="bench.optim.torch_optimizers:sgd",
    summary="mini-batch stochastic gradient descent (momentum 0 unless tuned)",
    hparams=(LR, MOMENTUM, NESTEROV, WEIGHT_DECAY),
    space={"lr": dist(1e-3, 1.0, log=True)},
    elementwise=True,
))
OPTIMIZERS.register(OptimizerInfo(
    name="bgd", factory="bench.optim.torch_optimizers:sgd",
    summary="batch gradient descent: one step per epoch on the exact full training-set gradient",
    hparams=(LR, MOMENTUM, NESTEROV, WEIGHT_DECAY),
    # One step per epoch takes fewer, larger-risk steps: the range reaches higher than sgd's.
    space={"lr": dist(1e-2, 10.0, log=True)},
    full_batch=True,
    elementwise=True,
))
OPTIMIZERS.register(OptimizerInfo(
    name="adam", factory="bench.optim.torch_optimizers:adam",
    summary="Adam (Kingma & Ba 2015), betas and eps explicit",
    hparams=(
        LR,
        HParam("beta1", "float", 0.9, "first-moment decay", low=0.0, high=1.0),
        HParam("beta2", "float", 0.999, "second-moment decay", low=0.0, high=1.0),
        HParam("eps", "float", 1e-8, "denominator epsilon", low=0.0),
        WEIGHT_DECAY,
    ),
    space={"lr": dist(1e-5, 1e-1, log=True), "eps": dist(1e-10, 1e-6, log=True)},
    elementwise=True,
))
OPTIMIZERS.register(OptimizerInfo(
    name="adagrad", factory="bench.optim.torch_optimizers:adagrad",
    summary="Adagrad (Duchi et al. 2011): per-coordinate steps from accumulated squared gradients",
    hparams=(
        LR,
        HParam("initial_accumulator_value", "float", 0.0, "starting value of the accumulator", low=0.0),
        HParam("adagrad_eps", "float", 1e-10, "denominator epsilon", low=0.0),
        WEIGHT_DECAY,
    ),
    space={"lr": dist(1e-3, 1.0, log=True), "initial_accumulator_value": dist(1e-6, 1.0, log=True)},
    elementwise=True,
))
