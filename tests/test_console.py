"""What a first `bench run` prints, captured from a real process on fresh embedded stores: the
progress display and the summary, no log lines or library warnings the user cannot act on; and the
study file as the report names it (relative to the working directory, with its sha256)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest
from mlflow import MlflowClient

from tests.conftest import REPO
from tests.test_stores import tiny_study

pytestmark = pytest.mark.slow


def test_a_first_run_prints_progress_and_summary_only_and_names_the_study_file_relatively(tmp_path):
    path = tiny_study(tmp_path)  # passed by absolute path, as in the reports of other machines
    proc = subprocess.run([sys.executable, "-m", "bench.cli", "run", path], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    err = [line for line in proc.stderr.splitlines() if line.strip()]
    # before: 2 MLflow INFO lines ("Creating initial MLflow database tables...") and Lightning's
    # "`isinstance(treespec, LeafSpec)` is deprecated" once per process, ahead of the display
    assert err and all("━" in line for line in err), err  # the progress rows (one per arm + the study)
    assert len(err) == 2
    out = proc.stdout.splitlines()
    assert out[0].startswith("test/acc (maximize), mean [95% CI] over eval seeds:") and out[-1].startswith("report: ")
    for text in (proc.stdout, proc.stderr):
        for noise in ("INFO", "Warning", "deprecated", "srun"):
            assert noise not in text

    sha = hashlib.sha256((tmp_path / "tiny.toml").read_bytes()).hexdigest()
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    parent = client.search_runs([client.get_experiment_by_name("tiny").experiment_id],
                                filter_string="tags.phase = 'arm'")[0]
    assert parent.data.tags["study_file"] == "tiny.toml" and parent.data.tags["study_file_sha256"] == sha
    report = (tmp_path / "results" / "tiny" / "report.md").read_text()
    assert f"- study file: `tiny.toml` (sha256 {sha[:12]})" in report
    assert str(tmp_path) not in report
