"""MAF-archive loaders (and the kexpfam hepmass / miniboone) end to end on small files of the real formats."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import io
import tarfile
import threading
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

import gebm_ppl as gp
from gebm_ppl.data import ChecksumMismatchError, SourceFormatError
from gebm_ppl.data.registry import ARCHIVES


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.delenv("GEBM_DATA_DIR", raising=False)
    monkeypatch.delenv("GEBM_DATA_MIRROR", raising=False)
    monkeypatch.setenv("GEBM_CACHE_DIR", str(tmp_path / "user-cache"))


def _write_power(root: Path, n: int = 3000) -> np.ndarray:
    """power/data.npy: float64 [N, 8] (active power, reactive power, voltage, intensity, 3 sub-meterings, time)."""
    rng = np.random.default_rng(0)
    x = np.column_stack(
        [
            rng.gamma(2.0, 0.5, n).round(3),
            rng.gamma(1.0, 0.1, n).round(3),
            rng.normal(240, 3, n).round(2),
            rng.gamma(2.0, 2.0, n).round(1),
            rng.integers(0, 40, (n, 3)).astype(float),
            rng.integers(0, 1440, n) / 1440,
        ]
    )
    (root / "power").mkdir(parents=True)
    np.save(root / "power" / "data.npy", x)
    return x


def test_power(tmp_path):
    raw = _write_power(tmp_path)
    data = gp.data.load("power", tmp_path, cache_dir=tmp_path / "c")
    n = len(raw)
    n_test = int(0.1 * n)
    n_val = int(0.1 * (n - n_test))
    assert [len(data.train), len(data.val), len(data.test)] == [n - n_test - n_val, n_val, n_test]
    assert data.dim == 6 and data.metadata["protocol"] == "maf" and data.metadata["seed"] is None
    fit = np.vstack([data.train, data.val]).astype(np.float64)
    np.testing.assert_allclose(fit.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(fit.std(0), 1, atol=1e-5)
    # undo the standardisation: rows are RandomState(42)'s shuffle of the source, columns 1 and 3
    # dropped, plus uniform jitter in [0, w) with w = (0.001, 0.01, 1, 1, 1, 0)
    norm = data.metadata["preprocessing"]["standardisation"]
    x = np.vstack([data.train, data.val, data.test]).astype(np.float64) * norm["std"] + norm["mean"]
    order = np.arange(n)
    np.random.RandomState(42).shuffle(order)
    jitter = x - np.delete(raw[order], [1, 3], axis=1)
    width = np.array([0.001, 0.01, 1, 1, 1, 0])
    tol = 1e-6 * np.abs(raw).max(0)[[0, 2, 4, 5, 6, 7]]
    assert np.all(jitter >= -tol) and np.all(jitter <= width + tol)
    assert np.all(jitter[:, :5].mean(0) > 0.4 * width[:5])
    # seed does not change the published split
    again = gp.data.load("power", tmp_path, seed=7, cache_dir=tmp_path / "c")
    assert again.metadata["from_cache"]
    np.testing.assert_array_equal(again.test, data.test)


def test_gas(tmp_path):
    rng = np.random.default_rng(1)
    n = 2000
    base = rng.normal(size=(n, 5))
    sensors = {f"S{i}": base[:, i] for i in range(5)}
    sensors.update({f"S{i}": 3 * base[:, i - 5] + 0.05 * rng.normal(size=n) for i in range(5, 8)})
    frame = pd.DataFrame({"Time": np.arange(n) / 100.0, "Meth": rng.random(n), "Eth": rng.random(n), **sensors})
    (tmp_path / "gas").mkdir()
    frame.to_pickle(tmp_path / "gas" / "ethylene_CO.pickle")
    data = gp.data.load("gas", tmp_path, cache_dir=tmp_path / "c")
    pre = data.metadata["preprocessing"]
    # S5, S6, S7 are near copies (corr > 0.98) of S0, S1, S2: the first of each pair goes
    assert pre["dropped_columns"] == ["Meth", "Eth", "Time", "S0", "S1", "S2"]
    assert pre["columns"] == ["S3", "S4", "S5", "S6", "S7"] and data.dim == 5
    expected = frame[pre["columns"]].to_numpy()
    expected = (expected - expected.mean(0)) / expected.std(0, ddof=1)  # all rows, as published
    np.testing.assert_allclose(np.vstack([data.train, data.val, data.test]), expected, rtol=1e-5, atol=1e-6)
    assert [len(data.train), len(data.val), len(data.test)] == [1620, 180, 200]


def _write_hepmass(root: Path, n_train: int = 1200, n_test: int = 600) -> tuple[pd.DataFrame, pd.DataFrame]:
    """hepmass/1000_{train,test}.csv: header '# label,f0,...,f26[,mass]'; the test file carries a
    trailing extra column, as MAF's loader expects. f5, f9, f13, f17, f21 take three values."""
    rng = np.random.default_rng(2)

    def frame(n: int, mass: bool) -> pd.DataFrame:
        cols = {"# label": rng.integers(0, 2, n).astype(float)}
        for j in range(27):
            discrete = j in (5, 9, 13, 17, 21)
            cols[f"f{j}"] = rng.choice([-1.2, 0.3, 1.7], n) if discrete else rng.normal(size=n) * (1 + j / 10)
        if mass:
            cols["mass"] = np.full(n, 1000.0)
        return pd.DataFrame(cols)

    train, test = frame(n_train, False), frame(n_test, True)
    (root / "hepmass").mkdir(parents=True)
    train.to_csv(root / "hepmass" / "1000_train.csv", index=False)
    test.to_csv(root / "hepmass" / "1000_test.csv", index=False)
    return train, test


def test_hepmass_maf(tmp_path):
    train, test = _write_hepmass(tmp_path)
    data = gp.data.load("hepmass-maf", tmp_path, cache_dir=tmp_path / "c")
    pre = data.metadata["preprocessing"]
    discrete = ["f5", "f9", "f13", "f17", "f21"]
    assert pre["dropped_columns"] == ["label", *discrete] and data.dim == 22
    pos = train[train["# label"] == 1][[f"f{j}" for j in range(27) if f"f{j}" not in discrete]].to_numpy()
    mu, s = pos.mean(0), pos.std(0, ddof=1)
    n_val = int(0.1 * len(pos))
    np.testing.assert_allclose(data.val, ((pos - mu) / s)[-n_val:], rtol=1e-5, atol=1e-6)
    pos_test = test[test["# label"] == 1][pre["columns"]].to_numpy()
    np.testing.assert_allclose(data.test, (pos_test - mu) / s, rtol=1e-5, atol=1e-6)
    assert len(data.train) == len(pos) - n_val


def test_hepmass_kexpfam(tmp_path):
    train, test = _write_hepmass(tmp_path)
    data = gp.data.load("hepmass", tmp_path, seed=0, cache_dir=tmp_path / "c")
    n = int((train["# label"] == 1).sum() + (test["# label"] == 1).sum())
    n_test = int(0.1 * n)
    n_val = min(int(0.1 * (n - n_test)), 1000)
    assert data.dim == 22 and data.metadata["protocol"] == "kexpfam"
    assert [len(data.train), len(data.val), len(data.test)] == [n - n_test - n_val, n_val, n_test]
    np.testing.assert_allclose(np.cov(data.train.astype(np.float64), rowvar=False, ddof=0), np.eye(22), atol=1e-4)


def test_miniboone_both_protocols(tmp_path):
    rng = np.random.default_rng(3)
    raw = rng.normal(size=(1500, 43)) @ rng.normal(size=(43, 43)) + 5
    (tmp_path / "miniboone").mkdir()
    np.save(tmp_path / "miniboone" / "data.npy", raw)
    maf = gp.data.load("miniboone-maf", tmp_path, cache_dir=tmp_path / "c")
    n_test = 150
    n_val = 135
    fit = raw[:-n_test]
    expected = (raw - fit.mean(0)) / fit.std(0)
    np.testing.assert_allclose(maf.train, expected[: -n_test - n_val], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(maf.test, expected[-n_test:], rtol=1e-4, atol=1e-5)
    kexp = gp.data.load("miniboone", tmp_path, seed=0, cache_dir=tmp_path / "c")
    assert kexp.dim == 43 and [len(kexp.train), len(kexp.val), len(kexp.test)] == [1215, 135, 150]


def test_bsds300(tmp_path):
    rng = np.random.default_rng(4)
    parts = {"train": rng.random((300, 63)), "validation": rng.random((40, 63)), "test": rng.random((50, 63))}
    (tmp_path / "BSDS300").mkdir()
    with h5py.File(tmp_path / "BSDS300" / "BSDS300.hdf5", "w") as f:
        for k, v in parts.items():
            f.create_dataset(k, data=v.astype(np.float32))
    data = gp.data.load("bsds300", tmp_path, cache_dir=tmp_path / "c")
    np.testing.assert_array_equal(data.train, parts["train"].astype(np.float32))
    np.testing.assert_array_equal(data.val, parts["validation"].astype(np.float32))
    np.testing.assert_array_equal(data.test, parts["test"].astype(np.float32))


def test_truncated_and_foreign_files_are_named(tmp_path):
    _write_power(tmp_path)
    path = tmp_path / "power" / "data.npy"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(SourceFormatError, match="power/data.npy"):
        gp.data.load("power", tmp_path, cache_dir=tmp_path / "c")
    (tmp_path / "gas").mkdir()
    (tmp_path / "gas" / "ethylene_CO.pickle").write_bytes(b"\x80\x04garbage")
    with pytest.raises(SourceFormatError, match="ethylene_CO.pickle"):
        gp.data.load("gas", tmp_path, cache_dir=tmp_path / "c")
    np.save(tmp_path / "power" / "data.npy", np.zeros((10, 5)))
    with pytest.raises(SourceFormatError, match="expected 8 columns"):
        gp.data.load("power", tmp_path, cache_dir=tmp_path / "c")


def test_source_hash_change_rebuilds_cache(tmp_path):
    _write_power(tmp_path)
    first = gp.data.load("power", tmp_path, cache_dir=tmp_path / "c")
    _write_power(tmp_path / "other", n=2000)
    (tmp_path / "power" / "data.npy").write_bytes((tmp_path / "other" / "power" / "data.npy").read_bytes())
    second = gp.data.load("power", tmp_path, cache_dir=tmp_path / "c")
    assert not second.metadata["from_cache"] and len(second.test) == 200 != len(first.test)
    assert second.metadata["sources"][0]["sha256"] != first.metadata["sources"][0]["sha256"]


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


def _archive(folder: Path, members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, blob in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data.tar.gz").write_bytes(buf.getvalue())
    return buf.getvalue()


def test_archive_download_checks_md5_and_extracts(tmp_path, monkeypatch):
    src = tmp_path / "src"
    _write_power(src)
    npy = (src / "power" / "data.npy").read_bytes()
    blob = _archive(tmp_path / "served", {"data/power/data.npy": npy, "data/other/x.txt": b"x"})
    with _http_server(tmp_path / "served") as url:
        # the real archive's MD5 is pinned: another archive is rejected and nothing is extracted
        with pytest.raises(ChecksumMismatchError, match="MD5"):
            gp.data.load("power", cache_dir=tmp_path / "c", mirror=url)
        assert not (tmp_path / "c" / "raw" / "power").exists()
        monkeypatch.setitem(ARCHIVES, "maf", replace(ARCHIVES["maf"], md5=hashlib.md5(blob).hexdigest()))
        data = gp.data.load("power", cache_dir=tmp_path / "c", mirror=url)
    assert (tmp_path / "c" / "raw" / "power" / "data.npy").read_bytes() == npy
    assert not (tmp_path / "c" / "raw" / "other").exists()  # only registered members are extracted
    assert not (tmp_path / "c" / "raw" / "maf-data.tar.gz").exists()
    assert data.dim == 6
