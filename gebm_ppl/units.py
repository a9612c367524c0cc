"""Units and verdicts: NLLs from whitened (PCA) coordinates back to the data's own units, paired comparisons.

User data and the kexpfam datasets are modelled in whitened coordinates x_w = W (x − μ) (stored as
``x_white = (x - mean) @ matrix``, so W = matrixᵀ), fitted on the training split. A density p_w of
x_w is the density p(x) = p_w(W (x − μ)) · |det W| of x, hence

    NLL_orig = NLL_white − log|det W|        (nats per example; log|det W| is ``log_abs_det``)

The shift is the same for every model on the same data, so differences of NLLs, their standard
errors and verdicts do not depend on the units.

The user-data pipeline also dequantises every column with uniform noise in (−w_j, w_j) (w_j the
median gap between its training values, negligible for continuous columns): NLLs in original
units are those of the jittered values, a density, not the probability mass of a discrete column.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

__all__ = [
    "column_names",
    "log_abs_det",
    "nll_to_original",
    "paired_difference",
    "to_original",
    "to_whitened",
    "verdict",
    "whitening",
]


def _preprocessing(metadata) -> Mapping:
    """The ``preprocessing`` block from a UCIData, its ``metadata`` dict, or the block itself."""
    metadata = getattr(metadata, "metadata", metadata)
    if not isinstance(metadata, Mapping):
        raise TypeError(f"expected a dataset, its metadata or its 'preprocessing' dict; got {type(metadata).__name__}.")
    pre = metadata.get("preprocessing", metadata)
    if not isinstance(pre, Mapping) or "whitening" not in pre:
        raise ValueError(
            "these metadata record no whitening (no 'preprocessing.whitening'): the data were not whitened by "
            "gebm_ppl, so their NLLs are already in the units of the data."
        )
    return pre


def whitening(metadata) -> tuple[np.ndarray, np.ndarray, float]:
    """``(mean [D], matrix [D, D], log|det matrix|)`` of x_white = (x − mean) @ matrix, from the metadata."""
    w = _preprocessing(metadata)["whitening"]
    mean = np.asarray(w["mean"], dtype=np.float64)
    matrix = np.asarray(w["matrix"], dtype=np.float64)
    if mean.ndim != 1 or matrix.shape != (mean.size, mean.size):
        raise ValueError(f"whitening metadata: mean of shape {mean.shape} and matrix of shape {matrix.shape} "
                         "do not fit (expected [D] and [D, D]).")
    sign, logdet = np.linalg.slogdet(matrix)
    if sign == 0:
        raise ValueError("whitening metadata: the matrix is singular.")
    return mean, matrix, float(logdet)


def log_abs_det(metadata) -> float:
    """log|det W| of the whitening map: NLL_orig = NLL_white − log|det W| (nats)."""
    return whitening(metadata)[2]


def nll_to_original(nll_white, metadata):
    """NLL (nats, per example) of a density of the whitened data, in the data's original units.

    NLL_orig = NLL_white − log|det W| for x_white = W (x − mean): the density of x is the density of
    x_white times |det W|. Works on a number or an array of per-example NLLs (same type back).
    """
    shift = log_abs_det(metadata)
    if isinstance(nll_white, int | float | np.floating):
        return float(nll_white) - shift
    return np.asarray(nll_white, dtype=np.float64) - shift


def to_original(x_white, metadata) -> np.ndarray:
    """Points ``[..., D]`` from whitened coordinates to the data's units: x = x_white @ matrix⁻¹ + mean."""
    mean, matrix, _ = whitening(metadata)
    x_white = np.asarray(x_white, dtype=np.float64)
    if x_white.shape[-1:] != mean.shape:
        raise ValueError(f"expected points of shape [..., {mean.size}], got {x_white.shape}.")
    return np.linalg.solve(matrix.T, x_white.reshape(-1, mean.size).T).T.reshape(x_white.shape) + mean


def to_whitened(x, metadata) -> np.ndarray:
    """Points ``[..., D]`` in the data's units to whitened coordinates: x_white = (x − mean) @ matrix."""
    mean, matrix, _ = whitening(metadata)
    x = np.asarray(x, dtype=np.float64)
    if x.shape[-1:] != mean.shape:
        raise ValueError(f"expected points of shape [..., {mean.size}], got {x.shape}.")
    return (x - mean) @ matrix


def column_names(metadata) -> list[str]:
    """The names of the data's columns, in the order of the whitened coordinates' inputs."""
    pre = _preprocessing(metadata)
    dim = len(pre["whitening"]["mean"])
    names = list(pre.get("columns") or [])
    return names if len(names) == dim else [f"column {j + 1}" for j in range(dim)]


def paired_difference(delta_per_example) -> tuple[float, float, int]:
    """``(mean, standard error, n)`` of per-example differences Δᵢ (se = sd(Δ, ddof=1) / √n)."""
    delta = np.asarray(delta_per_example, dtype=np.float64).reshape(-1)
    if delta.size < 2:
        raise ValueError(f"a paired comparison needs at least 2 examples; got {delta.size}.")
    if not np.isfinite(delta).all():
        bad = np.flatnonzero(~np.isfinite(delta))
        raise ValueError(f"{bad.size} of the {delta.size} differences are NaN or infinite (first examples, counted "
                         f"from 1: {(bad[:5] + 1).tolist()}).")
    return float(delta.mean()), float(delta.std(ddof=1) / math.sqrt(delta.size)), int(delta.size)


def verdict(
    delta_per_example,
    *,
    model: str = "the GEBM",
    reference: str = "its base",
    unit: str = "nats",
    threshold: float = 2.0,
    digits: int = 3,
    extra_stderr: float = 0.0,
) -> str:
    """A one-line verdict on Δᵢ = NLL_model(xᵢ) − NLL_reference(xᵢ) over the same test rows (Δ < 0: model better).

    "the GEBM is better than its base by 0.123 ± 0.010 nats (paired over 500 rows, ± 1 se; 12.3 se from 0)";
    "worse than" when Δ > 0, and "no clear difference" when |mean Δ| < ``threshold`` standard errors.
    The ± is one standard error of the mean difference, sqrt(sd(Δ)²/n + ``extra_stderr``²) where
    ``extra_stderr`` is the error every Δᵢ shares (a GEBM's se(Â): Δᵢ = E(xᵢ) + Â); the differences do not
    depend on the units (whitened or original) since both NLLs shift by the same log|det W|.
    """
    if not (isinstance(threshold, int | float) and math.isfinite(threshold) and threshold > 0):
        raise ValueError(f"'threshold' should be a positive number of standard errors. Got {threshold!r}.")
    mean, se, n = paired_difference(delta_per_example)
    if extra_stderr:  # a shared error (inf with a single base sample: then nothing is clear)
        se = math.sqrt(se**2 + float(extra_stderr) ** 2)
    sig = abs(mean) / se if se > 0 else math.inf
    sig_text = "exactly" if sig == math.inf else f"{sig:.1f} se from 0"
    shared = " with the log-partition's error" if extra_stderr else ""
    detail = f"(paired over {n} rows, ± 1 se{shared}; {sig_text})"
    if sig < threshold:
        return (f"no clear difference between {model} and {reference}: Δ NLL = {mean:+.{digits}f} ± {se:.{digits}f} "
                f"{unit} {detail}, within {threshold:g} se of 0")
    word = "better" if mean < 0 else "worse"
    return f"{model} is {word} than {reference} by {abs(mean):.{digits}f} ± {se:.{digits}f} {unit} {detail}"
