"""Every shipped study file runs end to end at its --quick budget (the others have their own tests)."""

from __future__ import annotations

import pandas as pd
import pytest

from bench import spec as spec_mod
from bench.tuning.study import arms
from tests.conftest import REPO, STUDIES

# Study files with a dedicated end-to-end test elsewhere in tests/.
COVERED_ELSEWHERE = {"quickstart", "factorial", "strategies", "optimizers-sigmoid_net", "optimizers-cnn",
                     "optimizers-autoencoder", "optimizers-gan", "optimizers-transformer", "optimizer-choice",
                     "bgd-vs-sgd",  # test_budgets.py
                     "cifar10-resnet", "fashion-mnist", "mnist1d"}  # test_datasets.py: fixture files, one thread
ALL = sorted(p.stem for p in STUDIES.glob("*.toml"))


def test_every_study_file_is_valid_and_run_by_some_test():
    for name in ALL:
        spec_mod.load(STUDIES / f"{name}.toml")  # raises SpecError if not
    tests_text = "".join(p.read_text() for p in (REPO / "tests").glob("test_*.py") if p.name != "test_studies.py")
    for name in COVERED_ELSEWHERE:
        assert name in tests_text or name.removeprefix("optimizers-") in tests_text, name


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in ALL if n not in COVERED_ELSEWHERE])
def test_study_runs_at_quick_budget(stores, name):
    path = STUDIES / f"{name}.toml"
    quick = spec_mod.load(path).quick_variant()
    assert stores.run("run", str(path), "--quick", "--quiet") == 0
    table = pd.read_csv(stores.results / quick.name / "summary.csv")
    assert sorted(table["arm"]) == sorted(a.name for a in arms(quick))
    done = table[table["trials_complete"] > 0]
    assert (done["eval_seeds"] + done["diverged_evals"] == quick.eval.seeds).all()
    assert (table["trials_complete"] + table["trials_pruned"] == quick.tuning.n_trials).all()
