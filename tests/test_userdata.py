"""User data files (CSV, NPY, HDF5) → preprocessed splits: formats, column selection, whitening, bad input."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from gebm_ppl.data import SourceFormatError, UCIData
from gebm_ppl.data.userdata import MIN_ROWS, load_file, read_table


@pytest.fixture
def table() -> np.ndarray:
    """300 rows of a correlated 3-D Gaussian with a non-zero mean (seeded)."""
    rng = np.random.default_rng(0)
    a = np.array([[2.0, 0.0, 0.0], [1.0, 0.5, 0.0], [0.3, -0.2, 3.0]])
    return rng.normal(size=(300, 3)) @ a.T + np.array([10.0, -5.0, 1.0])


def write_all_formats(folder, x: np.ndarray) -> dict[str, dict]:
    """The same table in every supported layout; the value holds the read_table kwargs it needs."""
    np.savetxt(folder / "header.csv", x, delimiter=",", header="a,b,c", comments="")
    np.savetxt(folder / "semicolon.csv", x, delimiter=";")
    np.savetxt(folder / "quoted.csv", x, delimiter=";", header='"a";"b";"c"', comments="")
    np.savetxt(folder / "tabs.tsv", x, delimiter="\t")
    np.savetxt(folder / "spaces.txt", x)
    np.save(folder / "array.npy", x)
    with h5py.File(folder / "one.h5", "w") as f:
        f["group/table"] = x
        f["vector"] = np.arange(3.0)  # 1-D: not a candidate table
    with h5py.File(folder / "two.hdf5", "w") as f:
        f["x"] = x
        f["y"] = x[:, :2]
    return {
        "header.csv": {},
        "semicolon.csv": {},
        "quoted.csv": {},
        "tabs.tsv": {},
        "spaces.txt": {},
        "array.npy": {},
        "one.h5": {},
        "two.hdf5": {"key": "x"},
    }


def test_read_table_reads_every_format(tmp_path, table):
    for name, kwargs in write_all_formats(tmp_path, table).items():
        x, names, removed = read_table(tmp_path / name, **kwargs)
        np.testing.assert_allclose(x, table, rtol=1e-12, err_msg=name)
        assert len(names) == 3 and removed == []
    assert read_table(tmp_path / "header.csv")[1] == ["a", "b", "c"]
    assert read_table(tmp_path / "quoted.csv")[1] == ["a", "b", "c"]


def test_columns_and_drop_by_name_and_index(tmp_path, table):
    write_all_formats(tmp_path, table)
    x, names, removed = read_table(tmp_path / "header.csv", columns=["c", "a"])
    np.testing.assert_allclose(x, table[:, [2, 0]], rtol=1e-12)
    assert names == ["c", "a"] and removed == ["b"]
    x, names, removed = read_table(tmp_path / "array.npy", drop=["-1"])
    np.testing.assert_allclose(x, table[:, :2], rtol=1e-12)
    assert removed == ["column 3"]  # a file without a header names its columns from 1


def test_load_file_splits_and_whitens_with_training_statistics(tmp_path, table):
    write_all_formats(tmp_path, table)
    data = load_file(tmp_path / "header.csv", seed=3)
    assert isinstance(data, UCIData)
    # kexpfam sizes for n = 300: test = 30, val = min(27, 1000) = 27, train = 243
    assert (data.train.shape, data.val.shape, data.test.shape) == ((243, 3), (27, 3), (30, 3))
    assert data.train.dtype == np.float32
    # whitened with the training split: zero mean, identity covariance (ddof 0) on train only
    np.testing.assert_allclose(data.train.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(np.cov(data.train.T, ddof=0), np.eye(3), atol=1e-4)
    meta = data.metadata
    assert meta["protocol"] == "user" and meta["dim"] == 3 and meta["seed"] == 3
    assert meta["sizes"] == {"train": 243, "val": 27, "test": 30}
    assert len(meta["sources"][0]["sha256"]) == 64
    # the whitening map sends the raw rows to the splits (up to the tiny dequantisation noise)
    w = meta["preprocessing"]["whitening"]
    raw = np.concatenate([data.train, data.val, data.test]) @ np.linalg.inv(np.array(w["matrix"])) + w["mean"]
    widths = np.array(meta["preprocessing"]["dequantisation"]["widths"])
    nearest = np.linalg.norm(raw[:, None, :] - table[None], axis=-1).argmin(1)
    assert sorted(nearest.tolist()) == list(range(len(table)))  # a permutation of the rows
    assert (np.abs(raw - table[nearest]) <= widths + 1e-4).all()
    # deterministic for a seed, different for another one
    again = load_file(tmp_path / "header.csv", seed=3)
    np.testing.assert_array_equal(again.train, data.train)
    other = load_file(tmp_path / "header.csv", seed=4)
    assert not np.allclose(other.train[:5], data.train[:5])


@pytest.mark.parametrize(
    ("content", "suffix", "kwargs", "error", "match"),
    [
        ("a,b\n1,2\n3,zz\n", ".csv", {}, SourceFormatError, "could not read .* 'zz'"),
        ("", ".csv", {}, SourceFormatError, "empty"),
        ("a,b,c\n1,2\n", ".csv", {}, SourceFormatError, "could not read"),
        ("a,b\n1,2\n", ".csv", {"columns": ["z"]}, ValueError, "column 'z' is not in"),
        ("a,b\n1,2\n", ".csv", {"columns": ["5"]}, ValueError, "out of range"),
        ("a,b\n1,2\n", ".csv", {"columns": ["a", "a"]}, ValueError, "twice"),
        ("a,b\n1,2\n", ".csv", {"drop": ["a", "b"]}, ValueError, "no columns left"),
        ("1,2\n", ".parquet", {}, ValueError, "cannot tell the format"),
        (b"\x93NUMPY garbage", ".npy", {}, SourceFormatError, "NumPy .npy"),
        (b"not hdf5 at all", ".h5", {}, SourceFormatError, "HDF5"),
    ],
)
def test_read_table_bad_input(tmp_path, content, suffix, kwargs, error, match):
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(error, match=match):
        read_table(path, **kwargs)


def test_read_table_bad_arrays(tmp_path, table):
    with pytest.raises(FileNotFoundError, match="no data file"):
        read_table(tmp_path / "missing.csv")
    np.save(tmp_path / "vector.npy", np.arange(5.0))
    with pytest.raises(SourceFormatError, match="2-D real numeric"):
        read_table(tmp_path / "vector.npy")
    np.save(tmp_path / "text.npy", np.array([["a", "b"]]))
    with pytest.raises(SourceFormatError, match="2-D real numeric"):
        read_table(tmp_path / "text.npy")
    write_all_formats(tmp_path, table)
    with pytest.raises(SourceFormatError, match=r"2 2-D datasets \['x', 'y'\]; name one with 'key'"):
        read_table(tmp_path / "two.hdf5")
    with pytest.raises(SourceFormatError, match="no dataset 'nope'"):
        read_table(tmp_path / "two.hdf5", key="nope")


def test_load_file_bad_content(tmp_path, table):
    x = table.copy()
    x[[4, 17], 1] = np.nan
    np.save(tmp_path / "nan.npy", x)
    with pytest.raises(ValueError, match=r"2 rows with missing, NaN or inf values \(first data rows: \[5, 18\]"):
        load_file(tmp_path / "nan.npy")
    np.save(tmp_path / "short.npy", table[: MIN_ROWS - 1])
    with pytest.raises(ValueError, match=f"{MIN_ROWS - 1} rows split into .* Provide at least {MIN_ROWS} rows"):
        load_file(tmp_path / "short.npy")
    np.save(tmp_path / "one.npy", table[:, :1])
    with pytest.raises(ValueError, match="a GEBM needs at least 2"):
        load_file(tmp_path / "one.npy")
    constant = table.copy()
    constant[:, 2] = 1.0
    np.save(tmp_path / "constant.npy", constant)
    with pytest.raises(ValueError, match="cannot whiten"):
        load_file(tmp_path / "constant.npy")
    with pytest.raises(ValueError, match="'seed' should be a non-negative integer"):
        load_file(tmp_path / "constant.npy", seed=-1)


# ------------------------------------------------------------------------------------------ text columns
def _with_text_column(folder, table: np.ndarray, header: bool = True):
    """table + a yes/no text column in 4th place (1-based index 4), as a CSV with or without a header."""
    lines = ["a,b,c,label,d"] if header else []
    for i, row in enumerate(table):
        a, b, c = map(float, row)
        lines.append(f"{a!r},{b!r},{c!r},{'yes' if i % 2 else 'no'},{a - b!r}")
    path = folder / ("text.csv" if header else "text-noheader.csv")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_text_column_can_be_dropped_by_name_or_index(tmp_path, table):
    path = _with_text_column(tmp_path, table)
    for drop in (["label"], ["4"], [4], ["-2"]):
        x, names, removed = read_table(path, drop=drop)
        assert names == ["a", "b", "c", "d"] and removed == ["label"], drop
        np.testing.assert_allclose(x[:, :3], table, rtol=1e-15)
    x, names, removed = read_table(path, columns=["a", "b", "c"])
    assert names == ["a", "b", "c"] and removed == ["label", "d"]
    np.testing.assert_array_equal(x, table)
    x, names, _ = read_table(path, columns=["1", "3"])  # 1-based indices: the first and the third column
    assert names == ["a", "c"]
    np.testing.assert_array_equal(x, table[:, [0, 2]])
    assert load_file(path, drop=["label"]).dim == 4
    headerless = _with_text_column(tmp_path, table, header=False)
    x, names, removed = read_table(headerless, drop=["4"])
    assert names == ["column 1", "column 2", "column 3", "column 5"] and removed == ["column 4"]
    np.testing.assert_allclose(x[:, :3], table, rtol=1e-15)


def test_text_column_error_names_it_and_suggests_drop(tmp_path, table):
    path = _with_text_column(tmp_path, table)
    # the first row holding text is data row 1 ('no'), line 2 of the file (after the header)
    match = (r"1 of the selected columns is not numeric: column 4 'label' \(values such as 'no', 'yes'; "
             r"first at data row 1, line 2\)\. Leave it out with --drop label \(Python: drop=\['label'\]\)")
    with pytest.raises(SourceFormatError, match=match):
        read_table(path)
    with pytest.raises(SourceFormatError, match=r"--drop 4 \(Python: drop=\['4'\]\)"):
        read_table(_with_text_column(tmp_path, table, header=False))
    with pytest.raises(ValueError, match="column indices count from 1"):
        read_table(path, drop=["0"])


def test_empty_cell_and_nan_row_are_counted_alike(tmp_path, table):
    # data row 3 has an empty cell, data row 7 a NaN: both reported as data rows counted from 1
    lines = ["a,b,c"] + [",".join(repr(float(v)) for v in row) for row in table]
    lines[3] = "," + lines[3].split(",", 1)[1]  # first cell of data row 3 emptied
    lines[7] = "nan," + lines[7].split(",", 1)[1]
    path = tmp_path / "holes.csv"
    path.write_text("\n".join(lines) + "\n")
    x, _, _ = read_table(path)
    assert np.isnan(x[2, 0]) and np.isnan(x[6, 0]) and np.isfinite(np.delete(x, [2, 6], 0)).all()
    np.save(tmp_path / "holes.npy", x)
    for name in ("holes.csv", "holes.npy"):
        with pytest.raises(ValueError, match=r"2 rows with missing.*rows: \[3, 7\].*in columns \['(a|column 1)'\]"):
            load_file(tmp_path / name)


def test_comments_blank_lines_and_both_readers_agree(tmp_path, table):
    # comment and blank lines before the header; the numeric table read fast (loadtxt) and, with one
    # empty cell added far below, by the line-by-line reader: the same values either way
    body = "\n".join(",".join(repr(float(v)) for v in row) for row in table)
    (tmp_path / "fast.csv").write_text(f"# measured 2024\n\n\"a\",\"b\",\"c\"\n{body}\n")
    (tmp_path / "slow.csv").write_text(f"# measured 2024\n\n\"a\",\"b\",\"c\"\n{body}\n1.0,,2.0\n")
    fast, names, _ = read_table(tmp_path / "fast.csv")
    slow, _, _ = read_table(tmp_path / "slow.csv")
    assert names == ["a", "b", "c"] and fast.shape == table.shape and slow.shape == (len(table) + 1, 3)
    np.testing.assert_array_equal(fast, table)
    np.testing.assert_array_equal(slow[:-1], table)
    assert np.isnan(slow[-1, 1])


def test_ragged_row_is_named_from_one(tmp_path):
    path = tmp_path / "ragged.csv"
    path.write_text("a,b,c\n1,2,3\n\n4,5\n")
    with pytest.raises(SourceFormatError, match=r"data row 2 \(line 4\) has 2 values but the header has 3"):
        read_table(path)


# ------------------------------------------------------------------------------------------ tiny data
def test_tiny_data_is_refused_and_small_data_warned_about(tmp_path, table):
    from gebm_ppl.data.userdata import MIN_SPLIT_ROWS, check_split_sizes

    np.save(tmp_path / "twenty.npy", table[:20])
    with pytest.raises(ValueError, match=r"20 rows split into 17 training, 1 validation and 2 test rows.*"
                                         r"at least 10 validation and test rows.*Provide at least 111 rows"):
        load_file(tmp_path / "twenty.npy")
    # 111 rows: 90 / 10 / 11, accepted but noisy: a warning that says why
    np.save(tmp_path / "small.npy", table[:MIN_ROWS])
    with pytest.warns(UserWarning, match=r"only 111 rows split into 90 training, 10 validation and 11 test.*noisy"):
        data = load_file(tmp_path / "small.npy")
    assert min(data.metadata["sizes"]["val"], data.metadata["sizes"]["test"]) >= MIN_SPLIT_ROWS
    # too few training rows per column: 20-D data with 150 rows (train 122 >= 100 = 5·20: warned, 90 < 100: refused)
    with pytest.raises(ValueError, match=r"5 training rows per column \(100\)"):
        check_split_sizes(111, 20)
    with pytest.warns(UserWarning, match="20 training rows per column"):
        check_split_sizes(150, 20)
    assert check_split_sizes(1000, 3) == (810, 90, 100)


# ------------------------------------------------------------------------------------------ units
def _gaussian_nll(x: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    d = x - mean
    _, logdet = np.linalg.slogdet(cov)
    return 0.5 * (np.einsum("ni,ij,nj->n", d, np.linalg.inv(cov), d) + logdet + x.shape[1] * np.log(2 * np.pi))


def test_nll_in_original_units_matches_a_gaussian_fitted_there(tmp_path, table):
    # A Gaussian fitted by maximum likelihood is affine-equivariant: fitted on the whitened training split
    # it is the push-forward of the one fitted on the same rows in original units, so per test row
    # NLL_orig = NLL_white − log|det W| exactly (closed form, not a statistical check).
    from gebm_ppl import units

    np.savetxt(tmp_path / "g.csv", table * np.array([30.0, 3.0, 10.0]), delimiter=",", header="a,b,c", comments="")
    data = load_file(tmp_path / "g.csv", seed=0)
    nll_white = _gaussian_nll(data.test.astype(np.float64), data.train.mean(0, dtype=np.float64),
                              np.cov(data.train.T.astype(np.float64), ddof=0))
    train = units.to_original(data.train, data)
    test = units.to_original(data.test, data.metadata)
    nll_orig = _gaussian_nll(test, train.mean(0), np.cov(train.T, ddof=0))
    np.testing.assert_allclose(units.nll_to_original(nll_white, data), nll_orig, rtol=1e-9, atol=1e-9)
    shift = units.log_abs_det(data.metadata["preprocessing"])
    assert shift == pytest.approx(data.metadata["preprocessing"]["whitening"]["log_abs_det"], rel=1e-12)
    assert abs(shift) > 1.0  # the columns' scales (30, 3, 10) make the two units differ by nats
    assert units.nll_to_original(float(nll_white.mean()), data) == pytest.approx(float(nll_orig.mean()), rel=1e-9)
    np.testing.assert_allclose(units.to_whitened(test, data), data.test, atol=1e-5)
    assert units.column_names(data) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="record no whitening"):
        units.log_abs_det({"name": "x"})


def test_verdict_sign_convention_and_wording():
    from gebm_ppl.units import paired_difference, verdict

    rng = np.random.default_rng(0)
    better = -0.1 + 0.05 * rng.standard_normal(400)  # Δ = NLL_GEBM − NLL_base < 0: the GEBM is better
    mean, se, n = paired_difference(better)
    assert n == 400 and se == pytest.approx(better.std(ddof=1) / 20)
    text = verdict(better)
    assert text.startswith(f"the GEBM is better than its base by {-mean:.3f} ± {se:.3f} nats (paired over 400 rows")
    assert verdict(-better).startswith("the GEBM is worse than its base by")
    assert verdict(better - mean).startswith("no clear difference between the GEBM and its base: Δ NLL = +0.000")
    with pytest.raises(ValueError, match="at least 2 examples"):
        verdict([0.1])
    with pytest.raises(ValueError, match=r"1 of the 3 differences are NaN.*\[2\]"):
        verdict([0.1, np.nan, 0.2])


# ------------------------------------------------------------------------------------------ pandas-written files
def _csv_lines(table: np.ndarray, header: str = "a,b,c", index: bool = False) -> list[str]:
    lines = [("," if index else "") + header]
    for i, row in enumerate(table):
        lines.append((f"{i}," if index else "") + ",".join(repr(float(v)) for v in row))
    return lines


@pytest.mark.parametrize("marker", ["NA", "N/A", "NULL", "<NA>", "n/a", "None", "-nan"])
def test_pandas_na_markers_are_missing_values(tmp_path, table, marker):
    lines = _csv_lines(table)
    lines[4] = f"{lines[4].split(',', 1)[0]},{marker},{lines[4].split(',', 2)[2]}"  # data row 4, column b
    path = tmp_path / "na.csv"
    path.write_text("\n".join(lines) + "\n")
    x, names, _ = read_table(path)
    assert names == ["a", "b", "c"] and np.isnan(x[3, 1]) and np.isfinite(np.delete(x, 3, axis=0)).all()
    with pytest.raises(ValueError, match=r"1 rows with missing, NaN or inf values \(first data rows: \[4\].*"
                                         r"in columns \['b'\]\); remove or impute them first"):
        load_file(path)


def test_pandas_index_column_is_dropped_with_a_warning(tmp_path, table):
    path = tmp_path / "to_csv.csv"  # as pandas' DataFrame.to_csv writes it: a blank-header index column first
    path.write_text("\n".join(_csv_lines(table, index=True)) + "\n")
    with pytest.warns(UserWarning, match="blank header .* a pandas index .* dropped"):
        x, names, removed = read_table(path)
    assert names == ["a", "b", "c"] and removed == ["column 1"]
    np.testing.assert_allclose(x, table, rtol=1e-15)
    with pytest.warns(UserWarning, match="pandas index"):
        assert load_file(path).dim == 3
    x, names, _ = read_table(path, columns=["1", "a"])  # named explicitly: kept, no warning
    assert names == ["column 1", "a"] and x[5, 0] == 5.0
    unnamed = tmp_path / "unnamed.csv"
    unnamed.write_text("\n".join(_csv_lines(table, header="Unnamed: 0,a,b,c")[0:1]
                                 + [f"{i},{ln}" for i, ln in enumerate(_csv_lines(table)[1:])]) + "\n")
    with pytest.warns(UserWarning, match="pandas index"):
        assert read_table(unnamed)[1] == ["a", "b", "c"]


def test_constant_column_error_names_the_column(tmp_path, table):
    x = np.column_stack([table[:, 0], np.full(len(table), 7.0), table[:, 1:]])
    path = tmp_path / "constant.csv"
    np.savetxt(path, x, delimiter=",", header="a,flat,b,c", comments="")
    with pytest.raises(ValueError, match=r"cannot whiten: 1 column\(s\) \['flat'\] hold one value in every row.*"
                                         r"--drop flat \(Python: drop=\['flat'\]\)"):
        load_file(path)
    assert load_file(path, drop=["flat"]).dim == 3
