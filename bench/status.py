"""`bench status STUDY [store flags]`: where a study stands, read from its stores only.

Per arm: finished trials of the budget, pruned / failed / running trials, eval seeds done, best
value, and the workers (host:pid, and the Slurm job when there is one) holding running trials
and eval runs. Works anywhere the stores are reachable, for local and Slurm studies alike; the
Slurm launcher follows a study with the same `study_status`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from bench.launch.options import UsageError
from bench.tracking import Tracker, redact
from bench.tuning.storage import DEFAULT_STORAGE, is_rdb, open_storage
from bench.tuning.study import arms, optuna_study_name


@dataclass
class ArmStatus:
    name: str
    n_trials: int
    seeds: int
    started: bool = False
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0
    best: float | None = None
    evals_done: int = 0
    holders: list[str] = field(default_factory=list)  # who runs this arm's trials / eval seeds now

    @property
    def finished(self) -> int:
        return self.complete + self.pruned

    @property
    def done(self) -> bool:
        """Tuned, and every eval seed finished (no completed trial: nothing to evaluate)."""
        tuned = self.finished >= self.n_trials and self.running == 0
        return tuned and (self.evals_done >= self.seeds or self.complete == 0)


def _holder(attrs: dict[str, Any]) -> str:
    job, worker = attrs.get("slurm_job"), attrs.get("worker", "?")
    return f"slurm {job} ({worker})" if job else worker


def study_status(spec: Any, storage_url: str | None, tracking_uri: str) -> list[ArmStatus]:
    storage = open_storage(storage_url)
    tracker = Tracker(tracking_uri)
    experiment = tracker.experiment_id(spec.name, create=False)
    evals = tracker.find_runs(experiment, {"study": spec.name, "phase": "eval"}) if experiment else []
    out = []
    for arm in arms(spec):
        s = ArmStatus(arm.name, spec.tuning.n_trials, spec.eval.seeds)
        out.append(s)
        try:
            study = optuna.load_study(study_name=optuna_study_name(spec, arm), storage=storage)
        except KeyError:
            continue  # no worker has started this arm yet
        s.started = True
        for trial in study.get_trials(deepcopy=False):
            s.complete += trial.state == TrialState.COMPLETE
            s.pruned += trial.state == TrialState.PRUNED
            s.failed += trial.state == TrialState.FAIL
            if trial.state == TrialState.RUNNING:
                s.running += 1
                s.holders.append(f"trial {trial.number}: {_holder(trial.user_attrs)}")
        try:
            s.best = study.best_value
        except ValueError:
            pass
        mine = [r for r in evals if r.data.tags.get("arm") == arm.name]
        s.evals_done = len({r.data.tags.get("seed") for r in mine if r.info.status == "FINISHED"})
        s.holders += [f"seed {int(r.data.tags['seed']) - 1000}: {_holder(r.data.tags)}"
                      for r in mine if r.info.status == "RUNNING"]
    return out


def check_stores_exist(storage_url: str | None, tracking_uri: str) -> None:
    """Reading must not create an empty store where a path is mistyped."""
    url = storage_url or DEFAULT_STORAGE
    if not is_rdb(url) or url.startswith("sqlite"):
        path = url.split("///", 1)[1] if url.startswith("sqlite") else url.removeprefix("journal:")
        if not Path(path).exists():
            raise UsageError(f"--storage {url}: no Optuna storage there")
    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri.removeprefix("sqlite:///")).exists():
        raise UsageError(f"--tracking-uri {tracking_uri}: no MLflow store there")


def render(spec: Any, statuses: list[ArmStatus], storage_url: str | None, tracking_uri: str) -> str:
    objective = spec.objective_metric()
    rows = [("arm", "trials", "pruned", "failed", "running", "eval seeds", f"best {objective}", "running on")]
    for s in statuses:
        rows.append((s.name, f"{s.finished}/{s.n_trials}", str(s.pruned), str(s.failed), str(s.running),
                     f"{s.evals_done}/{s.seeds}" if s.complete or not s.done else "skipped",
                     "–" if s.best is None else f"{s.best:.4g}", ", ".join(s.holders) if s.started else "not started"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = [f"study {spec.name}: {len(statuses)} arms, {spec.tuning.n_trials} trials and {spec.eval.seeds} eval seeds "
             f"each (Optuna {redact(storage_url or DEFAULT_STORAGE)}, MLflow {redact(tracking_uri)})"]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1] for row in rows]
    lines = [line.rstrip() for line in lines]
    jobs = _slurm_jobs(spec, tracking_uri)
    if jobs:
        lines.append(jobs)
    lines.append("done" if all(s.done for s in statuses) else "in progress")
    return "\n".join(lines)


def _slurm_jobs(spec: Any, tracking_uri: str) -> str:
    """The study's Slurm job arrays (recorded by the launcher) and their tasks' states."""
    import shutil

    from bench.launch.slurm import JOBS_TAG, job_states

    tracker = Tracker(tracking_uri)
    experiment = tracker.experiment_id(spec.name, create=False)
    submitted = tracker.client.get_experiment(experiment).tags.get(JOBS_TAG, "") if experiment else ""
    if not submitted:
        return ""
    jobs = submitted.split(",")
    states = job_states(jobs) if shutil.which("squeue") else None
    if states is None:
        return f"Slurm jobs {', '.join(jobs)}: states unknown (squeue not available here)"
    if not states:
        return f"Slurm jobs {', '.join(jobs)}: none queued or running"
    return "Slurm jobs: " + ", ".join(f"{task} {state}" for task, state in sorted(states.items()))


def main(spec: Any, storage_url: str | None, tracking_uri: str) -> int:
    check_stores_exist(storage_url, tracking_uri)
    print(render(spec, study_status(spec, storage_url, tracking_uri), storage_url, tracking_uri))
    return 0
