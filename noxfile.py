"""Workflows of the suite. `nox -l` lists them; arguments after `--` pass through."""

from __future__ import annotations

import nox

nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "tests"]
QUICKSTART = "studies/quickstart.toml"


def install(session: nox.Session, extras: str = "") -> None:
    session.install("-e", f".{extras}", "-c", "constraints.txt")


EXAMPLE_PLUGIN = "examples/bench-plugin-example"


@nox.session
def tests(session: nox.Session) -> None:
    """Run the whole test suite (pytest; pass -m 'not slow' to skip end-to-end studies)."""
    install(session, "[test,optimizers]")
    # the example plug-in package, found through its entry points (its dependencies are bench's)
    session.install("--no-deps", "-e", EXAMPLE_PLUGIN)
    session.run("pytest", *(session.posargs or ["-q"]))


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff lint of the package, tests and this file."""
    session.install("ruff", "-c", "constraints.txt")
    session.run("ruff", "check", "bench", "tests", "noxfile.py", "examples")


@nox.session
def study(session: nox.Session) -> None:
    """Run a study file end to end (default: the quickstart) and write its report to results/."""
    install(session, "[optimizers]")  # studies/beyond-the-four.toml names Lion, Prodigy, schedule-free AdamW
    session.run("bench", "run", *(session.posargs or [QUICKSTART]))


@nox.session
def report(session: nox.Session) -> None:
    """Rebuild a study's report from the MLflow and Optuna stores only."""
    install(session)
    session.run("bench", "report", *(session.posargs or [QUICKSTART]))


@nox.session
def perf(session: nox.Session) -> None:
    """Overhead benchmarks measured side by side; writes results/perf/."""
    install(session)
    session.run("bench", "perf", *session.posargs)


@nox.session
def train(session: nox.Session) -> None:
    """One training run logged to MLflow, e.g. nox -s train -- --model mlp --dataset digits --optimizer adam."""
    install(session)
    session.run("bench", "train", *session.posargs)


@nox.session
def data(session: nox.Session) -> None:
    """Dataset files: nox -s data -- fetch cifar10 (torchvision download, needs internet) or -- status."""
    install(session, "[vision]")
    session.run("bench", "data", *(session.posargs or ["status"]))


@nox.session
def ui(session: nox.Session) -> None:
    """MLflow UI + Optuna dashboard on the stores in this folder (bench ui; Ctrl-C stops both)."""
    install(session)
    session.run("bench", "ui", *session.posargs)
