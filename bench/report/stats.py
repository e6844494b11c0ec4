"""Statistics over evaluation seeds and learning curves (numpy, and scipy.special's Student-t
distribution: scipy.stats costs ~1.2 s more to import than scipy.special, half of a report of
unchanged results; tests/test_report.py checks every value against scipy.stats).

- `mean_ci`: mean and two-sided Student-t interval over eval seeds.
- `compare_arms`: pairwise tests between the arms of one task with Holm's step-down correction.
  Eval seed k of every arm is the same integer seed (1000 + k), which fixes the initial weights
  and the mini-batch order of that run; for two arms with the same model and dataset the k-th
  runs therefore share their randomness (common random numbers) and the per-seed differences are
  the natural unit: **paired t-test**. When the arms' seed sets differ (a diverged seed) or the
  models differ, nothing is shared and the test is **Welch's t-test** (unequal variances).
- `holm`: Holm (1979) step-down adjusted p-values (controls the family-wise error rate).
- `time_to_target`: first epoch at which a mean validation curve reaches a target, and the
  optimizer steps / samples / wall time spent by then (AlgoPerf's time-to-result).
- `performance_profile`: AlgoPerf-style profile, the fraction of tasks on which a method is
  within a factor tau of the fastest method to the target.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ALPHA = 0.05


def _t_ppf(q: float, df: float) -> float:
    """Student-t quantile (scipy.stats.t.ppf)."""
    from scipy import special

    return float(special.stdtrit(df, q))


def _two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with df degrees of freedom."""
    from scipy import special

    return float(2.0 * special.stdtr(df, -abs(t)))


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided Student-t confidence interval (n-1 dof); NaN bounds for n < 2."""
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan
    half = _t_ppf(0.5 + confidence / 2, len(x) - 1) * float(x.std(ddof=1)) / math.sqrt(len(x))
    return mean, mean - half, mean + half


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order. NaN p-values (no test possible)
    stay NaN and are not counted in the family size."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(len(p), math.nan)
    idx = [i for i in np.argsort(p, kind="stable") if not math.isnan(p[i])]
    m, running = len(idx), 0.0
    for rank, i in enumerate(idx):  # smallest p first, multiplied by m, m-1, ...; monotone
        running = max(running, (m - rank) * p[i])
        out[i] = min(1.0, running)
    return out.tolist()


@dataclass
class Comparison:
    a: str
    b: str
    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    test: str  # "paired t" | "Welch t" | "none"
    statistic: float
    p: float
    p_holm: float = math.nan
    verdict: str = ""

    @property
    def diff(self) -> float:
        return self.mean_a - self.mean_b


def _test(a: tuple[list[int], list[float]], b: tuple[list[int], list[float]], paired_ok: bool
          ) -> tuple[str, float, float]:
    (seeds_a, xa), (seeds_b, xb) = a, b
    if len(xa) < 2 or len(xb) < 2:
        return "none", math.nan, math.nan
    if paired_ok and sorted(seeds_a) == sorted(seeds_b):
        ya = np.asarray([x for _, x in sorted(zip(seeds_a, xa))])
        yb = np.asarray([x for _, x in sorted(zip(seeds_b, xb))])
        d = ya - yb
        if np.all(d == d[0]):  # zero variance of the differences: t undefined
            return "paired t", math.nan, (1.0 if d[0] == 0 else 0.0)
        n = len(d)  # scipy.stats.ttest_rel: t = mean(d) / (sd(d) / sqrt(n)), n - 1 dof
        t = float(d.mean() / (d.std(ddof=1) / math.sqrt(n)))
        return "paired t", t, _two_sided_p(t, n - 1)
    xa_, xb_ = np.asarray(xa, dtype=float), np.asarray(xb, dtype=float)
    if xa_.std() == 0 and xb_.std() == 0:
        return "Welch t", math.nan, (1.0 if xa_[0] == xb_[0] else 0.0)
    # scipy.stats.ttest_ind(equal_var=False): Welch's t with the Welch-Satterthwaite dof
    va, vb = xa_.var(ddof=1) / len(xa_), xb_.var(ddof=1) / len(xb_)
    t = float((xa_.mean() - xb_.mean()) / math.sqrt(va + vb))
    df = float((va + vb) ** 2 / (va**2 / (len(xa_) - 1) + vb**2 / (len(xb_) - 1)))
    return "Welch t", t, _two_sided_p(t, df)


def compare_arms(samples: dict[str, tuple[list[int], list[float]]], direction: str, *,
                 paired: dict[tuple[str, str], bool] | None = None, alpha: float = ALPHA) -> list[Comparison]:
    """Every pair of arms (in the given order: a is listed before b), Holm-corrected over the
    pairs tested. `samples[arm] = (seeds, test values)`; `paired[(a, b)]` (default True) says
    whether the two arms share what a seed fixes (same model and dataset)."""
    names = list(samples)
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            test, stat, p = _test(samples[a], samples[b], (paired or {}).get((a, b), True))
            xa, xb = samples[a][1], samples[b][1]
            out.append(Comparison(a, b, len(xa), len(xb), float(np.mean(xa)) if xa else math.nan,
                                  float(np.mean(xb)) if xb else math.nan, test, stat, p))
    for c, adj in zip(out, holm([c.p for c in out])):
        c.p_holm = adj
        if math.isnan(adj):
            c.verdict = "not tested (fewer than 2 eval seeds)"
        elif adj < alpha and c.diff != 0:
            better = c.a if (c.diff > 0) == (direction == "maximize") else c.b
            c.verdict = f"{better} better"
        else:
            c.verdict = "not distinguishable"
    return out


def reaches(value: float, target: float, direction: str) -> bool:
    return value >= target if direction == "maximize" else value <= target


def majority_target(finals: dict[str, float], direction: str) -> float:
    """The validation value that a strict majority of arms reach by their last epoch: the k-th
    best of the arms' final mean validation values, k = n // 2 + 1."""
    values = sorted((v for v in finals.values() if math.isfinite(v)), reverse=direction == "maximize")
    if not values:
        return math.nan
    return values[len(values) // 2 + 1 - 1] if len(values) > 1 else values[0]


def time_to_target(curve: np.ndarray, axes: dict[str, np.ndarray], target: float, direction: str
                   ) -> dict[str, float]:
    """First evaluation point where `curve` (mean over seeds, one value per point) reaches the
    target, and each axis (mean over seeds per point: steps, samples, train_time_s, wall_time_s)
    there. `epochs` is the `epoch` axis when given (fractional under a steps, samples or seconds
    budget), else the 1-based point (one per epoch). inf everywhere when the target is never reached."""
    others = {k: v for k, v in axes.items() if k != "epoch"}
    for e, value in enumerate(curve):
        if math.isfinite(target) and reaches(float(value), target, direction):
            epochs = float(axes["epoch"][e]) if "epoch" in axes else float(e + 1)
            return {"epochs": epochs, **{k: float(v[e]) for k, v in others.items()}}
    return {"epochs": math.inf, **{k: math.inf for k in others}}


def performance_profile(times: dict[str, dict[str, float]], taus: Sequence[float]) -> dict[str, list[float]]:
    """times[task][method] = cost to the target (inf when not reached; a method absent from a task
    counts as not reached). Returns rho[method][i] = share of tasks with cost <= taus[i] x the
    task's best cost (Dolan & Moré 2002, as used by AlgoPerf)."""
    methods = sorted({m for per_task in times.values() for m in per_task})
    ratios: dict[str, list[float]] = {m: [] for m in methods}
    for per_task in times.values():
        best = min(per_task.values(), default=math.inf)
        for m in methods:
            t = per_task.get(m, math.inf)
            if not math.isfinite(t):
                ratios[m].append(math.inf)
            else:  # t finite implies best finite
                ratios[m].append(t / best if best > 0 else (1.0 if t == best else math.inf))
    n = max(len(times), 1)
    return {m: [sum(r <= tau for r in ratios[m]) / n for tau in taus] for m in methods}


def ranks(values: dict[str, float], direction: str) -> dict[str, float]:
    """Rank 1 = best; ties share the mean rank; NaN values rank last."""
    names = list(values)
    key = np.array([values[n] if math.isfinite(values[n]) else (-math.inf if direction == "maximize" else math.inf)
                    for n in names])
    order = -key if direction == "maximize" else key
    return {n: float(x) for n, x in zip(names, _average_ranks(order))}


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """scipy.stats.rankdata(x, method="average"): 1-based ranks, ties sharing their mean rank."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and x[order[j + 1]] == x[order[i]]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks
