"""Numeric preprocessing steps shared by the loaders: splits, dequantisation, whitening, column rules."""

from __future__ import annotations

import numpy as np

__all__ = [
    "dequantisation_widths",
    "drop_correlated",
    "kexpfam_split_sizes",
    "tail_split_sizes",
    "whiten_fit",
]


def kexpfam_split_sizes(n: int) -> tuple[int, int, int]:
    """(train, val, test) sizes of the kexpfam protocol: test = last 10 %, val = min(10 % of the rest, 1000)."""
    n_test = int(0.1 * n)
    n_val = min(int(0.1 * (n - n_test)), 1000)
    return n - n_test - n_val, n_val, n_test


def tail_split_sizes(n: int) -> tuple[int, int, int]:
    """(train, val, test) sizes of MAF's splits: test = last 10 %, val = last 10 % of the rest."""
    n_test = int(0.1 * n)
    n_val = int(0.1 * (n - n_test))
    return n - n_test - n_val, n_val, n_test


def dequantisation_widths(x: np.ndarray) -> np.ndarray:
    """Per column, the median gap between consecutive unique values (0 for a constant column), ``[D]``."""
    widths = np.zeros(x.shape[1])
    for d in range(x.shape[1]):
        gaps = np.diff(np.unique(x[:, d]))
        widths[d] = float(np.median(gaps)) if gaps.size else 0.0
    return widths


def whiten_fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """PCA whitening fitted on ``x`` ``[N, D]``: mean ``[D]`` and matrix W ``[D, D]``.

    With x − m = U S Vᵀ (thin SVD), W = V S⁻¹ √N, so (x − m) W has identity covariance (ddof 0).
    A constant direction (zero singular value) raises ValueError.
    """
    mean = x.mean(0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    if s.size < x.shape[1] or s[-1] <= 1e-12 * max(s[0], 1e-300):
        raise ValueError(
            f"cannot whiten: the training data are degenerate (singular values {s.tolist()}); "
            "a column is constant or a linear combination of others."
        )
    return mean, vt.T / s * np.sqrt(x.shape[0])


def drop_correlated(x: np.ndarray, threshold: float = 0.98, absolute: bool = True) -> list[int]:
    """Indices of the columns kept by the rule of Papamakarios et al. (2017) and Wenliang et al. (2019).

    While some column has (|)correlation(|) > ``threshold`` with another one, drop the first such
    column and recompute the correlations. Returns the kept column indices in order.
    """
    keep = list(range(x.shape[1]))
    while True:
        c = np.corrcoef(x[:, keep], rowvar=False)
        if absolute:
            c = np.abs(c)
        counts = (c > threshold).sum(1)  # the diagonal counts once
        offenders = np.flatnonzero(counts > 1)
        if offenders.size == 0:
            return keep
        del keep[int(offenders[0])]
