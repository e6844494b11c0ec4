"""`bench perf`: overhead of the suite measured side by side in one process, on the digits MLP.

1. MLflow logging: wall time per tuning trial tracked exactly as a study tracks it (child run,
   params, config artifact, buffered per-epoch metrics, final tags and status through the
   writer thread, which is drained inside the timed block) ÷ the same `fit` with no tracking.
   Blocks of consecutive trials alternate (A B A B ...) so drift hits both sides; medians.
2. Per-step overhead: `fit` (Lightning Trainer + the suite's callbacks) vs a plain PyTorch loop
   on the same tensors, model, optimizer and batch order; t_fit / t_plain (target ≤ 1.15).
3. Pruning trade-off (bench.perf_pruning, when present): epochs and best value per pruner.
4. `bench report` wall time on the finished quickstart (bench.perf_report), fresh processes.

Writes results/perf/perf.json and results/perf/perf.md.
"""

from __future__ import annotations

import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench.data import load_dataset
from bench.data.batches import TensorBatches
from bench.models import MODELS
from bench.spec import RunConfig, parse
from bench.tracking import WRITER, provenance
from bench.train import fit, seed_everything

TARGET_LOGGING_RATIO = 1.05
TARGET_STEP_RATIO = 1.15  # fit ÷ plain loop per step: a ratio, since machines differ in absolute speed
TRIALS_PER_BLOCK = 4  # consecutive trials per timed block, as a study runs them


def perf_config(epochs: int = 15) -> RunConfig:
    """The quickstart's SGD trial: MLP 64-128-64-10 on digits, batch 64."""
    return RunConfig.build(model="mlp", dataset="digits", optimizer="sgd",
                           params={"lr": 0.1, "hidden_sizes": "128-64", "batch_size": 64}, epochs=epochs,
                           accelerator="cpu")


def logging_ratio(repeats: int, workdir: Path) -> dict:
    from bench.tuning.study import StudyRunner, arms

    spec = parse({"name": "perf", "model": "mlp", "dataset": "digits", "arms": [{"optimizer": "sgd"}]})
    runner = StudyRunner(spec, tracking_uri=f"sqlite:///{workdir}/mlflow.db",
                         storage_url=str(workdir / "optuna.journal"))
    exp = runner.tracker.experiment_id("perf")
    arm = arms(spec)[0]
    parent = runner.tracker.start_run(exp, "perf-parent", {"phase": "arm", "study": "perf", "arm": arm.name})
    config = perf_config()

    def tracked(n: int) -> float:
        """n trials logged exactly as a study logs them, including waiting for the writer."""
        t0 = time.perf_counter()
        for _ in range(n):
            logger = runner.child_run(exp, parent, arm, "perf/trial", config, {"phase": "tune"})
            result = fit(config, reporter=logger)
            runner.record(logger, result)
            logger.finish("FINISHED", background=True)
        WRITER.drain()
        return (time.perf_counter() - t0) / n

    def plain(n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            fit(config)
        return (time.perf_counter() - t0) / n

    plain(1), tracked(1)  # warm-up: imports, first DB connection, dataset cache
    with_mlflow, without = [], []
    for _ in range(repeats):  # alternate blocks so machine drift hits both sides alike
        without.append(plain(TRIALS_PER_BLOCK))
        with_mlflow.append(tracked(TRIALS_PER_BLOCK))
    parent.finish()
    ratio = statistics.median(with_mlflow) / statistics.median(without)
    return {"trial_s_with_mlflow": statistics.median(with_mlflow), "trial_s_without": statistics.median(without),
            "ratio": ratio, "target": TARGET_LOGGING_RATIO, "met": ratio <= TARGET_LOGGING_RATIO,
            "repeats": repeats, "epochs": config.epochs, "store": "sqlite (WAL) + local artifacts"}


def plain_loop_seconds(config: RunConfig) -> tuple[float, int]:
    """The same training as `fit(config)` written as a bare PyTorch loop; returns (seconds, steps)."""
    seed_everything(config.seed)
    data = load_dataset(config.dataset, config.data_seed, **config.data_args)
    routed = config.owners().split(config.params)
    module = MODELS.get(config.model).load()(data, None, **routed.model)
    opt = torch.optim.SGD(module.parameters(), lr=routed.optimizer["lr"], momentum=0.0)
    batches = TensorBatches(data.train.x, data.train.y, routed.training["batch_size"], shuffle=True, seed=config.seed)
    steps = 0
    module.train()
    t0 = time.perf_counter()
    for _ in range(config.epochs):
        for x, y, _w in batches:
            opt.zero_grad(set_to_none=True)
            loss = module.training_loss(x, y)
            loss.backward()
            opt.step()
            steps += 1
        module.evaluate(data.val)  # fit evaluates once per epoch too
    return time.perf_counter() - t0, steps


def step_overhead(repeats: int) -> dict:
    config = perf_config(epochs=30)
    fit(config), plain_loop_seconds(config)  # warm-up
    fits, plains, steps = [], [], 0
    for _ in range(repeats):
        t_plain, steps = plain_loop_seconds(config)
        plains.append(t_plain)
        result = fit(config)
        fits.append(result.wall_time_s)
        assert result.steps == steps, (result.steps, steps)
    t_fit, t_plain = statistics.median(fits), statistics.median(plains)
    overhead_ms = (t_fit - t_plain) / steps * 1e3
    ratio = t_fit / t_plain
    return {"steps": steps, "fit_s": t_fit, "plain_s": t_plain, "ratio": ratio, "fit_ms_per_step": t_fit / steps * 1e3,
            "plain_ms_per_step": t_plain / steps * 1e3, "overhead_ms_per_step": overhead_ms,
            "target_ratio": TARGET_STEP_RATIO, "met": ratio <= TARGET_STEP_RATIO,
            "repeats": repeats, "threads": torch.get_num_threads()}


WORKER_STUDY = """
name = "perf-workers"
model = "mlp"
dataset = "digits"
epochs = 10
[params]
hidden_sizes = "128-64"
batch_size = 64
[tuning]
n_trials = {n_trials}
pruner = "none"
[eval]
seeds = 2
[[arms]]
optimizer = "sgd"
"""


def worker_scaling(workdir: Path, n_trials: int = 48) -> dict:
    """Trials per hour of `bench run --workers 2` (1 torch thread each) ÷ one worker using both
    cores' threads, on fresh stores each, same study (the digits MLP).

    Two rates per setup: the tuning phase's throughput (completed trials ÷ the span from the first
    trial's start to the last trial's end, from Optuna's timestamps), which is what a long study
    sees, and the end-to-end rate of the whole command (worker start-up, 2 eval seeds and the
    report included), which short studies see. The headline ratio is the tuning one."""
    import subprocess
    import sys

    import optuna

    rows = {}
    for workers in (1, 2):
        root = workdir / f"w{workers}"
        root.mkdir()
        (root / "study.toml").write_text(WORKER_STUDY.format(n_trials=n_trials))
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "bench.cli", "run", "study.toml", "--quiet", "--workers", str(workers)],
                       cwd=root, check=True, capture_output=True)
        wall = time.perf_counter() - t0
        storage = optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(root / "optuna.journal")))
        trials = optuna.load_study(study_name="perf-workers/sgd", storage=storage).get_trials(
            states=(optuna.trial.TrialState.COMPLETE,))
        span = (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()
        rows[workers] = {"tuning_trials_per_hour": len(trials) / span * 3600,
                         "end_to_end_trials_per_hour": n_trials / wall * 3600, "wall_s": wall,
                         "complete_trials": len(trials)}
    ratio = rows[2]["tuning_trials_per_hour"] / rows[1]["tuning_trials_per_hour"]
    end_to_end = rows[2]["end_to_end_trials_per_hour"] / rows[1]["end_to_end_trials_per_hour"]
    return {"one_worker_two_threads": rows[1], "two_workers_one_thread": rows[2],
            "ratio": ratio, "ratio_end_to_end": end_to_end, "target": 1.8, "met": ratio >= 1.8,
            "n_trials": n_trials,
            "note": "ratio: tuning-phase throughput from Optuna timestamps; ratio_end_to_end: wall time of "
                    "the whole `bench run` (process start, 2 eval seeds and report included)"}


def main(out: Path, repeats: int = 5) -> int:
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"host": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
                    "versions": {k: v for k, v in provenance().items() if k.startswith("version.")}}
    with tempfile.TemporaryDirectory() as tmp:
        report["mlflow_logging"] = logging_ratio(repeats, Path(tmp))
    report["step_overhead"] = step_overhead(repeats)
    with tempfile.TemporaryDirectory() as tmp:
        report["workers"] = worker_scaling(Path(tmp))
    try:
        from bench.perf_pruning import measure_pruning
    except ImportError:
        measure_pruning = None
    if measure_pruning is not None:
        report["pruning"] = measure_pruning(out)
    from bench.perf_inputs import rejection_times

    report["rejections"] = rejection_times(repeats)
    from bench.perf_workloads import mnist1d_costs

    report["mnist1d"] = mnist1d_costs(min(repeats, 3))
    from bench.perf_batched import batched_costs, quickstart_wall_times

    report["batched"] = batched_costs(min(repeats, 3))
    if torch.cuda.is_available():  # the CNN and the Transformer, where dispatch is all a small model costs
        report["batched_gpu"] = batched_costs(min(repeats, 3), workloads=("digits-images CNN", "sequences Transformer"),
                                              accelerator="cuda")
    report["batched"]["quickstart"] = quickstart_wall_times(Path(__file__).parents[1] / "studies" / "quickstart.toml")
    from bench.perf_report import QUICKSTART, report_times

    if QUICKSTART.is_file():  # a checkout (studies/ is not installed with the package)
        report["report"] = report_times(QUICKSTART, min(repeats, 3))
    (out / "perf.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "perf.md").write_text(render(report))
    print(render(report))
    return 0


def render(r: dict) -> str:
    m, s = r["mlflow_logging"], r["step_overhead"]
    ok = lambda b: "met" if b else "NOT met"  # noqa: E731
    lines = [
        "# bench perf", "", f"Host: {r['host']}", "",
        "| measure | value | target |", "|---|---|---|",
        f"| trial time with MLflow ÷ without ({m['epochs']} epochs, median of {m['repeats']}) | "
        f"{m['ratio']:.3f} ({m['trial_s_with_mlflow']:.3f} s / {m['trial_s_without']:.3f} s) | "
        f"≤ {m['target']} ({ok(m['met'])}) |",
        f"| per-step overhead of fit over a plain PyTorch loop ({s['steps']} steps) | "
        f"fit ÷ plain {s['ratio']:.3f} ({s['fit_ms_per_step']:.3f} vs {s['plain_ms_per_step']:.3f} ms/step; "
        f"{s['overhead_ms_per_step']:.3f} ms) | ≤ {s['target_ratio']} ({ok(s['met'])}) |",
    ]
    if "workers" in r:
        w = r["workers"]
        one, two = w["one_worker_two_threads"], w["two_workers_one_thread"]
        lines.append(f"| trials/hour in tuning, 2 workers x 1 thread ÷ 1 worker x 2 threads ({w['n_trials']} trials) | "
                     f"{w['ratio']:.2f} ({two['tuning_trials_per_hour']:.0f} vs {one['tuning_trials_per_hour']:.0f}) | "
                     f"≥ {w['target']} ({ok(w['met'])}) |")
        lines.append(f"| the same, end to end (start-up, eval seeds, report included) | "
                     f"{w['ratio_end_to_end']:.2f} ({two['end_to_end_trials_per_hour']:.0f} vs "
                     f"{one['end_to_end_trials_per_hour']:.0f}) | (context) |")
    if "rejections" in r:
        from bench.perf_inputs import render as render_rejections

        lines += render_rejections(r["rejections"])
    if "mnist1d" in r:
        from bench.perf_workloads import render as render_workloads

        lines += render_workloads(r["mnist1d"])
    from bench.perf_batched import render as render_batched

    lines += [line for key in ("batched", "batched_gpu") if key in r for line in render_batched(r[key])]
    if "report" in r:
        from bench.perf_report import render as render_report

        lines += render_report(r["report"])
    if "pruning" in r and isinstance(r["pruning"], dict):
        lines += ["", "## Pruning", "", "```", json.dumps(r["pruning"], indent=2, default=str), "```"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main(Path("results/perf")))
