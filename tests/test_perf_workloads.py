"""`bench perf`'s MNIST-1D case: per-epoch and per-step cost of each model, fit beside a plain loop."""

from __future__ import annotations

import math

import pytest

from bench.perf_workloads import MODELS, mnist1d_costs, render


@pytest.mark.slow
def test_mnist1d_costs_count_the_same_steps_as_a_plain_loop_for_every_model():
    costs = mnist1d_costs(repeats=1, epochs=1)
    assert list(costs) == list(MODELS)
    for c in costs.values():
        assert c["steps"] == math.ceil(3600 / 128)  # 3600 training signals, batch 128, one epoch
        assert c["fit_ms_per_step"] == pytest.approx(c["fit_train_s"] / c["steps"] * 1e3)
        assert c["fit_train_s"] > 0 and c["plain_s"] > 0
        assert c["ratio"] == pytest.approx(c["fit_train_s"] / c["plain_s"])
    lines = render(costs)
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| model")]
    assert [row.split(" | ")[0].removeprefix("| ") for row in rows] == list(MODELS)
    assert all(row.split(" | ")[1] == "29" for row in rows)
