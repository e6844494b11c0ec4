"""Derived tables of a study report: tasks, targets, time-to-target, pairwise tests, and the
cross-model performance profile and rank table. Pure functions of a StudyResult (no stores)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from bench.report import stats
from bench.report.collect import ArmResult, StudyResult

if TYPE_CHECKING:  # pandas is imported where a frame is made (see render.write_report)
    import pandas as pd

COST_AXES = ("steps", "samples", "train_time_s", "wall_time_s")  # besides epochs
PROFILE_TAUS = tuple(float(t) for t in np.round(np.logspace(0, np.log10(8), 61), 4))  # 1 .. 8


@dataclass
class Target:
    value: float
    how: str  # one sentence, printed in the report
    source: str = "derived"  # "study file" | "workload" | "derived" (from the arms' own results)


@dataclass
class Analysis:
    tasks: dict[str, list[ArmResult]]  # task -> arms, ranked best first (arms without results last)
    targets: dict[str, Target]
    to_target: dict[str, dict[str, float]]  # arm -> {"epochs", "steps", "samples", "wall_time_s"}
    comparisons: dict[str, list[stats.Comparison]]  # task -> every pair of arms
    methods: dict[str, str]  # arm -> method label shared across tasks (arm name minus model/dataset)
    profile: dict[str, list[float]] = field(default_factory=dict)  # method -> rho(tau), >1 task only
    rank_table: pd.DataFrame | None = None  # methods x tasks, >1 task only


def final_validation(arm: ArmResult, objective: str) -> float:
    """Mean over eval seeds of the objective after the last epoch."""
    curve = arm.curves.get(objective)
    return float(curve.mean(0)[-1]) if curve is not None and curve.size else math.nan


def _ranked(arms: list[ArmResult], direction: str) -> list[ArmResult]:
    def key(a: ArmResult) -> tuple[int, float]:
        m = float(np.mean(a.test_values)) if a.test_values else math.nan
        return (1, 0.0) if math.isnan(m) else (0, -m if direction == "maximize" else m)
    return sorted(arms, key=key)  # stable: ties keep the study file's order


def method_label(arm: ArmResult) -> str:
    """The arm's name without its model and dataset names, so that `mlp-adam` and `cnn-adam`
    are the same method in the cross-model profile."""
    name = arm.arm.name
    for token in (arm.arm.model, arm.arm.dataset):
        name = re.sub(rf"(^|[-_+./]){re.escape(token)}(?=[-_+./]|$)", "", name)
    return name.strip("-_+./") or arm.arm.name


def analyse(result: StudyResult) -> Analysis:
    objective, direction = result.objective, result.direction
    tasks: dict[str, list[ArmResult]] = {}
    for a in result.arms:
        tasks.setdefault(a.task, []).append(a)
    tasks = {t: _ranked(arms, direction) for t, arms in tasks.items()}
    targets, to_target, comparisons = task_targets(result), {}, {}
    for task, arms in tasks.items():
        for a in arms:
            if objective in a.curves:
                axes = {k: a.curves[k].mean(0) for k in ("epoch", *COST_AXES) if k in a.curves}
                to_target[a.arm.name] = stats.time_to_target(a.curves[objective].mean(0), axes,
                                                             targets[task].value, direction)
            else:
                to_target[a.arm.name] = {"epochs": math.nan, **{k: math.nan for k in COST_AXES}}
        samples = {a.arm.name: (a.test_seeds, a.test_values) for a in arms}
        comparisons[task] = stats.compare_arms(samples, direction)
    methods = {a.arm.name: method_label(a) for a in result.arms}
    out = Analysis(tasks, targets, to_target, comparisons, methods)
    if len(tasks) > 1:
        times = {task: {methods[a.arm.name]: to_target[a.arm.name]["wall_time_s"] for a in arms
                        if not math.isnan(to_target[a.arm.name]["wall_time_s"])} for task, arms in tasks.items()}
        out.profile = stats.performance_profile(times, PROFILE_TAUS)
        cols = {}
        for task, arms in tasks.items():
            means = {methods[a.arm.name]: float(np.mean(a.test_values)) if a.test_values else math.nan for a in arms}
            cols[task] = stats.ranks(means, direction)
        import pandas as pd

        table = pd.DataFrame(cols)
        table.index.name = "method"
        table["mean rank"] = table.mean(axis=1, skipna=True)
        out.rank_table = table.sort_values("mean rank")
    return out


def task_targets(result: StudyResult) -> dict[str, Target]:
    """Each task's target, without the rest of the analysis (the learning-curve figure draws it)."""
    tasks: dict[str, list[ArmResult]] = {}
    for a in result.arms:
        tasks.setdefault(a.task, []).append(a)
    return {task: task_target(result, arms) for task, arms in tasks.items()}


def task_target(result: StudyResult, arms: list[ArmResult]) -> Target:
    """The time-to-target threshold of a task: the study file's `target`, else the workload's
    (DatasetInfo.targets of the dataset, for the model and the objective), else, as a labelled
    fallback, the value a majority of the arms reach (their final mean validation values)."""
    from bench.data import DATASETS

    objective, direction = result.objective, result.direction
    sign = "≥" if direction == "maximize" else "≤"
    explicit = getattr(result.spec, "target", None)
    if explicit is not None:
        return Target(float(explicit), f"{objective} {sign} {explicit:.4g}: set by the study file (`target`).",
                      "study file")
    model, dataset = arms[0].arm.model, arms[0].arm.dataset
    info = DATASETS.get(dataset)
    declared = info.target(model, objective)
    if declared is not None:
        origin = f" ({info.targets_source})" if info.targets_source else ""
        return Target(declared, f"{objective} {sign} {declared:.4g}: the workload's fixed target for {model} on "
                      f"{dataset}, declared with the dataset{origin}.", "workload")
    finals = {a.arm.name: final_validation(a, objective) for a in arms}
    n = sum(math.isfinite(v) for v in finals.values())
    value = stats.majority_target(finals, direction)
    k = n // 2 + 1 if n > 1 else n
    return Target(value, (
        f"{objective} {sign} {value:.4g}: derived (no target declared for {model} on {dataset}, none in the "
        f"study file): the {_ordinal(k)} best of the {n} arms' final validation values (mean over eval seeds), "
        "so a majority of arms reach it."), "derived")


def _ordinal(k: int) -> str:
    return {1: "1st", 2: "2nd", 3: "3rd"}.get(k, f"{k}th")


def pairwise_frame(analysis: Analysis, test_metric: str) -> pd.DataFrame:
    import pandas as pd

    rows = []
    for task, comps in analysis.comparisons.items():
        for c in comps:
            rows.append({"task": task, "arm_a": c.a, "arm_b": c.b, "metric": test_metric, "n_a": c.n_a,
                         "n_b": c.n_b, "mean_a": c.mean_a, "mean_b": c.mean_b, "diff": c.diff, "test": c.test,
                         "statistic": c.statistic, "p": c.p, "p_holm": c.p_holm, "verdict": c.verdict})
    return pd.DataFrame(rows, columns=["task", "arm_a", "arm_b", "metric", "n_a", "n_b", "mean_a", "mean_b", "diff",
                                       "test", "statistic", "p", "p_holm", "verdict"])
