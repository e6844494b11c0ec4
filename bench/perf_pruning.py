"""Measured cost of pruning: the same arm tuned with pruners none, median and hyperband.

`measure_pruning(out_dir)` tunes the digits MLP with Adam (the registry's default Adam search
space) three times with the same TPE sampler seed, once per pruner, and counts the training epochs
each tuning run spends. It reports epochs(median) / epochs(none), epochs(hyperband) /
epochs(none) and each run's best validation accuracy. Target: <= 0.5 of the epochs at a best value
within one validation example (1 / len(val split)) of the unpruned run's.

Tuning runs through the same pieces as `bench run` (samplers.build, space.sample, Arm.config,
train.fit with a per-epoch reporter) but with an in-memory Optuna storage and no MLflow, so the
figures are epochs and accuracies, not logging overhead. Cost: about n_trials * epochs * 3 digits
epochs (~1-3 minutes on 2 CPU cores at the defaults).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from bench.data import load_dataset
from bench.spec import StudySpec, arms, direction_of, parse
from bench.train import fit
from bench.tuning import samplers
from bench.tuning.space import sample

PRUNERS = ("none", "median", "hyperband")
TARGET_EPOCH_RATIO = 0.5


def pruning_spec(*, n_trials: int, epochs: int) -> StudySpec:
    """The measured arm as a study: digits MLP 128-64, Adam, TPE seed 0."""
    return parse({
        "name": "perf-pruning", "model": "mlp", "dataset": "digits", "epochs": epochs, "objective": "val/acc",
        "params": {"hidden_sizes": "128-64", "batch_size": 64},
        "tuning": {"n_trials": n_trials, "sampler": "tpe", "seed": 0, "n_startup_trials": 5,
                   "pruner_startup_trials": 5, "pruner_warmup_epochs": 2,
                   "pruner_reduction_factor": 3, "pruner_min_epochs": 1},
        "arms": [{"name": "adam", "optimizer": "adam"}],
    })


def tune_with(spec: StudySpec, pruner_name: str) -> dict[str, Any]:
    """Tune the spec's single arm with `pruner_name`; returns epochs spent and the best value."""
    arm = arms(spec)[0]
    t = spec.tuning
    sampler, sampler_settings = samplers.build(samplers.SAMPLERS, t.sampler, seed=t.seed,
                                               n_startup_trials=t.n_startup_trials)
    pruner, pruner_settings = samplers.build(
        samplers.PRUNERS, pruner_name, startup_trials=t.pruner_startup_trials, warmup_epochs=t.pruner_warmup_epochs,
        percentile=t.pruner_percentile, reduction_factor=t.pruner_reduction_factor, min_epochs=t.pruner_min_epochs,
        max_epochs=spec.budget().points)
    objective = spec.objective_metric()
    study = optuna.create_study(direction=direction_of(objective), sampler=sampler, pruner=pruner)
    epochs_spent, start = 0, time.perf_counter()
    for _ in range(t.n_trials):
        trial = study.ask()
        config = arm.config(spec, sample(trial, arm.space, arm.params),
                            seed=t.seed, evaluate_test=False)

        def report(epoch: int, metrics: dict[str, float], trial: optuna.Trial = trial) -> str | None:
            value = metrics.get(objective)
            if value is None or not math.isfinite(value):
                return None
            trial.report(value, epoch)
            return f"pruned at epoch {epoch}" if trial.should_prune() else None

        result = fit(config, reporter=report)
        epochs_spent += result.epochs
        if result.status == "completed" and result.objective is not None:
            study.tell(trial, result.objective)
        else:
            study.tell(trial, state=TrialState.PRUNED)
    states = [tr.state for tr in study.get_trials(deepcopy=False)]
    return {
        "pruner": pruner_name, "pruner_settings": pruner_settings, "sampler": t.sampler,
        "sampler_settings": sampler_settings, "epochs": epochs_spent, "trials": len(states),
        "pruned": states.count(TrialState.PRUNED), "best_value": study.best_value,
        "best_params": study.best_params, "wall_s": time.perf_counter() - start,
    }


def measure_pruning(out_dir: Path, *, n_trials: int = 30, epochs: int = 20) -> dict:
    """Tune the digits MLP arm with pruners none, median and hyperband (same sampler seed).

    Writes out_dir/pruning.json and out_dir/pruning.md; returns the same dict: per pruner the
    epochs spent, pruned trials and best val/acc, plus `ratio_<pruner>` (epochs / epochs of none),
    `best_gap_<pruner>` (best of none - best of pruner), the tolerance 1/len(val) and `met`.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = pruning_spec(n_trials=n_trials, epochs=epochs)
    runs = {name: tune_with(spec, name) for name in PRUNERS}
    val_size = len(load_dataset(spec.dataset, spec.data_seed, **spec.data_args).val)
    tolerance = 1.0 / val_size
    base = runs["none"]
    result: dict[str, Any] = {
        "arm": "mlp 128-64 / adam on digits (default adam search space)", "n_trials": n_trials, "epochs": epochs,
        "objective": spec.objective_metric(), "val_size": val_size, "tolerance": tolerance,
        "target_epoch_ratio": TARGET_EPOCH_RATIO, "runs": runs,
    }
    met = True
    for name in PRUNERS[1:]:
        ratio = runs[name]["epochs"] / base["epochs"]
        gap = base["best_value"] - runs[name]["best_value"]  # > 0: the pruned run found a worse best
        ok = ratio <= TARGET_EPOCH_RATIO and gap <= tolerance + 1e-12
        result[f"ratio_{name}"], result[f"best_gap_{name}"], result[f"met_{name}"] = ratio, gap, ok
        met = met and ok
    result["met"] = met
    (out_dir / "pruning.json").write_text(json.dumps(result, indent=2, sort_keys=True))
    (out_dir / "pruning.md").write_text(markdown(result))
    return result


def markdown(result: dict) -> str:
    lines = [
        f"# Pruning: epochs spent vs best {result['objective']}", "",
        f"{result['arm']}; {result['n_trials']} trials x up to {result['epochs']} epochs, TPE seed 0 for every "
        f"pruner. Target: <= {result['target_epoch_ratio']:g} of the epochs of `none` at a best value within "
        f"1/{result['val_size']} = {result['tolerance']:.4f} of its best.", "",
        "| pruner | epochs | epochs / none | pruned trials | best val | gap to none | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, run in result["runs"].items():
        ratio = result.get(f"ratio_{name}", 1.0)
        gap = result.get(f"best_gap_{name}", 0.0)
        met = {True: "yes", False: "no"}.get(result.get(f"met_{name}"), "–")
        lines.append(f"| {name} | {run['epochs']} | {ratio:.2f} | {run['pruned']}/{run['trials']} | "
                     f"{run['best_value']:.4f} | {gap:+.4f} | {met} |")
    return "\n".join(lines) + "\n"
