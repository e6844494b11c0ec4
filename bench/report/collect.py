"""Gather a study's results from the stores alone (MLflow + Optuna), never from process memory,
so `bench report` works after a crash or on another machine.

Imports neither torch nor Lightning (nor, on a SQLite tracking store, MLflow: see runs.py): on a
2-core machine they cost more start-up time than the whole report takes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import optuna
from optuna.trial import TrialState

from bench.report.runs import ClientRuns, Run, SqliteRuns, open_runs
from bench.spec import Arm, StudySpec, arms, direction_of
from bench.tuning.storage import open_storage, optuna_study_name

# x-axes of the curves per evaluation point (`epoch` is fractional within an epoch; runs recorded
# before budgets were values lack it and `train_time_s`), and the applied lr
CURVE_KEYS = ("epoch", "steps", "samples", "train_time_s", "wall_time_s", "lr")


OPTUNA_FIGURES = ("history", "importances", "parallel", "slice")  # Optuna's own figures, per arm


@dataclass
class ArmResult:
    arm: Arm
    trials_complete: int = 0
    trials_pruned: int = 0
    trials_failed: int = 0
    trials_diverged: int = 0  # pruned because the loss became non-finite (pruned_reason "diverged: ...")
    best_trial: int | None = None
    best_val: float | None = None
    best_params: dict = field(default_factory=dict)
    parent_run_id: str = ""
    parent_artifact_uri: str = ""  # where `bench report` attaches the report files
    eval_run_ids: list[str] = field(default_factory=list)
    test_values: list[float] = field(default_factory=list)  # one per eval seed that finished
    test_seeds: list[int] = field(default_factory=list)  # the seed of each test value (pairs arms)
    diverged_evals: int = 0
    epochs: float = float("nan")  # means over eval seeds
    steps: float = float("nan")
    samples: float = float("nan")
    train_time_s: float = float("nan")  # training only, evaluation excluded
    wall_time_s: float = float("nan")
    curves: dict[str, np.ndarray] = field(default_factory=dict)  # key -> (seeds, evaluation points)
    best_so_far: list[float] = field(default_factory=list)  # tuning curve, by trial number
    importances: dict[str, float] = field(default_factory=dict)  # study user attr param_importances
    importance_note: str = ""  # why importances are missing, when they are
    study: optuna.Study | None = None  # for Optuna's own figures
    parent_tags: dict[str, str] = field(default_factory=dict)

    @property
    def task(self) -> str:
        """Arms are compared within a task (model on dataset); a study may span several."""
        return f"{self.arm.model} on {self.arm.dataset}"


@dataclass
class StudyResult:
    spec: StudySpec
    objective: str
    test_metric: str
    direction: str
    arms: list[ArmResult]
    provenance: dict[str, str]


def collect(spec: StudySpec, *, tracking_uri: str, storage_url: str | None) -> StudyResult:
    store = open_runs(tracking_uri)
    try:
        return _collect(spec, store, open_storage(storage_url), tracking_uri)
    finally:
        store.close()


def _collect(spec: StudySpec, store: SqliteRuns | ClientRuns, storage: optuna.storages.BaseStorage,
             tracking_uri: str) -> StudyResult:
    objective = spec.objective_metric()
    direction = direction_of(objective)
    test_metric = "test/" + objective.split("/", 1)[1]
    experiment = store.experiment(spec.name)
    if experiment is None:
        raise LookupError(f"no MLflow experiment '{spec.name}' at {tracking_uri}: run the study first")
    runs: list[Run] = store.runs(experiment[0])  # one read for every arm: parents, eval seeds, their tags
    results, provenance = [], {}
    for arm in arms(spec):
        res = ArmResult(arm)
        try:
            study = optuna.load_study(study_name=optuna_study_name(spec, arm), storage=storage)
        except KeyError:
            results.append(res)
            continue
        trials = study.get_trials(deepcopy=False)
        res.importances = dict(study.user_attrs.get("param_importances") or {})
        res.importance_note = str(study.user_attrs.get("importance_note") or "")
        res.study = study
        res.trials_complete = sum(t.state == TrialState.COMPLETE for t in trials)
        res.trials_pruned = sum(t.state == TrialState.PRUNED for t in trials)
        res.trials_failed = sum(t.state == TrialState.FAIL for t in trials)
        res.trials_diverged = sum(t.state == TrialState.PRUNED and
                                  str(t.user_attrs.get("pruned_reason", "")).startswith("diverged") for t in trials)
        pick = max if direction == "maximize" else min
        best = None
        for t in sorted(trials, key=lambda t: t.number):
            if t.state == TrialState.COMPLETE:
                best = t.value if best is None else pick(best, t.value)
            res.best_so_far.append(best if best is not None else float("nan"))
        if res.trials_complete:
            res.best_trial, res.best_val = study.best_trial.number, study.best_value
            res.best_params = dict(study.best_trial.params)
        parents = [r for r in runs if r.has_tags({"study": spec.name, "phase": "arm", "arm": arm.name})]
        res.parent_run_id = parents[0].run_id if parents else ""
        res.parent_artifact_uri = parents[0].artifact_uri if parents else ""
        res.parent_tags = dict(parents[0].tags) if parents else {}
        for key in ("study_file", "study_file_sha256"):
            if res.parent_tags.get(key):
                provenance.setdefault(key, res.parent_tags[key])
        if res.best_trial is None:
            results.append(res)
            continue
        evals = [r for r in runs if r.status == "FINISHED" and r.has_tags(
            {"study": spec.name, "arm": arm.name, "phase": "eval", "best_trial": str(res.best_trial)})]
        evals.sort(key=lambda r: int(r.tags["seed"]))
        res.eval_run_ids = [r.run_id for r in evals]
        per_seed: dict[str, list] = {"epochs": [], "steps": [], "samples": [], "train_time_s": [], "wall_time_s": []}
        curves: dict[str, list[list[float]]] = {objective: [], **{k: [] for k in CURVE_KEYS}}
        scored = [r for r in evals if r.tags.get("status") != "diverged" and test_metric in r.metrics]
        res.diverged_evals = len(evals) - len(scored)
        histories = store.histories([r.run_id for r in scored], list(curves))  # one query for the arm
        for run in scored:
            res.test_values.append(run.metrics[test_metric])
            res.test_seeds.append(int(run.tags["seed"]))
            for key in ("epochs", "steps", "samples", "train_time_s"):
                per_seed[key].append(float(run.tags.get(f"{key}_run" if key == "epochs" else key, "nan")))
            per_seed["wall_time_s"].append(run.metrics.get("wall_time_s", float("nan")))
            for key in curves:
                if history := histories.get((run.run_id, key)):
                    curves[key].append(history)
            provenance.update({k: v for k, v in run.tags.items()
                               if k.startswith(("version.", "git_", "python", "host", "device"))})
        for key, values in per_seed.items():
            setattr(res, key, float(np.mean(values)) if values else float("nan"))
        for key, rows in curves.items():
            if rows:
                n = min(map(len, rows))  # seeds share the budget's points; a diverged one is excluded
                res.curves[key] = np.array([r[:n] for r in rows])
        results.append(res)
    return StudyResult(spec, objective, test_metric, direction, results, provenance)


def params_json(params: dict) -> str:
    return json.dumps(params, sort_keys=True)
