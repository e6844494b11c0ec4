"""Where dataset files live on disk, whether they are there, and how to fetch them.

Standard library only (torch and torchvision are imported by `fetch` alone), so that `bench run`
and `bench train` refuse a study whose files are missing in a fraction of a second, before any
store is created.

The data folder is `--data-dir DIR` (which sets `$BENCH_DATA_DIR` for the process and the workers
it starts), else `$BENCH_DATA_DIR`, else `$XDG_CACHE_HOME/bench/data`, else `~/.cache/bench/data`.
Below it the layout is exactly torchvision's (`MNIST/raw/train-images-idx3-ubyte`,
`FashionMNIST/raw/...`, `cifar-10-batches-py/data_batch_1`, `cifar-100-python/train`), so a folder
that torchvision filled can be used as is, and generated sets are cached under `<name>/`.
A dataset declares the files its loader reads in `DatasetInfo.files` (paths below the data
folder); a gzipped copy `X.gz` stands in for `X` (what the MNIST mirrors serve).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

DATA_DIR_ENV = "BENCH_DATA_DIR"


class DataFilesMissing(ValueError):
    """A dataset whose files are not in the data folder; str() is the one-line message (exit 2)."""


def data_dir() -> Path:
    """The data folder (see the module docstring); not created here."""
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "bench" / "data"


def set_data_dir(path: str | Path) -> Path:
    """`--data-dir`: this process and every worker it starts (which inherit the environment) use it."""
    resolved = Path(path).expanduser().resolve()
    os.environ[DATA_DIR_ENV] = str(resolved)
    return resolved


def present(path: Path) -> Path | None:
    """The file, or its gzipped copy, when one of them exists."""
    if path.is_file():
        return path
    gz = path.with_name(path.name + ".gz")
    return gz if gz.is_file() else None


def missing_files(files: Iterable[str], root: Path | None = None) -> list[Path]:
    root = data_dir() if root is None else root
    return [root / f for f in files if present(root / f) is None]


def missing_message(name: str, missing: list[Path], root: Path) -> str:
    """One line: which files go where, and the two ways to get them there."""
    folders = sorted({str(p.parent) for p in missing})
    where = folders[0] if len(folders) == 1 else str(root)
    names = ", ".join(p.name if len(folders) == 1 else str(p.relative_to(root)) for p in missing)
    return (f"{name}: files missing under {where} ({names}; gzipped copies also do): run `bench data fetch {name}` "
            f"on a machine with internet, or copy them there (data folder: --data-dir, else ${DATA_DIR_ENV}; "
            f"now {root})")


def check_datasets(names: Iterable[str]) -> None:
    """Raise DataFilesMissing for the first dataset (registry name) whose declared files are absent."""
    from bench.data import DATASETS

    root = data_dir()
    for name in dict.fromkeys(names):
        files = getattr(DATASETS.get(name), "files", ())
        if files and (missing := missing_files(files, root)):
            raise DataFilesMissing(missing_message(name, missing, root))


def atomic_write(path: Path, write) -> Path:
    """Call `write(tmp_path)`, then move the result to `path` in one rename: a reader (another
    worker) sees the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide a shared data folder's files from others
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


# torchvision classes that download each file-based dataset (`bench data fetch`), with their arguments.
TORCHVISION = {
    "mnist": ("MNIST", ({"train": True}, {"train": False})),
    "fashion_mnist": ("FashionMNIST", ({"train": True}, {"train": False})),
    "cifar10": ("CIFAR10", ({"train": True}, {"train": False})),
    "cifar100": ("CIFAR100", ({"train": True}, {"train": False})),
}


def fetch(name: str, root: Path | None = None) -> Path:
    """Download a dataset's files into the data folder with torchvision (download=True: its mirrors
    and md5 checksums), or generate and cache a generated set (mnist1d). Returns the folder."""
    root = data_dir() if root is None else root
    root.mkdir(parents=True, exist_ok=True)
    if name in TORCHVISION:
        try:
            import torchvision.datasets as tvd
        except Exception as err:  # not installed, or a CUDA build next to a CPU torch (RuntimeError on import)
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise DataFilesMissing(f"{name}: fetching needs a torchvision that imports with this torch "
                                   f"(pip install -e '.[vision]'): {type(err).__name__}: {first}") from None
        cls, calls = TORCHVISION[name]
        for kwargs in calls:
            getattr(tvd, cls)(str(root), download=True, **kwargs)
        return root
    from bench.data import DATASETS, load_dataset

    info = DATASETS.get(name)
    if name == "mnist1d":
        load_dataset(name)  # generated offline and cached under the data folder
        return root
    raise DataFilesMissing(f"{name}: nothing to fetch ({info.summary})")
