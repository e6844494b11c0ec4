"""The README's "Benchmark your own optimizer" snippets, run as written: the optimizer file, the
study file and the command, in a fresh folder."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pandas as pd
import pytest
from mlflow import MlflowClient

from tests.conftest import REPO

SECTION = "## Benchmark your own optimizer"


def snippets() -> list[tuple[str, str]]:
    """(language, code) of every fenced block in the section, up to its first sub-heading."""
    text = (REPO / "README.md").read_text()
    body = text[text.index(SECTION):]
    body = body[:body.index("\n### ")]
    return re.findall(r"```(\w+)\n(.*?)```", body, flags=re.S)


def test_the_section_has_a_python_file_a_study_file_and_one_command():
    blocks = snippets()
    assert [lang for lang, _ in blocks] == ["python", "toml", "bash"]
    assert blocks[0][1].startswith("# my_optim.py\n") and blocks[1][1].startswith("# my-study.toml\n")
    assert blocks[2][1].strip() == "bench run my-study.toml"


@pytest.mark.slow
def test_the_snippets_run_as_written(tmp_path):
    for lang, code in snippets():
        if lang in ("python", "toml"):
            name = code.splitlines()[0].removeprefix("# ")
            (tmp_path / name).write_text(code)
    (command,) = [code.strip() for lang, code in snippets() if lang == "bash"]
    args = shlex.split(command)
    assert args[0] == "bench"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    # `bench` is the console script; `python -m bench.cli` is the same entry point without needing
    # it on PATH. The working folder is the user's: the optimizer is imported from it.
    done = subprocess.run([sys.executable, "-m", "bench.cli", *args[1:]], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    table = pd.read_csv(tmp_path / "results" / "my-optimizer" / "summary.csv")
    assert sorted(table["arm"]) == ["adam", "signsgd"]
    assert (table["trials_complete"] + table["trials_pruned"] == 6).all()
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("my-optimizer").experiment_id],
                              "tags.arm = 'signsgd' and tags.phase = 'eval'")
    assert len(runs) == 3
    for run in runs:
        assert run.data.params["momentum"] == "0.9"  # the class default, recorded though never set
        assert run.data.tags["source.optimizer"] == "import my_optim:SignSGD"
