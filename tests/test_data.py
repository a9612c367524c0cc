"""gp.data on the real UCI files: shapes, splits, whitening, determinism, sha256, lookup, download, cache."""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import shutil
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest

import gebm_ppl as gp
from gebm_ppl.data import ChecksumMismatchError, DataNotFoundError, SourceFormatError

RED = "wine-quality/winequality-red.csv"
_SHARED_UCI = Path(__file__).resolve().parents[2] / "shared" / "data" / "uci"
# $GEBM_DATA_DIR may be a list of folders: the first that holds the UCI files, else ../shared/data/uci
UCI = next((d for d in gp.data.data_dirs() if (d / RED).is_file()), _SHARED_UCI)
# (dataset, dimension, rows of the source file, file, its sha256 in shared/data/uci/PROVENANCE.md)
REAL = [
    ("red-wine", 11, 1599, RED, "4a402cf041b025d4566d954c3b9ba8635a3a8a01e039005d97d6a710278cf05e"),
    (
        "white-wine",
        11,
        4898,
        "wine-quality/winequality-white.csv",
        "76c3f809815c17c07212622f776311faeb31e87610d52c26d87d6e361b169836",
    ),
    (
        "parkinsons",
        15,
        5875,
        "parkinsons-telemonitoring/parkinsons_updrs.data",
        "f2c7d5025dec4e92e7feae367a5f7ccf58789a10ac6b54bdf15976c599f9dd39",
    ),
]

pytestmark = pytest.mark.skipif(not (UCI / RED).is_file(), reason=f"the UCI files are not in {UCI}")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """No $GEBM_DATA_DIR / mirror from the environment, and the user cache inside tmp_path."""
    monkeypatch.delenv("GEBM_DATA_DIR", raising=False)
    monkeypatch.delenv("GEBM_DATA_MIRROR", raising=False)
    monkeypatch.setenv("GEBM_CACHE_DIR", str(tmp_path / "user-cache"))


def _raw(name: str, columns: list[str]) -> np.ndarray:
    """The source columns named ``columns``, in file order (float64)."""
    path = UCI / {r[0]: r[3] for r in REAL}[name]
    sep = "," if name == "parkinsons" else ";"
    header = [h.strip('"') for h in path.read_text().splitlines()[0].split(sep)]
    x = np.loadtxt(path, delimiter=sep, skiprows=1)
    return x[:, [header.index(c) for c in columns]]


@pytest.mark.parametrize("name, dim, rows, path, sha", REAL)
def test_real_shapes_sizes_and_sources(tmp_path, name, dim, rows, path, sha):
    data = gp.data.load(name, data_dir=UCI, seed=0, cache_dir=tmp_path)
    n_test = int(0.1 * rows)
    n_val = min(int(0.1 * (rows - n_test)), 1000)
    assert [x.shape for x in (data.train, data.val, data.test)] == [
        (rows - n_test - n_val, dim),
        (n_val, dim),
        (n_test, dim),
    ]
    assert all(x.dtype == np.float32 and np.isfinite(x).all() for x in (data.train, data.val, data.test))
    m = data.metadata
    assert (m["name"], m["protocol"], m["dim"], m["seed"]) == (name, "kexpfam", dim, 0)
    assert m["sizes"] == {"train": rows - n_test - n_val, "val": n_val, "test": n_test}
    (source,) = m["sources"]
    assert source["sha256"] == source["expected_sha256"] == sha
    assert Path(source["location"]) == UCI / path
    pre = m["preprocessing"]
    assert len(pre["columns"]) == dim and len(pre["dequantisation"]["widths"]) == dim
    assert np.asarray(pre["whitening"]["matrix"]).shape == (dim, dim)


def test_parkinsons_column_rule(tmp_path):
    pre = gp.data.load("parkinsons", UCI, cache_dir=tmp_path).metadata["preprocessing"]
    # subject#, age, sex precede test_time; four voice measures have |corr| > 0.98 with a kept one
    assert pre["dropped_columns"][:3] == ["subject#", "age", "sex"] and len(pre["dropped_columns"]) == 7
    assert pre["columns"][0] == "test_time" and "PPE" in pre["columns"]


@pytest.mark.parametrize("name", ["red-wine", "parkinsons"])
def test_splits_are_the_documented_rows_without_overlap(tmp_path, name):
    """Undo the whitening: each split row lies in the dequantisation box of its own source row,
    the rows being default_rng(seed).permutation's first n_train / next n_val / last n_test."""
    seed = 3
    data = gp.data.load(name, UCI, seed=seed, cache_dir=tmp_path)
    pre = data.metadata["preprocessing"]
    raw = _raw(name, pre["columns"])
    mean, w = np.asarray(pre["whitening"]["mean"]), np.asarray(pre["whitening"]["matrix"])
    widths = np.asarray(pre["dequantisation"]["widths"])
    perm = np.random.default_rng(seed).permutation(len(raw))
    n_tr, n_va = len(data.train), len(data.val)
    index = {"train": perm[:n_tr], "val": perm[n_tr : n_tr + n_va], "test": perm[n_tr + n_va :]}
    assert sum(len(i) for i in index.values()) == len(raw) == len(np.unique(perm))
    for split, rows in index.items():
        x = getattr(data, split).astype(np.float64) @ np.linalg.inv(w) + mean
        noise = x - raw[rows]
        scale = np.abs(raw).max(0) * 1e-6  # float32 round trip
        assert np.all(np.abs(noise) <= widths + scale), split
        # uniform(-w, w) noise: its spread is visible (not all zero), its mean near 0
        assert np.all(np.abs(noise).mean(0) > 0.3 * widths)


@pytest.mark.parametrize("name", ["red-wine", "white-wine"])
def test_whitening_uses_training_statistics_only(tmp_path, name):
    data = gp.data.load(name, UCI, seed=1, cache_dir=tmp_path)
    train = data.train.astype(np.float64)
    np.testing.assert_allclose(train.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(np.cov(train, rowvar=False, ddof=0), np.eye(11), atol=1e-4)
    # changing the test rows of the source leaves train and validation bit-identical
    raw_path = UCI / {r[0]: r[3] for r in REAL}[name]
    lines = raw_path.read_text().splitlines(keepends=True)
    perm = np.random.default_rng(1).permutation(len(lines) - 1)
    test_rows = set(perm[len(data.train) + len(data.val) :].tolist())
    edited = [lines[0]] + [
        ";".join(str(float(v) * 7 + 3) for v in line.split(";")) + "\n" if i in test_rows else line
        for i, line in enumerate(lines[1:])
    ]
    copy = tmp_path / "edited.csv"
    copy.write_text("".join(edited))
    train2, val2, test2, _ = gp.data.get_spec(name).builder({"x": copy}, 1)
    np.testing.assert_array_equal(train2.astype(np.float32), data.train)
    np.testing.assert_array_equal(val2.astype(np.float32), data.val)
    assert not np.allclose(test2.astype(np.float32), data.test)


def test_deterministic_per_seed(tmp_path):
    a = gp.data.load("red-wine", UCI, seed=5, cache_dir=tmp_path / "a")
    b = gp.data.load("red-wine", UCI, seed=5, cache_dir=tmp_path / "b")
    c = gp.data.load("red-wine", UCI, seed=6, cache_dir=tmp_path / "a")
    assert not a.metadata["from_cache"] and not b.metadata["from_cache"]
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(a, split), getattr(b, split))
    assert not np.array_equal(a.test, c.test)


def test_cache_hit_stale_and_corrupt(tmp_path):
    first = gp.data.load("red-wine", UCI, seed=0, cache_dir=tmp_path)
    path = Path(first.metadata["cache"])
    assert path == tmp_path / "splits" / "red-wine" / "seed0.h5" and not first.metadata["from_cache"]
    with h5py.File(path, "r") as h5:  # preprocessing parameters and source hashes as attributes
        assert REAL[0][4] in h5.attrs["source_sha256"] and "whitening" in h5.attrs["preprocessing"]
    hit = gp.data.load("red-wine", UCI, seed=0, cache_dir=tmp_path)
    assert hit.metadata["from_cache"] and hit.metadata["preprocessing"] == first.metadata["preprocessing"]
    np.testing.assert_array_equal(hit.train, first.train)

    def reload():
        again = gp.data.load("red-wine", UCI, seed=0, cache_dir=tmp_path)
        assert not again.metadata["from_cache"]
        np.testing.assert_array_equal(again.test, first.test)
        assert gp.data.load("red-wine", UCI, seed=0, cache_dir=tmp_path).metadata["from_cache"]

    with h5py.File(path, "r+") as h5:  # stale: built from other sources / another preprocessing version
        h5.attrs["key"] = "0" * 64
    reload()
    with h5py.File(path, "r+") as h5:  # an edited array fails its digest
        h5["train"][0, 0] += 1.0
    reload()
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # torn file
    reload()
    path.write_bytes(b"not an hdf5 file")
    reload()
    assert sorted(p.name for p in path.parent.iterdir()) == ["seed0.h5"]  # no temporary files left


def test_unknown_dataset_lists_known_ones():
    with pytest.raises(ValueError, match="unknown dataset 'red-whine'") as e:
        gp.data.load("red-whine")
    for name in ("red-wine", "white-wine", "parkinsons", "hepmass", "miniboone", "power", "gas", "bsds300"):
        assert name in str(e.value)


def test_bad_seed():
    with pytest.raises(ValueError, match="'seed'"):
        gp.data.load("red-wine", UCI, seed=-1)


def test_nonexistent_data_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        gp.data.load("red-wine", data_dir=tmp_path / "does-not-exist")


def _copy_red(folder: Path, transform=lambda b: b) -> Path:
    dest = folder / RED
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(transform((UCI / RED).read_bytes()))
    return dest


def test_checksum_mismatch_names_file_and_hashes(tmp_path):
    bad = _copy_red(tmp_path / "d", lambda b: b.replace(b"7.4;", b"7.5;", 1))
    with pytest.raises(ChecksumMismatchError) as e:
        gp.data.load("red-wine", data_dir=tmp_path / "d", cache_dir=tmp_path / "c")
    msg = str(e.value)
    assert str(bad) in msg and REAL[0][4] in msg and gp.data.file_digest(bad) in msg


def test_truncated_file(tmp_path):
    bad = _copy_red(tmp_path / "d", lambda b: b[: len(b) // 2])
    with pytest.raises(ChecksumMismatchError, match="truncated"):
        gp.data.load("red-wine", data_dir=tmp_path / "d", cache_dir=tmp_path / "c")
    # the parser itself also names a torn file (no hash to catch it, e.g. a user's own copy)
    with pytest.raises(SourceFormatError, match=str(bad)):
        gp.data.get_spec("red-wine").builder({"x": bad}, 0)


def test_lookup_order_data_dir_then_env(tmp_path, monkeypatch):
    env = tmp_path / "env"
    _copy_red(env)
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(UCI / RED, flat / "winequality-red.csv")  # a bare file name is found too
    monkeypatch.setenv("GEBM_DATA_DIR", str(env))
    m = gp.data.load("red-wine", data_dir=flat, cache_dir=tmp_path / "c").metadata
    assert m["sources"][0]["location"] == str(flat / "winequality-red.csv")
    m = gp.data.load("red-wine", cache_dir=tmp_path / "c").metadata
    assert m["sources"][0]["location"] == str(env / RED) and m["from_cache"]


def test_env_path_list_is_searched_in_order(tmp_path, monkeypatch):
    first, second = tmp_path / "first", tmp_path / "second"
    _copy_red(second)
    monkeypatch.setenv("GEBM_DATA_DIR", os.pathsep.join([str(tmp_path / "missing"), str(first), str(second)]))
    m = gp.data.load("red-wine", cache_dir=tmp_path / "c").metadata
    assert m["sources"][0]["location"] == str(second / RED)
    _copy_red(first)  # an earlier folder wins once it holds the file
    m = gp.data.load("red-wine", cache_dir=tmp_path / "c").metadata
    assert m["sources"][0]["location"] == str(first / RED) and m["from_cache"]
    (first / RED).write_bytes(b"fixed acidity;x\n1;2\n")  # the first match is verified, not skipped
    with pytest.raises(ChecksumMismatchError, match=str(first / RED)):
        gp.data.load("red-wine", cache_dir=tmp_path / "c")
    monkeypatch.setenv("GEBM_DATA_DIR", os.pathsep.join([str(tmp_path / "a"), str(tmp_path / "b")]))
    with pytest.raises(DataNotFoundError) as e:
        gp.data.load("red-wine", cache_dir=tmp_path / "c", download=False)
    assert str(tmp_path / "a" / RED) in str(e.value) and str(tmp_path / "b" / RED) in str(e.value)
    assert "$GEBM_DATA_DIR[1]" in str(e.value)


def test_not_found_lists_where_it_looked(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("GEBM_DATA_DIR", str(tmp_path / "env"))
    with pytest.raises(DataNotFoundError) as e:
        gp.data.load("red-wine", data_dir=empty, cache_dir=tmp_path / "c", download=False)
    msg = str(e.value)
    assert "winequality-red.csv" in msg and str(empty / RED) in msg
    assert str(tmp_path / "env" / RED) in msg and str(tmp_path / "c" / "raw" / RED) in msg


@contextlib.contextmanager
def _http_server(folder: Path):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_download_from_local_server(tmp_path):
    reference = gp.data.load("red-wine", UCI, seed=0, cache_dir=tmp_path / "ref")
    with _http_server(UCI) as url:
        data = gp.data.load("red-wine", seed=0, cache_dir=tmp_path / "c", mirror=url)
    downloaded = tmp_path / "c" / "raw" / RED
    assert data.metadata["sources"][0]["location"] == str(downloaded)
    assert downloaded.read_bytes() == (UCI / RED).read_bytes()
    np.testing.assert_array_equal(data.train, reference.train)
    # the next load finds the downloaded file in the user cache (no server needed)
    again = gp.data.load("red-wine", seed=0, cache_dir=tmp_path / "c", download=False)
    assert again.metadata["from_cache"]


def test_download_checksum_mismatch_writes_nothing(tmp_path):
    _copy_red(tmp_path / "served", lambda b: b + b"1;2;3;4;5;6;7;8;9;10;11;5\n")
    with _http_server(tmp_path / "served") as url, pytest.raises(ChecksumMismatchError, match="download"):
        gp.data.load("red-wine", cache_dir=tmp_path / "c", mirror=url)
    assert not (tmp_path / "c" / "raw" / RED).exists()
    assert not list((tmp_path / "c" / "raw").rglob("*.tmp"))


def test_download_failure_is_reported(tmp_path):
    with _http_server(tmp_path) as url:  # serves an empty folder: 404
        with pytest.raises(DataNotFoundError, match="download from") as e:
            gp.data.load("red-wine", cache_dir=tmp_path / "c", mirror=url)
    assert "Looked in" in str(e.value)
