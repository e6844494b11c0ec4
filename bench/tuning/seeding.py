"""Per-trial sampler seeds: every trial's draw is seeded from (study seed, trial index).

A sampler seeded once per process draws the same startup configurations in every worker process
and again after every restart, so workers and resumed studies re-evaluate configurations that are
already finished (on a study of 8 TPE trials run by 2 workers, only 6 configurations differed).
`PerTrialSeeds` wraps the arm's sampler and, before each trial, reseeds every random state the
sampler owns from a key that no other trial of the arm shares. The draw of a trial then depends
only on the study seed, its index and the trials the sampler sees in the storage, not on which
process asks or how often it was restarted. The arm is deliberately not part of the key: arms with
the same search space draw the same startup configurations (common random numbers), so two arms
that differ only in what they compare, such as a strategy, tune on identical draws.

The index of a trial counts the arm's earlier trials that did not FAIL, or failed by raising. A
trial failed by a crash is retried with its parameters (an enqueued trial), so a resumed study
gives every later trial the seed, and the sampler the history, it had in the uninterrupted study: a
single worker stays bit-reproducible across kills and restarts. A trial whose configuration raised
does count: redrawn with its own seed it would draw (and fail on) the same configuration again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import optuna
from optuna.samplers import BaseSampler
from optuna.samplers._lazy_random_state import LazyRandomState
from optuna.trial import FrozenTrial, TrialState


def trial_seed(base_seed: int, index: int | str) -> int:
    """A 32-bit seed no other (seed, index) shares by accident (sha256, not Python's salted hash)."""
    digest = hashlib.sha256(f"{base_seed}/{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def trial_index(study: optuna.Study, trial: FrozenTrial) -> int:
    """How many of the study's earlier trials did not fail, or failed by raising. A trial whose
    configuration raised (a plug-in optimizer's step, say) would raise again: the next draw must
    differ. A crashed or interrupted one is retried with its parameters and must not shift seeds."""
    return sum(t.number < trial.number and (t.state != TrialState.FAIL or _raised(t))
               for t in study._get_trials(deepcopy=False, use_cache=True))


def _raised(trial: FrozenTrial) -> bool:
    reason = str(trial.user_attrs.get("fail_reason", "orphaned"))
    return not reason.startswith(("orphaned", "interrupted", "preempted"))  # these are retried


def _random_states(sampler: BaseSampler, path: str = "") -> Iterator[tuple[str, LazyRandomState]]:
    """Every random state of a sampler and of the samplers it delegates to (TPE's random startup
    sampler, the independent sampler of QMC / GP / CMA-ES), each with a stable name. These are the
    states Optuna's own `reseed_rng` re-randomizes for parallel workers; QMC's scramble seed is a
    plain int and stays, as it must for the sequence to stay low-discrepancy across workers."""
    for name, value in sorted(vars(sampler).items()):
        if isinstance(value, LazyRandomState):
            yield f"{path}{name}", value
        elif isinstance(value, BaseSampler):
            yield from _random_states(value, f"{path}{name}.")


class PerTrialSeeds(BaseSampler):
    """Delegates to `sampler`, reseeding its random states before each trial (module docstring)."""

    def __init__(self, sampler: BaseSampler, *, seed: int) -> None:
        self.sampler, self.seed = sampler, seed

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        base = trial_seed(self.seed, trial_index(study, trial))
        for name, state in _random_states(self.sampler):
            state.rng.seed(trial_seed(base, name))
        self.sampler.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, Any]:
        return self.sampler.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, Any]
                        ) -> dict[str, Any]:
        return self.sampler.sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: Any) -> Any:
        return self.sampler.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Any) -> None:
        self.sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        pass  # seeds come from the trial, never from the process
