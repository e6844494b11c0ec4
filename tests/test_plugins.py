"""Benchmarking your own components: import-path optimizers, plug-in packages (entry points),
optimizers that are not plain `step()` (closure, mode switch), the bad inputs they can bring, and
validating a study without the training stack."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import optuna
import pytest
import torch
from mlflow import MlflowClient

from bench.optim import OPTIMIZERS
from bench.optim.torch_optimizers import build
from bench.registry import RegistryError
from bench.spec import RunConfig, SpecError, arms, load, parse
from bench.train import fit
from bench.tuning.storage import open_storage
from tests.conftest import REPO, STUDIES
from tests.optimizers import ModeLog

HEAVY = ("torch", "pytorch_lightning", "lightning", "mlflow", "optuna")
EXAMPLE = REPO / "examples" / "bench-plugin-example"
EXAMPLE_INSTALLED = any(e.name == "signsgd" for e in metadata.entry_points(group="bench.optimizers"))
needs_example = pytest.mark.skipif(not EXAMPLE_INSTALLED, reason="examples/bench-plugin-example is not installed "
                                   "(nox -s tests installs it: pip install -e examples/bench-plugin-example)")


def _study(*arms_: dict, **top) -> dict:
    return {"name": "p", "model": "mlp", "dataset": "digits", "arms": list(arms_), **top}


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


# --- validation without the training stack ----------------------------------------------------
def test_validating_study_files_imports_no_torch_lightning_mlflow_or_optuna(tmp_path):
    """Every built-in-only study file, valid or not, is checked with none of them imported (the
    2-second rejection of `bench run bad.toml` rests on this); so is the CLI's refusal path."""
    builtin_only = [p for p in sorted(STUDIES.glob("*.toml")) if "." not in "".join(
        o for a in arms(load(p)) for o in a.optimizers)]
    assert len(builtin_only) >= 10
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "b"\nmodel = "mlp"\ndataset = "digits"\n[[arms]]\noptimizer = "sgd"\n'
                   'space = { momentum = { low = 0.0, high = 2.0 } }\n')
    script = textwrap.dedent(f"""
        import sys
        import bench.spec
        from bench.cli import main
        for path in {[str(p) for p in builtin_only]!r}:
            bench.spec.arms(bench.spec.load(path))
        try:
            bench.spec.load({str(bad)!r})
            raise SystemExit("bad.toml was accepted")
        except bench.spec.SpecError as err:
            assert "arms[0].space.momentum" in str(err), err
        assert main(["run", {str(bad)!r}, "--storage", {str(tmp_path / "j")!r}]) == 2
        print(sorted(m for m in {HEAVY!r} if m in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=_env(), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert not (tmp_path / "j").exists()


# --- import-path optimizers ---------------------------------------------------------------------
def test_an_import_path_optimizer_takes_its_hyperparameters_and_defaults_from_the_signature():
    info = OPTIMIZERS.get("torch.optim.AdamW")
    declared = {hp.name: hp for hp in info.hparams}
    assert list(declared)[:5] == ["lr", "betas.0", "betas.1", "eps", "weight_decay"]
    assert declared["betas.1"].default == 0.999 and declared["weight_decay"].default == 0.01
    assert declared["amsgrad"].kind == "bool" and declared["foreach"].nullable
    assert info.space["lr"].low == pytest.approx(1e-5) and info.space["lr"].high == pytest.approx(1e-2)
    assert info.source.describe().startswith("import torch.optim.AdamW (torch ")
    # tuple arguments are set per element and reach the class as one tuple
    opt = build(info, [torch.nn.Parameter(torch.zeros(2))], {hp.name: hp.default for hp in info.hparams}
                | {"betas.1": 0.95})
    assert opt.param_groups[0]["betas"] == (0.9, 0.95) and opt.param_groups[0]["amsgrad"] is False


def test_import_paths_as_arms_factorial_levels_and_choices_record_every_class_default(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(textwrap.dedent("""
        name = "paths"
        model = "mlp"
        dataset = "digits"
        [[arms]]
        name = "adamw"
        optimizer = "torch.optim.AdamW"
        params = { betas.0 = 0.85 }
        space.lr = { low = 1e-4, high = 1e-2, log = true }
        space.betas.1 = { low = 0.9, high = 0.999 }
        [[arms]]
        name = "choice"
        optimizer = ["sgd", "torch.optim.NAdam"]
        [arms.space]
        sgd.lr = { low = 0.01, high = 1.0, log = true }
        torch.optim.NAdam.lr = { low = 1e-4, high = 1e-2, log = true }
        torch.optim.NAdam.betas.0 = { low = 0.8, high = 0.95 }
        [factorial]
        optimizers = ["adam", "torch.optim.RAdam"]
        """))
    spec = load(path)
    by_name = {a.name: a for a in arms(spec)}
    assert list(by_name) == ["adamw", "choice", "adam", "torch.optim.RAdam"]
    adamw = by_name["adamw"]
    assert adamw.fixed == {"betas.0": 0.85} and list(adamw.space) == ["lr", "betas.1"]
    config = adamw.config(spec, {"lr": 1e-3, "betas.1": 0.99}, seed=0, evaluate_test=False)
    assert config.params["betas.0"] == 0.85 and config.params["betas.1"] == 0.99
    # the arguments the study does not set are there with the class's defaults (MLflow params)
    assert {"amsgrad": False, "maximize": False, "foreach": None, "fused": None, "eps": 1e-8}.items() <= \
        config.params.items()
    choice = by_name["choice"]
    assert list(choice.space) == ["optimizer", "sgd.lr", "torch.optim.NAdam.lr", "torch.optim.NAdam.betas.0"]
    nadam = choice.config(spec, {"optimizer": "torch.optim.NAdam", "torch.optim.NAdam.lr": 2e-3,
                                 "torch.optim.NAdam.betas.0": 0.9}, seed=0, evaluate_test=False)
    assert nadam.optimizer == "torch.optim.NAdam" and nadam.params["lr"] == 2e-3
    assert nadam.params["momentum_decay"] == 0.004 and "momentum" not in nadam.params
    assert config.source_tags()["source.optimizer"].startswith("import torch.optim.AdamW")
    assert set(by_name["torch.optim.RAdam"].space) == {"lr"}  # the derived default space


@pytest.mark.parametrize(("arm", "message"), [
    ({"optimizer": "torch.optim.AdamX"},
     "arms[0].optimizer: cannot import 'torch.optim.AdamX': module 'torch.optim' has no attribute 'AdamX'"),
    ({"optimizer": "no_such_pkg.optim:Lion"},
     "arms[0].optimizer: cannot import 'no_such_pkg.optim:Lion': ModuleNotFoundError: No module named 'no_such_pkg'"),
    ({"optimizer": "torch.nn.Linear"},
     "arms[0].optimizer: torch.nn.Linear is not an optimizer class or factory (a torch.optim.Optimizer subclass"),
    ({"optimizer": "math.pi"}, "arms[0].optimizer: math.pi is not an optimizer class or factory"),
    ({"optimizer": "torch.optim.AdamW", "params": {"momentum": 0.9}},
     "arms[0].params.momentum: not a hyper-parameter of mlp/torch.optim.AdamW/constant (known: "),
    ({"optimizer": "torch.optim.AdamW", "space": {"amsgrad": {"low": 0, "high": 1}}},
     "arms[0].space.amsgrad: amsgrad is bool: give choices, not a range"),
    ({"optimizer": "torch.optim.AdamW", "space": {"betas.0": {"choices": ["high"]}}},
     "arms[0].space.betas.0: expected float, got 'high'"),
    ({"optimizer": "torch.optim.LBFGS", "space": {"max_iter": {"low": 1.5, "high": 20}}},
     "arms[0].space.max_iter: max_iter is int: low and high must be integers"),
    ({"optimizer": "tests.optimizers:needs_lr", "space": {"momentum": {"low": 0.0, "high": 0.9}}},
     "arms[0].params.lr: required by tests.optimizers:needs_lr (it has no default): fix it in params or tune it"),
    ({"optimizer": "torch.optim.RAdam", "regularizers": ["decoupled_wd"]},
     "arms[0]: 'decoupled_weight_decay' is a hyper-parameter of both torch.optim.RAdam and decoupled_wd"),
    ({"optimizer": ["sgd", "torch.optim.AdamW"], "space": {"betas.0": {"low": 0.8, "high": 0.9}}},
     "arms[0].space.betas.0: not a hyper-parameter of sgd; name it per optimizer, e.g. 'torch.optim.AdamW.betas.0'"),
])
def test_bad_import_path_arms_are_refused_in_one_line_naming_the_field(arm, message):
    with pytest.raises(SpecError) as err:
        parse(_study(arm))
    text = str(err.value).removeprefix("<study>: ")
    assert "\n" not in text and text.startswith(message), text


def test_the_cli_refuses_them_with_exit_2_before_writing_anything(stores, capsys):
    path = stores.root / "bad.toml"
    path.write_text('name = "b"\nmodel = "mlp"\ndataset = "digits"\n[[arms]]\noptimizer = "torch.optim.AdamX"\n')
    before = set(stores.root.iterdir())
    assert stores.run("run", str(path), "--quiet") == 2
    assert capsys.readouterr().err.strip() == (f"{path}: arms[0].optimizer: cannot import 'torch.optim.AdamX': "
                                               "module 'torch.optim' has no attribute 'AdamX'")
    assert set(stores.root.iterdir()) == before


def test_a_closure_optimizer_is_refused_for_a_model_that_steps_itself():
    with pytest.raises(SpecError, match=r"arms\[0\]\.optimizer: torch.optim.LBFGS re-evaluates the loss in its "
                                        r"step \(a closure\), but model 'gan' runs its optimizer steps itself"):
        parse({**_study({"optimizer": "torch.optim.LBFGS"}), "model": "gan", "dataset": "digits_images"})


# --- optimizers that are not plain step() ---------------------------------------------------------
def test_lbfgs_trains_full_batch_with_a_closure_and_chunking_does_not_change_it():
    info = OPTIMIZERS.get("torch.optim.LBFGS")
    assert info.closure and info.full_batch and not info.mode_switch

    def run(chunk: int):
        return fit(RunConfig.build(model="mlp", dataset="digits", optimizer="torch.optim.LBFGS", epochs=2,
                                   accelerator="cpu", params={"hidden_sizes": "16", "max_iter": 5,
                                                              "line_search_fn": "strong_wolfe",
                                                              "bgd_max_chunk": chunk}))

    whole, chunked = run(16384), run(100)
    n_train = 1078
    assert whole.status == "completed" and whole.steps == 2  # one optimizer step per epoch
    # each step re-evaluates the whole set several times, and every evaluation counts
    assert whole.samples % n_train == 0 and whole.samples > 2 * n_train
    assert "batch_size" not in RunConfig.build(model="mlp", dataset="digits", optimizer="torch.optim.LBFGS").params
    assert whole.history[1]["train/loss"] < whole.history[0]["train/loss"]
    assert chunked.final["val/loss"] == pytest.approx(whole.final["val/loss"], rel=1e-4)  # exact mean gradient
    assert chunked.samples == whole.samples


def test_mode_switch_optimizers_step_in_train_mode_and_evaluate_in_eval_mode():
    info = OPTIMIZERS.get("tests.optimizers:ModeLog")
    assert info.mode_switch and not info.closure
    ModeLog.log.clear()
    result = fit(RunConfig.build(model="mlp", dataset="digits", optimizer="tests.optimizers:ModeLog", epochs=2,
                                 accelerator="cpu", params={"hidden_sizes": "16"}, evaluate_test=True))
    assert result.status == "completed", result.reason  # ModeLog raises if it steps in eval mode
    # built in train mode; eval around each epoch's validation, then around the final test
    assert ModeLog.log == ["train", "eval", "train", "eval", "train", "eval", "train"]


def test_schedule_free_adamw_trains_with_its_mode_switch():
    pytest.importorskip("schedulefree", reason="the bench[optimizers] extra is not installed")
    info = OPTIMIZERS.get("schedulefree:AdamWScheduleFree")
    assert info.mode_switch and info.source.package == "schedulefree"
    result = fit(RunConfig.build(model="mlp", dataset="digits", optimizer="schedulefree:AdamWScheduleFree",
                                 epochs=3, accelerator="cpu", params={"lr": 0.01, "hidden_sizes": "32"}))
    assert result.status == "completed" and result.final["val/acc"] > 0.85


# --- plug-in packages ------------------------------------------------------------------------------
@needs_example
def test_the_example_plugin_entries_are_listed_with_their_source_and_cover_the_contract(capsys):
    from bench.cli import main
    from bench.data import DATASETS, load_dataset
    from bench.models import MODELS

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("signsgd", "resmlp", "spirals"):
        assert f"  {name} " in out and "plugin bench_plugin_example" in out
    model, data = MODELS.get("resmlp"), DATASETS.get("spirals")
    assert model.network and [hp.name for hp in model.hparams] == ["width", "blocks"]
    assert data.task == "multiclass" and [hp.name for hp in data.args] == ["n_samples", "classes", "noise"]
    assert model.source.package == "bench-plugin-example" and model.source.version == "0.1.0"
    bundle = load_dataset("spirals", seed=0)  # arrays split 60/20/20 and standardized by bench
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (540, 180, 180)
    assert abs(bundle.train.x.mean().item()) < 1e-5 and bundle.n_outputs == 3


FINE_PLUGIN = '''
import torch

from bench.optim.regularization import Regularizer


class Halving(torch.optim.SGD):
    """SGD at half the step."""

    def __init__(self, params, lr: float = 0.05):
        super().__init__(params, lr=lr / 2)


def halve(halve_at: float = 0.5):
    """lr halves once at `halve_at` of the budget."""
    return lambda p: 1.0 if p < halve_at else 0.5


class _Shrink(Regularizer):
    def __init__(self, strength):
        self.strength = strength

    def penalty(self, module):
        return self.strength * sum(p.pow(2).sum() for p in module.parameters())


def shrink(shrink_strength: float = 1e-4):
    """Squared weights added to the loss."""
    return _Shrink(shrink_strength)
'''


def _plugin_dir(root: Path) -> Path:
    """Two installed distributions (real dist-info metadata on sys.path): one whose module raises on
    import, one that works and adds an optimizer, a schedule and a regularizer."""
    entry_points = {
        "broken_bench_plugin": "[bench.optimizers]\nexploding = broken_bench_plugin:Opt\n",
        "fine_bench_plugin": ("[bench.optimizers]\nhalving = fine_bench_plugin:Halving\n"
                              "[bench.schedules]\nhalve = fine_bench_plugin:halve\n"
                              "[bench.regularizers]\nshrink = fine_bench_plugin:shrink\n"),
    }
    bodies = {"broken_bench_plugin": 'raise RuntimeError("boom at import")\n', "fine_bench_plugin": FINE_PLUGIN}
    for dist, points in entry_points.items():
        (root / f"{dist}.py").write_text(bodies[dist])
        info = root / f"{dist}-0.3.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist.replace('_', '-')}\nVersion: 0.3\n")
        (info / "entry_points.txt").write_text(points)
    return root


def test_a_plugin_that_raises_on_import_is_named_and_the_others_still_load(tmp_path):
    (tmp_path / "site").mkdir()
    plugins = _plugin_dir(tmp_path / "site")
    env = {**_env(), "PYTHONPATH": os.pathsep.join([str(plugins), str(REPO), os.environ.get("PYTHONPATH", "")])}
    study = tmp_path / "s.toml"
    study.write_text('name = "s"\nmodel = "mlp"\ndataset = "digits"\n[[arms]]\noptimizer = "exploding"\n')

    def bench(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "bench.cli", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True)

    refused = bench("run", str(study), "--quiet")
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.strip() == (
        f"{study}: arms[0].optimizer: optimizer 'exploding' from plug-in package broken-bench-plugin 0.3: "
        "cannot import broken_bench_plugin:Opt: RuntimeError: boom at import")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml", "site"]  # nothing written
    listed = bench("list")
    assert listed.returncode == 0, listed.stderr
    assert "  halving      SGD at half the step.  [plugin fine_bench_plugin:Halving (fine-bench-plugin 0.3)]" \
        in listed.stdout
    assert "  halve        lr halves once at `halve_at` of the budget.  [plugin fine_bench_plugin:halve" \
        in listed.stdout
    assert "  shrink           changes loss     Squared weights added to the loss.  [plugin" in listed.stdout
    # the schedule and the regularizer train too, with their signature's hyper-parameters
    store = f"sqlite:///{tmp_path}/mlflow.db"
    trained = bench("train", "--model", "linear", "--dataset", "digits", "--optimizer", "halving", "--schedule",
                    "halve", "--epochs", "2", "--set", "halve_at=0.4", "--tracking-uri", store)
    assert trained.returncode == 0, trained.stderr
    run = MlflowClient(store).get_run(trained.stdout.split()[1])
    assert run.data.params["halve_at"] == "0.4" and run.data.params["lr"] == "0.05"
    assert run.data.tags["source.schedule"] == "plugin fine_bench_plugin:halve (fine-bench-plugin 0.3)"
    with_reg = tmp_path / "r.toml"
    with_reg.write_text('name = "r"\nmodel = "mlp"\ndataset = "digits"\n[[arms]]\noptimizer = "halving"\n'
                        'regularizers = ["shrink"]\n'
                        'space = { shrink_strength = { low = 1e-6, high = 1e-3, log = true } }\n')
    script = f"import bench.spec as s; a = s.arms(s.load({str(with_reg)!r}))[0]; print(sorted(a.space), a.regularizers)"
    checked = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert checked.stdout.strip() == "['shrink_strength'] ('shrink',)", checked.stderr
    assert listed.stdout.rstrip().endswith(
        "plug-ins that did not load:\n  optimizer 'exploding' from plug-in package broken-bench-plugin 0.3: "
        "cannot import broken_bench_plugin:Opt: RuntimeError: boom at import")


def test_plugin_lookups_of_an_unknown_name_list_plugin_names_without_importing_them():
    with pytest.raises(RegistryError) as err:
        OPTIMIZERS.get("adamx")
    assert all(name in str(err.value) for name in OPTIMIZERS.names())


# --- at run time --------------------------------------------------------------------------------------
RUNTIME = """
name = "runtime"
model = "linear"
dataset = "digits"
epochs = 2
[tuning]
n_trials = 4
sampler = "random"
pruner = "none"
max_failed_trials = 20
[eval]
seeds = 2

[[arms]]
name = "flaky"
optimizer = "tests.optimizers:Flaky"
space = { fail = { choices = [true, false] } }

[[arms]]
name = "poison"
optimizer = "tests.optimizers:Poison"
space = { after = { choices = [1, 2] } }

[[arms]]
optimizer = "sgd"
"""


@pytest.mark.slow
def test_a_plugin_step_that_raises_fails_its_trial_and_non_finite_weights_diverge(stores, monkeypatch):
    monkeypatch.chdir(REPO)  # `tests.optimizers` is importable from the checkout
    path = stores.root / "runtime.toml"
    path.write_text(RUNTIME)
    assert stores.run("run", str(path), "--quiet") == 0  # the study goes on
    storage = open_storage(stores.storage)
    client = MlflowClient(stores.tracking_uri)
    runs = {r.info.run_id: r for r in client.search_runs([client.get_experiment_by_name("runtime").experiment_id],
                                                          max_results=1000)}
    flaky = optuna.load_study(study_name="runtime/flaky", storage=storage).trials
    failed = [t for t in flaky if t.state == optuna.trial.TrialState.FAIL]
    assert failed and all(t.params["fail"] is True for t in failed)
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in flaky) == 4
    for trial in failed:
        run = runs[trial.user_attrs["mlflow_run_id"]]
        assert run.info.status == "FAILED" and run.data.tags["error"] == "RuntimeError: step failed on purpose"
    poison = optuna.load_study(study_name="runtime/poison", storage=storage).trials
    assert [t.state for t in poison] == [optuna.trial.TrialState.PRUNED] * 4
    for trial in poison:
        assert trial.user_attrs["pruned_reason"].startswith("diverged: ")
        run = runs[trial.user_attrs["mlflow_run_id"]]
        assert run.info.status == "KILLED" and run.data.tags["status"] == "diverged"
        assert run.data.tags["source.optimizer"].startswith("import tests.optimizers:Poison")
    sgd = [r for r in runs.values() if r.data.tags.get("arm") == "sgd" and r.data.tags["phase"] == "eval"]
    assert len(sgd) == 2 and all(r.info.status == "FINISHED" for r in sgd)


@pytest.mark.slow
@needs_example
def test_a_study_with_the_example_plugin_runs_and_tags_every_run_with_its_source(stores):
    study = EXAMPLE / "study.toml"
    quick = load(study).quick_variant()
    assert stores.run("run", str(study), "--quick", "--quiet") == 0
    client = MlflowClient(stores.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name(quick.name).experiment_id], max_results=1000)
    assert len(runs) == 2 * (1 + quick.tuning.n_trials + quick.eval.seeds)  # parent, trials, eval seeds per arm
    plugin = "plugin bench_plugin_example.{} (bench-plugin-example 0.1.0)"
    for run in runs:
        tags = run.data.tags
        assert tags["source.model"] == plugin.format("model:ResMLP")
        assert tags["source.dataset"] == plugin.format("data:SPIRALS")
        expected = plugin.format("optim:SignSGD") if tags["arm"] == "signsgd" else "built-in"
        assert tags["source.optimizer"] == expected
        if tags["phase"] != "arm":
            assert {"width", "blocks", "lr", "batch_size"} <= set(run.data.params)
            assert run.data.params["width"] == "64"
    summary = (stores.results / quick.name / "summary.csv").read_text()
    assert "signsgd" in summary and "adam" in summary
    assert all(math.isfinite(r.data.metrics.get("test/acc", 0.0)) for r in runs)
    # The report names every component that is not built in, per arm, with its package and version.
    report = (stores.results / quick.name / "report.md").read_text()
    sources = report.split("- components not built in (source as recorded on each run):\n", 1)[1].split("\n- ", 1)[0]
    shared = f"dataset: {plugin.format('data:SPIRALS')}; model: {plugin.format('model:ResMLP')}"
    assert sources.splitlines() == [f"  - {arm.name}: {shared}" + (
        f"; optimizer: {plugin.format('optim:SignSGD')}" if arm.name == "signsgd" else "") for arm in arms(quick)]
