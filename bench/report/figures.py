"""Report figures (matplotlib, Agg backend: PNG files render on any git host)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bench.report.collect import StudyResult  # noqa: E402


def learning_curves(result: StudyResult, path: Path) -> Path | None:
    """Validation metric (mean over eval seeds, band = min..max) vs epoch, optimizer steps and
    wall time: BGD and SGD look very different on each axis, which is the point."""
    arms = [a for a in result.arms if result.objective in a.curves]
    if not arms:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), sharey=True)
    for arm in arms:
        y = arm.curves[result.objective]
        epochs = np.arange(1, y.shape[1] + 1)
        xs = {"epoch": epochs, "optimizer steps": arm.curves["steps"].mean(0),
              "wall time [s]": arm.curves["wall_time_s"].mean(0)}
        for ax, (label, x) in zip(axes, xs.items()):
            (line,) = ax.plot(x, y.mean(0), label=f"{arm.arm.name} (n={len(y)})")
            ax.fill_between(x, y.min(0), y.max(0), color=line.get_color(), alpha=0.2)
            ax.set_xlabel(label)
    axes[1].set_xscale("log")
    axes[0].set_ylabel(f"{result.objective} (eval seeds: mean, min-max band)")
    axes[0].legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(f"{result.spec.name}: learning curves of the selected configurations")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
