"""The report's outcome on each arm's MLflow parent run, so that the MLflow UI's run table of
parent runs, sorted by one column, is the ranking, and its compare view shows per arm what was
chosen and how it scored.

Metrics `result/<column>` are the arm's row of summary.csv (the same table, not recomputed);
params are the arm's identity (logged when the parent run is created) and its best
hyper-parameters `best.<name>`. The experiment also gets a shared view of the MLflow UI, `ranking`
(the parent runs sorted by the test mean, with the ranking columns shown; MLflow's UI keeps shared
views as experiment tags `mlflow.sharedViewState.<key>`), opened with
`#/experiments/<id>/runs?viewStateShareKey=ranking`. Idempotent: `bench report` may run any number of times, during or
after a study. A metric is written only when its value changed (a rerun adds no rows); params
are immutable in MLflow, so `best.*` are written once the arm's tuning is finished and never
changed. Cost: one read of the experiment's runs (runs.py: plain SQL on a SQLite store) and at
most one batch write per arm; MLflow's client (~4 s to import) is imported only when something is
to be written, which a rerun on unchanged stores does not need.

The report files become artifacts `report/` of each parent run (`attach_report`).
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from bench.report.collect import ArmResult, StudyResult
from bench.report.runs import open_runs

if TYPE_CHECKING:
    import pandas as pd

PREFIX = "result/"
RANKING_VIEW = "ranking"
VIEW_TAG = "mlflow.sharedViewState."  # where MLflow's UI stores a shared view of an experiment's runs
COUNTS = ("trials_complete", "trials_pruned", "trials_failed", "trials_diverged", "diverged_evals")
COSTS = ("epochs", "steps", "samples", "train_time_s", "wall_time_s")


def metric_names(test_metric: str, objective: str) -> dict[str, str]:
    """summary.csv column -> parent-run metric, e.g. test_mean -> result/test_acc_mean.
    One `result/` prefix, so the UI shows them as one group."""
    test, obj = test_metric.replace("/", "_"), objective.replace("/", "_")
    return {
        "rank": "rank",
        **{f"test_{s}": f"{test}_{s}" for s in ("mean", "std", "ci95_low", "ci95_high")},
        "eval_seeds": "eval_seeds", f"best_{objective}": f"best_{obj}",
        **{k: k for k in COSTS},  # to the end of the budget
        "target": f"target_{obj}", **{f"target_{k}": f"target_{k}" for k in COSTS},  # to the target
        **{k: k for k in COUNTS},
    }


def result_metrics(row: dict[str, Any], test_metric: str, objective: str) -> dict[str, float]:
    """The finite values of one summary row as `result/*` metrics. Missing values (no eval seed,
    a single seed's interval, a target not reached: inf) are left out."""
    import pandas as pd  # imported by the table already; not at start-up (see render.write_report)

    out = {}
    for column, name in metric_names(test_metric, objective).items():
        value = row.get(column)
        if value is not None and not pd.isna(value) and math.isfinite(float(value)):
            out[PREFIX + name] = float(value)
    return out


def ranking_view(result: StudyResult) -> dict[str, Any]:
    """The UI state of the `ranking` view: this study's parent runs, best test mean first, with the
    arm's identity, its rank, test mean and interval, best validation value and wall time to the
    target as columns."""
    names = {k: PREFIX + v for k, v in metric_names(result.test_metric, result.objective).items()}
    metrics = [names[k] for k in ("rank", "test_mean", "test_ci95_low", "test_ci95_high", f"best_{result.objective}",
                                  "target_wall_time_s")]
    columns = [*(f"params.`{p}`" for p in ("optimizer", "schedule", "regularizers")),
               *(f"metrics.`{m}`" for m in metrics), "attributes.`Dataset`"]
    return {
        "searchFilter": f"tags.study = '{result.spec.name}' and tags.phase = 'arm'",
        "orderByKey": f"metrics.`{names['test_mean']}`", "orderByAsc": result.direction == "minimize",
        "selectedColumns": columns, "columnOrder": ["attributes.`Run Name`", *columns],
        "columnWidths": {f"metrics.`{m}`": 100 if m == names["rank"] else 170 for m in metrics},  # headers unclipped
    }


def tuning_finished(arm: ArmResult, n_trials: int) -> bool:
    return arm.trials_complete + arm.trials_pruned >= n_trials


def log_results(result: StudyResult, table: pd.DataFrame, tracking_uri: str) -> None:
    """Write each arm's row of `table` (summary_table) to its parent run."""
    store = open_runs(tracking_uri)
    try:
        experiment_id, experiment_tags = store.experiment(result.spec.name)
        current = {r.run_id: r for r in store.runs(experiment_id)}  # the parent runs as they are now
    finally:
        store.close()
    view = json.dumps(ranking_view(result), sort_keys=True)
    arms = {a.arm.name: a for a in result.arms}
    now = int(time.time() * 1000)
    batches = {}  # run id -> (metrics, params, tags) it lacks
    for row in table.to_dict("records"):
        arm = arms[row["arm"]]
        run = current.get(arm.parent_run_id)
        if run is None:
            continue
        wanted = result_metrics(row, result.test_metric, result.objective)
        logged = {k: v for k, v in run.metrics.items() if k.startswith(PREFIX)}
        # a value an earlier report had and this one has not (e.g. a target no longer reached):
        # MLflow cannot delete a metric, NaN marks it as void
        wanted |= {k: math.nan for k in logged if k not in wanted and not math.isnan(logged[k])}
        metrics = {k: v for k, v in wanted.items() if not _same(logged.get(k), v)}
        # an arm that never reached the target has no result/target_* metrics: this tag says why
        tags = {"target_reached": str(math.isfinite(row["target_epochs"])).lower()}
        params = {**arm.arm.identity()}
        if tuning_finished(arm, result.spec.tuning.n_trials) and arm.best_trial is not None:
            params |= {"best_trial": arm.best_trial, **{f"best.{k}": v for k, v in arm.best_params.items()}}
        params = {k: str(v) for k, v in params.items()}
        if clash := {k for k, v in params.items() if run.params.get(k, v) != v}:
            print(f"bench report: {arm.arm.name}: parent run {run.run_id} has other values for "
                  f"{sorted(clash)} (MLflow params cannot change); kept them", file=sys.stderr)
        new_params = {k: v for k, v in params.items() if k not in run.params}
        new_tags = {k: v for k, v in tags.items() if run.tags.get(k) != v}
        if metrics or new_params or new_tags:
            batches[run.run_id] = (metrics, new_params, new_tags)
    new_view = experiment_tags.get(VIEW_TAG + RANKING_VIEW) != view
    if not (batches or new_view):
        return  # the runs already say all of it
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    client = MlflowClient(tracking_uri)
    if new_view:
        client.set_experiment_tag(experiment_id, VIEW_TAG + RANKING_VIEW, view)
    for run_id, (metrics, params, tags) in batches.items():
        client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
                         params=[Param(k, v) for k, v in params.items()],
                         tags=[RunTag(k, v) for k, v in tags.items()])


def attach_report(result: StudyResult, tracking_uri: str, out_dir: Path) -> None:
    """The report files become artifacts `report/` of every arm's MLflow parent run. A local
    artifact store (a `file:` URI or a path: a SQLite store's mlartifacts/) is a folder, and the
    files are copied into it as MLflow's LocalArtifactRepository copies them; any other artifact
    store is written through MlflowClient."""
    remote = []
    for arm in result.arms:
        if not arm.parent_run_id:
            continue
        uri = arm.parent_artifact_uri
        if uri and urlsplit(uri).scheme in ("", "file"):
            local = urllib.request.url2pathname(urlsplit(uri).path if uri.startswith("file:") else uri)
            shutil.copytree(out_dir, Path(local) / "report", dirs_exist_ok=True)
        else:
            remote.append(arm.parent_run_id)
    if remote:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri)
        for run_id in remote:
            client.log_artifacts(run_id, str(out_dir), artifact_path="report")


def _same(old: float | None, new: float) -> bool:
    return old is not None and (old == new or (math.isnan(old) and math.isnan(new)))
