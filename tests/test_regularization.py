"""Regularizers: registry contract, each one's measurable effect, and study-file validation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.optim.optimizer import register_optimizer_step_post_hook

from bench.data import load_dataset
from bench.models import MODELS
from bench.optim import OPTIMIZERS, REGULARIZERS, SCHEDULES, regularization
from bench.optim.torch_optimizers import with_decoupled_weight_decay
from bench.spec import TRAINING_HPARAMS, RunConfig, SpecError, arms, parse
from bench.train import fit

CHANGES = {"loss", "update", "model", "data", "stopping"}


def build(name: str, **kwargs) -> regularization.Regularizer:
    return REGULARIZERS.get(name).load()(**kwargs)


@pytest.mark.parametrize("entry", list(REGULARIZERS), ids=lambda e: e.name)
def test_registry_entry_declares_what_it_changes(entry):
    assert entry.changes in CHANGES
    assert entry.how
    own = {hp.name for hp in entry.hparams}
    for name in entry.space:
        assert name in own or name in entry.borrows, name
    # built with its defaults, each entry installs at least one hook or borrows a knob
    reg = build(entry.name, **{hp.name: hp.default for hp in entry.hparams})
    hooks = [h for h in ("penalty", "transform", "wrap_optimizer", "trainer_kwargs", "attach")
             if regularization.overrides(reg, h)]
    assert hooks or entry.borrows or isinstance(reg, regularization.EarlyStopping)


def test_hyperparameter_names_are_globally_unique():
    """One name, one declaration: a shared name (lr, weight_decay, final_lr_fraction) of the built-ins
    must be the same HParam object wherever it appears (plug-ins may reuse a name; a run refuses two
    owners of one name, see test_plugins)."""
    seen: dict[str, object] = {}
    groups = [reg.get(n).hparams for reg in (MODELS, OPTIMIZERS, SCHEDULES, REGULARIZERS) for n in reg.builtin_names()]
    for hp in [hp for group in groups for hp in group] + list(TRAINING_HPARAMS):
        assert seen.setdefault(hp.name, hp) == hp, hp.name


def test_listed_regularizers_switch_on_their_borrowed_knobs():
    config = RunConfig.build(model="mlp", dataset="digits", optimizer="adam", regularizers=["l2", "dropout"])
    assert config.params["weight_decay"] == 5e-4 and config.params["dropout"] == 0.2
    assert RunConfig.build(model="mlp", dataset="digits", optimizer="adam").params["weight_decay"] == 0.0
    fixed = RunConfig.build(model="mlp", dataset="digits", optimizer="adam", regularizers=["l2"],
                            params={"weight_decay": 1e-3})
    assert fixed.params["weight_decay"] == 1e-3
    with pytest.raises(ValueError, match="l1_strength: not a hyper-parameter of mlp/adam/constant"):
        RunConfig.build(model="mlp", dataset="digits", optimizer="adam", params={"l1_strength": 0.1})


def test_l1_drives_irrelevant_weights_to_zero():
    """Linear regression, 2 informative of 10 features, 30 examples: least squares fits noise into
    the 8 irrelevant weights; the L1 penalty (subgradient, full batch) pins them near zero."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(30, 10, generator=gen)
    y = 3 * x[:, :1] - 2 * x[:, 1:2] + 0.5 * torch.randn(30, 1, generator=gen)

    def train(strength: float) -> torch.Tensor:
        torch.manual_seed(0)
        model = torch.nn.Linear(10, 1)
        penalties = [build("l1", l1_strength=strength).penalty] if strength else []
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        for _ in range(3000):
            opt.zero_grad()
            loss = F.mse_loss(model(x), y) + sum(p(model) for p in penalties)
            loss.backward()
            opt.step()
        return model.weight.detach()[0]

    plain, sparse = train(0.0), train(0.5)
    assert plain[2:].abs().max() > 0.05  # noise fitted
    assert sparse[2:].abs().max() < 1e-2  # zero up to the subgradient oscillation (~ lr * strength)
    assert sparse[0] > 2.0 and sparse[1] < -1.0  # the signal survives, shrunk


def test_penalty_is_added_to_the_step_loss_but_not_to_the_logged_train_loss():
    data = load_dataset("digits")
    module = MODELS.get("mlp").load()(data, None, hidden_sizes="16", activation="relu", dropout=0.0)
    l1 = build("l1", l1_strength=0.01)
    x, y = data.train.x[:32], data.train.y[:32]
    data_loss = module.training_loss(x, y)
    module.loss_penalties.append(l1.penalty)
    step_loss = module.training_step((x, y, 1.0), 0)
    weights = sum(p.abs().sum() for p in module.parameters() if p.ndim >= 2)
    assert step_loss.item() == pytest.approx((data_loss + 0.01 * weights).item(), rel=1e-6)
    assert module.pop_train_loss() == pytest.approx(data_loss.item(), rel=1e-6)


def test_decoupled_decay_on_adam_is_adamw_exactly():
    x, y = torch.randn(64, 5, generator=torch.Generator().manual_seed(0)), torch.randn(64, 1)

    def run(make) -> torch.Tensor:
        torch.manual_seed(1)
        model = torch.nn.Linear(5, 1)
        opt = make(model.parameters())
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 / (1 + s))  # wraps optimizer.step too

        def closure():
            opt.zero_grad()
            loss = F.mse_loss(model(x), y)
            loss.backward()
            return loss

        for _ in range(20):
            opt.step(closure)
            sched.step()
        return model.weight.detach()

    ours = run(lambda p: with_decoupled_weight_decay(torch.optim.Adam(p, lr=0.1, weight_decay=0.0), 0.5))
    reference = run(lambda p: torch.optim.AdamW(p, lr=0.1, weight_decay=0.5))
    assert torch.equal(ours, reference)


def test_coupled_l2_is_rescaled_by_adam_but_decoupled_decay_is_not():
    """With no data gradient, coupled L2 feeds g = wd*w through Adam, whose first step is lr*g/|g|:
    every weight moves by lr whatever its size. Decoupled decay shrinks each weight by lr*wd*w."""
    lr, wd = 0.01, 0.1

    def one_step(decoupled: bool) -> torch.Tensor:
        w = torch.nn.Parameter(torch.tensor([2.0, 0.5, -0.05]))
        opt = torch.optim.Adam([w], lr=lr, weight_decay=0.0 if decoupled else wd, eps=1e-12)
        if decoupled:
            with_decoupled_weight_decay(opt, wd)
        opt.zero_grad()
        (0.0 * w.sum()).backward()  # zero data gradient
        opt.step()
        return w.detach()

    coupled, decoupled = one_step(False), one_step(True)
    assert coupled.tolist() == pytest.approx([2.0 - lr, 0.5 - lr, -0.05 + lr], abs=1e-6)
    assert decoupled.tolist() == pytest.approx([2.0 * (1 - lr * wd), 0.5 * (1 - lr * wd), -0.05 * (1 - lr * wd)],
                                               abs=1e-7)


def test_gradient_clipping_bounds_the_norm_of_every_step():
    norms: list[float] = []

    def record(optimizer, args, kwargs):  # gradients are still in place after the step
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        norms.append(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item())

    handle = register_optimizer_step_post_hook(record)
    try:
        base = dict(model="mlp", dataset="digits", optimizer="sgd", epochs=1)
        fit(RunConfig.build(**base, params={"lr": 0.1, "hidden_sizes": "32"}))
        unclipped, norms[:] = list(norms), []
        result = fit(RunConfig.build(**base, regularizers=["grad_clip"],
                                     params={"lr": 0.1, "hidden_sizes": "32", "grad_clip_norm": 0.05}))
    finally:
        handle.remove()
    assert len(norms) == result.steps == 17
    assert max(unclipped) > 0.2  # without clipping the bound would be violated
    assert max(norms) <= 0.05 * (1 + 1e-5)


def test_early_stopping_stops_restores_and_counts_the_spent_epochs():
    """lr 1e-12 freezes val/acc: the best epoch is 1 and patience 2 stops the run after epoch 3."""
    config = RunConfig.build(model="mlp", dataset="digits", optimizer="sgd", epochs=10, regularizers=["early_stopping"],
                             params={"lr": 1e-12, "hidden_sizes": "16", "early_stop_patience": 2})
    result = fit(config)
    assert result.status == "completed"
    assert result.epochs == 3 and len(result.history) == 3
    assert result.steps == 3 * 17  # the patience epochs were spent and are counted
    assert result.reason.startswith("early stopped at epoch 3: no improvement > 0 for 2 epochs")
    assert {"best_epoch": 1, "early_stopped": True}.items() <= result.extra.items()
    assert result.final["best_epoch"] == 1.0
    assert result.objective == result.history[0]["val/acc"]


def test_early_stopping_restores_the_best_weights():
    stopper = regularization.EarlyStopping(patience=2, min_delta=0.01)
    model = torch.nn.Linear(2, 1)
    best_weight = model.weight.detach().clone()
    assert stopper.update(1, 0.5, "minimize", model) is None
    with torch.no_grad():
        model.weight.add_(1.0)
    assert stopper.update(2, 0.495, "minimize", model) is None  # within min_delta: not better
    reason = stopper.update(3, 0.7, "minimize", model)
    assert reason is not None and "best 0.5 at epoch 1" in reason
    assert stopper.restore(model) == 1
    assert torch.equal(model.weight.detach(), best_weight)


def test_label_smoothing_is_attached_and_changes_the_training_loss():
    data = load_dataset("digits")
    module = MODELS.get("mlp").load()(data, None, hidden_sizes="16", activation="relu", dropout=0.0)
    x, y = data.train.x[:64], data.train.y[:64]
    plain = module.training_loss(x, y).item()
    build("label_smoothing", label_smoothing=0.2).attach(module)
    assert module.label_smoothing == 0.2
    assert module.training_loss(x, y).item() == pytest.approx(
        F.cross_entropy(module(x), y, label_smoothing=0.2).item())
    assert module.training_loss(x, y).item() != pytest.approx(plain)
    assert module.evaluate(data.val)["loss"] == pytest.approx(F.cross_entropy(module(data.val.x), data.val.y).item(),
                                                              rel=1e-5)  # evaluation stays unsmoothed


def test_input_noise_and_shift_transform_training_batches():
    torch.manual_seed(0)
    noise = build("noise", input_noise_std=0.5)
    assert noise.transform(torch.zeros(20000, 4)).std().item() == pytest.approx(0.5, rel=0.02)
    images = torch.zeros(500, 1, 8, 8)
    images[:, 0, 4, 4] = 1.0
    shifted = regularization.random_shift(images, 2)
    assert shifted.shape == images.shape and torch.all(shifted.sum((1, 2, 3)) == 1.0)  # moved, not lost
    rows, cols = shifted[:, 0].nonzero()[:, 1], shifted[:, 0].nonzero()[:, 2]
    assert set(rows.tolist()) == {2, 3, 4, 5, 6} and set(cols.tolist()) == {2, 3, 4, 5, 6}


def test_shift_needs_image_inputs():
    config = RunConfig.build(model="mlp", dataset="digits", optimizer="sgd", epochs=1, regularizers=["shift"])
    with pytest.raises(ValueError, match=r"shift: needs image inputs .*digits has \(64,\)"):
        fit(config)
    images = RunConfig.build(model="mlp", dataset="digits_images", optimizer="sgd", epochs=1, regularizers=["shift"],
                             params={"lr": 0.1, "hidden_sizes": "16"})
    assert fit(images).status == "completed"


def _study(**arm) -> dict:
    return {"name": "r", "model": "mlp", "dataset": "digits", "arms": [{"optimizer": "adam", **arm}]}


def test_study_file_validation_of_regularizers():
    spec = parse(_study(regularizers=["l2", "l1"]))
    assert set(arms(spec)[0].space) == {"lr", "eps", "weight_decay", "l1_strength"}
    with pytest.raises(SpecError, match=r"arms\[0\]\.regularizers: 'dropout' needs a component with the "
                                        r"hyper-parameter 'dropout'"):
        parse({**_study(regularizers=["dropout"]), "model": "linear"})
    with pytest.raises(SpecError, match=r"arms\[0\]\.regularizers: 'label_smoothing' applies to "
                                        r"multiclass/binary data, not regression"):
        parse({**_study(regularizers=["label_smoothing"]), "dataset": "diabetes", "objective": "val/mse"})
    with pytest.raises(SpecError, match=r"arms\[0\]\.regularizers: 'l2' is listed twice"):
        parse(_study(regularizers=["l2", "l2"]))
    with pytest.raises(SpecError, match=r"arms\[0\]\.regularizers: unknown 'l3'"):
        parse(_study(regularizers=["l3"]))


def test_gradient_clipping_also_bounds_the_gans_own_manual_steps():
    norms: list[float] = []

    def record(optimizer, args, kwargs):
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        norms.append(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item())

    handle = register_optimizer_step_post_hook(record)
    try:
        base = dict(model="gan", dataset="digits_images", optimizer="adam", epochs=1)
        fit(RunConfig.build(**base))
        unclipped, norms[:] = list(norms), []
        result = fit(RunConfig.build(**base, regularizers=["grad_clip"], params={"grad_clip_norm": 0.05}))
    finally:
        handle.remove()
    assert result.status == "completed"
    assert len(norms) == len(unclipped) == result.steps  # D and G steps, both counted
    assert max(unclipped) > 0.2
    assert max(norms) <= 0.05 * (1 + 1e-5)
