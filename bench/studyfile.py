"""Reading a study file and checking where its outputs go, before any heavy import.

Everything here uses the standard library only, so that `bench run` rejects an unreadable study
file or an unusable results folder in a fraction of a second instead of after importing torch,
Lightning and MLflow (several seconds) or, for the results folder, after the whole study ran.
"""

from __future__ import annotations

import tempfile
import tomllib
from pathlib import Path
from typing import Any

BOM = "\ufeff"


class SpecError(ValueError):
    """A study-file problem (unreadable, not TOML, or invalid); str() is the one-line message the
    CLI prints before exiting 2. Defined here so that catching it imports nothing heavy."""


class OutputDirError(ValueError):
    """An output folder that cannot be written; str() is the one-line message (exit code 2)."""


def read(path: str | Path) -> dict[str, Any]:
    """The TOML table of a study file. A UTF-8 byte-order mark (which some editors write) is
    accepted; a missing file, a folder, binary or non-UTF-8 content and TOML errors raise
    SpecError naming the file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SpecError(f"{path}: no such study file") from None
    except IsADirectoryError:
        raise SpecError(f"{path}: is a directory, not a study file") from None
    except OSError as err:
        raise SpecError(f"{path}: cannot read the study file ({err.strerror})") from None
    if b"\0" in raw:
        raise SpecError(f"{path}: binary file, not a TOML study file")
    try:
        text = raw.decode("utf-8").removeprefix(BOM)
    except UnicodeDecodeError as err:
        raise SpecError(f"{path}: not UTF-8 text (byte {err.start}); save the study file as UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise SpecError(f"{path}: not valid TOML: {err}") from None


def check_writable(folder: str | Path, flag: str) -> Path:
    """Create `folder` if needed and prove a file can be written in it (the kernel decides: root
    passes permission bits but not read-only mounts or /proc). Raises OutputDirError."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except FileExistsError:
        raise OutputDirError(f"{flag}: cannot write {folder} (a file, not a folder)") from None
    except OSError as err:
        reason = "a file, not a folder" if err.errno == 20 else err.strerror or type(err).__name__
        raise OutputDirError(f"{flag}: cannot write {folder} ({reason})") from None
    return folder

