"""The kexpfam protocols (Wenliang et al., 2019; used by Arbel et al., 2021): red/white wine, parkinsons, ...

``"kexpfam"`` (the default), for a dataset of N rows: select columns; shuffle the rows with
``seed``; split into train / validation / test (test = last 10 %, validation = min(10 % of the
rest, 1000)); dequantise every column with uniform noise of ± the median gap between its unique
training values; whiten with the mean and PCA matrix of the training part only.

``"kexpfam-paper"``: the preprocessing of the authors' own code, step by step and with their random
stream (``numpy.random.RandomState(seed)``, the stream ``np.random.seed(seed)`` sets there; their
default seed is 1), so that ``seed`` s gives their ``load_data(name, seed=s)`` splits:

0. columns: as the default protocol, but the parkinsons correlation rule takes |corr| in its first
   pass only and the signed correlation afterwards, as their ``clean_data`` (the same 15 columns on
   the real file);
1. shuffle the rows (``shuffle``);
2. red / white wine only: add uniform(−w_j, w_j) noise to each column j, w_j the median gap between
   the unique values of the column over *all* rows (one ``rand(N)`` per column, in column order);
   parkinsons is not dequantised;
3. permute the columns (``permutation(D)``): folded into the whitening matrix here, so the columns
   keep their file order and ``x_white = (x − mean) @ matrix`` is their whitened data exactly;
4. whiten with statistics of *all* rows (train, validation and test): mean of all rows, then the
   SVD x − mean = U S Vᵀ of the first min(N, 10⁴) centred rows, W = V S⁻¹ √min(N, 10⁴);
5. split as the default protocol (test = last ⌊0.1 N⌋ rows, validation = the last
   min(⌊0.1 (N − n_test)⌋, 1000) rows before them).

Read (code not copied): ``MichaelArbel/GeneralizedEBM`` ``dataloader.py`` ("adapted from
deep-kexpfam/Datasets.py": ``RealDataset``, ``apply_whiten``, ``clean_data``, ``load_data``, which
sets ``dequantise=True`` for red and white wine only) and ``energy/Datasets.py``;
``kevin-w-li/deep-kexpfam`` ``Datasets.py`` (an earlier version: every column dequantised, fixed test
sizes 500 / 1000 / 1000, validation = 10 % of the rest without the 1000 cap) and
``maf/datasets/{redwine,whitewine,parkinsons}.py`` (the later wrappers pass ``dequantise=True`` for
the wines only). The later deep-kexpfam ``Datasets.py`` itself was not available to read; the GEBM
copy is the closest documented version and is the one implemented.

Reference: Wenliang, Sutherland, Strathmann & Gretton (2019) "Learning deep kernels for
exponential family densities", ICML, https://arxiv.org/abs/1811.08357
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .preprocess import dequantisation_widths, drop_correlated, kexpfam_split_sizes, whiten_fit
from .readers import SourceFormatError, read_csv_frame, read_csv_matrix, read_npy

__all__ = [
    "PAPER_SVD_ROWS",
    "build_hepmass",
    "build_miniboone",
    "build_parkinsons",
    "build_parkinsons_paper",
    "build_wine",
    "build_wine_paper",
    "kexpfam_pipeline",
    "paper_pipeline",
]

Splits3 = tuple[np.ndarray, np.ndarray, np.ndarray, dict]
PAPER_SVD_ROWS = 10**4  # the authors' code takes the SVD of the first 10⁴ centred rows


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


def _read_wine(paths: dict[str, Path]) -> tuple[np.ndarray, dict]:
    (path,) = paths.values()
    raw, header = read_csv_matrix(path, ";", columns=12)
    return raw[:, :-1], {"columns": header[:-1], "dropped_columns": [header[-1]]}


def _read_parkinsons(paths: dict[str, Path], paper: bool = False) -> tuple[np.ndarray, dict]:
    (path,) = paths.values()
    raw, header = read_csv_matrix(path, ",", columns=22)
    first = header.index("test_time") if "test_time" in header else 3
    x, names = raw[:, first:], header[first:]
    keep = _drop_correlated_paper(x, 0.98) if paper else drop_correlated(x, 0.98, absolute=True)
    rule = (
        "columns from test_time on; drop the first column with corr > 0.98 to another (|corr| in the first pass "
        "only, as the authors' clean_data), repeat"
        if paper
        else "columns from test_time on; drop the first column with |corr| > 0.98 to another, repeat"
    )
    params = {
        "columns": [names[i] for i in keep],
        "dropped_columns": header[:first] + [n for i, n in enumerate(names) if i not in keep],
        "column_rule": rule,
    }
    return x[:, keep], params


def _drop_correlated_paper(x: np.ndarray, threshold: float) -> list[int]:
    """The authors' column rule: drop the first column with |corr| > ``threshold`` to another, then repeat with the
    *signed* correlation (their ``clean_data`` takes the absolute value in the first pass only). On the real
    parkinsons file this keeps the same 15 columns as :func:`~gebm_ppl.data.preprocess.drop_correlated`."""
    keep = list(range(x.shape[1]))
    c = np.abs(np.corrcoef(x, rowvar=False))
    while True:
        offenders = np.flatnonzero((c > threshold).sum(1) > 1)  # the diagonal counts once
        if offenders.size == 0:
            return keep
        del keep[int(offenders[0])]
        c = np.corrcoef(x[:, keep], rowvar=False)


def build_wine(paths: dict[str, Path], seed: int) -> Splits3:
    """Wine Quality (red or white): the 11 physicochemical columns; ``quality`` dropped."""
    x, params = _read_wine(paths)
    return kexpfam_pipeline(x, seed, params)


def build_parkinsons(paths: dict[str, Path], seed: int) -> Splits3:
    """Parkinsons Telemonitoring: columns from ``test_time`` on, then drop |corr| > 0.98 → 15 columns."""
    x, params = _read_parkinsons(paths)
    return kexpfam_pipeline(x, seed, params)


def build_wine_paper(paths: dict[str, Path], seed: int) -> Splits3:
    """Wine Quality under ``"kexpfam-paper"``: the same 11 columns, dequantised, whitened on all rows."""
    x, params = _read_wine(paths)
    return paper_pipeline(x, seed, params, dequantise=True)


def build_parkinsons_paper(paths: dict[str, Path], seed: int) -> Splits3:
    """Parkinsons Telemonitoring under ``"kexpfam-paper"``: the same 15 columns, not dequantised, whitened on all
    rows."""
    x, params = _read_parkinsons(paths, paper=True)
    return paper_pipeline(x, seed, params, dequantise=False)


def _whiten_fit_paper(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Mean of all rows of ``x`` ``[N, D]``, and W = V S⁻¹ √n from the SVD of the first n = min(N, 10⁴) centred rows.

    Returns ``(mean [D], W [D, D], n)``; (x − mean) W has identity covariance (ddof 0) over those n rows,
    hence over all rows when N ≤ 10⁴. A zero singular value raises ValueError.
    """
    mean = x.mean(0)
    rows = (x - mean)[:PAPER_SVD_ROWS]
    _, s, vt = np.linalg.svd(rows, full_matrices=False)
    if s.size < x.shape[1] or s[-1] <= 1e-12 * max(s[0], 1e-300):
        raise ValueError(
            f"cannot whiten: the data are degenerate (singular values {s.tolist()}); "
            "a column is constant or a linear combination of others."
        )
    return mean, vt.T / s * np.sqrt(rows.shape[0]), int(rows.shape[0])


def paper_pipeline(data: np.ndarray, seed: int, params: dict, *, dequantise: bool) -> Splits3:
    """The ``"kexpfam-paper"`` steps of the module docstring on ``data`` ``[N, D]`` (float64): shuffle,
    dequantise (when ``dequantise``), permute the columns, whiten on all rows, split.

    Returns ``(train, val, test, params)`` (float64) with the parameters added to ``params``. The
    whitening recorded is x_white = (x − mean) @ matrix in the file's column order (matrix = the
    authors' W with its rows put back in file order, so log|det matrix| = log|det W|), hence
    log p(x) = log p_w(x_white) + log|det matrix| in original units, as for the default protocol.
    """
    rs = np.random.RandomState(seed)  # the legacy MT19937 stream of np.random.seed(seed)
    data = np.array(data, dtype=np.float64, copy=True)
    n, d = data.shape
    rs.shuffle(data)
    widths = dequantisation_widths(data) if dequantise else np.zeros(d)
    if dequantise:
        for j in range(d):
            data[:, j] += (rs.rand(n) * 2 - 1) * widths[j]
    perm = rs.permutation(d)
    mean_perm, w, svd_rows = _whiten_fit_paper(data[:, perm])
    white = (data[:, perm] - mean_perm) @ w
    mean = np.empty(d)
    mean[perm] = mean_perm
    matrix = w[np.argsort(perm)]  # (x − mean) @ matrix = (x[:, perm] − mean[perm]) @ w
    n_train, n_val, n_test = kexpfam_split_sizes(n)
    params = dict(params)
    params.update(
        shuffle="numpy.random.RandomState(seed).shuffle (rows), as np.random.seed(seed) + np.random.shuffle",
        split={
            "rule": "test = last 10 %, val = min(10 % of the rest, 1000)",
            "train": n_train,
            "val": n_val,
            "test": n_test,
        },
        dequantisation={
            "noise": "uniform(-w, w)" if dequantise else "none",
            "widths": widths.tolist(),
            "fitted_on": "all rows",
        },
        column_permutation=perm.tolist(),
        whitening={
            "kind": "pca",
            "fitted_on": "all rows",
            "svd_rows": svd_rows,
            "formula": "x_white = (x - mean) @ matrix",
            "mean": mean.tolist(),
            "matrix": matrix.tolist(),
            "log_abs_det": float(np.linalg.slogdet(matrix)[1]),
        },
    )
    return white[:n_train], white[n_train : n_train + n_val], white[n_train + n_val :], params


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
