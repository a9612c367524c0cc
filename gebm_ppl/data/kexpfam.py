"""The kexpfam protocol (Wenliang et al., 2019; used by Arbel et al., 2021): red/white wine, parkinsons, ...

Steps, for a dataset of N rows: select columns; shuffle the rows with ``seed``; split into
train / validation / test (test = last 10 %, validation = min(10 % of the rest, 1000));
dequantise every column with uniform noise of ± the median gap between its unique training
values; whiten with the mean and PCA matrix of the training part only.

Reference: Wenliang, Sutherland, Strathmann & Gretton (2019) "Learning deep kernels for
exponential family densities", ICML, https://arxiv.org/abs/1811.08357
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .preprocess import dequantisation_widths, drop_correlated, kexpfam_split_sizes, whiten_fit
from .readers import SourceFormatError, read_csv_frame, read_csv_matrix, read_npy

__all__ = ["build_hepmass", "build_miniboone", "build_parkinsons", "build_wine", "kexpfam_pipeline"]

Splits3 = tuple[np.ndarray, np.ndarray, np.ndarray, dict]


def kexpfam_pipeline(data: np.ndarray, seed: int, params: dict) -> Splits3:
    """Shuffle, split, dequantise and whiten ``data`` ``[N, D]`` (float64) as the module docstring says.

    Returns ``(train, val, test, params)`` with the preprocessing parameters added to ``params``:
    split sizes, dequantisation widths, whitening mean and matrix W, and log|det W|: a density
    p_w of the whitened data gives log p(x) = log p_w((x − mean) W) + log|det W| in original units.
    """
    rng = np.random.default_rng(seed)
    n = data.shape[0]
    data = data[rng.permutation(n)]
    n_train, n_val, n_test = kexpfam_split_sizes(n)
    widths = dequantisation_widths(data[:n_train])
    data = data + rng.uniform(-1.0, 1.0, size=data.shape) * widths
    mean, matrix = whiten_fit(data[:n_train])
    data = (data - mean) @ matrix
    params = dict(params)
    params.update(
        shuffle="numpy.random.default_rng(seed).permutation",
        split={
            "rule": "test = last 10 %, val = min(10 % of the rest, 1000)",
            "train": n_train,
            "val": n_val,
            "test": n_test,
        },
        dequantisation={"noise": "uniform(-w, w)", "widths": widths.tolist()},
        whitening={
            "kind": "pca",
            "fitted_on": "train",
            "formula": "x_white = (x - mean) @ matrix",
            "mean": mean.tolist(),
            "matrix": matrix.tolist(),
            "log_abs_det": float(np.linalg.slogdet(matrix)[1]),
        },
    )
    return data[:n_train], data[n_train : n_train + n_val], data[n_train + n_val :], params


def build_wine(paths: dict[str, Path], seed: int) -> Splits3:
    """Wine Quality (red or white): the 11 physicochemical columns; ``quality`` dropped."""
    (path,) = paths.values()
    raw, header = read_csv_matrix(path, ";", columns=12)
    params = {"columns": header[:-1], "dropped_columns": [header[-1]]}
    return kexpfam_pipeline(raw[:, :-1], seed, params)


def build_parkinsons(paths: dict[str, Path], seed: int) -> Splits3:
    """Parkinsons Telemonitoring: columns from ``test_time`` on, then drop |corr| > 0.98 → 15 columns."""
    (path,) = paths.values()
    raw, header = read_csv_matrix(path, ",", columns=22)
    first = header.index("test_time") if "test_time" in header else 3
    x, names = raw[:, first:], header[first:]
    keep = drop_correlated(x, 0.98, absolute=True)
    params = {
        "columns": [names[i] for i in keep],
        "dropped_columns": header[:first] + [n for i, n in enumerate(names) if i not in keep],
        "column_rule": "columns from test_time on; drop the first column with |corr| > 0.98 to another, repeat",
    }
    return kexpfam_pipeline(x[:, keep], seed, params)


# HEPMASS features f5, f9, f13, f17, f21 take few distinct values; Wenliang et al. drop them.
_HEPMASS_DISCRETE = ("f5", "f9", "f13", "f17", "f21")


def build_hepmass(paths: dict[str, Path], seed: int) -> Splits3:
    """HEPMASS (MAF archive's ``1000_train.csv`` then ``1000_test.csv``): positive class, f0..f26
    without the five discrete features → 22 columns."""
    frames = []
    for key in ("hepmass/1000_train.csv", "hepmass/1000_test.csv"):
        frame = read_csv_frame(paths[key])
        if frame.shape[1] < 28:
            raise SourceFormatError(
                f"{str(paths[key])!r}: expected a label column and 27 features (28+ columns), got {frame.shape[1]}."
            )
        positive = frame[frame.iloc[:, 0] == 1]
        frames.append(positive.iloc[:, 1:28].to_numpy())
    x = np.concatenate(frames)
    names = [f"f{i}" for i in range(27)]
    keep = [i for i, n in enumerate(names) if n not in _HEPMASS_DISCRETE]
    params = {
        "columns": [names[i] for i in keep],
        "dropped_columns": ["label", *_HEPMASS_DISCRETE, "mass"],
        "rows": "label == 1 rows of 1000_train.csv, then of 1000_test.csv",
    }
    return kexpfam_pipeline(x[:, keep], seed, params)


def build_miniboone(paths: dict[str, Path], seed: int) -> Splits3:
    """MiniBooNE (MAF archive's ``miniboone/data.npy``, outliers already removed): 43 columns."""
    (path,) = paths.values()
    x = read_npy(path)
    return kexpfam_pipeline(x, seed, {"columns": list(range(x.shape[1])), "dropped_columns": []})
