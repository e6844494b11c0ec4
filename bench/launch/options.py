"""Slurm options of `bench run --launcher slurm`: `--slurm KEY=VALUE` and the study file's
`[slurm]` table (command-line values win). Standard library only: a bad value is refused in one
line before the heavy imports, and every value is checked against a strict pattern because it
ends up in an `#SBATCH` line of the batch script.
"""

from __future__ import annotations

import re
import signal
from typing import Any

# sbatch's own option names, plus the preemption settings of the worker (see bench.launch.preempt)
KEYS = ("partition", "time", "cpus-per-task", "gpus-per-node", "mem", "account", "qos", "signal", "grace")
DEFAULTS = {"signal": "TERM@90", "grace": 20}

_NAME = re.compile(r"[A-Za-z0-9_.+-]+")
_PATTERNS = {
    "partition": (_NAME, "a partition name"),
    "account": (_NAME, "an account name"),
    "qos": (_NAME, "a QOS name"),
    # sbatch --time: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS
    "time": (re.compile(r"\d+(:\d{1,2}){0,2}|\d+-\d{1,2}(:\d{1,2}){0,2}"), "minutes, HH:MM:SS or D-HH:MM:SS"),
    "mem": (re.compile(r"\d+[KMGT]?"), "a size such as 4000 or 16G"),
    "gpus-per-node": (re.compile(r"([A-Za-z0-9_.-]+:)?\d+"), "a count, or TYPE:COUNT"),
    "cpus-per-task": (re.compile(r"[1-9]\d*"), "a positive integer"),
    "grace": (re.compile(r"\d+"), "seconds (an integer >= 0)"),
    # sent to the batch shell SECONDS before the time limit: [B:]SIG[@SECONDS]
    "signal": (re.compile(r"(B:)?(SIG)?[A-Z0-9]+(@\d+)?"), "SIG[@SECONDS], e.g. TERM@90 or USR1@120"),
}


class UsageError(ValueError):
    """A bad launcher argument or environment; str() is the one-line message (exit code 2)."""


def check(key: str, value: Any) -> str | int:
    """The value as the batch script writes it; ValueError names what was expected."""
    key = key.replace("_", "-")
    if key not in KEYS:
        raise ValueError(f"unknown key '{key}' (known: {', '.join(KEYS)})")
    text = str(value).strip()
    pattern, expected = _PATTERNS[key]
    if isinstance(value, bool) or not pattern.fullmatch(text):
        raise ValueError(f"{key}: {value!r} is not {expected}")
    if key == "signal":
        name = signal_name(text)
        if name not in signal.Signals.__members__:
            raise ValueError(f"signal: unknown signal '{name}' in {text!r}")
        if name in ("SIGKILL", "SIGSTOP"):
            raise ValueError(f"signal: {name} cannot be handled; use TERM or USR1")
    return int(text) if key in ("cpus-per-task", "grace") else text


def signal_name(value: str) -> str:
    """'B:USR1@120' -> 'SIGUSR1'."""
    bare = value.removeprefix("B:").split("@", 1)[0]
    return bare if bare.startswith("SIG") else f"SIG{bare}"


def parse(items: list[str]) -> dict[str, str | int]:
    """`--slurm KEY=VALUE` arguments as {key: value}; UsageError on the first bad one."""
    out: dict[str, str | int] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--slurm {item!r}: expected KEY=VALUE (keys: {', '.join(KEYS)})")
        try:
            out[key.strip().replace("_", "-")] = check(key.strip(), value)
        except ValueError as err:
            raise UsageError(f"--slurm {err}") from None
    return out
