"""Per-trial sampler seeds: parallel workers and restarts never redraw a configuration.

Each "worker" here is its own Study object with its own sampler on one shared journal file, as
two `bench run` processes would have; the objective is a deterministic function of the params.
"""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from bench.tuning import samplers
from bench.tuning.seeding import PerTrialSeeds, trial_seed

SPACE = {"lr": optuna.distributions.FloatDistribution(1e-4, 1.0, log=True),
         "momentum": optuna.distributions.FloatDistribution(0.0, 0.99)}


def objective(params: dict) -> float:
    return (params["lr"] - 0.1) ** 2 + params["momentum"]


def worker(storage, name: str, sampler_name: str = "tpe", per_trial: bool = True) -> optuna.Study:
    sampler, _ = samplers.build(samplers.SAMPLERS, sampler_name, seed=0, n_startup_trials=4, workers=2)
    if per_trial:
        sampler = PerTrialSeeds(sampler, seed=0)
    return optuna.create_study(storage=storage, study_name=name, sampler=sampler, load_if_exists=True)


def journal(tmp_path):
    tmp_path.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "o.journal")))


def run_in_turns(studies: list[optuna.Study], n_trials: int) -> list[tuple]:
    for i in range(n_trials):  # workers take turns, each asking and telling one trial
        study = studies[i % len(studies)]
        trial = study.ask(SPACE)
        study.tell(trial, objective(trial.params))
    return [tuple(sorted(t.params.items())) for t in studies[0].get_trials()]


@pytest.mark.parametrize("sampler_name", ["tpe", "random", "qmc", "gp", "cmaes"])
def test_two_workers_draw_distinct_configurations(tmp_path, sampler_name):
    storage = journal(tmp_path)
    configs = run_in_turns([worker(storage, "s", sampler_name), worker(storage, "s", sampler_name)], 8)
    assert len(configs) == 8 and len(set(configs)) == 8


def test_process_seeded_samplers_repeat_configurations(tmp_path):
    """What per-trial seeds prevent: two workers with the same seeded TPE redraw each other's startup points."""
    storage = journal(tmp_path)
    configs = run_in_turns([worker(storage, "s", per_trial=False), worker(storage, "s", per_trial=False)], 8)
    assert len(set(configs)) < 8


def test_restart_redraws_nothing_and_one_worker_stays_reproducible(tmp_path):
    """A worker restarted after every trial (a new process each time) draws what one uninterrupted worker
    draws; two uninterrupted runs are identical."""
    uninterrupted = run_in_turns([worker(journal(tmp_path / "a"), "s")], 8)
    again = run_in_turns([worker(journal(tmp_path / "b"), "s")], 8)
    storage = journal(tmp_path / "c")
    for _ in range(8):
        run_in_turns([worker(storage, "s")], 1)
    restarted = [tuple(sorted(t.params.items())) for t in worker(storage, "s").get_trials()]
    assert uninterrupted == again == restarted and len(set(uninterrupted)) == 8


def test_failed_trial_retried_with_its_params_keeps_later_draws(tmp_path):
    """Resume after a crash: trial 2 is left FAIL and retried with its parameters (as bench does); every
    other trial's configuration equals the uninterrupted study's, in order."""
    uninterrupted = run_in_turns([worker(journal(tmp_path / "a"), "s")], 6)
    storage = journal(tmp_path / "b")
    run_in_turns([worker(storage, "s")], 2)
    study = worker(storage, "s")
    crashed = study.ask(SPACE)
    study.tell(crashed, state=TrialState.FAIL)  # its worker died
    study = worker(storage, "s")  # the restarted worker
    study.enqueue_trial(crashed.params, user_attrs={"retry_of": crashed.number})
    for _ in range(4):
        trial = study.ask(SPACE)
        study.tell(trial, objective(trial.params))
    resumed = [tuple(sorted(t.params.items())) for t in study.get_trials() if t.state != TrialState.FAIL]
    assert resumed == uninterrupted


def test_trial_seeds_differ_by_seed_and_index():
    keys = [(s, i) for s in (0, 1, 2) for i in range(100)]
    assert len({trial_seed(*k) for k in keys}) == len(keys)
    assert trial_seed(0, 3) == trial_seed(0, 3)


def test_arms_with_the_same_space_tune_on_the_same_draws(tmp_path):
    """Common random numbers: two arms (two studies) with one seed draw identical configurations."""
    storage = journal(tmp_path)
    assert run_in_turns([worker(storage, "arm-a")], 6) == run_in_turns([worker(storage, "arm-b")], 6)
