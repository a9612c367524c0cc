"""The MAF protocol (Papamakarios, Pavlakou & Murray, 2017): power, gas, hepmass, miniboone, bsds300.

Each builder reads the file of MAF's data archive (Zenodo record 1161203) and applies the
published preprocessing of github.com/gpapamak/maf ``datasets/*.py``; the splits are fixed
(``seed`` is ignored). Reference: Papamakarios, Pavlakou & Murray (2017) "Masked Autoregressive
Flow for Density Estimation", NeurIPS, https://arxiv.org/abs/1705.07057
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .preprocess import tail_split_sizes
from .readers import SourceFormatError, read_csv_frame, read_hdf5_splits, read_npy, read_pickle_frame

__all__ = ["build_bsds300", "build_gas", "build_hepmass", "build_miniboone", "build_power"]

Splits3 = tuple[np.ndarray, np.ndarray, np.ndarray, dict]


def _tail_split(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n_train, n_val, _ = tail_split_sizes(x.shape[0])
    return x[:n_train], x[n_train : n_train + n_val], x[n_train + n_val :]


def _standardise_on(fit: np.ndarray, *parts: np.ndarray, ddof: int = 0) -> tuple[list[np.ndarray], dict]:
    mu, s = fit.mean(0), fit.std(0, ddof=ddof)
    return [(p - mu) / s for p in parts], {"mean": mu.tolist(), "std": s.tolist(), "ddof": ddof}


def _sizes(train, val, test) -> dict:
    return {"train": len(train), "val": len(val), "test": len(test)}


# Column order of MAF's power/data.npy: global active power, global reactive power, voltage,
# global intensity, sub-meterings 1-3, time of day.
_POWER_COLUMNS = (
    "global_active_power",
    "global_reactive_power",
    "voltage",
    "global_intensity",
    "sub_metering_1",
    "sub_metering_2",
    "sub_metering_3",
    "time",
)


def build_power(paths: dict[str, Path], seed: int | None = None) -> Splits3:
    """POWER: shuffle (RandomState 42), drop global intensity and reactive power, add MAF's uniform
    jitter (same draws in the same order), split, standardise on train + validation → 6 columns."""
    (path,) = paths.values()
    data = read_npy(path).copy()
    if data.shape[1] != 8:
        raise SourceFormatError(f"{str(path)!r}: expected 8 columns {list(_POWER_COLUMNS)}, got {data.shape[1]}.")
    rng = np.random.RandomState(42)
    rng.shuffle(data)
    n = data.shape[0]
    data = np.delete(data, [1, 3], axis=1)  # reactive power, intensity
    voltage = 0.01 * rng.rand(n, 1)
    active = 0.001 * rng.rand(n, 1)
    sub_metering = rng.rand(n, 3)
    data = data + np.hstack((active, voltage, sub_metering, np.zeros((n, 1))))
    train, val, test = _tail_split(data)
    (train, val, test), norm = _standardise_on(np.vstack((train, val)), train, val, test)
    params = {
        "columns": [c for i, c in enumerate(_POWER_COLUMNS) if i not in (1, 3)],
        "dropped_columns": ["global_reactive_power", "global_intensity"],
        "shuffle": "numpy.random.RandomState(42).shuffle",
        "jitter": {"global_active_power": 0.001, "voltage": 0.01, "sub_metering": 1.0, "time": 0.0},
        "split": {"rule": "test = last 10 %, val = last 10 % of the rest", **_sizes(train, val, test)},
        "standardisation": {"fitted_on": "train+val", **norm},
    }
    return train, val, test, params


def build_gas(paths: dict[str, Path], seed: int | None = None) -> Splits3:
    """GAS (ethylene + CO): drop Meth, Eth, Time; drop correlated (corr > 0.98) sensors; standardise
    on all rows (as published); split without shuffling → 8 columns."""
    (path,) = paths.values()
    frame = read_pickle_frame(path)
    missing = [c for c in ("Meth", "Eth", "Time") if c not in frame.columns]
    if missing:
        raise SourceFormatError(f"{str(path)!r}: expected columns Meth, Eth and Time; missing {missing}.")
    frame = frame.drop(columns=["Meth", "Eth", "Time"]).astype(np.float64)
    dropped = []
    while True:  # corr > 0.98 (signed, as published): drop the first such column, repeat
        counts = (frame.corr() > 0.98).to_numpy().sum(1)
        offenders = np.flatnonzero(counts > 1)
        if offenders.size == 0:
            break
        name = frame.columns[int(offenders[0])]
        dropped.append(str(name))
        frame = frame.drop(columns=[name])
    data = frame.to_numpy()
    (data,), norm = _standardise_on(data, data, ddof=1)
    train, val, test = _tail_split(data)
    params = {
        "columns": [str(c) for c in frame.columns],
        "dropped_columns": ["Meth", "Eth", "Time", *dropped],
        "split": {"rule": "no shuffle; test = last 10 %, val = last 10 % of the rest", **_sizes(train, val, test)},
        "standardisation": {"fitted_on": "all rows (as published)", **norm},
    }
    return train, val, test, params


def build_hepmass(paths: dict[str, Path], seed: int | None = None) -> Splits3:
    """HEPMASS: positive-class rows, label dropped (and the test file's extra trailing column);
    standardise on the training file; drop features whose smallest value occurs more than
    5 times in training (MAF's rule) and constant ones; validation = last 10 % of training → 21 columns."""
    train_frame = read_csv_frame(paths["hepmass/1000_train.csv"])
    test_frame = read_csv_frame(paths["hepmass/1000_test.csv"])
    parts = []
    for frame in (train_frame, test_frame):
        frame = frame[frame.iloc[:, 0] == 1]
        parts.append(frame.iloc[:, 1:].to_numpy())
    train, test = parts
    if test.shape[1] > train.shape[1]:  # "because the data set is messed up" (MAF): extra trailing column
        test = test[:, : train.shape[1]]
    if test.shape[1] != train.shape[1] or len(train) < 10 or len(test) == 0:
        raise SourceFormatError(
            f"hepmass: the train and test files disagree (train {train.shape}, test {test.shape} positive rows)."
        )
    names = [str(c) for c in train_frame.columns[1:]]
    (train, test), norm = _standardise_on(train, train, test, ddof=1)
    remove = []
    for j in range(train.shape[1]):
        col = train[:, j]
        if not np.isfinite(col).all() or np.count_nonzero(col == col.min()) > 5:
            remove.append(j)
    keep = [j for j in range(train.shape[1]) if j not in remove]
    train, test = train[:, keep], test[:, keep]
    n_val = int(0.1 * train.shape[0])
    train, val = train[:-n_val], train[-n_val:]
    params = {
        "columns": [names[j] for j in keep],
        "dropped_columns": ["label", *(names[j] for j in remove)],
        "rows": "label == 1",
        "feature_rule": "drop features whose smallest training value occurs more than 5 times",
        "split": {"rule": "test file; val = last 10 % of the training file", **_sizes(train, val, test)},
        "standardisation": {"fitted_on": "training file", **norm},
    }
    return train, val, test, params


def build_miniboone(paths: dict[str, Path], seed: int | None = None) -> Splits3:
    """MiniBooNE: split (test = last 10 %, val = last 10 % of the rest), standardise on train + val → 43 columns."""
    (path,) = paths.values()
    data = read_npy(path)
    train, val, test = _tail_split(data)
    (train, val, test), norm = _standardise_on(np.vstack((train, val)), train, val, test)
    params = {
        "columns": list(range(data.shape[1])),
        "dropped_columns": [],
        "split": {"rule": "no shuffle; test = last 10 %, val = last 10 % of the rest", **_sizes(train, val, test)},
        "standardisation": {"fitted_on": "train+val", **norm},
    }
    return train, val, test, params


def build_bsds300(paths: dict[str, Path], seed: int | None = None) -> Splits3:
    """BSDS300 8×8 patches (63 dims, the last pixel dropped): the archive's train / validation / test as is."""
    (path,) = paths.values()
    train, val, test = read_hdf5_splits(path)
    params = {"split": {"rule": "the HDF5 file's train / validation / test", **_sizes(train, val, test)}}
    return train, val, test, params
