"""Label statistics of samples under a classifier: histogram, modes covered, KL to the label prior, confidence."""

from __future__ import annotations

import numpy as np

__all__ = ["MODE_MIN_RATIO", "confident_fraction", "label_histogram", "label_kl", "modes_covered"]

MODE_MIN_RATIO = 0.2  # a class is covered when its share of the samples is ≥ 0.2 × its share of the data


def _probs(probs) -> np.ndarray:
    if hasattr(probs, "detach"):
        probs = probs.detach().cpu().numpy()
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"'probs' should be class probabilities [N, K]. Got shape {p.shape}.")
    return p


def label_histogram(labels, num_classes: int) -> np.ndarray:
    """Shares of the classes, ``[num_classes]`` float64 summing to 1.

    Args:
        labels: ``[N]`` int labels, or ``[N, K]`` class probabilities (each row counts for its argmax).
        num_classes: K.
    """
    if hasattr(labels, "detach"):
        labels = labels.detach().cpu().numpy()
    y = np.asarray(labels)
    if y.ndim == 2:
        y = y.argmax(1)
    if y.ndim != 1 or len(y) == 0:
        raise ValueError(f"'labels' should be a non-empty [N] label or [N, K] probability array. Got {y.shape}.")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"'labels' should be integers in [0, {num_classes}). Got {y.dtype} in [{y.min()}, {y.max()}].")
    return np.bincount(y, minlength=num_classes) / len(y)


def _prior(prior, k: int) -> np.ndarray:
    p = np.full(k, 1.0 / k) if prior is None else np.asarray(prior, dtype=np.float64)
    if p.shape != (k,) or np.any(p < 0) or not np.isclose(p.sum(), 1.0):
        raise ValueError(f"'prior' should be {k} non-negative shares summing to 1. Got {p}.")
    return p


def modes_covered(hist, prior=None, min_ratio: float = MODE_MIN_RATIO) -> int:
    """Number of classes c whose share of the samples is at least ``min_ratio`` · prior_c.

    With the default 0.2 and ten balanced classes, a class needs ≥ 2 % of the samples.
    """
    h = np.asarray(hist, dtype=np.float64)
    p = _prior(prior, len(h))
    return int(np.sum((h >= min_ratio * p * (1 - 1e-9)) & (p > 0)))  # the tolerance: shares like 20 / 1000


def label_kl(hist, prior=None) -> float:
    """KL(hist ‖ prior) = Σ_c h_c log(h_c / p_c) in nats (0 log 0 = 0; inf if h_c > 0 where p_c = 0)."""
    h = np.asarray(hist, dtype=np.float64)
    p = _prior(prior, len(h))
    mask = h > 0
    if np.any(p[mask] == 0):
        return float("inf")
    return float(np.sum(h[mask] * (np.log(h[mask]) - np.log(p[mask]))))


def confident_fraction(probs, threshold: float = 0.9) -> float:
    """Share of samples whose largest class probability exceeds ``threshold`` (a sharpness proxy)."""
    p = _probs(probs)
    return float(np.mean(p.max(1) > threshold))
