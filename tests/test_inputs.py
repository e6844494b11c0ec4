"""Bad input is refused in one line with exit code 2, before any store or run is written."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bench.cli import main
from tests.conftest import REPO

STUDY = textwrap.dedent("""
    name = "inputs"
    model = "linear"
    dataset = "digits"
    epochs = 1
    [tuning]
    n_trials = 1
    [eval]
    seeds = 2
    [[arms]]
    optimizer = "sgd"
    """)


def refused(stores, capsys, *args: str) -> str:
    """Run `bench <args>`; assert exit 2, one line on stderr and no store written; return that line."""
    assert stores.run(*args) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert not (stores.root / "mlflow.db").exists() and not Path(stores.storage).exists()
    return err.strip()


def test_a_study_file_with_a_utf8_byte_order_mark_is_read(stores, capsys):
    path = stores.root / "bom.toml"
    path.write_bytes("\ufeff".encode() + STUDY.replace('"sgd"', '"sgdx"').encode())
    assert "arms[0].optimizer: unknown 'sgdx'" in refused(stores, capsys, "run", str(path))  # parsed past line 1


@pytest.mark.parametrize(("content", "expected"), [
    (b"\x7fELF\x02\x01\x01\x00\x00\x00", "binary file, not a TOML study file"),
    ("name = 'caf\u00e9'".encode("latin-1"), "not UTF-8 text (byte 11); save the study file as UTF-8"),
    (b"name = \n", "not valid TOML"),
])
def test_unreadable_study_files_are_refused_in_one_line(stores, capsys, content, expected):
    path = stores.root / "bad.toml"
    path.write_bytes(content)
    assert refused(stores, capsys, "run", str(path)).startswith(f"{path}: {expected}")


def test_a_directory_is_not_a_study_file(stores, capsys):
    (stores.root / "dir.toml").mkdir()
    assert refused(stores, capsys, "run", str(stores.root / "dir.toml")) == \
        f"{stores.root / 'dir.toml'}: is a directory, not a study file"


@pytest.mark.parametrize("where", ["/proc/bench-results", "a-file", "a-file/below"])
def test_an_unusable_results_dir_is_refused_before_the_study_runs(stores, capsys, where):
    (stores.root / "study.toml").write_text(STUDY)
    (stores.root / "a-file").write_text("not a folder")
    results = where if where.startswith("/") else str(stores.root / where)
    code = main(["run", str(stores.root / "study.toml"), "--storage", stores.storage,
                 "--tracking-uri", stores.tracking_uri, "--results-dir", results])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith(f"bench run: --results-dir {results}: cannot write {results}/inputs (")
    assert not (stores.root / "mlflow.db").exists() and not Path(stores.storage).exists()


def read_only(folder: Path) -> list[str]:
    """A command prefix under which `folder` cannot be written: root ignores permission bits, so it
    gets a read-only bind mount in a private mount namespace (nothing outside the command sees it)."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return []
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"unshare -m is needed in CI: {probe.stderr.decode().strip()}")
        pytest.skip(reason="no mount namespaces here (unshare -m); CI fails instead")
    return ["unshare", "-m", "sh", "-c", f'mount --bind "{folder}" "{folder}" && '
            f'mount -o remount,bind,ro "{folder}" "{folder}" && exec "$0" "$@"']


def test_a_results_dir_that_cannot_be_written_is_refused(stores):
    (stores.root / "study.toml").write_text(STUDY)
    results = stores.root / "results"
    results.mkdir()
    proc = subprocess.run([*read_only(results), sys.executable, "-m", "bench.cli", "run",
                           str(stores.root / "study.toml"), *stores.flags()],
                          env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=stores.root,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == f"bench run: --results-dir {results}: cannot write {results / 'inputs'} (" + (
        "Read-only file system)" if os.geteuid() == 0 else "Permission denied)")
    assert not (stores.root / "mlflow.db").exists() and not Path(stores.storage).exists()


@pytest.mark.parametrize(("flags", "expected"), [
    (["--set", "lr=abc"], "bench train: lr: expected float, got 'abc'"),
    (["--set", "lr=-1"], "bench train: lr: -1.0: must be >= 0"),
    (["--epochs", "0"], "bench train: epochs: must be >= 1"),
    (["--model", "cnn", "--dataset", "diabetes"],
     "bench train: model 'cnn' cannot train on regression data 'diabetes'"),
])
def test_bench_train_refuses_bad_values_in_one_line_and_writes_no_run(stores, capsys, flags, expected):
    args = ["train", "--optimizer", "sgd", "--tracking-uri", stores.tracking_uri, *flags]
    args += [] if "--model" in flags else ["--model", "mlp", "--dataset", "digits"]
    assert main(args) == 2
    assert capsys.readouterr().err.strip() == expected
    assert not (stores.root / "mlflow.db").exists()
