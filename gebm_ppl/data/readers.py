"""Readers of the raw source formats (CSV, .npy, pandas pickle, HDF5), with errors that name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = [
    "SourceFormatError",
    "read_csv_frame",
    "read_csv_matrix",
    "read_hdf5_splits",
    "read_npy",
    "read_pickle_frame",
]


class SourceFormatError(ValueError):
    """A source file cannot be parsed in its expected format (truncated, corrupt or foreign)."""


def _fail(path: Path, what: str, e: BaseException | str) -> SourceFormatError:
    detail = f"{type(e).__name__}: {e}" if isinstance(e, BaseException) else e
    return SourceFormatError(f"could not read {str(path)!r} as {what} (truncated or corrupt file?): {detail}")


def read_csv_matrix(path: Path, delimiter: str, columns: int | None = None) -> tuple[np.ndarray, list[str]]:
    """A delimited text file with one header line → (float64 ``[N, C]``, header names).

    Raises:
        SourceFormatError: unparsable rows, ragged rows, or not ``columns`` columns.
    """
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            header = [h.strip().strip('"').strip() for h in f.readline().rstrip("\r\n").split(delimiter)]
            x = np.loadtxt(f, delimiter=delimiter, dtype=np.float64, ndmin=2)
    except (ValueError, UnicodeDecodeError) as e:
        raise _fail(path, f"a {delimiter!r}-separated table", e) from e
    if x.shape[0] == 0:
        raise _fail(path, f"a {delimiter!r}-separated table", "no data rows")
    if columns is not None and (x.shape[1] != columns or len(header) != columns):
        raise _fail(
            path,
            f"a {delimiter!r}-separated table",
            f"expected {columns} columns, got {x.shape[1]} (header has {len(header)})",
        )
    return x, header


def read_csv_frame(path: Path):
    """A comma-separated file with a header line → pandas DataFrame (the C parser, for large files)."""
    import pandas as pd

    path = Path(path)
    try:
        frame = pd.read_csv(path, index_col=False)
    except Exception as e:  # pandas raises ParserError, EmptyDataError, UnicodeDecodeError, ...
        raise _fail(path, "a comma-separated table", e) from e
    if len(frame) == 0:
        raise _fail(path, "a comma-separated table", "no data rows")
    try:
        frame = frame.astype(np.float64)
    except (TypeError, ValueError) as e:
        raise _fail(path, "a numeric comma-separated table", e) from e
    return frame


def read_npy(path: Path, ndim: int = 2) -> np.ndarray:
    """A NumPy ``.npy`` file holding a float array of ``ndim`` dimensions (no pickles)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:  # our own handle, so that a damaged file is closed whatever np.load does
            x = np.load(f, allow_pickle=False)
            if not isinstance(x, np.ndarray):  # an .npz archive: NpzFile, read lazily from f
                raise _fail(path, "a NumPy .npy array", f"it holds a {type(x).__name__} (an .npz archive?)")
    except Exception as e:  # np.load raises many types on damaged files (BadZipFile, TokenError, ...)
        if isinstance(e, SourceFormatError):
            raise
        raise _fail(path, "a NumPy .npy array", e) from e
    if x.ndim != ndim or not np.issubdtype(x.dtype, np.number):
        raise _fail(path, "a NumPy .npy array", f"expected a {ndim}-D numeric array, got {x.dtype} {x.shape}")
    return x.astype(np.float64, copy=False)


def read_pickle_frame(path: Path):
    """A pandas DataFrame pickle (MAF's ``gas/ethylene_CO.pickle``).

    Only open pickles from a trusted source: unpickling runs code.
    """
    import pandas as pd

    path = Path(path)
    try:
        frame = pd.read_pickle(path)
    except Exception as e:  # unpickling raises many types on torn files
        raise _fail(path, "a pandas DataFrame pickle", e) from e
    if not isinstance(frame, pd.DataFrame):
        raise _fail(path, "a pandas DataFrame pickle", f"it holds a {type(frame).__name__}")
    return frame


def read_hdf5_splits(path: Path, names: tuple[str, ...] = ("train", "validation", "test")) -> list[np.ndarray]:
    """The 2-D datasets ``names`` of an HDF5 file (MAF's ``BSDS300/BSDS300.hdf5``)."""
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            missing = [n for n in names if n not in f]
            if missing:
                raise _fail(path, "an HDF5 file of splits", f"missing datasets {missing}; found {sorted(f)}")
            out = [np.asarray(f[n][()], dtype=np.float64) for n in names]
    except (OSError, KeyError, RuntimeError, TypeError) as e:  # h5py raises all four on corrupt files
        raise _fail(path, "an HDF5 file", e) from e
    for n, x in zip(names, out, strict=True):
        if x.ndim != 2 or x.shape[1] != out[0].shape[1]:
            raise _fail(path, "an HDF5 file of splits", f"dataset {n!r} has shape {x.shape}")
    return out
