"""Report figures (matplotlib, Agg backend: PNG files render on any git host and inline into the
self-contained HTML). Every function returns the written path, or None when it has nothing to draw.

Cost: a few tenths of a second per PNG; Optuna's four figures per arm dominate large studies.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from bench.report.collect import ArmResult, StudyResult  # noqa: E402

DPI = 100
OPTUNA_FIGURES = ("history", "importances", "parallel", "slice")


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def _tasks(result: StudyResult, need: str) -> dict[str, list[ArmResult]]:
    out: dict[str, list[ArmResult]] = {}
    for a in result.arms:
        if need in a.curves:
            out.setdefault(a.task, []).append(a)
    return out


def learning_curves(result: StudyResult, path: Path, targets: dict[str, float] | None = None) -> Path | None:
    """Validation objective of the selected configurations (eval seeds: mean line, min-max band)
    against epochs, optimizer steps and wall time, one row per task; the dashed line is the
    time-to-target threshold. BGD and SGD look very different on each axis, which is the point."""
    tasks = _tasks(result, result.objective)
    if not tasks:
        return None
    fig, grid = plt.subplots(len(tasks), 3, figsize=(15, 4.2 * len(tasks)), squeeze=False)
    for row, (task, arms) in zip(grid, tasks.items()):
        for arm in arms:
            y = arm.curves[result.objective]
            xs = {"epoch": np.arange(1, y.shape[1] + 1), "optimizer steps": arm.curves["steps"].mean(0),
                  "wall time [s]": arm.curves["wall_time_s"].mean(0)}
            for ax, (label, x) in zip(row, xs.items()):
                (line,) = ax.plot(x, y.mean(0), marker="o", ms=3, label=f"{arm.arm.name} (n={len(y)})")
                ax.fill_between(x, y.min(0), y.max(0), color=line.get_color(), alpha=0.2)
                ax.set_xlabel(label)
        target = (targets or {}).get(task)
        for ax in row:
            if target is not None and math.isfinite(target):
                ax.axhline(target, color="0.3", ls="--", lw=1)
            ax.grid(alpha=0.3)
        row[0].xaxis.set_major_locator(MaxNLocator(integer=True))
        row[1].set_xscale("log")
        row[0].set_ylabel(f"{result.objective}\n(mean over eval seeds, min-max band)")
        row[0].set_title(task, loc="left", fontsize=10)
        row[0].legend(fontsize=8)
    fig.suptitle(f"{result.spec.name}: learning curves of the selected configurations (dashed: target)")
    fig.tight_layout()
    return _save(fig, path)


def lr_curves(result: StudyResult, path: Path) -> Path | None:
    """The learning rate actually applied (logged `lr` at the end of each epoch, mean over eval
    seeds) against epochs and optimizer steps."""
    arms = [a for a in result.arms if "lr" in a.curves and a.curves["lr"].size]
    if not arms:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    for arm in arms:
        lr = arm.curves["lr"].mean(0)
        (line,) = axes[0].plot(np.arange(1, len(lr) + 1), lr, marker="o", ms=3, label=arm.arm.name)
        steps = arm.curves["steps"].mean(0)[: len(lr)] if "steps" in arm.curves else None
        if steps is not None:
            axes[1].plot(steps, lr, marker="o", ms=3, color=line.get_color())
    axes[0].set_xlabel("epoch")
    axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[1].set_xlabel("optimizer steps")
    axes[1].set_xscale("log")
    axes[0].set_ylabel("applied lr (end of epoch)")
    for ax in axes:
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{result.spec.name}: learning rate applied in the eval runs")
    fig.tight_layout()
    return _save(fig, path)


def tuning_curves(result: StudyResult, path: Path) -> Path | None:
    """Best-so-far validation value against trial number, one panel per task (pruned and failed
    trials count: they spent budget); dots are the completed trials' own values."""
    tasks: dict[str, list[ArmResult]] = {}
    for a in result.arms:
        if any(math.isfinite(v) for v in a.best_so_far):
            tasks.setdefault(a.task, []).append(a)
    if not tasks:
        return None
    fig, axes = plt.subplots(1, len(tasks), figsize=(7 * len(tasks), 4.2), squeeze=False)
    for ax, (task, arms) in zip(axes[0], tasks.items()):
        for arm in arms:
            n = np.arange(len(arm.best_so_far))
            (line,) = ax.step(n, arm.best_so_far, where="post", label=arm.arm.name)
            if arm.study is not None:
                done = [t for t in arm.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
                ax.scatter([t.number for t in done], [t.value for t in done], s=12, alpha=0.45,
                           color=line.get_color())
        ax.set_xlabel("trial number")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(f"best {result.objective} so far")
        ax.set_title(task, loc="left", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{result.spec.name}: tuning curves (same budget per arm)")
    fig.tight_layout()
    return _save(fig, path)


def optuna_figures(arm: ArmResult, out_dir: Path) -> tuple[dict[str, Path], list[str]]:
    """Optuna's own matplotlib figures for one arm: optimization history, parameter importances,
    parallel coordinates, slice. Returns ({kind: path}, notes on what was skipped and why)."""
    study, paths, notes = arm.study, {}, []
    if study is None:
        return paths, [f"{arm.arm.name}: no Optuna study in the storage"]
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:  # one point: nothing to see in a history, a slice or an importance
        return paths, [f"{arm.arm.name}: {len(complete)} completed trial(s), so no Optuna figures "
                       "(importances need ≥ 2)"]
    params = sorted({k for t in complete for k in t.params})
    vis = optuna.visualization.matplotlib
    plots = {"history": lambda: vis.plot_optimization_history(study),
             "parallel": lambda: vis.plot_parallel_coordinate(study),
             "slice": lambda: vis.plot_slice(study)}
    if len(params) < 2:
        notes.append(f"{arm.arm.name}: importances skipped (a single tuned parameter, `{params[0]}`, "
                     "has importance 1 by definition)")
    else:
        plots["importances"] = lambda: vis.plot_param_importances(study, evaluator=_evaluator(study))
    for kind in OPTUNA_FIGURES:
        if kind not in plots:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ExperimentalWarning of optuna.visualization.matplotlib
            try:
                ax = plots[kind]()
            except (ValueError, RuntimeError, ZeroDivisionError) as err:
                notes.append(f"{arm.arm.name}: {kind} figure skipped ({type(err).__name__}: {err})")
                plt.close("all")
                continue
        fig = (np.asarray(ax).flat[0] if isinstance(ax, np.ndarray) else ax).figure
        fig.set_size_inches(max(fig.get_size_inches()[0], 6), 4)  # Optuna titles it; the report row names the arm
        paths[kind] = _save(fig, out_dir / f"{_safe(arm.arm.name)}-{kind}.png")
    return paths, notes


def _evaluator(study: optuna.Study) -> optuna.importance.BaseImportanceEvaluator:
    """The evaluator recorded with the study's importances (same numbers as the table), else
    fANOVA with a fixed seed."""
    e = study.user_attrs.get("importance_evaluator") or {}
    return optuna.importance.FanovaImportanceEvaluator(
        n_trees=int(e.get("n_trees", 64)), max_depth=int(e.get("max_depth", 64)), seed=int(e.get("seed", 0)))


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def performance_profile(profile: dict[str, list[float]], taus: tuple[float, ...], n_tasks: int,
                        path: Path) -> Path | None:
    """AlgoPerf-style performance profile: share of tasks on which a method reaches the task's
    target within tau x the fastest method's wall time."""
    if not profile:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for method, rho in sorted(profile.items()):
        ax.step(taus, rho, where="post", label=method)
    ax.set_xscale("log")
    ax.set_xlabel("τ (wall time to target ÷ fastest method's, per task)")
    ax.set_ylabel(f"share of the {n_tasks} tasks")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title("performance profile", loc="left", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
