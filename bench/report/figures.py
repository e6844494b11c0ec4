"""Report figures (matplotlib, Agg backend: PNG files render on any git host and inline into the
self-contained HTML). Every function returns the written path, or None when it has nothing to draw.

Cost: a few tenths of a second per PNG; Optuna's four figures per arm dominate large studies.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from bench.hparams import Dist  # noqa: E402
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


# The learning-curve panels: (curve key, axis label, log scale). `epoch` falls back to the point
# number for runs recorded before budgets were values (one point per epoch then).
CURVE_AXES = (("epoch", "epochs", False), ("steps", "optimizer steps", True),
              ("samples", "training samples", True), ("train_time_s", "training time [s] (evaluation excluded)", False))


def curve_x(arm: ArmResult, key: str, n: int) -> np.ndarray | None:
    """Mean over eval seeds of an x-axis at each of the n evaluation points (None when not recorded)."""
    if key in arm.curves and arm.curves[key].shape[1] >= n:
        return arm.curves[key].mean(0)[:n]
    if key == "epoch":
        return np.arange(1, n + 1, dtype=float)
    if key == "train_time_s" and "wall_time_s" in arm.curves:  # older runs: wall time is the nearest
        return arm.curves["wall_time_s"].mean(0)[:n]
    return None


def learning_curves(result: StudyResult, path: Path, targets: dict[str, float] | None = None) -> Path | None:
    """Validation objective of the selected configurations (eval seeds: mean line, min-max band) at
    their evaluation points against epochs, optimizer steps, training samples and training time,
    one panel per axis and one row per task; the dashed line is the time-to-target threshold. BGD
    and SGD meet on every axis: far apart per step, closer per sample, which is the point."""
    tasks = _tasks(result, result.objective)
    if not tasks:
        return None
    fig, grid = plt.subplots(len(tasks), len(CURVE_AXES), figsize=(19, 4.2 * len(tasks)), squeeze=False)
    for row, (task, arms) in zip(grid, tasks.items()):
        for arm in arms:
            y = arm.curves[result.objective]
            color = None
            for ax, (key, _label, _log) in zip(row, CURVE_AXES):
                x = curve_x(arm, key, y.shape[1])
                if x is None:
                    continue
                (line,) = ax.plot(x, y.mean(0), marker="o", ms=3, color=color,
                                  label=f"{arm.arm.name} (n={len(y)})")
                color = line.get_color()
                ax.fill_between(x, y.min(0), y.max(0), color=color, alpha=0.2)
        target = (targets or {}).get(task)
        for ax, (_key, label, log) in zip(row, CURVE_AXES):
            if target is not None and math.isfinite(target):
                ax.axhline(target, color="0.3", ls="--", lw=1)
            ax.set_xlabel(label)
            if log:
                ax.set_xscale("log")
            ax.grid(alpha=0.3)
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
        (line,) = axes[0].plot(curve_x(arm, "epoch", len(lr)), lr, marker="o", ms=3, label=arm.arm.name)
        steps = arm.curves["steps"].mean(0)[: len(lr)] if "steps" in arm.curves else None
        if steps is not None:
            axes[1].plot(steps, lr, marker="o", ms=3, color=line.get_color())
    axes[0].set_xlabel("epochs")
    axes[1].set_xlabel("optimizer steps")
    axes[1].set_xscale("log")
    axes[0].set_ylabel("applied lr (at each evaluation)")
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


@dataclass
class TrialPoint:
    """One tuning trial in the sensitivity figures: its values and how it ended."""

    number: int
    params: dict[str, float]
    value: float | None  # final objective (completed), last reported value (pruned), None (diverged, failed)
    state: str  # "complete" | "pruned" | "diverged" | "failed"


def trial_points(arm: ArmResult) -> list[TrialPoint]:
    """Every finished tuning trial of an arm from its Optuna study (running ones are left out). The
    chosen optimizer's parameters of an arm that tunes it lose their `<optimizer>.` prefix."""
    if arm.study is None:
        return []
    out = []
    for t in arm.study.get_trials(deepcopy=False):
        chosen = t.params.get("optimizer")
        params = {}
        for k, v in t.params.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                params[k.split(".", 1)[1] if chosen and k.startswith(f"{chosen}.") else k] = float(v)
        if t.state == TrialState.COMPLETE:
            out.append(TrialPoint(t.number, params, float(t.value), "complete"))
        elif t.state == TrialState.PRUNED:
            diverged = str(t.user_attrs.get("pruned_reason", "")).startswith("diverged")
            last = t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None
            ok = not diverged and last is not None and math.isfinite(last)
            out.append(TrialPoint(t.number, params, float(last) if ok else None, "pruned" if ok else "diverged"))
        elif t.state == TrialState.FAIL:
            out.append(TrialPoint(t.number, params, None, "failed"))
    return out


def sensitivity_data(result: StudyResult) -> dict[str, list[TrialPoint]]:
    """Arm -> its trials that have a learning rate (arms that tune lr; one colour each)."""
    out = {}
    for a in result.arms:
        points = [p for p in trial_points(a) if "lr" in p.params]
        if len({p.params["lr"] for p in points}) > 1:
            out[a.arm.name] = points
    return out


def lr_sensitivity(result: StudyResult, path: Path) -> Path | None:
    """Final validation objective against learning rate over all tuning trials, one colour per
    arm (optimizer): filled = completed, hollow = pruned at its last reported value, x at the
    lower edge = diverged or failed."""
    data = sensitivity_data(result)
    if not data:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.6))
    edge = ax.get_xaxis_transform()  # x in data, y in axes coordinates: the lower edge
    # One colour per arm, fixed before drawing (the default cycle repeats after 10 arms); one legend
    # entry per arm, the marker says the state.
    palette = plt.get_cmap("tab10" if len(data) <= 10 else "tab20")
    for i, (name, points) in enumerate(data.items()):
        color = palette(i % palette.N)
        counts = {state: sum(p.state == state for p in points) for state in ("complete", "pruned")}
        bad = [p for p in points if p.state in ("diverged", "failed")]
        label = f"{name} ({counts['complete']} done, {counts['pruned']} pruned, {len(bad)} diverged/failed)"
        for state, face in (("complete", color), ("pruned", "none")):
            sel = [p for p in points if p.state == state]
            if sel:
                ax.scatter([p.params["lr"] for p in sel], [p.value for p in sel], s=22, facecolors=face,
                           edgecolors=color, label=label)
                label = None
        if bad:
            ax.scatter([p.params["lr"] for p in bad], [0.02] * len(bad), marker="x", s=30, color=color,
                       transform=edge, clip_on=False, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log)")
    ax.set_ylabel(f"final {result.objective} (tuning trials)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(f"{result.spec.name}: learning-rate sensitivity (filled: completed, hollow: pruned at its last "
                 "value, x at the edge: diverged or failed)", loc="left", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


@dataclass
class Grid:
    """A two-parameter heatmap: best completed value per cell, and every trial as a dot."""

    x: str
    y: str
    x_edges: np.ndarray
    y_edges: np.ndarray
    values: np.ndarray  # (len(y_edges) - 1, len(x_edges) - 1); NaN where no completed trial falls
    log: tuple[bool, bool]
    points: list[TrialPoint]


HEATMAP_BINS = 8


def heatmap_data(arm: ArmResult, direction: str, bins: int = HEATMAP_BINS) -> Grid | None:
    """The grid of an arm that tunes at least two numeric (range) hyper-parameters, over the two
    most important ones (the arm's fANOVA importances, else the space's order); None otherwise."""
    ranges = {k.split(".", 1)[-1] if arm.arm.choices else k: d for k, d in arm.arm.space.items()
              if d.choices is None}
    if len(ranges) < 2:
        return None
    order = sorted(ranges, key=lambda k: -arm.importances.get(k, -1.0)) if arm.importances else list(ranges)
    x, y = order[:2]
    points = [p for p in trial_points(arm) if x in p.params and y in p.params]
    if not points:
        return None

    def edges(d: Dist) -> np.ndarray:
        return np.geomspace(d.low, d.high, bins + 1) if d.log else np.linspace(d.low, d.high, bins + 1)

    xe, ye = edges(ranges[x]), edges(ranges[y])
    values = np.full((bins, bins), np.nan)
    better = max if direction == "maximize" else min
    for p in points:
        if p.state != "complete":
            continue
        i = min(max(int(np.searchsorted(ye, p.params[y], side="right")) - 1, 0), bins - 1)
        j = min(max(int(np.searchsorted(xe, p.params[x], side="right")) - 1, 0), bins - 1)
        values[i, j] = p.value if np.isnan(values[i, j]) else better(values[i, j], p.value)
    return Grid(x, y, xe, ye, values, (ranges[x].log, ranges[y].log), points)


def heatmap(arm: ArmResult, result: StudyResult, path: Path) -> Path | None:
    grid = heatmap_data(arm, result.direction)
    if grid is None:
        return None
    fig, ax = plt.subplots(figsize=(5.6, 4.4))
    cmap = "viridis" if result.direction == "maximize" else "viridis_r"
    mesh = ax.pcolormesh(grid.x_edges, grid.y_edges, np.ma.masked_invalid(grid.values), cmap=cmap, shading="flat")
    fig.colorbar(mesh, ax=ax, label=f"best final {result.objective}")
    for state, face in (("complete", "k"), ("pruned", "none")):
        sel = [p for p in grid.points if p.state == state]
        if sel:
            ax.scatter([p.params[grid.x] for p in sel], [p.params[grid.y] for p in sel], s=12,
                       facecolors=face, edgecolors="k", lw=0.6)
    if grid.log[0]:
        ax.set_xscale("log")
    if grid.log[1]:
        ax.set_yscale("log")
    ax.set_xlabel(grid.x)
    ax.set_ylabel(grid.y)
    ax.set_title(f"{arm.arm.name}: {grid.x} x {grid.y}", loc="left", fontsize=10)
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
