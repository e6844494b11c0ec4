"""How long `bench report` takes on a finished study: wall time of the command in fresh processes.

The stores come from `bench run STUDY` in a temporary folder (the quickstart: a few minutes), or
are given. Each timed process is what a user runs, `python -m bench.cli report STUDY` with the store
flags, interpreter start-up and imports included; the figure is the median of `repeats`, beside a
bare interpreter start measured in the same loop. Each repeat times the report twice: with every
figure drawn (cold), and again on the same results, its figures reused (bench.report.figure_cache).
Target: under 3 s for the quickstart (4 arms, 20 figures).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.report.figure_cache import MANIFEST

TARGET_S = 3.0
QUICKSTART = Path(__file__).resolve().parent.parent / "studies" / "quickstart.toml"


def store_flags(root: Path) -> list[str]:
    return ["--storage", str(root / "optuna.journal"), "--tracking-uri", f"sqlite:///{root}/mlflow.db",
            "--results-dir", str(root / "results")]


def report_times(study: Path = QUICKSTART, repeats: int = 3, *, root: Path | None = None,
                 quick: bool = False) -> dict:
    """Median wall time of `bench report` in fresh processes. `root`: a folder whose stores hold
    the finished study (as `store_flags` names them); without it the study is run first in a
    temporary one."""
    if root is None:
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([sys.executable, "-m", "bench.cli", "run", str(study), "--quiet", *store_flags(Path(tmp)),
                            *(["--quick"] if quick else [])], cwd=tmp, check=True, capture_output=True)
            return report_times(study, repeats, root=Path(tmp), quick=quick)
    cmd = [sys.executable, "-m", "bench.cli", "report", str(study), *store_flags(root), *(["--quick"] if quick else [])]
    name = study.stem + ("-quick" if quick else "")
    out = root / "results" / name
    cold, warm, bare = [], [], []
    for _ in range(repeats):  # interleaved, so machine noise hits all three alike
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        bare.append(time.perf_counter() - t0)
        (out / "figures" / MANIFEST).unlink(missing_ok=True)  # cold: every figure drawn
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=root, check=True, capture_output=True)
        cold.append(time.perf_counter() - t0)
        t0 = time.perf_counter()  # warm: the same results again, figures reused (bench.report.figure_cache)
        subprocess.run(cmd, cwd=root, check=True, capture_output=True)
        warm.append(time.perf_counter() - t0)
    files = [p for p in out.rglob("*") if p.is_file() and not p.name.startswith(".")]
    return {"study": name, "median_s": statistics.median(cold), "times_s": cold,
            "warm_median_s": statistics.median(warm), "warm_times_s": warm, "python_start_s": statistics.median(bare),
            "files": len(files), "figures": sum(1 for p in files if p.suffix == ".png"),
            "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "target_s": TARGET_S, "met": statistics.median(cold) < TARGET_S,
            "warm_met": statistics.median(warm) < TARGET_S, "repeats": repeats}


def render(r: dict) -> list[str]:
    def times(key: str) -> str:
        return ", ".join(f"{t:.2f}" for t in r[key])

    return ["", f"## `bench report` on a finished study (fresh process each, {r['cpus']} CPUs)", "",
            "| study | figures | median wall time | runs | files written (figures) | reference: `python -c pass` |",
            "|---|---|---|---|---|---|",
            f"| {r['study']} | drawn | {r['median_s']:.2f} s | {times('times_s')} s | {r['files']} ({r['figures']}) | "
            f"{r['python_start_s']:.2f} s |",
            f"| {r['study']} | reused (results unchanged) | {r['warm_median_s']:.2f} s | {times('warm_times_s')} s | "
            f"{r['files']} ({r['figures']}) | {r['python_start_s']:.2f} s |",
            f"\nTarget < {r['target_s']:.0f} s: drawn {'met' if r['met'] else 'NOT met'}, "
            f"reused {'met' if r['warm_met'] else 'NOT met'}."]
