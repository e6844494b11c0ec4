"""How long `bench report` takes on a finished study: wall time of the command in fresh processes.

The stores come from `bench run STUDY` in a temporary folder (the quickstart: a few minutes), or
are given. Each timed process is what a user runs, `python -m bench.cli report STUDY` with the store
flags, interpreter start-up and imports included; the figure is the median of `repeats`, beside a
bare interpreter start measured in the same loop. Target: under 3 s for the quickstart (4 arms, 20
figures).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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
    times, bare = [], []
    for _ in range(repeats):  # interleaved, so machine noise hits both alike
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        bare.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=root, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    name = study.stem + ("-quick" if quick else "")
    out = root / "results" / name
    median = statistics.median(times)
    return {"study": name, "median_s": median, "times_s": times, "python_start_s": statistics.median(bare),
            "files": sum(1 for p in out.rglob("*") if p.is_file()),
            "figures": sum(1 for _ in (out / "figures").rglob("*.png")),
            "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "target_s": TARGET_S, "met": median < TARGET_S, "repeats": repeats}


def render(r: dict) -> list[str]:
    return ["", f"## `bench report` on a finished study (fresh process each, {r['cpus']} CPUs)", "",
            "| study | median wall time | runs | files written (figures) | reference: `python -c pass` |",
            "|---|---|---|---|---|",
            f"| {r['study']} | {r['median_s']:.2f} s | {', '.join(f'{t:.2f}' for t in r['times_s'])} s | "
            f"{r['files']} ({r['figures']}) | {r['python_start_s']:.2f} s |",
            f"\nTarget < {r['target_s']:.0f} s: {'met' if r['met'] else 'NOT met'}."]
