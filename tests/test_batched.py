"""Batched runs (bench/batched.py): every member equals its sequential `fit`, in float64, to 1e-6
relative; divergence, pruning and early stopping are per member; what is not elementwise is refused
with its reason; studies train eval seeds (default) and tuning batches (opt-in) batched."""

from __future__ import annotations

import textwrap
from collections import Counter

import optuna
import pytest
import torch
from mlflow import MlflowClient
from optuna.trial import TrialState

from bench.batched import NotBatchable, fit_batched, why_not
from bench.spec import RunConfig
from bench.train import fit
from bench.tuning.storage import open_storage

MODELS = {  # small members: the cases are about equality, not accuracy
    "mlp": ("digits", {"hidden_sizes": "32"}, {}),
    "cnn": ("digits_images", {"cnn_channels": "4-8", "batch_norm": False}, {}),
    "transformer": ("sequences", {"d_model": 16, "n_heads": 2, "n_layers": 1, "ff_dim": 32},
                    {"n_samples": 300}),
}
LR = {"sgd": 0.1, "bgd": 0.5, "adam": 0.003, "adagrad": 0.05}
TIMES = ("epoch_time_s", "train_time_s", "wall_time_s")


def config(model: str, optimizer: str, seed: int, **over) -> RunConfig:
    dataset, params, data_args = MODELS[model]
    params = {**params, "lr": LR[optimizer], **over.pop("params", {})}
    if optimizer == "bgd":
        params.setdefault("bgd_max_chunk", 256)  # several chunks accumulated into each step
    else:
        params.setdefault("batch_size", 64)
    rest = {"epochs": 2, "precision": "64-true", **over}
    rest.setdefault("accelerator", "cpu")
    return RunConfig.build(model=model, dataset=dataset, optimizer=optimizer, params=params, data_args=data_args,
                           seed=seed, evaluate_test=True, **rest)


def assert_same(sequential, batched, tol: float = 1e-6) -> None:
    assert batched.status == sequential.status and batched.reason == sequential.reason
    assert (batched.steps, batched.samples, batched.epochs) == (sequential.steps, sequential.samples,
                                                                 sequential.epochs)
    assert len(batched.history) == len(sequential.history)
    for point_b, point_s in zip(batched.history, sequential.history):
        assert point_b.keys() == point_s.keys()
        for key, value in point_s.items():
            if key not in TIMES:
                assert point_b[key] == pytest.approx(value, rel=tol, abs=1e-12, nan_ok=True), key
    finals = {k: v for k, v in sequential.final.items() if k not in TIMES}
    assert {k: batched.final[k] for k in finals} == pytest.approx(finals, rel=tol, abs=1e-12, nan_ok=True)


@pytest.mark.parametrize("optimizer", ["sgd", "bgd", "adam", "adagrad"])
@pytest.mark.parametrize("model", ["mlp", "cnn", "transformer"])
def test_every_member_equals_its_sequential_run_in_float64(model, optimizer):
    configs = [config(model, optimizer, seed) for seed in (1000, 1001)]
    batched = fit_batched(configs, [None, None])
    for c, result in zip(configs, batched):
        assert result.extra["batched"] == 2
        assert_same(fit(c), result)
    # the members are different runs (own initial weights and batch order), not copies
    assert batched[0].history[-1]["val/loss"] != batched[1].history[-1]["val/loss"]


def test_per_member_hyper_parameters_a_steps_budget_and_a_schedule_match_sequential_runs():
    """A tuning batch: lr, eps and the schedule's values differ per member (one parameter group
    each); a steps budget evaluated every 7 steps, so points fall within epochs."""
    configs = [config("mlp", "adam", 0, steps=40, eval_every=7, epochs=None, schedule="warmup_cosine",
                      regularizers=("l2", "label_smoothing"),
                      params={"lr": lr, "eps": eps, "warmup_fraction": w, "weight_decay": 1e-3})
               for lr, eps, w in ((0.003, 1e-8, 0.1), (0.01, 1e-6, 0.3), (0.001, 1e-7, 0.0))]
    assert why_not(configs) is None
    batched = fit_batched(configs, [None] * 3)
    assert [len(r.history) for r in batched] == [6, 6, 6] and batched[0].steps == 40
    for c, result in zip(configs, batched):
        assert_same(fit(c), result)
    assert len({r.history[1]["lr"] for r in batched}) == 3  # each member its own lr and schedule


def test_a_diverging_member_is_frozen_and_recorded_while_the_others_go_on():
    configs = [config("mlp", "sgd", 0, epochs=3, params={"lr": lr}) for lr in (0.1, 1e6, 0.05)]
    batched = fit_batched(configs, [None] * 3)
    assert [r.status for r in batched] == ["completed", "diverged", "completed"]
    for c, result in zip(configs, batched):
        assert_same(fit(c), result)  # the diverged member's reason and point too
    assert batched[1].reason.startswith(("train/loss=", "val/loss=")) and "test/acc" not in batched[1].final


def test_early_stopping_and_pruning_are_decided_per_member():
    stop = {"early_stop_patience": 1}
    configs = [config("mlp", "sgd", 0, epochs=8, regularizers=("early_stopping",), params={"lr": lr, **stop})
               for lr in (0.3, 0.002, 0.05, 0.1)]

    def pruner(member: int):
        return lambda point, metrics: "pruned at 2" if member == 3 and point == 2 else None

    batched = fit_batched(configs, [pruner(k) for k in range(4)])
    for k, (c, result) in enumerate(zip(configs, batched)):
        assert_same(fit(c, reporter=pruner(k)), result)
    assert batched[3].status == "pruned" and len(batched[3].history) == 2
    lengths = [len(r.history) for r in batched[:3]]
    assert len(set(lengths)) > 1  # members stopped at different epochs (masks exercised)
    assert any(r.extra.get("early_stopped") for r in batched[:3])


@pytest.mark.parametrize(("change", "reason"), [
    ({"regularizers": ("grad_clip",)}, "gradient-norm clipping (the norm is per member)"),
    ({"seconds": 1.0, "epochs": None}, "a seconds budget (each run counts its own training clock)"),
    ({"precision": "bf16-mixed"}, "precision bf16-mixed (batched runs train in full precision)"),
])
def test_what_is_not_elementwise_is_refused_with_its_reason(change, reason):
    configs = [config("mlp", "sgd", s, **change) for s in (0, 1)]
    assert why_not(configs) == reason
    with pytest.raises(NotBatchable, match=r"^" + reason.replace("(", r"\(").replace(")", r"\)") + "$"):
        fit_batched(configs, [None, None])


def test_models_and_optimizers_that_cannot_batch_are_refused_before_any_training():
    lbfgs = [RunConfig.build(model="mlp", dataset="digits", optimizer="torch.optim.LBFGS", params={"lr": 0.1},
                             epochs=1, seed=s) for s in (0, 1)]
    assert why_not(lbfgs) == "optimizer torch.optim.LBFGS re-evaluates the loss in its step (closure)"
    bn = [config("cnn", "sgd", s, params={"batch_norm": True}) for s in (0, 1)]
    with pytest.raises(NotBatchable, match="^BatchNorm running statistics"):
        fit_batched(bn, [None, None])
    gru = [RunConfig.build(model="gru", dataset="digits_images", optimizer="sgd", params={"lr": 0.1}, epochs=1,
                           seed=s, accelerator="cpu") for s in (0, 1)]
    with pytest.raises(NotBatchable, match=r"^torch.func cannot batch the model \(Batching rule not implemented "
                                           r"for aten::gru"):
        fit_batched(gru, [None, None])
    plateau = [config("mlp", "sgd", s, schedule="plateau") for s in (0, 1)]
    with pytest.raises(NotBatchable, match="plateau"):
        fit_batched(plateau, [None, None])
    gan = [RunConfig.build(model="gan", dataset="digits_images", optimizer="adam", epochs=1, seed=s) for s in (0, 1)]
    assert why_not(gan) == "model gan steps its optimizers itself"
    assert why_not([config("mlp", "sgd", 0), config("mlp", "sgd", 1, params={"batch_size": 32})]) == \
        "the runs differ in training values (batch_size)"


def study_text(name: str, *, batched: bool, batch: int = 1, n_trials: int = 3, seeds: int = 3) -> str:
    return textwrap.dedent(f"""
        name = "{name}"
        model = "mlp"
        dataset = "digits"
        epochs = 2
        precision = "64-true"
        [params]
        hidden_sizes = "32"
        [tuning]
        n_trials = {n_trials}
        batch = {batch}
        pruner = "none"
        [eval]
        seeds = {seeds}
        batched = {str(batched).lower()}
        [[arms]]
        optimizer = "sgd"
        [[arms]]
        optimizer = "sgd"
        name = "sgd-clipped"
        regularizers = ["grad_clip"]
        """)


def _runs(stores, name: str, phase: str) -> list:
    client = MlflowClient(stores.tracking_uri)
    exp = client.get_experiment_by_name(name)
    return [r for r in client.search_runs([exp.experiment_id], max_results=1000) if r.data.tags.get("phase") == phase]


@pytest.mark.slow
def test_a_study_trains_eval_seeds_batched_by_default_with_the_numbers_of_sequential_seeds(stores, tmp_path):
    for name, batched in (("batched", True), ("sequential", False)):
        (tmp_path / f"{name}.toml").write_text(study_text(name, batched=batched))
        assert stores.run("run", str(tmp_path / f"{name}.toml"), "--quiet") == 0
    evals = {name: {(r.data.tags["arm"], r.data.tags["seed"]): r for r in _runs(stores, name, "eval")}
             for name in ("batched", "sequential")}
    assert len(evals["batched"]) == len(evals["sequential"]) == 6
    for key, run in evals["batched"].items():
        other = evals["sequential"][key]
        assert run.info.status == other.info.status == "FINISHED"
        if key[0] == "sgd":
            assert run.data.tags["batched"] == "3" and "batched_fallback" not in run.data.tags
            assert other.data.tags["batched_fallback"] == "eval.batched = false"
        else:  # clipping is not elementwise: one seed after another, and why
            assert run.data.tags["batched"] == "1"
            assert run.data.tags["batched_fallback"] == "gradient-norm clipping (the norm is per member)"
        for metric in ("test/acc", "test/loss", "val/loss"):
            assert run.data.metrics[metric] == pytest.approx(other.data.metrics[metric], rel=1e-6)


@pytest.mark.slow
def test_a_tuning_batch_asks_b_distinct_trials_trains_them_together_and_survives_a_restart(stores, tmp_path):
    path = tmp_path / "tb.toml"
    path.write_text(study_text("tb", batched=True, batch=4, n_trials=6, seeds=2))
    assert stores.run("run", str(path), "--quiet") == 0
    tune = _runs(stores, "tb", "tune")
    sgd = [r for r in tune if r.data.tags["arm"] == "sgd"]
    # 6 trials in batches of 4: one batch of 4, then one of the 2 slots left
    assert Counter(r.data.tags["batched"] for r in sgd) == {"4": 4, "2": 2}
    clipped = [r for r in tune if r.data.tags["arm"] == "sgd-clipped"]
    assert {r.data.tags["batched_fallback"] for r in clipped} == {"gradient-norm clipping (the norm is per member)"}
    study = optuna.load_study(study_name="tb/sgd", storage=open_storage(stores.storage))
    assert Counter(t.state for t in study.trials) == {TrialState.COMPLETE: 6}
    assert len({t.params["lr"] for t in study.trials}) == 6  # no two members drew the same configuration
    # each trial's objective is its own run's, as a sequential fit of its config gives it
    trial = study.trials[1]
    run = next(r for r in sgd if r.data.tags["optuna_trial"] == str(trial.number))
    assert run.data.metrics["val/acc"] == pytest.approx(trial.value, rel=1e-12)
    # a rerun on the same stores finds the budget spent: no trial is drawn twice or added
    assert stores.run("run", str(path), "--quiet") == 0
    assert len(optuna.load_study(study_name="tb/sgd", storage=open_storage(stores.storage)).trials) == 6


@pytest.mark.slow
def test_tuning_batches_with_two_workers_draw_distinct_trials_and_spend_the_budget_exactly(stores, tmp_path):
    path = tmp_path / "tbw.toml"
    path.write_text(study_text("tbw", batched=True, batch=3, n_trials=6, seeds=2))
    assert stores.run("run", str(path), "--quiet", "--workers", "2") == 0
    study = optuna.load_study(study_name="tbw/sgd", storage=open_storage(stores.storage))
    assert Counter(t.state for t in study.trials) == {TrialState.COMPLETE: 6}
    assert len({t.params["lr"] for t in study.trials}) == 6
    sgd = [r for r in _runs(stores, "tbw", "tune") if r.data.tags["arm"] == "sgd"]
    assert len(sgd) == 6 and all(r.info.status == "FINISHED" for r in sgd)
    assert sum(int(r.data.tags["batched"]) > 1 for r in sgd) >= 4  # most of them trained in batches


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run on a GPU machine)")


@pytest.mark.gpu
@CUDA
@pytest.mark.parametrize("model", ["cnn", "transformer"])
def test_gpu_members_equal_their_sequential_runs_and_cost_less(model):
    configs = [config(model, "adam", seed, accelerator="cuda") for seed in (1000, 1001, 1002)]
    batched = fit_batched(configs, [None] * 3)
    for c, result in zip(configs, batched):
        assert_same(fit(c), result)
    from bench.perf_batched import side_by_side

    timing = side_by_side([config(model, "adam", s, accelerator="cuda", precision="32-true") for s in range(5)], 1)
    assert timing["ratio"] < 1.0, timing  # 5 members in one model cost less than 5 runs


@pytest.mark.parametrize("dataset", ["digits", "diabetes"])  # multiclass: one cross-entropy call; regression
@pytest.mark.parametrize("shared", [False, True])
def test_a_plain_stack_runs_as_batched_matrix_products_with_vmaps_losses_and_gradients(shared, dataset):
    from torch.func import functional_call, vmap

    from bench.batched import _Loss, _plain_module, _Stacked
    from bench.data import load_dataset
    from bench.stacked import stacked_losses

    def module_of(seed: int, **params):
        c = config("mlp", "sgd", seed, params={"hidden_sizes": "16-8", "activation": "tanh", **params})
        c = c.model_copy(update={"dataset": dataset})
        torch.manual_seed(seed)
        data = load_dataset(c.dataset, c.data_seed).to("cpu", torch.float64)
        module = _plain_module(c, data, c.owners().split(c.params), [])
        module.label_smoothing = 0.1  # as the label_smoothing regularizer sets it: task_loss must see it
        return module, data

    modules = [module_of(seed)[0] for seed in (1, 2, 3)]
    data = module_of(1)[1]
    layout = _Stacked([dict(_Loss(m).named_parameters()) for m in modules])
    loss_of = _Loss(modules[0]).train()
    dims = None if shared else 0
    via_vmap = vmap(lambda p, x, y: functional_call(loss_of, p, (x, y)), in_dims=(0, dims, dims),
                    randomness="different")
    via_bmm = stacked_losses(modules[0], "m.", shared_batch=shared)
    x, y = data.train.x[:60], data.train.y[:60]
    if not shared:  # each member's own batch of 20
        x, y = x.view(3, 20, *x.shape[1:]), y.view(3, 20, *y.shape[1:])
    results = []
    for losses_of in (via_vmap, via_bmm):
        losses = losses_of(layout.forward_params(), x, y)
        grads = torch.autograd.grad(losses.sum(), list(layout.leaves.values()))
        results.append((losses.detach(), [g.detach() for g in grads]))
    (loss_v, grads_v), (loss_b, grads_b) = results
    assert loss_b.shape == (3,) and torch.allclose(loss_b, loss_v, rtol=1e-12, atol=0)
    assert all(torch.allclose(gb, gv, rtol=1e-10, atol=1e-14) for gb, gv in zip(grads_b, grads_v))
    assert len(set(loss_b.tolist())) == 3  # three members, three losses
    # what is not a plain stack keeps vmap: a CNN, and an MLP whose module changes its forward
    assert stacked_losses(_plain_module(config("cnn", "sgd", 1), load_dataset("digits_images", 0),
                                        config("cnn", "sgd", 1).owners().split(config("cnn", "sgd", 1).params), []),
                          "m.", shared_batch=False) is None
