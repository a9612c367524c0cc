"""A user's own data file (CSV, NPY or HDF5) as preprocessed train / validation / test splits."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .data import SourceFormatError, UCIData, file_digest
from .data.kexpfam import kexpfam_pipeline

__all__ = ["FORMATS", "MIN_ROWS", "load_file", "read_table"]

FORMATS: dict[str, str] = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".npy": "npy",
    ".h5": "hdf5",
    ".hdf5": "hdf5",
    ".hdf": "hdf5",
}
"""File suffix → format read by :func:`read_table`."""

MIN_ROWS = 20
"""Fewest rows :func:`load_file` accepts (the validation and test splits take 10 % each)."""

_DELIMITERS = ",;\t |"


def _fail(path: Path, what: str, detail: str) -> SourceFormatError:
    return SourceFormatError(f"could not read {str(path)!r} as {what}: {detail}")


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _read_csv(path: Path, delimiter: str | None) -> tuple[np.ndarray, list[str]]:
    try:
        with open(path, encoding="utf-8", newline="") as f:
            head = f.read(1 << 16)
    except UnicodeDecodeError as e:
        raise _fail(path, "a text table", f"it is not UTF-8 text ({e})") from e
    lines = [ln for ln in head.splitlines() if ln.strip()]
    if not lines:
        raise _fail(path, "a text table", "the file is empty")
    if delimiter is None:
        try:
            delimiter = csv.Sniffer().sniff("\n".join(lines[:20]), delimiters=_DELIMITERS).delimiter
        except csv.Error:
            delimiter = "," if "," in lines[0] else None  # None: any whitespace
    first = next(csv.reader([lines[0]], delimiter=delimiter or " ", skipinitialspace=True))
    first = [t.strip() for t in first if delimiter or t.strip()]
    has_header = not all(_is_number(t) for t in first)
    header = [t.strip().strip('"') for t in first] if has_header else [f"column {i}" for i in range(len(first))]
    try:
        x = np.loadtxt(path, delimiter=delimiter, skiprows=int(has_header), dtype=np.float64, ndmin=2,
                       encoding="utf-8")
    except ValueError as e:
        raise _fail(path, f"a numeric table separated by {delimiter or 'whitespace'!r}", str(e)) from e
    if x.shape[0] == 0:
        raise _fail(path, "a numeric table", "no data rows")
    if x.shape[1] != len(header):
        raise _fail(path, "a numeric table", f"the header has {len(header)} names but the rows {x.shape[1]} values")
    return x, header


def _read_npy(path: Path) -> np.ndarray:
    try:
        with open(path, "rb") as f:  # our own handle, so that a damaged file is closed whatever np.load does
            x = np.load(f, allow_pickle=False)
            holds = type(x).__name__
            x = x if isinstance(x, np.ndarray) else None  # an .npz archive gives an NpzFile read lazily from f
    except Exception as e:  # np.load raises many types on damaged files (BadZipFile, TokenError, ...)
        raise _fail(path, "a NumPy .npy array", f"{type(e).__name__}: {e}") from e
    if x is None:
        raise _fail(path, "a NumPy .npy array", f"it holds a {holds}")
    return x


def _hdf5_tables(h5) -> list[str]:
    names: list[str] = []
    h5.visititems(lambda name, obj: names.append(name) if getattr(obj, "ndim", 0) == 2 else None)
    return names


def _read_hdf5(path: Path, key: str | None) -> np.ndarray:
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            if key is None:
                tables = _hdf5_tables(h5)
                if len(tables) != 1:
                    detail = f"it holds {len(tables)} 2-D datasets {tables}; name one with 'key'"
                    raise _fail(path, "an HDF5 table", detail)
                key = tables[0]
            if key not in h5 or not hasattr(h5[key], "shape"):
                raise _fail(path, "an HDF5 table", f"no dataset {key!r}; 2-D datasets: {_hdf5_tables(h5)}")
            return np.asarray(h5[key][()])
    except (OSError, KeyError, RuntimeError, TypeError) as e:  # h5py raises all four on corrupt files
        raise _fail(path, "an HDF5 file", f"{type(e).__name__}: {e}") from e


def _select(x: np.ndarray, header: list[str], columns, drop, path: Path) -> tuple[np.ndarray, list[str], list[str]]:
    def index(c) -> int:
        if isinstance(c, str) and not c.lstrip("-").isdigit():
            if c not in header:
                raise ValueError(f"column {c!r} is not in {str(path)!r}; its columns are {header}.")
            return header.index(c)
        i = int(c)
        if not -len(header) <= i < len(header):
            raise ValueError(f"column index {i} is out of range for {str(path)!r} ({len(header)} columns).")
        return i % len(header)

    keep = list(range(len(header))) if columns is None else [index(c) for c in columns]
    dropped = set() if drop is None else {index(c) for c in drop}
    keep = [i for i in keep if i not in dropped]
    if len(set(keep)) != len(keep):
        raise ValueError(f"'columns' names a column twice: {[header[i] for i in keep]}.")
    if not keep:
        raise ValueError("no columns left after 'columns' / 'drop'.")
    removed = [h for i, h in enumerate(header) if i not in keep]
    return x[:, keep], [header[i] for i in keep], removed


def read_table(
    path: str | os.PathLike,
    *,
    key: str | None = None,
    delimiter: str | None = None,
    columns: Sequence[str | int] | None = None,
    drop: Sequence[str | int] | None = None,
) -> tuple[np.ndarray, list[str], list[str]]:
    """Read a numeric table ``[N, D]`` (float64) from a CSV, NPY or HDF5 file.

    * CSV (``.csv``, ``.tsv``, ``.txt``): the delimiter is sniffed unless given; a first row that is
      not all numbers is a header of column names.
    * NPY: a 2-D numeric array (no pickles).
    * HDF5 (``.h5``, ``.hdf5``, ``.hdf``): the 2-D dataset ``key``, or the only 2-D dataset in the file.

    Args:
        path: the file.
        key: HDF5 dataset name.
        delimiter: CSV delimiter (default: sniffed).
        columns: columns to keep, by name (CSV header) or 0-based index (default: all).
        drop: columns to remove, by name or index.

    Returns:
        ``(x, names, removed)``: the ``[N, D]`` array, the kept column names and the removed ones.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: an unknown suffix, an unparsable file (:class:`gebm_ppl.data.SourceFormatError`),
            a non-numeric or non-2-D array, or unknown columns.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no data file at {str(path)!r}.")
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"cannot tell the format of {str(path)!r}: expected a suffix in {sorted(FORMATS)}.")
    if fmt == "csv":
        x, header = _read_csv(path, delimiter)
    else:
        x = _read_npy(path) if fmt == "npy" else _read_hdf5(path, key)
        if x.ndim != 2 or not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
            raise _fail(path, "a table", f"expected a 2-D real numeric array [N, D], got {x.dtype} of shape {x.shape}")
        header = [f"column {i}" for i in range(x.shape[1])]
    x, names, removed = _select(np.asarray(x, dtype=np.float64), header, columns, drop, path)
    return x, names, removed


def load_file(
    path: str | os.PathLike,
    seed: int = 0,
    *,
    key: str | None = None,
    delimiter: str | None = None,
    columns: Sequence[str | int] | None = None,
    drop: Sequence[str | int] | None = None,
) -> UCIData:
    """Read a user's data file and preprocess it like the kexpfam benchmark datasets.

    The rows are shuffled with ``seed`` and split into train / validation / test (test = last 10 %,
    validation = min(10 % of the rest, 1000)); every column is dequantised with uniform noise of ±
    the median gap between its unique training values (negligible for continuous columns), and
    the data are whitened with the mean and PCA matrix of the training split only
    (:func:`gebm_ppl.data.kexpfam.kexpfam_pipeline`).

    Args:
        path: a CSV, NPY or HDF5 file (see :func:`read_table`).
        seed: shuffling and dequantisation seed.
        key: HDF5 dataset name.
        delimiter: CSV delimiter (default: sniffed).
        columns: columns to keep (names or 0-based indices).
        drop: columns to remove.

    Returns:
        :class:`gebm_ppl.data.UCIData` with float32 ``train``, ``val``, ``test`` ``[N, D]`` and
        ``metadata`` (protocol ``"user"``, source path and sha256, preprocessing parameters).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: unreadable file, NaN/inf entries, fewer than :data:`MIN_ROWS` rows, fewer
            than 2 columns, or constant columns (which cannot be whitened).

    Example:
        >>> data = load_file("measurements.csv", seed=0, drop=["id"])  # doctest: +SKIP
        >>> data.train.shape  # doctest: +SKIP
        (810, 6)
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"'seed' should be a non-negative integer. Got {seed!r}.")
    path = Path(path)
    x, names, removed = read_table(path, key=key, delimiter=delimiter, columns=columns, drop=drop)
    bad = ~np.isfinite(x).all(1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ValueError(
            f"{str(path)!r} has {rows.size} rows with missing, NaN or inf values (first data rows: "
            f"{(rows[:5] + 1).tolist()}); remove or impute them first."
        )
    if x.shape[0] < MIN_ROWS:
        raise ValueError(f"{str(path)!r} has {x.shape[0]} rows; at least {MIN_ROWS} are needed to split it.")
    if x.shape[1] < 2:
        raise ValueError(f"{str(path)!r} has {x.shape[1]} column(s) after selection; a GEBM needs at least 2.")
    try:
        train, val, test, params = kexpfam_pipeline(x, int(seed), {"columns": names, "dropped_columns": removed})
    except ValueError as e:
        raise ValueError(f"{str(path)!r}: {e}") from e
    splits = [np.ascontiguousarray(s, dtype=np.float32) for s in (train, val, test)]
    sha = file_digest(path)
    metadata = {
        "name": path.stem,
        "protocol": "user",
        "description": f"user data file {path.name}" + (f" (dataset {key!r})" if key else ""),
        "dim": int(splits[0].shape[1]),
        "sizes": {k: int(s.shape[0]) for k, s in zip(("train", "val", "test"), splits, strict=True)},
        "seed": int(seed),
        "sources": [{"path": path.name, "location": str(path.resolve()), "sha256": sha, "expected_sha256": None,
                     "key": key}],
        "preprocessing": params,
    }
    return UCIData(*splits, metadata=metadata)
