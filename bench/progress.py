"""Live study progress (rich): one row per arm (trial k/N, best so far, pruned/failed counts,
eval seed) plus a study row with the overall ETA; the arm in progress is marked ▶.

`quiet=True` (CI logs) shows no live display and prints one plain line per finished arm.
Lightning's own per-trial progress bars stay off (RunConfig.progress_bar defaults to False).
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

STUDY = "\0study"  # key of the overall row (cannot clash with an arm name)


def _num(x: float | None) -> str:
    return "–" if x is None else f"{x:.4g}"


class StudyProgress:
    """Progress sink for StudyRunner: `with StudyProgress(budgets) as p: StudyRunner(..., progress=p)`.

    `arm_budgets[arm]` = tuning trials + eval seeds of that arm (one unit of work each)."""

    def __init__(self, arm_budgets: dict[str, int], *, quiet: bool = False, console: Console | None = None) -> None:
        self.quiet = quiet
        self.console = console or Console(stderr=True)
        if not self.console.is_terminal and console is None:
            self.console = Console(stderr=True, width=120)  # logs: don't cut the status at 80 columns
        width = max([len(a) for a in arm_budgets] + [5]) + 2
        self.bar = Progress(
            TextColumn("{task.fields[mark]}"), TextColumn(f"{{task.fields[arm]:<{width}}}"),
            BarColumn(bar_width=24), MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(compact=True),
            console=self.console, disable=quiet, transient=False,
        )
        self.tasks = {arm: self.bar.add_task("", total=total, arm=arm, status="waiting", mark=" ", start=False)
                      for arm, total in arm_budgets.items()}
        self.tasks[STUDY] = self.bar.add_task("", total=sum(arm_budgets.values()), arm="study", status="", mark=" ")
        self.done: dict[str, int] = dict.fromkeys(arm_budgets, 0)
        self.started: set[str] = set()
        self.current: str | None = None
        self.best: dict[str, float | None] = dict.fromkeys(arm_budgets)

    def __enter__(self) -> StudyProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.stop()

    def _advance(self, arm: str, completed: int, status: str) -> None:
        task = self.tasks[arm]
        if arm not in self.started:  # a resumed arm: work done earlier must not count as speed
            self.started.add(arm)
            self.bar.reset(task, completed=completed)
        if self.current != arm:
            if self.current is not None:
                self.bar.update(self.tasks[self.current], mark=" ")
            self.current = arm
        self.done[arm] = completed
        self.bar.update(task, completed=completed, status=status, mark="▶")
        self.bar.update(self.tasks[STUDY], completed=sum(self.done.values()),
                        status=f"arm {list(self.done).index(arm) + 1}/{len(self.done)}: {arm}")

    def __call__(self, event: str, p: dict[str, Any]) -> None:
        arm = p["arm"]
        if arm not in self.tasks:
            return
        if event == "trial_start":
            self._advance(arm, p["done"], f"trial {p['done'] + 1}/{p['total']}  best {_num(self.best[arm])}")
        elif event == "trial_end":
            self.best[arm] = p["best"]
            self._advance(arm, p["done"], f"trial {p['done']}/{p['total']}  best {_num(p['best'])}  "
                          f"pruned {p['pruned']}  failed {p['failed']}")
        elif event == "eval_start":
            total = self.bar.tasks[self.tasks[arm]].total or 0
            self._advance(arm, int(total) - (p["total"] - p["seed"] + 1),
                          f"eval seed {p['seed']}/{p['total']}  best {_num(self.best[arm])}")
        elif event == "arm_done":
            o = p["outcome"]
            total = int(self.bar.tasks[self.tasks[arm]].total or 0)
            status = f"done  best {_num(o.best_value)}  pruned {o.pruned}  failed {o.failed}"
            self._advance(arm, total, status)
            self.bar.update(self.tasks[arm], mark="✓")
            self.current = None
            if all(self.done[a] >= (self.bar.tasks[self.tasks[a]].total or 0) for a in self.done):
                self.bar.update(self.tasks[STUDY], status="done")
            if self.quiet:
                self.console.print(f"arm {arm}: {status}", markup=False, highlight=False)
