"""`bench perf`'s report case: `bench report` wall time on a finished study, in fresh processes."""

from __future__ import annotations

import pytest

from bench.perf_report import render, report_times
from tests.conftest import STUDIES


@pytest.mark.slow
def test_perf_times_bench_report_on_finished_stores(quick_study):
    r = report_times(STUDIES / "quickstart.toml", repeats=1, root=quick_study.root, quick=True)
    assert r["study"] == "quickstart-quick" and len(r["times_s"]) == 1 and r["median_s"] == r["times_s"][0] > 0
    assert r["warm_median_s"] == r["warm_times_s"][0] > 0
    assert r["figures"] >= 10 and r["files"] == r["figures"] + 4  # report.md, report.html, two CSVs
    assert r["met"] == (r["median_s"] < 3.0) and r["warm_met"] == (r["warm_median_s"] < 3.0)
    rows = [line for line in render(r) if line.startswith("| quickstart-quick |")]
    assert len(rows) == 2 and rows[0].startswith(f"| quickstart-quick | drawn | {r['median_s']:.2f} s | ")
    assert rows[1].startswith(f"| quickstart-quick | reused (results unchanged) | {r['warm_median_s']:.2f} s | ")
