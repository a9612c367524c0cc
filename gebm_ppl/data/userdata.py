"""A user's own data file (CSV, NPY or HDF5) as preprocessed train / validation / test splits.

Length: one job, a user's file to splits, but three readers (CSV column selection before parsing, NPY,
HDF5) with their own error messages, plus the split-size checks; each part is small.
"""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .fetch import file_digest
from .kexpfam import kexpfam_pipeline
from .load import UCIData
from .readers import SourceFormatError

__all__ = ["FORMATS", "INDEX_HEADERS", "MIN_ROWS", "MIN_SPLIT_ROWS", "MIN_TRAIN_PER_DIM", "NA_MARKERS",
           "WARN_SPLIT_ROWS", "WARN_TRAIN_PER_DIM", "check_split_sizes", "load_file", "read_table"]

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

MIN_SPLIT_ROWS = 10
"""Fewest validation and test rows :func:`load_file` accepts: with fewer, the test NLL's ± (its
standard error, ∝ 1/√rows) is as large as the NLL itself and early stopping follows noise."""
WARN_SPLIT_ROWS = 25
"""Below this many validation or test rows :func:`load_file` warns (a UserWarning): NLLs and their
differences are then too noisy to rank models."""
MIN_TRAIN_PER_DIM = 5
"""Fewest training rows per dimension accepted (the whitening alone fits D + D(D+1)/2 numbers)."""
WARN_TRAIN_PER_DIM = 20
"""Below this many training rows per dimension :func:`load_file` warns: a flow and an energy overfit."""


def _min_rows() -> int:
    from .preprocess import kexpfam_split_sizes

    return next(n for n in range(1, 10_000) if min(kexpfam_split_sizes(n)[1:]) >= MIN_SPLIT_ROWS)


MIN_ROWS = _min_rows()
"""Fewest rows :func:`load_file` accepts: test = 10 % and validation = 10 % of the rest must both
reach :data:`MIN_SPLIT_ROWS` (111 rows)."""

_DELIMITERS = ",;\t |"

NA_MARKERS = frozenset({"", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
                        "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"})
"""Cells read as a missing value (NaN), as pandas' ``read_csv`` reads them by default (its ``na_values``; those
starting with ``#`` excepted: ``#`` starts a comment here, as in numpy's ``loadtxt``)."""

INDEX_HEADERS = ("", "Unnamed: 0")
"""First-column headers that mark a pandas index (``DataFrame.to_csv`` writes a blank one): with whole-number
values, :func:`read_table` drops that column unless ``columns`` asks for it."""


def _fail(path: Path, what: str, detail: str) -> SourceFormatError:
    return SourceFormatError(f"could not read {str(path)!r} as {what}: {detail}")


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _read_text(path: Path, limit: int | None = None) -> str:
    """The file's text (UTF-8, BOM dropped); with ``limit``, only its first whole lines up to ``limit`` characters."""
    try:
        with open(path, encoding="utf-8-sig") as f:  # universal newlines, as numpy's loadtxt reads the file
            text = f.read(-1 if limit is None else limit)
            if limit is not None and len(text) == limit and "\n" in text:
                text = text[: text.rindex("\n") + 1]
    except UnicodeDecodeError as e:
        raise _fail(path, "a text table", f"it is not UTF-8 text ({e})") from e
    return text


def _csv_rows(path: Path, text: str, delimiter: str | None) -> tuple[list[list[str]], list[int], str | None]:
    """The non-blank, non-comment rows of a text table as string tokens, their 1-based file lines, the delimiter.

    As numpy's loadtxt reads them: ``#`` starts a comment to the end of the line.
    """
    if "\x00" in text:
        raise _fail(path, "a text table", "it holds NUL bytes (a binary file?)")
    numbered = [(i + 1, ln.split("#", 1)[0]) for i, ln in enumerate(text.split("\n"))]
    numbered = [(i, ln) for i, ln in numbered if ln.strip()]
    if not numbered:
        raise _fail(path, "a text table", "the file is empty")
    lines = [ln for _, ln in numbered]
    if delimiter is None:
        try:
            delimiter = csv.Sniffer().sniff("\n".join(lines[:20]), delimiters=_DELIMITERS).delimiter
        except csv.Error:
            delimiter = "," if "," in lines[0] else None  # None: any whitespace
    rows: list[list[str]] = []
    line_numbers: list[int] = []
    try:
        if delimiter in (None, " "):  # runs of spaces/tabs separate values (np.savetxt's default)
            reader = csv.reader([" ".join(ln.split()) for ln in lines], delimiter=" ")
        else:
            reader = csv.reader(lines, delimiter=delimiter, skipinitialspace=True)
        for row in reader:
            rows.append([t.strip() for t in row])
            line_numbers.append(numbered[reader.line_num - 1][0])
    except csv.Error as e:
        raise _fail(path, "a text table", f"line {numbered[min(reader.line_num, len(numbered)) - 1][0]}: {e}") from e
    return rows, line_numbers, delimiter


def _has_header(rows: list[list[str]]) -> bool:
    """A first row with a non-number where the rows below hold numbers (or with no number at all) is a header."""
    first = rows[0]
    numeric = [_is_number(t) for t in first]
    if all(numeric):
        return False
    if not any(numeric) or len(rows) == 1:
        return True
    below = rows[1:21]
    return any(not numeric[j] and all(j < len(r) and (_is_number(r[j]) or r[j] in NA_MARKERS) for r in below)
               for j in range(len(first)))


def _is_index_column(first_row: list[str], below: list[list[str]]) -> bool:
    """A pandas index: the header's first cell blank (or ``Unnamed: 0``) over whole numbers (0, 1, 2, ...)."""
    if first_row[0].strip('"').strip() not in INDEX_HEADERS or not below:
        return False
    cells = [r[0] if r else "" for r in below]
    return all(c.lstrip("-").isdigit() for c in cells)


def _read_csv(path: Path, delimiter: str | None, columns, drop) -> tuple[np.ndarray, list[str], list[str]]:
    """Select the columns (by name or 1-based index), then parse them: text columns are only an error if kept.

    The header, delimiter and columns come from the first lines; numpy's loadtxt then reads the kept
    columns (fast); if it fails (text, empty cells, ragged rows), a line-by-line reader gives the
    values (an empty cell as NaN) or an error naming rows, lines and columns.
    """
    rows, line_numbers, delimiter = _csv_rows(path, _read_text(path, 1 << 16), delimiter)
    has_header = _has_header(rows)
    width = len(rows[0])
    header = [t.strip('"') or f"column {j + 1}" for j, t in enumerate(rows[0])] if has_header else _names(width)
    if has_header and columns is None and width > 1 and _is_index_column(rows[0], rows[1:]):
        drop = [*(drop or []), 1]
        warnings.warn(
            f"{str(path)!r}: the first column has a blank header ({rows[0][0].strip(chr(34))!r}) over whole numbers, "
            "a pandas index written by DataFrame.to_csv; it is dropped, not modelled (keep it by naming the columns "
            "with --columns / columns=, or write the file with index=False).",
            UserWarning,
            stacklevel=3,
        )
    keep, names, removed = _select(header, columns, drop, path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "input contained no data": the slow reader says it better
            x = np.loadtxt(path, delimiter=None if delimiter in (None, " ") else delimiter, comments="#",
                           skiprows=line_numbers[0] if has_header else 0, usecols=keep, quotechar='"',
                           dtype=np.float64, ndmin=2, encoding="utf-8-sig")
        if x.shape[0] > 0 and x.shape[1] == len(keep):
            return x, names, removed
    except (ValueError, IndexError):  # IndexError: loadtxt on rows too short for usecols
        pass
    rows, line_numbers, delimiter = _csv_rows(path, _read_text(path), delimiter)
    if has_header:
        rows, line_numbers = rows[1:], line_numbers[1:]
    if not rows:
        raise _fail(path, "a numeric table", "no data rows")
    for r, (row, line) in enumerate(zip(rows, line_numbers, strict=True)):
        if len(row) != width:
            first = "the header has" if has_header else "the first row has"
            detail = (f"data row {r + 1} (line {line}) has {len(row)} values but {first} {width}"
                      f" (values separated by {delimiter or 'whitespace'!r}; set the delimiter if that is wrong)")
            raise _fail(path, "a table", detail)
    x = np.empty((len(rows), len(keep)), dtype=np.float64)
    text_columns = []
    for k, j in enumerate(keep):
        col = np.array([row[j] for row in rows], dtype=str)
        empty = np.isin(col, list(NA_MARKERS))
        x[empty, k] = np.nan  # a missing value ('', 'NA', ...): load_file reports the rows, counted as below
        try:
            x[~empty, k] = col[~empty].astype(np.float64)
        except ValueError:
            bad = [int(r) for r in np.flatnonzero(~empty) if not _is_number(col[r])]
            examples = list(dict.fromkeys(str(col[r]) for r in bad))[:3]
            text_columns.append((j, header[j], bad[0], examples))
    if text_columns:
        shown = "; ".join(
            f"column {j + 1} {name!r} (values such as {', '.join(map(repr, ex))}; first at data row {r + 1}, "
            f"line {line_numbers[r]})"
            for j, name, r, ex in text_columns
        )
        ids = [name if has_header else str(j + 1) for j, name, _, _ in text_columns]
        raise _fail(
            path,
            "a numeric table",
            f"{len(text_columns)} of the selected columns {'is' if len(text_columns) == 1 else 'are'} not numeric: "
            f"{shown}. Leave {'it' if len(text_columns) == 1 else 'them'} out with --drop {','.join(ids)} "
            f"(Python: drop={ids!r}), or choose the columns to keep with --columns.",
        )
    return x, names, removed


def _names(width: int) -> list[str]:
    return [f"column {j + 1}" for j in range(width)]


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


def _select(header: list[str], columns, drop, path: Path) -> tuple[list[int], list[str], list[str]]:
    """0-based positions of the kept columns, their names and the removed names.

    A column is named by its header name, or by its 1-based index (1 = first column, −1 = last).
    """

    def index(c) -> int:
        if isinstance(c, str) and c in header:
            return header.index(c)
        text = str(c).strip()
        if isinstance(c, bool) or not text.lstrip("-").isdigit():
            raise ValueError(f"column {c!r} is not in {str(path)!r}; its columns are {header}.")
        i = int(text)
        if i == 0:
            raise ValueError(f"column index 0: column indices count from 1 (1 = the first column, -1 = the last); "
                             f"{str(path)!r} has {len(header)} columns.")
        if not -len(header) <= i <= len(header):
            raise ValueError(f"column index {i} is out of range for {str(path)!r} ({len(header)} columns, "
                             "counted from 1).")
        return i - 1 if i > 0 else i % len(header)

    keep = list(range(len(header))) if columns is None else [index(c) for c in columns]
    dropped = set() if drop is None else {index(c) for c in drop}
    keep = [i for i in keep if i not in dropped]
    if len(set(keep)) != len(keep):
        raise ValueError(f"'columns' names a column twice: {[header[i] for i in keep]}.")
    if not keep:
        raise ValueError("no columns left after 'columns' / 'drop'.")
    removed = [h for i, h in enumerate(header) if i not in keep]
    return keep, [header[i] for i in keep], removed


def read_table(
    path: str | os.PathLike,
    *,
    key: str | None = None,
    delimiter: str | None = None,
    columns: Sequence[str | int] | None = None,
    drop: Sequence[str | int] | None = None,
) -> tuple[np.ndarray, list[str], list[str]]:
    """Read a numeric table ``[N, D]`` (float64) from a CSV, NPY or HDF5 file.

    * CSV (``.csv``, ``.tsv``, ``.txt``): the delimiter is sniffed unless given; a first row with
      names where the rows below hold numbers is a header; blank lines and lines starting with ``#``
      are skipped. Columns are selected first and only the kept ones are parsed, so a text column
      can be left out with ``drop``; an empty cell or a pandas NA marker (:data:`NA_MARKERS`: ``NA``,
      ``N/A``, ``NULL``, ...) reads as NaN (a missing value). A first column with a blank header over
      whole numbers (a pandas index, :data:`INDEX_HEADERS`) is dropped with a UserWarning unless
      ``columns`` is given.
    * NPY: a 2-D numeric array (no pickles).
    * HDF5 (``.h5``, ``.hdf5``, ``.hdf``): the 2-D dataset ``key``, or the only 2-D dataset in the file.

    Args:
        path: the file.
        key: HDF5 dataset name.
        delimiter: CSV delimiter (default: sniffed).
        columns: columns to keep, by name (CSV header) or 1-based index, −1 for the last (default: all).
        drop: columns to remove, by name or 1-based index.

    Returns:
        ``(x, names, removed)``: the ``[N, D]`` array, the kept column names and the removed ones
        (a file without a header names its columns ``"column 1"``, ``"column 2"``, ...).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: an unknown suffix, an unparsable file (:class:`gebm_ppl.data.SourceFormatError`,
            naming kept text columns and the ``drop`` that leaves them out), a non-numeric or non-2-D
            array, or unknown columns. Rows and columns in messages count from 1 (data rows: the
            header not counted; CSV messages add the file line).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no data file at {str(path)!r}.")
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"cannot tell the format of {str(path)!r}: expected a suffix in {sorted(FORMATS)}.")
    if fmt == "csv":
        return _read_csv(path, delimiter, columns, drop)
    x = _read_npy(path) if fmt == "npy" else _read_hdf5(path, key)
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise _fail(path, "a table", f"expected a 2-D real numeric array [N, D], got {x.dtype} of shape {x.shape}")
    keep, names, removed = _select(_names(x.shape[1]), columns, drop, path)
    return np.asarray(x[:, keep], dtype=np.float64), names, removed


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
        columns: columns to keep (names or 1-based indices).
        drop: columns to remove.

    Returns:
        :class:`gebm_ppl.data.UCIData` with float32 ``train``, ``val``, ``test`` ``[N, D]`` and
        ``metadata`` (protocol ``"user"``, source path and sha256, preprocessing parameters).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: unreadable file, NaN/inf entries, empty cells or NA markers (naming the rows),
            fewer than 2 columns, splits too small (:func:`check_split_sizes`), or constant columns
            (named, with the ``drop`` that leaves them out: they cannot be whitened).

    Warns:
        UserWarning: splits small enough to make NLLs noisy (:func:`check_split_sizes`); a pandas index
            column dropped (:func:`read_table`).

    Example:
        >>> data = load_file("measurements.csv", seed=0, drop=["id"])  # doctest: +SKIP
        >>> data.train.shape  # doctest: +SKIP
        (810, 6)
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"'seed' should be a non-negative integer. Got {seed!r}.")
    path = Path(path)
    x, names, removed = read_table(path, key=key, delimiter=delimiter, columns=columns, drop=drop)
    finite = np.isfinite(x)
    bad = ~finite.all(1)
    if bad.any():
        rows = np.flatnonzero(bad)
        cols = [names[j] for j in np.flatnonzero(~finite.all(0))]
        raise ValueError(
            f"{str(path)!r} has {rows.size} rows with missing, NaN or inf values (first data rows: "
            f"{(rows[:5] + 1).tolist()}; data rows count from 1, the header not counted; in columns {cols}); "
            "remove or impute them first."
        )
    if x.shape[1] < 2:
        raise ValueError(f"{str(path)!r} has {x.shape[1]} column(s) after selection; a GEBM needs at least 2.")
    check_split_sizes(x.shape[0], x.shape[1], what=repr(str(path)))
    constant = [names[j] for j in np.flatnonzero(np.ptp(x, axis=0) == 0)]
    if constant:
        raise ValueError(
            f"{str(path)!r}: cannot whiten: {len(constant)} column(s) {constant} hold one value in every row "
            f"(a constant column carries no information and has no density); leave "
            f"{'it' if len(constant) == 1 else 'them'} out with --drop {','.join(constant)} "
            f"(Python: drop={constant!r})."
        )
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


def check_split_sizes(n: int, dim: int, what: str = "the data") -> tuple[int, int, int]:
    """The kexpfam split sizes of ``n`` rows of ``dim`` columns, refused or warned about when too small.

    Refused (ValueError) below :data:`MIN_SPLIT_ROWS` validation or test rows or below
    :data:`MIN_TRAIN_PER_DIM` · dim training rows; a UserWarning below :data:`WARN_SPLIT_ROWS` or
    :data:`WARN_TRAIN_PER_DIM` · dim. The test NLL is a mean over the test rows, so its standard
    error shrinks only as 1/√rows.
    """
    from .preprocess import kexpfam_split_sizes

    train, val, test = kexpfam_split_sizes(n)
    sizes = f"{n} rows split into {train} training, {val} validation and {test} test rows"

    def rows_for(split_rows: int, per_dim: int) -> int:
        return next(m for m in range(n, 10**9) if min(kexpfam_split_sizes(m)[1:]) >= split_rows
                    and kexpfam_split_sizes(m)[0] >= per_dim * dim)

    if min(val, test) < MIN_SPLIT_ROWS or train < MIN_TRAIN_PER_DIM * dim:
        raise ValueError(
            f"{what}: {sizes} (test = 10 %, validation = 10 % of the rest); at least {MIN_SPLIT_ROWS} validation "
            f"and test rows and {MIN_TRAIN_PER_DIM} training rows per column ({MIN_TRAIN_PER_DIM * dim}) are "
            f"needed: with fewer the test NLL's standard error is as large as the NLL and early stopping follows "
            f"noise. Provide at least {rows_for(MIN_SPLIT_ROWS, MIN_TRAIN_PER_DIM)} rows."
        )
    if min(val, test) < WARN_SPLIT_ROWS or train < WARN_TRAIN_PER_DIM * dim:
        warnings.warn(
            f"{what}: only {sizes}; below {WARN_SPLIT_ROWS} validation/test rows or {WARN_TRAIN_PER_DIM} training "
            f"rows per column the NLLs are noisy (their ± is large) and the models overfit; "
            f"{rows_for(WARN_SPLIT_ROWS, WARN_TRAIN_PER_DIM)} rows or more give usable estimates.",
            UserWarning,
            stacklevel=3,
        )
    return train, val, test
