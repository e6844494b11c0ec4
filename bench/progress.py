"""Live study progress (rich): current arm, trial k/N, best so far, pruned/failed counts, ETA."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class StudyProgress:
    """Progress sink for StudyRunner: `with StudyProgress(spec) as p: StudyRunner(..., progress=p)`."""

    def __init__(self, arm_budgets: dict[str, int], *, quiet: bool = False, console: Console | None = None) -> None:
        self.quiet = quiet
        self.console = console or Console(stderr=True)
        self.bar = Progress(
            TextColumn("{task.fields[arm]:<18}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
            console=self.console, disable=quiet, transient=False,
        )
        self.tasks = {arm: self.bar.add_task("", total=total, arm=arm, status="waiting")
                      for arm, total in arm_budgets.items()}

    def __enter__(self) -> StudyProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.stop()

    def __call__(self, event: str, p: dict[str, Any]) -> None:
        task = self.tasks[p["arm"]]
        if event == "trial_start":
            self.bar.update(task, completed=p["done"], status=f"tuning trial {p['done'] + 1}/{p['total']}")
        elif event == "trial_end":
            best = "–" if p["best"] is None else f"{p['best']:.4g}"
            self.bar.update(task, completed=p["done"],
                            status=f"best {best}  pruned {p['pruned']}  failed {p['failed']}")
        elif event == "eval_start":
            task_obj = self.bar.tasks[task]
            self.bar.update(task, completed=task_obj.total - (p["total"] - p["seed"] + 1),
                            status=f"eval seed {p['seed']}/{p['total']}")
        elif event == "arm_done":
            o = p["outcome"]
            best = "–" if o.best_value is None else f"{o.best_value:.4g}"
            self.bar.update(task, completed=self.bar.tasks[task].total,
                            status=f"done: best {best}, pruned {o.pruned}, failed {o.failed}")
