"""How fast a bad study file is refused: `bench run BAD.toml` wall time, in fresh processes.

Each case is a small study file with one mistake (TOML syntax, an unknown key, an unknown
optimizer, a hyper-parameter no component owns, an impossible budget). The command must exit 2
with one line before any store is touched; the figure is its wall time (median of `repeats` fresh
processes), next to two references measured in the same loop: a bare interpreter start and
`import torch`, which is what a rejection would cost if it imported the training stack first.
Target: under 2 s per rejection.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 2.0
GOOD = 'name = "perf-inputs"\nmodel = "mlp"\ndataset = "digits"\nepochs = 2\n[[arms]]\noptimizer = "sgd"\n'
CASES = {
    "TOML syntax": GOOD.replace('epochs = 2', 'epochs = '),
    "unknown key": GOOD + 'learning_rate = 0.1\n',
    "unknown optimizer": GOOD.replace('"sgd"', '"sgdx"'),
    "undeclared hyper-parameter": GOOD + 'params = { lrr = 0.1 }\n',
    "impossible budget": GOOD.replace('epochs = 2', 'epochs = 0'),
}


def _seconds(cmd: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    return time.perf_counter() - t0, proc


def rejection_times(repeats: int = 5) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        refs = {"python -c pass": [sys.executable, "-c", "pass"],
                "python -c 'import torch'": [sys.executable, "-c", "import torch"]}
        cases: dict[str, dict] = {}
        for name, text in CASES.items():
            path = root / f"{name.replace(' ', '-')}.toml"
            path.write_text(text)
            cases[name] = {"cmd": [sys.executable, "-m", "bench.cli", "run", path.name], "times": []}
        ref_times: dict[str, list[float]] = {k: [] for k in refs}
        for _ in range(repeats):  # interleaved, so machine noise hits every column alike
            for key, cmd in refs.items():
                ref_times[key].append(_seconds(cmd, root)[0])
            for case in cases.values():
                seconds, proc = _seconds(case["cmd"], root)
                case["times"].append(seconds)
                case["exit_code"], case["message"] = proc.returncode, proc.stderr.strip()
        wrote = sorted(p.name for p in root.iterdir() if p.suffix != ".toml")
    rows = {name: {"median_s": statistics.median(c["times"]), "exit_code": c["exit_code"],
                   "lines": len(c["message"].splitlines()), "message": c["message"]} for name, c in cases.items()}
    worst = max(r["median_s"] for r in rows.values())
    return {"cases": rows, "references_s": {k: statistics.median(v) for k, v in ref_times.items()},
            "worst_median_s": worst, "target_s": TARGET_S, "repeats": repeats,
            "met": worst < TARGET_S and all(r["exit_code"] == 2 and r["lines"] == 1 for r in rows.values()),
            "files_written": wrote}


def render(r: dict) -> list[str]:
    lines = ["", "## Rejecting a bad study file (`bench run BAD.toml`, fresh process each)", "",
             "| mistake | median wall time | exit code | message |", "|---|---|---|---|"]
    for name, row in r["cases"].items():
        lines.append(f"| {name} | {row['median_s']:.2f} s | {row['exit_code']} | `{row['message']}` |")
    for name, seconds in r["references_s"].items():
        lines.append(f"| reference: `{name}` | {seconds:.2f} s | | |")
    lines.append(f"\nWorst case {r['worst_median_s']:.2f} s against a target of < {r['target_s']:.0f} s "
                 f"({'met' if r['met'] else 'NOT met'}); files written beside the study files: "
                 f"{r['files_written'] or 'none'}.")
    return lines
