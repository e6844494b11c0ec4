"""The model zoo: shapes, learning on a fixed seed, fit -> MLflow, GAN metric and full-batch, quick studies."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from mlflow import MlflowClient

from bench.cli import main
from bench.data import Split, load_dataset
from bench.models import MODELS
from bench.models.gan import GAN, MMD_SCALES, median_distance, mmd2_unbiased
from bench.spec import RunConfig, direction_of, load
from bench.tracking import Tracker
from bench.train import fit
from tests.conftest import STUDIES

ZOO = ["sigmoid_net", "cnn", "autoencoder", "gan", "transformer"]  # each with its studies/optimizers-<model>.toml
NEW = ["resnet", "gru"]  # image and signal models (studies/cifar10-resnet.toml, studies/mnist1d.toml)
# Small data so the per-model tests stay fast; defaults are exercised by test_registry.
SMALL = {
    "sigmoid_net": ("synthetic_regression", {"n_samples": 300, "n_features": 1000, "n_targets": 10}),
    "cnn": ("digits_images", {}),
    "autoencoder": ("digits_images", {}),
    "gan": ("digits_images", {}),
    "transformer": ("sequences", {"seq_task": "reverse", "n_samples": 300}),
    "resnet": ("digits_images", {}),
    "gru": ("mnist1d", {"num_samples": 500}),
}
OBJECTIVE = {"sigmoid_net": "val/mse", "cnn": "val/acc", "autoencoder": "val/mse", "gan": "val/mmd",
             "transformer": "val/seq_acc", "resnet": "val/acc", "gru": "val/acc"}


def build(name: str, **hparams):
    return build_on(name, *SMALL[name], **hparams)


def build_on(name: str, dataset: str, args: dict, **hparams):
    data = load_dataset(dataset, 0, **args)
    defaults = {hp.name: hp.default for hp in MODELS.get(name).hparams}
    torch.manual_seed(0)
    return MODELS.get(name).load()(data, None, **{**defaults, **hparams}), data


# --- shapes ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ZOO + NEW)
def test_forward_backward_shapes(name):
    model, data = build(name)
    x, y = data.train.x[:16], data.train.y[:16]
    if name == "gan":
        z = torch.randn(16, model.latent)
        assert model(z).shape == (16, 1, 8, 8)
        assert model.discriminator(x).shape == (16, 1)
        assert 0 <= model(z).min() and model(z).max() <= 1  # sigmoid output for [0, 1] data
    elif name == "transformer":
        tokens = model._teacher_input(x, y)
        assert tokens.shape == (16, 16) and (tokens[:, 8] == 10).all()  # SEP = vocab_size
        assert model(tokens).shape == (16, 16, 10)
        assert model.generate(x).shape == (16, 8)
    elif name == "autoencoder":
        assert model(x).shape == x.shape == (16, 1, 8, 8)
        assert model.encoder(x).shape == (16, 16)
    else:
        assert model(x).shape == (16, data.n_outputs)
    loss = model.training_loss(x, y)
    assert loss.ndim == 0 and math.isfinite(loss.item())
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum().item() for g in grads) > 0


def test_sigmoid_net_is_two_layers_with_sigmoid_and_mse():
    model, _ = build("sigmoid_net", sigmoid_hidden=7)
    linears = [m for m in model.net if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(1000, 7), (7, 10)]
    assert sum(isinstance(m, torch.nn.Sigmoid) for m in model.net) == 1
    x, y = torch.zeros(4, 1000), torch.ones(4, 10)
    expected = torch.nn.functional.mse_loss(model(x), y)
    assert model.training_loss(x, y).item() == pytest.approx(expected.item())


@pytest.mark.parametrize("residual,batch_norm", [(False, True), (True, False), (True, True)])
def test_cnn_variants_and_mnist_size(residual, batch_norm):
    model, data = build("cnn", residual=residual, batch_norm=batch_norm, cnn_channels="8-16-16")
    has_bn = any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert has_bn == batch_norm
    skips = [m.skip for m in model.modules() if hasattr(m, "skip")]
    assert len(skips) == 3 and all((s is not None) == residual for s in skips)
    assert model(data.train.x[:4]).shape == (4, 10)
    mnist = load_dataset("digits_images")  # same bundle with MNIST-size 28x28 inputs
    big = replace(mnist, train=Split(torch.rand(6, 1, 28, 28), torch.arange(6)), input_shape=(1, 28, 28))
    model = MODELS.get("cnn").load()(big, None, cnn_channels="8-16", residual=residual, batch_norm=batch_norm)
    assert model(big.train.x).shape == (6, 10)


def test_cnn_reads_signals_with_1d_convolutions():
    model, data = build_on("cnn", "mnist1d", {"num_samples": 500}, cnn_channels="8-8-8-8", residual=True)
    kinds = {type(m) for m in model.modules()}
    assert {torch.nn.Conv1d, torch.nn.BatchNorm1d, torch.nn.MaxPool1d} <= kinds
    assert not kinds & {torch.nn.Conv2d, torch.nn.BatchNorm2d, torch.nn.MaxPool2d}
    x = data.train.x[:4]
    assert x.shape == (4, 1, 40) and model(x).shape == (4, 10)
    lengths = []
    hook = lambda m, inp, out: lengths.append(out.shape[-1])  # noqa: E731
    for block in [m for m in model.net if type(m).__name__ == "ConvBlock"]:
        block.register_forward_hook(hook)
    model(x)
    assert lengths == [40, 20, 10, 5]  # pooled between blocks while at least 4 long
    with pytest.raises(ValueError, match=r"\(C, L\) signals"):
        MODELS.get("cnn").load()(load_dataset("digits"), None)


def test_resnet_depth_widths_shortcuts_and_input_sizes():
    cifar = replace(load_dataset("digits_images"), input_shape=(3, 32, 32))
    make = lambda data, **hp: MODELS.get("resnet").load()(data, None, **hp)  # noqa: E731
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    r20 = make(cifar)
    assert count(r20) == 269_722  # the paper's 0.27 M
    blocks = [m for m in r20.modules() if type(m).__name__ == "BasicBlock"]
    assert len(blocks) == 9 and [b.conv2.out_channels for b in blocks] == [16] * 3 + [32] * 3 + [64] * 3
    assert [b.stride for b in blocks] == [1, 1, 1, 2, 1, 1, 2, 1, 1] and all(b.project is None for b in blocks)
    assert r20(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    r56 = make(cifar, depth=56)
    assert len([m for m in r56.modules() if type(m).__name__ == "BasicBlock"]) == 27
    option_b = make(cifar, resnet_shortcut="B")
    assert sum(b.project is not None for b in option_b.modules() if type(b).__name__ == "BasicBlock") == 2
    assert count(option_b) == 269_722 + 16 * 32 + 2 * 32 + 32 * 64 + 2 * 64  # two 1x1 convs + their BN
    wide = make(cifar, resnet_width=32)
    assert wide.net[-1].in_features == 128
    # shortcut A at a stride-2 block: subsampled input, channels zero-padded on both sides
    x = torch.randn(1, 16, 8, 8)
    short = blocks[3].shortcut(x)
    assert short.shape == (1, 32, 4, 4) and torch.equal(short[:, 8:24], x[:, :, ::2, ::2])
    assert (short[:, :8] == 0).all() and (short[:, 24:] == 0).all()
    digits = load_dataset("digits_images")
    assert make(digits)(digits.train.x[:3]).shape == (3, 10)  # 8x8 -> 4x4 -> 2x2
    mnist = replace(digits, input_shape=(1, 28, 28))
    assert make(mnist)(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ValueError, match="6n \\+ 2"):
        make(cifar, depth=21)
    with pytest.raises(ValueError, match="needs \\(C, H, W\\) images"):
        make(load_dataset("digits"))


def test_gru_reads_steps_and_its_readouts():
    model, data = build("gru", gru_hidden=12)
    x = data.train.x[:5]
    net = model.net
    assert net.gru.input_size == 1 and net.gru.hidden_size == 12 and net.head.in_features == 12
    out, h = net.gru(x.transpose(1, 2))  # 40 steps of 1 value
    assert out.shape == (5, 40, 12)
    assert torch.allclose(model(x), net.head(h[-1]), atol=1e-6)  # the last hidden state
    mean, _ = build("gru", gru_hidden=12, gru_pool="mean")
    out, _ = mean.net.gru(x.transpose(1, 2))
    assert torch.allclose(mean(x), mean.net.head(out.mean(1)), atol=1e-6)
    bi, _ = build("gru", gru_hidden=12, gru_layers=2, bidirectional=True)
    _, h = bi.net.gru(x.transpose(1, 2))
    assert h.shape == (4, 5, 12) and bi.net.head.in_features == 24
    assert torch.allclose(bi(x), bi.net.head(torch.cat([h[2], h[3]], dim=1)), atol=1e-6)  # top layer, both ways
    digits = load_dataset("digits_images")  # images: one row of 8 pixels per step
    rows = MODELS.get("gru").load()(digits, None, gru_hidden=8)
    assert rows.net.gru.input_size == 8 and rows(digits.train.x[:3]).shape == (3, 10)
    with pytest.raises(ValueError, match="gru reads"):
        MODELS.get("gru").load()(load_dataset("digits"), None)


def test_conv_autoencoder_and_code_size():
    model, data = build("autoencoder", ae_conv=True, code_size=5)
    x = data.train.x[:8]
    assert model.encoder(x).shape == (8, 5) and model(x).shape == x.shape
    flat = load_dataset("digits")  # dense autoencoder on flat standardized features
    dense = MODELS.get("autoencoder").load()(flat, None, code_size=3, ae_hidden="32-16", ae_conv=False)
    assert dense.encoder(flat.train.x[:8]).shape == (8, 3) and dense(flat.train.x[:8]).shape == (8, 64)
    with pytest.raises(ValueError, match="needs \\(C, H, W\\) images"):
        MODELS.get("autoencoder").load()(flat, None, code_size=3, ae_hidden="32", ae_conv=True)


# --- learning on a fixed seed ----------------------------------------------------------------
@pytest.mark.parametrize("name", ["sigmoid_net", "cnn", "autoencoder", "transformer", "resnet", "gru", "cnn-1d"])
def test_loss_decreases_over_a_few_steps(name):
    model, data = build(name) if name != "cnn-1d" else build_on("cnn", "mnist1d", {"num_samples": 500})
    x, y = data.train.x[:64], data.train.y[:64]
    opt = torch.optim.Adam(model.parameters(), lr=2e-2 if name == "gru" else 3e-3)  # a GRU starts slowly at 3e-3
    first = model.training_loss(x, y).item()
    for _ in range(30):
        opt.zero_grad()
        model.training_loss(x, y).backward()
        opt.step()
    last = model.training_loss(x, y).item()
    assert last < 0.7 * first, (first, last)


def test_gan_discriminator_loss_decreases_with_generator_fixed():
    model, data = build("gan")
    real = data.train.x[:128]
    fake = model(torch.randn(128, model.latent)).detach()
    opt = torch.optim.Adam(model.discriminator.parameters(), lr=1e-3)
    first = model.d_loss(real, fake).item()
    for _ in range(30):
        opt.zero_grad()
        model.d_loss(real, fake).backward()
        opt.step()
    assert model.d_loss(real, fake).item() < 0.5 * first


def test_mlp_binary_mode_on_breast_cancer():
    """The 64 -> 1 example: one logit + sigmoid/BCE (task 'binary'), threshold at logit 0."""
    data = load_dataset("breast_cancer")
    model = MODELS.get("mlp").load()(data, None, hidden_sizes="64", activation="relu", dropout=0.0)
    x, y = data.train.x[:10], data.train.y[:10]
    out = model(x)
    assert out.shape == (10, 1)
    expected = torch.nn.functional.binary_cross_entropy(torch.sigmoid(out.squeeze(-1)), y.float())
    assert model.training_loss(x, y).item() == pytest.approx(expected.item(), rel=1e-5)
    config = RunConfig.build(model="mlp", dataset="breast_cancer", optimizer="adam", params={
        "hidden_sizes": "64", "lr": 1e-3}, epochs=10, objective="val/acc", evaluate_test=True)
    result = fit(config)
    assert result.status == "completed" and result.final["val/acc"] > 0.9 and result.final["test/acc"] > 0.9


# --- fit -> MLflow ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tracker(tmp_path_factory):
    return Tracker(f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db")


@pytest.mark.parametrize("name", ZOO + NEW)
def test_one_epoch_fit_logs_to_mlflow(name, tracker):
    dataset, args = SMALL[name]
    config = RunConfig.build(model=name, dataset=dataset, optimizer="adam", data_args=args, epochs=1,
                             objective=OBJECTIVE[name], evaluate_test=True, accelerator="cpu")
    logger = tracker.start_run(tracker.experiment_id("zoo"), name, {"model": name})
    result = fit(config, reporter=logger)
    logger.log_metrics({k: v for k, v in result.final.items() if k.startswith("test/")}, step=1)
    logger.finish()
    assert result.status == "completed" and result.epochs == 1
    run = tracker.client.get_run(logger.run_id)
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    assert metrics[OBJECTIVE[name]] == pytest.approx(result.final[OBJECTIVE[name]])
    assert f"test/{OBJECTIVE[name].split('/')[1]}" in metrics
    assert {"train/loss", "val/loss", "lr", "steps", "samples"} <= set(metrics)
    n_train = len(load_dataset(dataset, 0, **args).train)
    assert metrics["samples"] == n_train
    batches = math.ceil(n_train / 64)
    assert metrics["steps"] == (2 * batches if name == "gan" else batches)  # the GAN steps D and G


def test_objective_directions_of_zoo_metrics():
    assert direction_of("val/mmd") == "minimize" and direction_of("val/mse") == "minimize"
    assert direction_of("val/seq_acc") == "maximize" and direction_of("val/token_acc") == "maximize"


# --- GAN: metric and full batch ------------------------------------------------------------
def test_mmd_estimator_is_near_zero_for_equal_distributions_and_grows_with_shift():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(400, 8, generator=gen), torch.randn(400, 8, generator=gen)
    bw = tuple(s * median_distance(b) for s in MMD_SCALES)
    same = mmd2_unbiased(a, b, bw)
    shifts = [mmd2_unbiased(a + d, b, bw) for d in (0.25, 0.5, 1.0)]
    assert abs(same) < 0.01
    assert same < shifts[0] < shifts[1] < shifts[2]


def test_gan_mmd_separates_trained_from_untrained_generator():
    config = RunConfig.build(model="gan", dataset="digits_images", optimizer="adam", params={"lr": 1e-3},
                             epochs=30, objective="val/mmd", evaluate_test=True, accelerator="cpu")
    data = load_dataset("digits_images")
    torch.manual_seed(0)
    untrained = GAN(data).evaluate(data.val)["mmd"]
    result = fit(config)
    trained = result.final["val/mmd"]
    real = data.train.x[: len(data.val)].flatten(1)  # real training digits: the attainable floor
    val = data.val.x.flatten(1)
    floor = mmd2_unbiased(real, val, tuple(s * median_distance(val) for s in MMD_SCALES))
    assert result.status == "completed"
    assert abs(floor) < 0.01
    assert trained < 0.5 * untrained, (trained, untrained)
    assert floor < trained
    assert result.final["test/mmd"] < 0.5 * untrained  # held-out test split agrees


def test_gan_full_batch_is_one_d_and_one_g_step_per_epoch_and_chunk_invariant():
    def run(chunk: int):
        config = RunConfig.build(model="gan", dataset="digits_images", optimizer="bgd", params={
            "lr": 0.5, "bgd_max_chunk": chunk, "gan_batch_norm": False}, epochs=3, objective="val/mmd",
            accelerator="cpu")
        return fit(config)

    whole, chunked = run(16384), run(300)  # 1078 training images: 1 chunk vs 4 accumulated chunks
    for result in (whole, chunked):
        assert result.status == "completed"
        assert result.steps == 2 * 3  # one D and one G step per epoch
        assert result.samples == 3 * 1078
    for a, b in zip(whole.history, chunked.history, strict=True):
        for key in ("train/loss", "val/d_loss", "val/g_loss", "val/mmd"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), key


def test_gan_lr_ratio_scales_the_discriminator_optimizer():
    config = RunConfig.build(model="gan", dataset="digits_images", optimizer="sgd", params={
        "lr": 0.01, "gan_lr_ratio": 4.0}, epochs=1, objective="val/mmd", accelerator="cpu")
    captured = {}

    def reporter(epoch, metrics):
        captured.update(metrics)

    result = fit(config, reporter)
    assert result.status == "completed" and captured["lr"] == pytest.approx(0.01)  # G's lr is logged
    model, _ = build("gan", gan_lr_ratio=4.0)
    calls = []
    model._configure_optim = lambda module, params=None, lr_scale=1.0: calls.append(lr_scale) or {}
    model.configure_optimizers()
    assert calls == [1.0, 4.0]


# --- transformer -------------------------------------------------------------------------------
def test_transformer_learns_reverse_and_decodes_greedily():
    config = RunConfig.build(model="transformer", dataset="sequences", optimizer="adam",
                             data_args={"seq_task": "reverse", "n_samples": 1500}, params={"lr": 3e-3},
                             epochs=4, objective="val/seq_acc", evaluate_test=True, accelerator="cpu")
    result = fit(config)
    final = result.final
    assert final["val/seq_acc"] <= final["val/token_acc"] <= 1.0
    assert final["val/token_acc"] > 0.95 and final["test/seq_acc"] > 0.8, final


# --- data ------------------------------------------------------------------------------------
def test_sequence_tasks_targets():
    rev = load_dataset("sequences", seq_task="reverse", seq_len=5)
    assert torch.equal(rev.train.y, rev.train.x.flip(1)) and rev.task == "sequence" and rev.n_outputs == 10
    srt = load_dataset("sequences", seq_task="sort", vocab_size=4)
    assert torch.equal(srt.train.y, srt.train.x.sort(1).values) and srt.train.x.max() == 3
    cp = load_dataset("sequences", seq_task="copy", seq_len=6, copy_offset=2)
    assert torch.equal(cp.train.y[:, :4], cp.train.x[:, 2:]) and torch.equal(cp.train.y[:, 4:], cp.train.x[:, :2])


def test_digits_images_diabetes_and_synthetic_regression():
    flat, img = load_dataset("digits"), load_dataset("digits_images")
    assert img.input_shape == (1, 8, 8) and torch.equal(flat.train.y, img.train.y)  # same rows per split
    assert img.train.x.min() == 0 and img.train.x.max() == 1
    std = load_dataset("digits_images", scale="standardize")
    assert torch.allclose(std.train.x.flatten(1), flat.train.x, atol=1e-5)
    dia = load_dataset("diabetes")
    assert dia.input_shape == (10,) and dia.n_outputs == 1 and dia.task == "regression"
    assert abs(dia.train.y.mean()) < 1e-5 and dia.train.y.std(unbiased=False) == pytest.approx(1, abs=1e-4)
    reg = load_dataset("synthetic_regression", n_samples=500)
    assert reg.input_shape == (1000,) and reg.train.y.shape == (300, 10)


def test_registry_metadata_of_zoo_models():
    for name in ZOO + NEW:
        info = MODELS.get(name)
        assert "measured" in info.reference and "TBD" not in info.reference, name
        assert info.default_dataset and info.tasks
    names = [hp.name for name in MODELS.builtin_names() for hp in MODELS.get(name).hparams]
    assert len(names) == len(set(names)), "model hyper-parameter names must be globally unique"


# --- end-to-end quick studies ----------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("model", ZOO)
def test_quick_study_end_to_end(model, tmp_path):
    study_file = STUDIES / f"optimizers-{model}.toml"
    spec = load(study_file)
    assert spec.model == model and [a.optimizer for a in spec.arms] == ["sgd", "bgd", "adam", "adagrad"]
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    code = main(["run", str(study_file), "--quick", "--quiet", "--storage", str(tmp_path / "optuna.journal"),
                 "--tracking-uri", uri, "--results-dir", str(tmp_path / "results")])
    assert code == 0
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(f"optimizers-{model}-quick")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    phases = [r.data.tags.get("phase") for r in runs]
    quick = spec.quick
    assert phases.count("arm") == 4 and phases.count("tune") == 4 * quick.n_trials
    assert phases.count("eval") == 4 * quick.seeds
    evals = [r for r in runs if r.data.tags.get("phase") == "eval"]
    test_metric = "test/" + spec.objective_metric().split("/")[1]
    assert all(r.info.status == "FINISHED" and math.isfinite(r.data.metrics[test_metric]) for r in evals)
    assert (tmp_path / "results" / f"optimizers-{model}-quick").is_dir()
