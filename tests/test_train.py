"""The `fit(config)` seam: exact full-batch GD, budgets and counters, divergence, stopping."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bench.data import load_dataset
from bench.models import MODELS
from bench.spec import RunConfig
from bench.train import fit, seed_everything


def config(**kw) -> RunConfig:
    base = dict(model="mlp", dataset="digits", optimizer="sgd", params={"lr": 0.1, "hidden_sizes": "32"},
                epochs=2, accelerator="cpu")
    base.update(kw)
    return RunConfig.build(**base)


def test_bgd_takes_one_exact_full_gradient_step_per_epoch_even_when_chunked():
    """One BGD epoch with a 100-example memory cap equals w - lr * grad(mean loss over all 1078)."""
    cfg = config(optimizer="bgd", params={"lr": 0.5, "hidden_sizes": "16", "bgd_max_chunk": 100}, epochs=1)
    data = load_dataset("digits", 0)
    seed_everything(cfg.seed)
    model_p = cfg.owners().split(cfg.params).model
    reference = MODELS.get("mlp").load()(data, None, **model_p)
    loss = F.cross_entropy(reference(data.train.x), data.train.y)
    grads = torch.autograd.grad(loss, list(reference.parameters()))
    expected = [p.detach() - 0.5 * g for p, g in zip(reference.parameters(), grads)]

    captured = {}

    def capture(epoch, metrics):
        captured["steps"] = metrics["steps"]

    # rebuild the same initial weights inside fit (same seed) and compare after one epoch
    result = fit(cfg, reporter=capture)
    assert result.steps == 1 and captured["steps"] == 1.0
    assert result.samples == len(data.train)
    seed_everything(cfg.seed)
    trained = MODELS.get("mlp").load()(data, None, **model_p)
    _train_like_fit(cfg, trained)
    for got, want in zip(trained.parameters(), expected):
        torch.testing.assert_close(got.detach(), want, rtol=1e-5, atol=1e-6)


def _train_like_fit(cfg: RunConfig, module) -> None:
    """Replay fit's BGD epoch through Lightning on `module` (weights returned in place)."""
    import pytorch_lightning as pl

    from bench.data.batches import TensorBatches
    from bench.optim import OPTIMIZERS

    data = load_dataset("digits", 0)
    routed = cfg.owners().split(cfg.params)
    optim_p, train_p = routed.optimizer, routed.training
    module._configure_optim = lambda m, params=None, lr_scale=1.0: OPTIMIZERS.get("bgd").load()(
        m.parameters(), **optim_p)
    n = len(data.train)
    k = math.ceil(n / train_p["bgd_max_chunk"])
    batches = TensorBatches(data.train.x, data.train.y, train_p["bgd_max_chunk"], shuffle=False, seed=0, accumulate=k)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", accumulate_grad_batches=k, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(module, train_dataloaders=batches)
    assert trainer.global_step == 1


def test_sgd_and_bgd_count_steps_samples_and_epochs():
    sgd = fit(config(epochs=3, params={"lr": 0.05, "batch_size": 100, "hidden_sizes": "32"}))
    bgd = fit(config(optimizer="bgd", epochs=3))
    n_train = 1078
    assert sgd.steps == 3 * math.ceil(n_train / 100) and bgd.steps == 3
    assert sgd.samples == bgd.samples == 3 * n_train
    assert [h["steps"] for h in sgd.history] == [11.0, 22.0, 33.0]
    assert len(sgd.history) == 3 and sgd.epochs == 3
    assert {"train/loss", "val/loss", "val/acc", "lr", "epoch_time_s", "steps", "samples",
            "wall_time_s"} <= set(sgd.history[-1])
    assert sgd.history[-1]["lr"] == 0.05


def test_same_config_same_result_and_seed_changes_it():
    a, b = fit(config()), fit(config())
    c = fit(config(seed=1))
    assert a.final["val/loss"] == b.final["val/loss"]
    assert a.final["val/loss"] != c.final["val/loss"]


def test_learning_makes_progress():
    result = fit(config(epochs=5, optimizer="adam", params={"lr": 1e-3, "hidden_sizes": "64"}, evaluate_test=True))
    losses = [h["train/loss"] for h in result.history]
    assert losses[-1] < losses[0] * 0.5
    assert result.final["test/acc"] > 0.85 and result.objective == result.final["val/acc"]


def test_diverging_loss_ends_the_run_with_a_reason_instead_of_raising():
    result = fit(config(params={"lr": 1e6, "hidden_sizes": "32"}, epochs=5))
    assert result.status == "diverged"
    assert "loss=nan" in result.reason or "loss=inf" in result.reason
    assert result.epochs < 5 and result.objective is None


def test_reporter_can_stop_a_run_as_pruned():
    seen = []

    def reporter(epoch, metrics):
        seen.append(epoch)
        return "pruned: test" if epoch == 2 else None

    result = fit(config(epochs=6), reporter=reporter)
    assert result.status == "pruned" and result.reason == "pruned: test"
    assert seen == [1, 2] and result.epochs == 2


def test_binary_mlp_is_logistic_on_breast_cancer():
    result = fit(RunConfig.build(model="mlp", dataset="breast_cancer", optimizer="adam",
                                 params={"lr": 1e-2, "hidden_sizes": "64"}, epochs=5, accelerator="cpu",
                                 evaluate_test=True))
    assert result.final["test/acc"] > 0.9


def test_config_hash_depends_on_values_only():
    assert config().hash() == config().hash()
    assert config().hash() != config(seed=3).hash()
    assert len(config().hash()) == 12


@pytest.mark.parametrize("precision", ["64-true", "bf16-true"])
@pytest.mark.parametrize(("model", "dataset", "metric"), [("mlp", "digits", "val/acc"),
                                                          ("gan", "digits_images", "val/mmd")])
def test_whole_model_precisions_train_on_data_of_the_same_dtype(precision, model, dataset, metric):
    # "-true" precisions convert the model itself; inputs and drawn noise must follow its dtype
    reference = fit(RunConfig.build(model=model, dataset=dataset, optimizer="adam", epochs=2, accelerator="cpu"))
    result = fit(RunConfig.build(model=model, dataset=dataset, optimizer="adam", epochs=2, accelerator="cpu",
                                 precision=precision))
    assert result.status == "completed" and result.steps == reference.steps
    assert math.isfinite(result.final[metric])
    if model == "mlp":  # same training in another dtype: same accuracy within a few examples
        assert abs(result.final[metric] - reference.final[metric]) < 0.03
