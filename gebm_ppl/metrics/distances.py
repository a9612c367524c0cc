"""Distances between samples: Fréchet distance of Gaussian fits, unbiased KID (polynomial-kernel MMD²), RBF MMD²."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["KIDEstimate", "frechet_distance", "kid", "mmd"]

_BLOCK = 2048


def _as_2d(x, name: str, min_rows: int = 2) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"'{name}' should be a 2-D array [N, F]. Got shape {x.shape}.")
    if x.shape[0] < min_rows:
        raise ValueError(f"'{name}' should have at least {min_rows} rows. Got {x.shape[0]}.")
    if not np.isfinite(x).all():
        raise ValueError(f"'{name}' has NaN or inf entries.")
    return x


def _pair(a, b, min_rows: int = 2) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_2d(a, "feat_a", min_rows), _as_2d(b, "feat_b", min_rows)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"'feat_a' and 'feat_b' should have the same width. Got {a.shape[1]} and {b.shape[1]}.")
    return a, b


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(0.5 * (m + m.T))
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(feat_a, feat_b) -> float:
    """Fréchet distance between Gaussian fits of two samples of features (float64).

    FD = ‖μ_a − μ_b‖² + tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^{1/2}), with unbiased covariances; the trace of the
    square root is computed as Σ √λ_i(Σ_a^{1/2} Σ_b Σ_a^{1/2}) (symmetric eigenvalues, clipped at 0),
    so the result is real and ≥ 0 up to rounding. It is biased upwards for small samples: compare
    values computed with equal sample sizes.

    Args:
        feat_a: ``[N_a, F]`` array or tensor (N_a ≥ 2).
        feat_b: ``[N_b, F]`` array or tensor (N_b ≥ 2).
    """
    a, b = _pair(feat_a, feat_b)
    mu = a.mean(0) - b.mean(0)
    cov_a = np.atleast_2d(np.cov(a, rowvar=False))
    cov_b = np.atleast_2d(np.cov(b, rowvar=False))
    root_a = _sqrt_psd(cov_a)
    inner = root_a @ cov_b @ root_a
    cross = np.linalg.eigvalsh(0.5 * (inner + inner.T))
    tr_sqrt = np.sqrt(np.clip(cross, 0.0, None)).sum()
    return float(max(mu @ mu + np.trace(cov_a) + np.trace(cov_b) - 2.0 * tr_sqrt, 0.0))


def _kernel_sums(x: np.ndarray, y: np.ndarray, kernel) -> float:
    """Σ_ij k(x_i, y_j), computed in blocks."""
    total = 0.0
    for i in range(0, len(x), _BLOCK):
        for j in range(0, len(y), _BLOCK):
            total += float(kernel(x[i : i + _BLOCK], y[j : j + _BLOCK]).sum())
    return total


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray, kernel, diag) -> float:
    """Unbiased MMD² = mean_{i≠j} k(x_i,x_j) + mean_{i≠j} k(y_i,y_j) − 2 mean_{i,j} k(x_i,y_j)."""
    m, n = len(x), len(y)
    kxx = (_kernel_sums(x, x, kernel) - diag(x).sum()) / (m * (m - 1))
    kyy = (_kernel_sums(y, y, kernel) - diag(y).sum()) / (n * (n - 1))
    kxy = _kernel_sums(x, y, kernel) / (m * n)
    return kxx + kyy - 2.0 * kxy


class KIDEstimate(NamedTuple):
    """Kernel inception distance: the unbiased estimate and its standard error."""

    estimate: float
    stderr: float


def _blocks(n: int, subsets: int, subset_size: int | None, rng) -> list[np.ndarray]:
    rows = rng.permutation(n)
    if subset_size is not None:
        rows = rows[: subsets * subset_size]
    return np.array_split(rows, subsets)


def kid(feat_a, feat_b, subsets: int = 10, subset_size: int | None = None, seed: int = 0) -> KIDEstimate:
    """Unbiased kernel inception distance (Bińkowski et al. 2018, https://arxiv.org/abs/1801.01401).

    MMD² with the polynomial kernel k(x, y) = (xᵀy / F + 1)³:
    mean_{i≠j} k(a_i, a_j) + mean_{i≠j} k(b_i, b_j) − 2 mean_{i,j} k(a_i, b_j), the complete unbiased
    U-statistic over all rows used. Each sample is split at random into ``subsets`` disjoint blocks;
    the standard error is the delete-a-block jackknife, √((B−1)/B · Σ_k (θ₋ₖ − θ̄)²), with θ₋ₖ the
    statistic without block k of both samples. Same-distribution samples give |estimate| of the
    order of the standard error (there the jackknife is conservative: measured ≈ 1.4× the actual
    spread; for different distributions it matches it).

    Args:
        feat_a: ``[N_a, F]`` features.
        feat_b: ``[N_b, F]`` features.
        subsets: number of blocks B (≥ 2 for a standard error; 1 gives the estimate and NaN).
        subset_size: rows per block (default: all rows, in blocks as equal as possible);
            ``subsets · subset_size`` must not exceed ``min(N_a, N_b)``.
        seed: seed of the block assignment (and of the rows used when ``subset_size`` is given).
    """
    a, b = _pair(feat_a, feat_b)
    if isinstance(subsets, bool) or not isinstance(subsets, int | np.integer) or subsets < 1:
        raise ValueError(f"'subsets' should be a positive integer. Got {subsets!r}.")
    n = min(len(a), len(b))
    if subset_size is not None and subsets * subset_size > n:
        raise ValueError(
            f"'subsets' · 'subset_size' should be at most min(N_a, N_b) = {n} (disjoint blocks). "
            f"Got subsets={subsets}, subset_size={subset_size}."
        )
    if (subset_size if subset_size is not None else n // subsets) < 2:
        raise ValueError(
            f"each of the 'subsets' blocks needs ≥ 2 rows. Got subsets={subsets}, subset_size={subset_size} "
            f"for min(N_a, N_b) = {n} rows."
        )
    dim = a.shape[1]

    def kernel(x, y):
        return (x @ y.T / dim + 1.0) ** 3

    rng = np.random.default_rng(seed)
    ba, bb = _blocks(len(a), subsets, subset_size, rng), _blocks(len(b), subsets, subset_size, rng)
    na = np.array([len(i) for i in ba], dtype=np.float64)
    nb = np.array([len(i) for i in bb], dtype=np.float64)
    saa, sbb, sab = (np.zeros((subsets, subsets)) for _ in range(3))
    for i in range(subsets):
        for j in range(i, subsets):
            kaa, kbb = kernel(a[ba[i]], a[ba[j]]), kernel(b[bb[i]], b[bb[j]])
            if i == j:  # the U-statistic leaves out k(x_i, x_i)
                np.fill_diagonal(kaa, 0.0)
                np.fill_diagonal(kbb, 0.0)
            saa[i, j] = saa[j, i] = kaa.sum()
            sbb[i, j] = sbb[j, i] = kbb.sum()
        for j in range(subsets):
            sab[i, j] = kernel(a[ba[i]], b[bb[j]]).sum()

    def stat(keep: np.ndarray) -> float:
        m, k = na[keep].sum(), nb[keep].sum()
        return (
            saa[np.ix_(keep, keep)].sum() / (m * (m - 1))
            + sbb[np.ix_(keep, keep)].sum() / (k * (k - 1))
            - 2.0 * sab[np.ix_(keep, keep)].sum() / (m * k)
        )

    everything = np.ones(subsets, dtype=bool)
    estimate = float(stat(everything))
    if subsets == 1:
        return KIDEstimate(estimate, float("nan"))
    loo = np.array([stat(everything & (np.arange(subsets) != k)) for k in range(subsets)])
    stderr = float(np.sqrt((subsets - 1) / subsets * np.sum((loo - loo.mean()) ** 2)))
    return KIDEstimate(estimate, stderr)


def median_bandwidth(x, y, max_points: int = 1000, seed: int = 0) -> float:
    """Median heuristic: the median pairwise Euclidean distance in the pooled sample (≤ max_points rows)."""
    pooled = np.concatenate([_as_2d(x, "x"), _as_2d(y, "y")])
    if len(pooled) > max_points:
        pooled = pooled[np.random.default_rng(seed).choice(len(pooled), max_points, replace=False)]
    sq = (pooled * pooled).sum(1)
    d2 = np.clip(sq[:, None] + sq[None, :] - 2.0 * pooled @ pooled.T, 0.0, None)
    dist = np.sqrt(d2[np.triu_indices(len(pooled), 1)])
    med = float(np.median(dist))
    return med if med > 0 else 1.0


def mmd(x, y, bandwidth: float | None = None) -> float:
    """Unbiased MMD² with the Gaussian kernel k(x, y) = exp(−‖x − y‖² / (2σ²)).

    σ = ``bandwidth``, or the median pairwise distance of the pooled sample (median heuristic).
    The estimate can be slightly negative when the distributions are equal.

    Args:
        x: ``[N, D]`` sample (N ≥ 2).
        y: ``[M, D]`` sample (M ≥ 2).
        bandwidth: σ > 0, or None for the median heuristic.
    """
    x, y = _as_2d(x, "x"), _as_2d(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"'x' and 'y' should have the same width. Got {x.shape[1]} and {y.shape[1]}.")
    sigma = median_bandwidth(x, y) if bandwidth is None else float(bandwidth)
    if not np.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"'bandwidth' should be a positive number. Got {bandwidth!r}.")

    def kernel(u, v):
        d2 = (u * u).sum(1)[:, None] + (v * v).sum(1)[None, :] - 2.0 * u @ v.T
        return np.exp(-np.clip(d2, 0.0, None) / (2.0 * sigma**2))

    def diag(u):
        return np.ones(len(u))

    return float(_mmd2_unbiased(x, y, kernel, diag))
