"""The benchmark protocol: per arm, tune on validation with Optuna, then re-run the best config
on K seeds and score the held-out test split.

Optuna runs in this (launcher) process through ask/tell, so a trial may train in-process or in
another process group without Optuna re-executing anything. Lineage in MLflow: experiment =
study, parent run = arm, child runs `<arm>/trial-007` and `<arm>/seed-3`; every Optuna trial
carries its MLflow run id as user attribute `mlflow_run_id`.

Resumable: rerunning counts finished trials (COMPLETE + PRUNED) and FINISHED eval runs and only
does what is missing. Trials left RUNNING by a dead process are marked FAIL, their MLflow runs
FAILED, and their parameters are queued again.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from bench import interrupt
from bench.batched import SINGLE, NotBatchable, fit_batched, why_not
from bench.launch.preempt import Preempted
from bench.spec import Arm, RunConfig, StudySpec, arms, direction_of
from bench.tracking import INTERRUPTED, WRITER, RunLogger, Tracker, dataset_inputs, flat_error, redact, study_file_tags
from bench.train import RunResult
from bench.tuning import samplers
from bench.tuning.coordination import WORKER_ATTRS, WORKER_ID, Heartbeat, StudyLock, heartbeats_on, worker_alive
from bench.tuning.executor import execute
from bench.tuning.seeding import PerTrialSeeds
from bench.tuning.space import sample
from bench.tuning.storage import open_storage
from bench.tuning.storage import optuna_study_name as optuna_study_name  # re-exported

optuna.logging.set_verbosity(optuna.logging.WARNING)
# With RDB heartbeats (SQLite, PostgreSQL) Optuna warns that ask/tell "is supposed to" use
# Study.optimize and that fail_stale_trials is experimental: choices of this module, not the user's.
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
warnings.filterwarnings("ignore", message=r"optuna\.storages\._heartbeat\.fail_stale_trials is experimental",
                        category=optuna.exceptions.ExperimentalWarning)

POLL_S = 0.5  # how often a waiting worker looks at the stores
# MLflow runs left RUNNING by a dead worker are swept at most this often while trials run (the
# search is an SQL query under the study lock, which every worker's next trial waits for) and
# always before an arm's tuning is declared done.
SWEEP_RUNS_EVERY_S = 30.0
EVAL_SEED_BASE = 1000  # eval seeds differ from the tuning seed: no selection on the eval noise
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)
SPLITS = ("train", "val", "test")  # tuning runs use the first two; eval runs and arms all three
PREEMPTED = "preempted"  # fail_reason / error of a run stopped by a Slurm worker's signal (bench.launch.preempt)


@dataclass
class ArmOutcome:
    arm: Arm
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    best_value: float | None = None
    eval_run_ids: list[str] = field(default_factory=list)


# Progress sink: called with (event, payload); see bench.progress for the rich display.
Progress = Callable[[str, dict[str, Any]], None]


def _quiet(event: str, payload: dict[str, Any]) -> None:
    pass


class StudyRunner:
    """Runs (or resumes) every arm of a study against one Optuna storage and one MLflow store."""

    def __init__(self, spec: StudySpec, *, tracking_uri: str, storage_url: str | None,
                 progress: Progress = _quiet, study_file: str | None = None, workers: int = 1,
                 stop: Callable[[], None] = interrupt.check) -> None:
        self.spec = spec
        # called wherever the worker takes work: raises KeyboardInterrupt after a signal (even one
        # whose first KeyboardInterrupt was lost), or a Slurm worker's Preempted (bench.launch.preempt)
        self.stop = stop
        self.workers = workers  # > 1: TPE fantasizes running trials (constant liar)
        self.lock = StudyLock(storage_url, spec.name)
        self.tracker = Tracker(tracking_uri)
        self.storage_url = storage_url
        self.storage = open_storage(storage_url)
        self.progress = progress
        self.study_file = study_file
        self.direction = direction_of(spec.objective_metric())
        self._last_sweep = -math.inf

    # --- Optuna --------------------------------------------------------------------------
    def pruner_args(self, arm: Arm) -> dict[str, Any]:
        """The pruner's arguments for an arm; its resource unit is one evaluation point (one epoch
        by default), so max_epochs is the arm's number of points (bench/spec/budget.py)."""
        t = self.spec.tuning
        return dict(startup_trials=t.pruner_startup_trials, warmup_epochs=t.pruner_warmup_epochs,
                    percentile=t.pruner_percentile, reduction_factor=t.pruner_reduction_factor,
                    min_epochs=t.pruner_min_epochs, max_epochs=arm.budget.points)

    def optuna_study(self, arm: Arm) -> optuna.Study:
        t = self.spec.tuning
        grid = samplers.grid_points(arm.space, arm.kinds()) if arm.sampler == "grid" else None
        sampler, sampler_settings = samplers.build(samplers.SAMPLERS, arm.sampler, seed=t.seed,
                                                    n_startup_trials=t.n_startup_trials, grid=grid,
                                                    # a batch's trials are in flight together, as parallel workers' are
                                                    workers=self.workers * t.batch, conditional=bool(arm.choices))
        pruner, pruner_settings = samplers.build(samplers.PRUNERS, arm.pruner, **self.pruner_args(arm))
        # seeded per trial, not per process: workers and restarts never redraw a finished configuration
        sampler_settings = {**sampler_settings, "seeding": "per trial: sha256(seed/index)"}
        study = optuna.create_study(storage=self.storage, study_name=optuna_study_name(self.spec, arm),
                                    direction=self.direction, pruner=pruner,
                                    sampler=PerTrialSeeds(sampler, seed=t.seed),
                                    load_if_exists=True)
        attrs = {
            "bench_study": self.spec.name, "arm": arm.name, "objective": self.spec.objective_metric(),
            "sampler": arm.sampler, "sampler_settings": sampler_settings,
            "pruner": arm.pruner, "pruner_settings": pruner_settings, "n_trials": t.n_trials,
            "space": {k: d.model_dump(exclude_none=True) for k, d in arm.space.items()},
            "fixed": arm.fixed, "budget": arm.budget.params(), **arm.tags(),
        }
        if study.user_attrs.get("n_trials") not in (None, t.n_trials):
            raise ValueError(f"study '{study.study_name}' was started with n_trials="
                             f"{study.user_attrs['n_trials']}; this file asks for {t.n_trials}")
        for key, value in attrs.items():
            if study.user_attrs.get(key) != value:
                study.set_user_attr(key, value)
        return study

    # --- MLflow --------------------------------------------------------------------------
    def parent_run(self, experiment_id: str, arm: Arm, study: optuna.Study) -> RunLogger:
        tags = {"study": self.spec.name, "phase": "arm", **arm.tags()}
        found = self.tracker.find_runs(experiment_id, {"study": self.spec.name, "phase": "arm", "arm": arm.name})
        if found:
            return self.tracker.resume_run(found[0].info.run_id)
        t = self.spec.tuning
        logger = self.tracker.start_run(experiment_id, arm.name, {
            **tags, "optuna_study": study.study_name, "objective": self.spec.objective_metric(),
            "sampler": arm.sampler, "pruner": arm.pruner,
            "optuna_storage": redact(self.storage_url or "optuna.journal"),
            **study_file_tags(self.study_file),
            **{f"sampler.{k}": _tag(v) for k, v in study.user_attrs["sampler_settings"].items()},
            **{f"pruner.{k}": _tag(v) for k, v in study.user_attrs["pruner_settings"].items()},
        })
        logger.log_params({f"space.{k}": d.describe() for k, d in arm.space.items()})
        logger.log_params({f"fixed.{k}": v for k, v in arm.fixed.items()})
        logger.log_params({"n_trials": t.n_trials, "eval_seeds": self.spec.eval.seeds, **arm.budget.params()})
        logger.log_params(arm.identity())
        logger.log_inputs(dataset_inputs(arm.dataset, self.spec.data_seed, self.spec.data_args, SPLITS))
        if self.study_file:
            logger.client.log_artifact(logger.run_id, self.study_file)
        logger.flush()
        return logger

    def child_run(self, experiment_id: str, parent: RunLogger, arm: Arm, name: str,
                  config: RunConfig, tags: dict[str, Any]) -> RunLogger:
        logger = self.tracker.start_run(experiment_id, name, {
            "study": self.spec.name, **arm.tags(), "seed": str(config.seed),
            "config_hash": config.hash(), **WORKER_ATTRS,
            "optimizer": config.optimizer,  # the one it trains with (an arm may choose among several)
            **config.source_tags(),  # built-in, plug-in package + version, or import path
            **{k: str(v) for k, v in tags.items()},
        }, parent_id=parent.run_id)
        logger.log_params(config.params)
        logger.log_params({**config.budget.params(), "seed": config.seed, "data_seed": config.data_seed,
                           **{f"data.{k}": v for k, v in config.data_args.items()}})
        logger.log_dict(config.model_dump(), "config.json")
        splits = SPLITS if config.evaluate_test else SPLITS[:2]
        logger.log_inputs(dataset_inputs(config.dataset, config.data_seed, config.data_args, splits))
        return logger

    def context(self, logger: RunLogger, arm: Arm, study: optuna.Study | None = None,
                trial: optuna.Trial | None = None, pruner: str = "") -> dict[str, Any]:
        """What rank 0 of a multi-process run needs to reach the same MLflow run and Optuna trial."""
        return {"tracking_uri": self.tracker.uri, "run_id": logger.run_id, "storage": self.storage_url,
                "study_name": study.study_name if study else None,
                "trial_id": trial._trial_id if trial else None, "pruner": pruner, "pruner_args": self.pruner_args(arm)}

    def record(self, logger: RunLogger, result: RunResult) -> None:
        """Final metrics and tags of a finished fit (per-point ones were logged as it ran): the four
        budget counters side by side, and the budget itself."""
        point = len(result.history)
        logger.log_metrics({k: v for k, v in result.final.items() if k.startswith("test/")}, step=point)
        logger.set_tags({"status": result.status, "device": result.device,
                         "epochs_run": result.epochs_run, "steps": result.steps, "samples": result.samples,
                         "train_time_s": result.train_time_s, **result.extra})  # budget, world_size, strategy, ...
        if result.reason:
            logger.set_tags({"stop_reason": result.reason})

    # --- protocol ------------------------------------------------------------------------
    def run(self) -> list[ArmOutcome]:
        """Tune every arm, then evaluate every arm. Any number of workers (processes, machines)
        may run this on the same stores at once: trial slots and eval seeds are claimed under the
        study lock, so budgets stay exact; each worker returns once the whole study is done."""
        experiment_id = self.tracker.experiment_id(self.spec.name)
        self.tracker.set_experiment_tag(experiment_id, "description", self.spec.description)
        cells = []
        try:
            with self.lock.hold():  # one worker creates each Optuna study and parent run
                for arm in arms(self.spec):
                    study = self.optuna_study(arm)
                    cells.append((arm, study, self.parent_run(experiment_id, arm, study)))
        except KeyboardInterrupt:  # held back until the lock was released: close the parents opened
            for _arm, _study, parent in cells:
                parent.finish("KILLED")
            raise
        outcomes: list[ArmOutcome] = []
        try:
            for arm, study, parent in cells:  # phase 1: take free trial slots, arm after arm
                self.tune(experiment_id, arm, study, parent)
            for arm, study, parent in cells:  # phase 2: once an arm's trials are all done, its eval seeds
                outcome = self.wait_tuned(experiment_id, arm, study, parent)
                self.importance(study, parent)
                self.evaluate(experiment_id, arm, study, parent, outcome)
                outcomes.append(outcome)
            WRITER.drain()
            for (arm, _study, parent), outcome in zip(cells, outcomes):
                parent.log_metrics({"trials_complete": outcome.complete, "trials_pruned": outcome.pruned,
                                    "trials_failed": outcome.failed})
                if outcome.best_value is not None:
                    parent.log_metrics({f"best_{self.spec.objective_metric()}": outcome.best_value})
                parent.finish("FINISHED")
                self.progress("arm_done", {"arm": arm.name, "outcome": outcome})
        except BaseException as err:
            interrupted = isinstance(err, (KeyboardInterrupt, Preempted)) or interrupt.stopping()
            try:
                WRITER.drain()  # close the trial runs already handed to the writer thread
            finally:
                if interrupted:
                    self.close_in_flight(experiment_id, [study for _arm, study, _parent in cells],
                                         PREEMPTED if isinstance(err, Preempted) else INTERRUPTED)
                for _arm, _study, parent in cells:
                    parent.finish("KILLED" if interrupted else "FAILED")
            if interrupted and not isinstance(err, (KeyboardInterrupt, Preempted)):
                raise KeyboardInterrupt from err  # an error raised while the interrupt passed hid it
            raise
        return outcomes

    def close_in_flight(self, experiment_id: str, studies: list[optuna.Study], reason: str = INTERRUPTED) -> None:
        """After an interrupt: this process's trials still RUNNING become FAIL with their parameters
        queued again, its MLflow runs still RUNNING become KILLED. run_trial and evaluate close the
        run they train; this catches the other points where an interrupt can land (a trial asked
        for but not started, an eval seed claimed, a closing write cut short)."""
        for study in studies:
            for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if trial.user_attrs.get("worker") == WORKER_ID:
                    study._storage.set_trial_user_attr(trial._trial_id, "fail_reason", reason)
                    study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
                    _retry_later(study, trial.params, trial.number)
        for run in self.tracker.find_runs(experiment_id, {"study": self.spec.name, "worker": WORKER_ID},
                                          status="RUNNING"):
            self.tracker.client.set_tag(run.info.run_id, "error", reason)
            self.tracker.client.set_terminated(run.info.run_id, "KILLED")

    def reap(self, experiment_id: str, study: optuna.Study, *, sweep_runs: bool = False) -> None:
        """Under the lock: trials whose worker died (same host: pid gone; RDB: heartbeat stale) are
        marked FAIL, their MLflow runs FAILED, and their parameters queued again. MLflow runs that
        no trial points to are swept when `sweep_runs` or every SWEEP_RUNS_EVERY_S."""
        dead = []
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if not worker_alive(trial.user_attrs.get("worker")):
                study._storage.set_trial_user_attr(trial._trial_id, "fail_reason", "orphaned: its worker died")
                study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
                dead.append(trial)
        if heartbeats_on(study._storage):
            optuna.storages.fail_stale_trials(study)  # other machines: no heartbeat for GRACE_PERIOD_S
            for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
                if "fail_reason" not in trial.user_attrs:
                    study._storage.set_trial_user_attr(trial._trial_id, "fail_reason", "orphaned: heartbeat stopped")
                    dead.append(trial)
        for trial in dead:
            run_id = trial.user_attrs.get("mlflow_run_id")
            if run_id:
                self.tracker.client.set_tag(run_id, "error", "orphaned: its worker died")
                self.tracker.client.set_terminated(run_id, "FAILED")
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
        if not sweep_runs and time.monotonic() - self._last_sweep < SWEEP_RUNS_EVERY_S:
            return
        self._last_sweep = time.monotonic()
        for run in self.tracker.find_runs(experiment_id, {"study": self.spec.name}, status="RUNNING"):
            # runs nobody closed: their worker died before (or while) handing the closing write over
            if run.data.tags.get("phase") == "tune" and not worker_alive(run.data.tags.get("worker")):
                self.tracker.client.set_tag(run.info.run_id, "error", "orphaned: its worker died")
                self.tracker.client.set_terminated(run.info.run_id, "FAILED")

    def counts(self, study: optuna.Study, outcome: ArmOutcome) -> int:
        """Refresh outcome's counts; returns the number of trials still RUNNING."""
        trials = study.get_trials(deepcopy=False)
        outcome.complete = sum(tr.state == TrialState.COMPLETE for tr in trials)
        outcome.pruned = sum(tr.state == TrialState.PRUNED for tr in trials)
        # an interrupted or preempted trial is not a failure of its configuration (and is tried again)
        outcome.failed = sum(tr.state == TrialState.FAIL and tr.user_attrs.get("fail_reason") not in (
            INTERRUPTED, PREEMPTED) for tr in trials)
        outcome.best_value = _best_value(study)
        return sum(tr.state == TrialState.RUNNING for tr in trials)

    def tune(self, experiment_id: str, arm: Arm, study: optuna.Study, parent: RunLogger) -> None:
        """Run trials of this arm while free slots remain (finished + running < n_trials)."""
        t = self.spec.tuning
        outcome = ArmOutcome(arm)
        while True:
            with self.lock.hold():
                self.reap(experiment_id, study)
                running = self.counts(study, outcome)
                if outcome.failed > t.max_failed_trials:
                    raise RuntimeError(f"arm '{arm.name}': {outcome.failed} trials failed (max_failed_trials="
                                       f"{t.max_failed_trials}); see the FAILED runs' 'error' tag")
                free = t.n_trials - (outcome.complete + outcome.pruned + running)
                if free <= 0:
                    return
                self.stop()  # a free slot, but a stopping worker takes no new trial
                trials = [study.ask() for _ in range(min(t.batch, free))]  # tuning.batch: several at once
                for trial in trials:
                    for key, value in WORKER_ATTRS.items():  # host:pid, and the Slurm job when there is one
                        trial.set_user_attr(key, value)
            done = outcome.complete + outcome.pruned
            for i, trial in enumerate(trials):
                self.progress("trial_start", {"arm": arm.name, "trial": trial.number, "done": done + i,
                                              "total": t.n_trials})
            if len(trials) == 1:
                self.run_trial(experiment_id, arm, study, trials[0], parent)
            else:
                self.run_trials(experiment_id, arm, study, trials, parent)
            self.counts(study, outcome)
            self.progress("trial_end", {"arm": arm.name, "done": outcome.complete + outcome.pruned,
                                        "total": t.n_trials, "pruned": outcome.pruned, "failed": outcome.failed,
                                        "best": outcome.best_value})

    def wait_tuned(self, experiment_id: str, arm: Arm, study: optuna.Study, parent: RunLogger) -> ArmOutcome:
        """Block until no trial of the arm runs anywhere, taking over the retries of dead workers."""
        outcome = ArmOutcome(arm)
        while True:
            self.tune(experiment_id, arm, study, parent)  # free slots (a reaped trial's retry) are ours
            with self.lock.hold():
                self.reap(experiment_id, study, sweep_runs=True)
                running = self.counts(study, outcome)
            if not running:
                return outcome
            self.stop()  # nor does it wait for other workers' trials
            time.sleep(POLL_S)

    def open_trial(self, experiment_id: str, arm: Arm, study: optuna.Study, trial: optuna.Trial,
                   parent: RunLogger) -> tuple[RunConfig, RunLogger]:
        """The trial's sampled config and its MLflow run, linked both ways."""
        sampled = sample(trial, arm.space, arm.params)
        config = arm.config(self.spec, sampled, seed=self.spec.tuning.seed, evaluate_test=False)
        logger = self.child_run(experiment_id, parent, arm, f"{arm.name}/trial-{trial.number:03d}", config, {
            "phase": "tune", "optuna_study": study.study_name, "optuna_trial": trial.number})
        trial.set_user_attr("mlflow_run_id", logger.run_id)
        trial.set_user_attr("config_hash", config.hash())
        return config, logger

    def run_trial(self, experiment_id: str, arm: Arm, study: optuna.Study, trial: optuna.Trial,
                  parent: RunLogger) -> None:
        logger = None
        try:
            config, logger = self.open_trial(experiment_id, arm, study, trial, parent)
            reporter = trial_reporter(logger, trial, config.objective, arm.pruner)
            with Heartbeat(study._storage, trial._trial_id):
                result = execute(config, reporter, context=self.context(logger, arm, study, trial, arm.pruner))
            self.record(logger, result)
            if result.status == "completed" and result.objective is not None:
                logger.finish("FINISHED", background=True)
                study.tell(trial, result.objective)
            else:  # pruned or diverged: counts toward the budget, never selected
                trial.set_user_attr("pruned_reason", f"{result.status}: {result.reason}")
                logger.set_tags({"pruned": "true"})
                logger.finish("KILLED", background=True)
                study.tell(trial, state=TrialState.PRUNED)
        except (KeyboardInterrupt, Exception) as err:
            if not isinstance(err, KeyboardInterrupt) and not interrupt.stopping():
                self._fail(study, trial, logger, flat_error(err), "FAILED")  # a broken trial: the study goes on
                return
            # interrupted, or an error raised while the interrupt passed hid it (bench.interrupt)
            self._fail(study, trial, logger, INTERRUPTED, "KILLED")
            _retry_later(study, trial.params, trial.number)
            raise KeyboardInterrupt from (None if isinstance(err, KeyboardInterrupt) else err)
        except Preempted:  # tried again with the same parameters, as after an interrupt
            with self.lock.hold():  # the free slot goes to the retry, not to a new configuration
                self._fail(study, trial, logger, PREEMPTED, "KILLED")
                _retry_later(study, trial.params, trial.number)
            raise

    def run_trials(self, experiment_id: str, arm: Arm, study: optuna.Study, trials: list[optuna.Trial],
                   parent: RunLogger) -> None:
        """A batch of trials (tuning.batch): trained as one batched model where they can be (their
        values differ only in what reaches torch.optim's parameter groups and the schedule), else
        in groups that can, else one by one. A pruned member's trial is told PRUNED at once."""
        members: list[tuple[optuna.Trial, RunConfig, RunLogger]] = []
        for trial in trials:
            logger = None
            try:
                config, logger = self.open_trial(experiment_id, arm, study, trial, parent)
                members.append((trial, config, logger))
            except Exception as err:  # a broken configuration fails its trial, not the batch
                self._fail(study, trial, logger, flat_error(err), "FAILED")
        groups: list[list[int]] = []  # greedily: each member joins the first group it can train with
        for i, (_trial, config, _logger) in enumerate(members):
            home = next((g for g in groups if why_not([members[j][1] for j in g] + [config]) is None), None)
            (home.append(i) if home is not None else groups.append([i]))
        told: set[int] = set()  # members whose trial is told (finished, pruned or failed)
        for group in groups:
            batch = [members[i] for i in group]
            configs = [config for _trial, config, _logger in batch]
            if len(batch) > 1:
                reason = why_not(configs)
            else:  # why it trains alone: what keeps it from training with another member
                other = next((c for j, (_t, c, _l) in enumerate(members) if j != group[0]), None)
                reason = why_not([configs[0], other]) if other is not None else SINGLE
            reporters = [self._pruning_reporter(study, trial, logger, config, arm, told, i)
                         for i, (trial, config, logger) in zip(group, batch)]

            def on_result(j: int, result: RunResult, batch=batch, group=group) -> None:
                trial, _config, logger = batch[j]
                if result.status == "completed" and result.objective is not None:
                    logger.finish("FINISHED", background=True)
                    study.tell(trial, result.objective)
                else:  # pruned or diverged: counts toward the budget, never selected
                    if group[j] not in told:
                        trial.set_user_attr("pruned_reason", f"{result.status}: {result.reason}")
                        study.tell(trial, state=TrialState.PRUNED)
                    logger.set_tags({"pruned": "true"})
                    logger.finish("KILLED", background=True)
                told.add(group[j])

            try:
                with contextlib.ExitStack() as beats:
                    for trial, _config, _logger in batch:
                        beats.enter_context(Heartbeat(study._storage, trial._trial_id))
                    self.train_together(arm, configs, [logger for _t, _c, logger in batch], reporters, reason,
                                        on_result)
            except (KeyboardInterrupt, Preempted, Exception) as err:
                if not isinstance(err, (KeyboardInterrupt, Preempted)) and not interrupt.stopping():
                    for i in group:  # a broken group fails its trials (runs closed), not the study
                        if i not in told:
                            told.add(i)
                            self._fail(study, members[i][0], None, flat_error(err), "FAILED")
                    continue
                # tried again later with the same values (an error that hid the interrupt, too)
                cause = PREEMPTED if isinstance(err, Preempted) else INTERRUPTED
                with self.lock.hold() if isinstance(err, Preempted) else contextlib.nullcontext():
                    for i, (trial, _config, logger) in enumerate(members):
                        if i not in told:  # this group's runs are closed already, later groups' are not
                            self._fail(study, trial, None if i in group else logger, cause, "KILLED")
                            _retry_later(study, trial.params, trial.number)
                if isinstance(err, Exception):
                    raise KeyboardInterrupt from err
                raise

    def _pruning_reporter(self, study: optuna.Study, trial: optuna.Trial, logger: RunLogger, config: RunConfig,
                          arm: Arm, told: set[int], index: int) -> Callable:
        """trial_reporter, and a pruned member's trial told PRUNED at its evaluation point (not at
        the end of the batch): its slot is free for the next trial at once."""
        report = trial_reporter(logger, trial, config.objective, arm.pruner)

        def reporter(point: int, metrics: dict[str, float]) -> str | None:
            reason = report(point, metrics)
            if reason and index not in told:
                trial.set_user_attr("pruned_reason", f"pruned: {reason}")
                study.tell(trial, state=TrialState.PRUNED)
                told.add(index)
            return reason

        return reporter

    @staticmethod
    def _fail(study: optuna.Study, trial: optuna.Trial, logger: RunLogger | None, reason: str, status: str) -> None:
        trial.set_user_attr("fail_reason", reason)
        if logger is not None:
            logger.set_tags({"error": reason})
            logger.finish(status)
        study.tell(trial, state=TrialState.FAIL)

    def importance(self, study: optuna.Study, parent: RunLogger) -> dict[str, float]:
        """fANOVA importance of each tuned parameter over the arm's COMPLETE trials (pruned ones have
        no final value), stored as study user attrs `param_importances` + `importance_evaluator`
        and as parent-run metrics `importance.<param>`. Fewer than 2 completed trials or a single
        tuned value leave {} and the reason in `importance_note`."""
        importances, note = param_importances(study)
        for key, value in (("param_importances", importances), ("importance_evaluator", IMPORTANCE_EVALUATOR),
                           ("importance_note", note)):
            if study.user_attrs.get(key) != value:
                study.set_user_attr(key, value)
        if importances:
            parent.log_metrics({f"importance.{k}": v for k, v in importances.items()})
        return importances

    def evaluate(self, experiment_id: str, arm: Arm, study: optuna.Study, parent: RunLogger,
                 outcome: ArmOutcome) -> None:
        """Re-run the best trial's config on K fresh seeds and score the test split. Seeds are
        claimed by creating their MLflow run under the lock; a claim whose worker died is reaped.
        Returns once every seed has a FINISHED run (waiting for other workers' seeds)."""
        try:
            best = study.best_trial
        except ValueError:
            parent.set_tags({"eval_skipped": "no completed trial"})
            return
        for key, value in (("best_trial", best.number), ("best_params", json.dumps(best.params, sort_keys=True))):
            if study.user_attrs.get(key) != value:
                study.set_user_attr(key, value)
        tags = {"study": self.spec.name, "arm": arm.name, "phase": "eval", "best_trial": str(best.number)}
        seeds = [EVAL_SEED_BASE + k for k in range(self.spec.eval.seeds)]
        while True:
            with self.lock.hold():
                finished, claimed = {}, set()
                for run in self.tracker.find_runs(experiment_id, tags):
                    seed = int(run.data.tags.get("seed", -1))
                    if run.info.status == "FINISHED":
                        finished[seed] = run.info.run_id
                    elif run.info.status == "RUNNING" and worker_alive(run.data.tags.get("worker")):
                        claimed.add(seed)
                    elif run.info.status == "RUNNING":  # its worker died mid-run
                        self.tracker.client.set_tag(run.info.run_id, "error", "orphaned: its worker died")
                        self.tracker.client.set_terminated(run.info.run_id, "FAILED")
                free = [s for s in seeds if s not in finished and s not in claimed]
                if free:
                    self.stop()  # a stopping worker claims no new seed
                    # every free seed at once when they can train as one batched model; else one
                    configs = {s: arm.config(self.spec, dict(best.params), seed=s, evaluate_test=True) for s in seeds}
                    # judged on all of the arm's seeds: the last free one alone still records why
                    reason = why_not(list(configs.values())) if self.spec.eval.batched else "eval.batched = false"
                    configs = [configs[s] for s in (free if reason is None else free[:1])]
                    if reason is None and len(configs) == 1:
                        reason = SINGLE
                    loggers = [self.child_run(experiment_id, parent, arm, f"{arm.name}/seed-{c.seed - EVAL_SEED_BASE}",
                                              c, {"phase": "eval", "best_trial": best.number,
                                                  "optuna_study": study.study_name}) for c in configs]
            if not free:
                if len(finished) == len(seeds):
                    outcome.eval_run_ids = [finished[s] for s in seeds]
                    return
                self.stop()  # nor does it wait for other workers' seeds
                time.sleep(POLL_S)  # other workers are still training their seeds
                continue
            for config in configs:
                self.progress("eval_start", {"arm": arm.name, "seed": config.seed - EVAL_SEED_BASE + 1,
                                             "total": len(seeds)})
            self.train_together(arm, configs, loggers, loggers, reason,
                                lambda i, result, loggers=loggers: loggers[i].finish("FINISHED"))

    def train_together(self, arm: Arm, configs: list[RunConfig], loggers: list[RunLogger], reporters: list,
                       reason: str | None, on_result: Callable[[int, RunResult], None]) -> None:
        """Train runs whose MLflow runs are open: as one batched model when `reason` is None and
        the built model allows it, else one after another. Each result is recorded, tagged
        (`batched` = members trained together; `batched_fallback` = why not) and handed to
        `on_result` as soon as it is in; an error or interrupt closes every run not yet handed on."""
        done = 0
        try:
            results: list[RunResult] | None = None
            if reason is None:
                try:
                    results = fit_batched(configs, reporters)
                except NotBatchable as err:  # raised before any training: nothing to undo
                    reason = str(err)
            for i, (config, logger) in enumerate(zip(configs, loggers)):
                result = results[i] if results is not None else \
                    execute(config, reporters[i], context=self.context(logger, arm))
                self.record(logger, result)
                if results is None:
                    logger.set_tags({"batched": 1, **({"batched_fallback": reason} if reason != SINGLE else {})})
                on_result(i, result)
                done += 1
        except BaseException as err:
            interrupted = isinstance(err, (KeyboardInterrupt, Preempted)) or interrupt.stopping()
            for logger in loggers[done:]:
                logger.set_tags({"error": (PREEMPTED if isinstance(err, Preempted) else INTERRUPTED)
                                 if interrupted else flat_error(err)})
                logger.finish("KILLED" if interrupted else "FAILED")
            raise


# fANOVA (Hutter et al. 2014) on a random forest, every argument explicit (Optuna's default evaluator).
IMPORTANCE_EVALUATOR = {"name": "fanova", "n_trees": 64, "max_depth": 64, "seed": 0, "normalize": True}


def param_importances(study: optuna.Study) -> tuple[dict[str, float], str]:
    """(importances summing to 1, note); ({}, reason) when they cannot be computed."""
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if len(complete) < 2:
        return {}, f"{len(complete)} completed trial(s): importance needs at least 2"
    e = IMPORTANCE_EVALUATOR
    evaluator = optuna.importance.FanovaImportanceEvaluator(n_trees=e["n_trees"], max_depth=e["max_depth"],
                                                           seed=e["seed"])
    try:
        raw = optuna.importance.get_param_importances(study, evaluator=evaluator, normalize=e["normalize"])
    except (ValueError, RuntimeError) as err:
        return {}, flat_error(err)
    values = {k: float(v) for k, v in raw.items()}
    if not all(math.isfinite(v) for v in values.values()):
        return {}, "tuned values did not vary the objective (importances undefined)"
    return values, ""


def _tag(value: Any) -> Any:
    """MLflow tag values are scalars: settings such as a grid's search space go in as JSON."""
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list, tuple)) else value


def trial_reporter(logger: RunLogger | None, trial: optuna.Trial | None, objective: str,
                   pruner: str) -> Callable[[int, dict[str, float]], str | None]:
    """Reporter of a tuning trial at each evaluation point: buffer metrics for MLflow, report the
    objective to Optuna at step = the point (whole evaluation intervals of the budget spent; the
    epoch by default, see bench/spec/budget.py), and return a stop reason when the pruner says so."""

    def report(point: int, metrics: dict[str, float]) -> str | None:
        if logger is not None:
            logger(point, metrics)
        value = metrics.get(objective)
        if trial is None or value is None or not math.isfinite(value):
            return None  # divergence is detected by fit itself
        trial.report(value, point)
        if trial.should_prune():
            where = f"epoch {point}" if metrics.get("epoch") == point else \
                f"evaluation {point} (epoch {metrics.get('epoch', 0):.3g}, step {metrics.get('steps', 0):g})"
            return f"pruned by {pruner} at {where} ({objective}={value:.4g})"
        return None

    return report


def _retry_later(study: optuna.Study, params: dict[str, Any], number: int) -> None:
    """Queue an interrupted trial's parameters, so that the rerun (or another worker) trains them."""
    if params:
        study.enqueue_trial(dict(params), user_attrs={"retry_of": number})


def _best_value(study: optuna.Study) -> float | None:
    try:
        return study.best_value
    except ValueError:
        return None
