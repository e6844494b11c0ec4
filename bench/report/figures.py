"""Report figures (matplotlib, Agg backend: PNG files render on any git host and inline into the
self-contained HTML). Every function returns the written path, or None when it has nothing to draw.

Cost: 0.2-2 s of CPU per PNG (2-core machine), most of it matplotlib's text layout; Optuna's four
figures per arm dominate large studies. `start` draws them on every core (forked processes).
"""

from __future__ import annotations

import math
import multiprocessing
import os
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
import optuna.visualization.matplotlib  # noqa: E402  (imported here: forked workers inherit it)
from matplotlib.layout_engine import PlaceHolderLayoutEngine  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from bench.hparams import Dist  # noqa: E402
from bench.report.collect import OPTUNA_FIGURES, ArmResult, StudyResult  # noqa: E402

DPI = 100


def _share_mathtext_parser() -> None:
    """One mathtext parser for every Agg renderer of this process, so that its cache of parsed
    expressions (the 10^k tick labels of log axes) serves every figure. matplotlib gives each
    renderer a parser with an empty cache, and makes a renderer per figure and pixel size: two or
    three per figure here (the figure's own, for tight_layout and measuring, and savefig's for the
    cropped image), each parsing every label again with pyparsing, ~20 ms apiece: up to a third of
    the CPU of a figure with log axes.
    The result is the same: the cache is keyed by the text, font, size and dpi of each label."""
    from matplotlib.backends import backend_agg
    from matplotlib.mathtext import MathTextParser

    init, shared = backend_agg.RendererAgg.__init__, MathTextParser("path")

    def shared_parser_init(self: backend_agg.RendererAgg, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        if isinstance(getattr(self, "mathtext_parser", None), MathTextParser):  # as in matplotlib 3.x
            self.mathtext_parser = shared

    if not getattr(init, "_bench_shared", False):
        shared_parser_init._bench_shared = True  # type: ignore[attr-defined]
        backend_agg.RendererAgg.__init__ = shared_parser_init


_share_mathtext_parser()


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = fig.get_layout_engine()
    if fig.dpi == DPI and (engine is None or isinstance(engine, PlaceHolderLayoutEngine)):
        # Laid out already (tight_layout) or never: savefig(bbox_inches="tight") would go through
        # the whole figure once more only to measure it. Measured here, on the renderer that
        # tight_layout used, the figure is drawn once: the same pixels for ~15% less CPU.
        bbox = fig.get_tightbbox(fig.canvas.get_renderer()).padded(plt.rcParams["savefig.pad_inches"])
        fig.set_layout_engine(None)  # nothing left to lay out, so no measuring pass
        fig.savefig(path, dpi=DPI, bbox_inches=bbox)
    else:  # a live layout engine (Optuna's history figure) lays the resized figure out in that pass
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


def optuna_kinds(arm: ArmResult) -> tuple[list[str], list[str]]:
    """Which of Optuna's figures an arm gets (in OPTUNA_FIGURES order), and notes on those it does
    not get and why."""
    study = arm.study
    if study is None:
        return [], [f"{arm.arm.name}: no Optuna study in the storage"]
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:  # one point: nothing to see in a history, a slice or an importance
        return [], [f"{arm.arm.name}: {len(complete)} completed trial(s), so no Optuna figures "
                    "(importances need ≥ 2)"]
    params = sorted({k for t in complete for k in t.params})
    if len(params) < 2:
        return ["history", "parallel", "slice"], [
            f"{arm.arm.name}: importances skipped (a single tuned parameter, `{params[0]}`, "
            "has importance 1 by definition)"]
    return list(OPTUNA_FIGURES), []


def optuna_figure(arm: ArmResult, kind: str, out_dir: Path, n_trials: int) -> tuple[Path | None, str]:
    """One of Optuna's own matplotlib figures for one arm (optimization history, parameter
    importances, parallel coordinates, slice): (path, "") or (None, why it was skipped)."""
    study, vis = arm.study, optuna.visualization.matplotlib
    plots = {"history": lambda: vis.plot_optimization_history(study),
             "parallel": lambda: vis.plot_parallel_coordinate(study),
             "slice": lambda: vis.plot_slice(study),
             "importances": lambda: _importances_plot(arm, n_trials)}
    # In Optuna's ggplot style: most of its plot functions switch to it (for the whole process);
    # the parallel coordinates have no style of their own and were drawn after the history figure.
    with warnings.catch_warnings(), plt.style.context("ggplot"):
        warnings.simplefilter("ignore")  # ExperimentalWarning of optuna.visualization.matplotlib
        try:
            ax = plots[kind]()
        except (ValueError, RuntimeError, ZeroDivisionError) as err:
            plt.close("all")
            return None, f"{arm.arm.name}: {kind} figure skipped ({type(err).__name__}: {err})"
        fig = (np.asarray(ax).flat[0] if isinstance(ax, np.ndarray) else ax).figure
        fig.set_size_inches(max(fig.get_size_inches()[0], 6), 4)  # Optuna titles it; the report row names the arm
        return _save(fig, out_dir / f"{_safe(arm.arm.name)}-{kind}.png"), ""


def _importances_plot(arm: ArmResult, n_trials: int) -> Any:
    """Optuna's importance figure of the values recorded with the study (the report's importance
    table) once its tuning is finished: they are what fANOVA gives on the same trials, and
    recomputing them costs ~3 s of CPU (scikit-learn's import and 64 trees). Before that, or with
    another Optuna whose private plotting helpers differ, fANOVA recomputes them."""
    study, vis = arm.study, optuna.visualization.matplotlib
    if arm.importances and arm.trials_complete + arm.trials_pruned >= n_trials:
        try:
            from optuna.visualization._param_importances import _ImportancesInfo
            from optuna.visualization.matplotlib._param_importances import _get_importances_plot
        except ImportError:
            pass
        else:  # what plot_param_importances draws from get_param_importances' dict
            values = dict(reversed(list(arm.importances.items())))  # stored most important first
            labels = [f"{v:.2f}" if v >= 0.01 else "<0.01" for v in values.values()]
            names = study.metric_names
            info = _ImportancesInfo(list(values.values()), list(values), labels,
                                    names[0] if names else "Objective Value")
            return _get_importances_plot((info,))
    return vis.plot_param_importances(study, evaluator=_evaluator(study))


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


# --- rendering on every core ------------------------------------------------------------------
Job = tuple[Callable[..., Any], tuple]  # fn(*args) draws and saves one figure
_JOBS: Sequence[Job] = ()  # the jobs of the pool being started: its forked workers inherit them


def draw(job: Job) -> Any:
    """Draw one figure job."""
    fn, args = job
    # Optuna's figures switch the global style to ggplot (plt.style.use): each figure starts from
    # the same settings, whichever figures its process drew before.
    with matplotlib.rc_context():
        return fn(*args)


def _run_index(i: int) -> Any:
    return draw(_JOBS[i])


def start(jobs: Sequence[Job]) -> Callable[[], list]:
    """Start drawing `jobs`; the returned function waits and gives their results in order.

    A figure costs 0.2-2 s of CPU, nearly all in Python (matplotlib's text layout and ticks, for
    each of the passes tight_layout and savefig make), so they are drawn in one forked process per
    core, which inherit matplotlib, Optuna and the collected results without pickling them; the
    caller computes the tables meanwhile. Serial, when called, on one core or where forking is
    unsafe: without fork, or in a process with other threads, which `bench run` is when it reports
    after training (MLflow's writer thread, and torch's OpenMP threads, which `threading` does not
    count)."""
    workers = min(len(jobs), len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
    safe = threading.active_count() == 1 and "torch" not in sys.modules
    if workers < 2 or not safe or "fork" not in multiprocessing.get_all_start_methods():
        return lambda: [draw(job) for job in jobs]
    global _JOBS
    _JOBS = jobs  # set before the pool forks its workers (at the first submit)
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
    futures = [pool.submit(_run_index, i) for i in range(len(jobs))]

    def wait() -> list:
        global _JOBS
        try:
            return [f.result() for f in futures]
        finally:
            pool.shutdown(cancel_futures=True)
            _JOBS = ()
    return wait
