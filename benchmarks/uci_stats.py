"""Statistics of the UCI benchmark over seeds: means ± se, pooled paired differences, robust means, outliers.

* over seeds: the mean of the per-seed test NLLs and its standard error sd/√S (S ≥ 2 seeds; with one
  seed, the per-example standard error);
* pooled paired differences: Δ_sj = NLL_method(x_sj) − NLL_ref(x_sj) for every test example j of every
  seed s, mean Δ̄ over all N = Σ n_s examples and se = sqrt(var(Δ)/N + Σ_s (n_s/N)² se(Â_s)²) (a GEBM's Â
  error shifts its seed's examples alike);
* robust figures of the pooled per-example NLLs: median and the 10 % trimmed mean (mean of the values
  between the 10 % and 90 % order statistics);
* original units: NLL_orig = NLL_white − log|det W| per seed (whitening fitted on that seed's training split);
* dominant test points: examples whose NLL lies so far above the median that they alone move a
  method's mean by more than ``threshold`` nats ((NLL_j − median)/n > threshold).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["dominant_points", "finite", "lpt_makespan", "mean_se", "pooled_paired", "trimmed_mean"]


def finite(x) -> bool:
    """Whether ``x`` is a finite real number (a bool, None, NaN or ±inf is not): the one check of JSON values."""
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def mean_se(values: Sequence[float], per_example_se: float | None = None) -> tuple[float, float | None, str]:
    """Mean and standard error over seeds (sd/√S, S ≥ 2), else the single seed's per-example se."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size >= 2:
        return float(arr.mean()), float(arr.std(ddof=1) / math.sqrt(arr.size)), "seeds"
    return float(arr.mean()), per_example_se, "test examples"


def trimmed_mean(values: np.ndarray, fraction: float = 0.1) -> float:
    """Mean of ``values`` without the lowest and highest ⌊fraction·n⌋ entries."""
    v = np.sort(np.asarray(values, dtype=np.float64).reshape(-1))
    k = int(math.floor(fraction * v.size))
    return float(v[k : v.size - k].mean())


def pooled_paired(
    deltas: Sequence[np.ndarray], shift_se: Sequence[float] | None = None
) -> dict[str, float]:
    """Δ pooled over seeds: ``mean``, ``se`` (with the per-seed shifts' errors), ``median``, ``n``, and the
    per-seed means' ``seed_mean`` ± ``seed_se`` (over seeds; None with one seed)."""
    deltas = [np.asarray(d, dtype=np.float64).reshape(-1) for d in deltas]
    allv = np.concatenate(deltas)
    n = allv.size
    shift_se = list(shift_se or [0.0] * len(deltas))
    extra = sum((d.size / n) ** 2 * float(s) ** 2 for d, s in zip(deltas, shift_se, strict=True))
    se = math.sqrt(allv.var(ddof=1) / n + extra) if n > 1 else math.inf
    means = [float(d.mean()) for d in deltas]
    seed_mean, seed_se, _ = mean_se(means)
    return {"mean": float(allv.mean()), "se": se, "median": float(np.median(allv)), "n": int(n),
            "seed_mean": seed_mean, "seed_se": seed_se if len(means) >= 2 else None}  # fmt: skip


def dominant_points(per_seed: dict[int, dict[str, np.ndarray]], threshold: float = 0.05,
                    limit: int = 5) -> list[dict]:  # fmt: skip
    """Test examples that alone move some method's mean NLL by more than ``threshold`` nats.

    ``per_seed``: {seed: {method: per-example test NLLs}}. Returns up to ``limit`` points, largest shift
    first: ``{"seed", "index"`` (0-based row of that seed's test split), ``"nll"`` {method: NLL},
    ``"shift"`` {method: (NLL − median)/n}``}``.
    """
    found = []
    for seed, by_method in per_seed.items():
        if not by_method:
            continue
        n = len(next(iter(by_method.values())))
        shifts = {m: (v - np.median(v)) / n for m, v in by_method.items()}
        worst = np.max(np.stack(list(shifts.values())), axis=0)
        for j in np.flatnonzero(worst > threshold):
            found.append({"seed": int(seed), "index": int(j), "max_shift": float(worst[j]),
                          "nll": {m: float(v[j]) for m, v in by_method.items()},
                          "shift": {m: float(s[j]) for m, s in shifts.items()}})  # fmt: skip
    found.sort(key=lambda p: -p["max_shift"])
    return found[:limit]


def lpt_makespan(costs: Sequence[float], workers: int) -> float:
    """Finish time of jobs with these costs on ``workers`` equal workers, longest job first (the greedy
    longest-processing-time schedule): an estimate of the wall time on a quiet machine from CPU times."""
    loads = [0.0] * max(int(workers), 1)
    for c in sorted(costs, reverse=True):
        i = loads.index(min(loads))
        loads[i] += float(c)
    return max(loads)
