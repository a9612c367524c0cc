"""Image data: the IDX parser on hand-written bytes, digits and MNIST splits, lookup through a GEBM_DATA_DIR list."""

from __future__ import annotations

import collections
import gzip
import hashlib
import os
import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import gebm_ppl as gp
from gebm_ppl.data import ChecksumMismatchError, DataNotFoundError, SourceFormatError, read_idx, write_idx
from gebm_ppl.data.registry import DATASETS

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
MNIST_IMAGES = "mnist/t10k-images-idx3-ubyte.gz"
MNIST_LABELS = "mnist/t10k-labels-idx1-ubyte.gz"
# sha256 of the .gz files in shared/data/mnist/PROVENANCE.md
MNIST_SHA = {
    MNIST_IMAGES: "167310007f03058885c7e95e6c0b19c20de5c7fd3031f4cbdadc9014a523d80b",
    MNIST_LABELS: "fc607395669ec21321ea83e4b82c0544b7e8e63ff5b34337c06bc0a17cc0da3c",
}
HAVE_MNIST = (SHARED / MNIST_IMAGES).is_file() and (SHARED / MNIST_LABELS).is_file()


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.delenv("GEBM_DATA_DIR", raising=False)
    monkeypatch.delenv("GEBM_DATA_MIRROR", raising=False)
    monkeypatch.setenv("GEBM_CACHE_DIR", str(tmp_path / "user-cache"))


def _idx_bytes(code: int, dims: tuple, payload: bytes) -> bytes:
    """The IDX layout written out by hand: 0x00 0x00 type rank, big-endian int32 dims, data."""
    return bytes([0, 0, code, len(dims)]) + b"".join(struct.pack(">i", d) for d in dims) + payload


# ------------------------------------------------------------------------------------------- IDX
@pytest.mark.parametrize("compressed", [False, True])
def test_idx_reads_hand_written_files(tmp_path, compressed):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 2, 4), dtype=np.uint8)
    blob = _idx_bytes(0x08, (3, 2, 4), images.tobytes())
    assert struct.unpack(">i", blob[:4])[0] == 2051
    path = tmp_path / "images.idx"
    path.write_bytes(gzip.compress(blob) if compressed else blob)
    got = read_idx(path, magic=2051)
    assert got.dtype == np.uint8 and got.shape == (3, 2, 4)
    np.testing.assert_array_equal(got, images)
    # big-endian int32 of rank 2: bytes written most significant first
    values = np.array([[1, -2, 70000], [256, 0, -(2**31)]])
    blob = _idx_bytes(0x0C, (2, 3), b"".join(struct.pack(">i", int(v)) for v in values.ravel()))
    (tmp_path / "ints.idx").write_bytes(blob)
    got = read_idx(tmp_path / "ints.idx")
    assert got.dtype == np.int32 and got.dtype.isnative
    np.testing.assert_array_equal(got, values)


@pytest.mark.parametrize("dtype", ["u1", "i1", "i2", "i4", "f4", "f8"])
def test_write_idx_round_trip(tmp_path, dtype):
    x = (np.arange(2 * 3 * 5).reshape(2, 3, 5) - 7).astype(dtype)
    path = write_idx(tmp_path / "x.idx.gz", x)
    assert path.read_bytes()[:2] == b"\x1f\x8b"
    got = read_idx(path)
    assert got.dtype == x.dtype and got.shape == x.shape
    np.testing.assert_array_equal(got, x)
    labels = np.arange(7, dtype=np.uint8)
    write_idx(tmp_path / "y.idx", labels)
    assert (tmp_path / "y.idx").read_bytes() == _idx_bytes(0x08, (7,), labels.tobytes())


_GOOD = _idx_bytes(0x08, (2, 3, 3), bytes(range(18)))
CORRUPT = {
    "empty": (b"", "shorter than the 4-byte magic"),
    "nonzero leading bytes": (b"\x01" + _GOOD[1:], "bad magic number"),
    "unknown type code": (bytes([0, 0, 0x07, 3]) + _GOOD[4:], "bad magic number"),
    "rank zero": (bytes([0, 0, 0x08, 0]), "bad magic number"),
    "torn header": (_GOOD[:9], "header of 3 dims needs 16 bytes"),
    "truncated data": (_GOOD[:-1], "need 18 data bytes, the file has 17"),
    "trailing bytes": (_GOOD + b"\x00\x00", "2 bytes after the 18 data bytes"),
    "torn gzip": (gzip.compress(_GOOD)[:-12], "bad gzip stream"),
    "damaged gzip": (gzip.compress(_GOOD)[:10] + b"\xff" * 20, "bad gzip stream"),
}


@pytest.mark.parametrize("case", list(CORRUPT))
def test_idx_corruption_is_a_source_format_error(tmp_path, case):
    blob, message = CORRUPT[case]
    path = tmp_path / "bad.idx"
    path.write_bytes(blob)
    with pytest.raises(SourceFormatError, match=message) as e:
        read_idx(path)
    assert str(path) in str(e.value)


def test_idx_unexpected_magic(tmp_path):
    path = write_idx(tmp_path / "labels.idx", np.zeros(4, np.uint8))  # magic 2049
    with pytest.raises(SourceFormatError, match="magic number 2049, expected 2051"):
        read_idx(path, magic=2051)


def _fake_mnist(folder: Path, n: int = 60, seed: int = 0, labels_n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = np.arange(n, dtype=np.uint8) % 10
    write_idx(folder / MNIST_IMAGES, images)
    write_idx(folder / MNIST_LABELS, labels[: labels_n if labels_n is not None else n])
    return images, labels


def test_mnist_builder_checks_counts_and_labels(tmp_path):
    _fake_mnist(tmp_path, n=20, labels_n=19)
    paths = {p: tmp_path / p for p in (MNIST_IMAGES, MNIST_LABELS)}
    with pytest.raises(SourceFormatError, match="19 labels but .* has 20 images"):
        gp.data.get_spec("mnist").builder(paths)
    write_idx(tmp_path / MNIST_LABELS, np.full(20, 10, np.uint8))
    with pytest.raises(SourceFormatError, match="digits 0..9, found 10"):
        gp.data.get_spec("mnist").builder(paths)
    write_idx(tmp_path / MNIST_IMAGES, np.zeros((20, 28), np.uint8))  # rank 2: magic 2050
    with pytest.raises(SourceFormatError, match="magic number 2050, expected 2051"):
        gp.data.get_spec("mnist").builder(paths)


# --------------------------------------------------------------------------------- splits, digits
def test_stratified_split_sizes_and_shares():
    labels = np.repeat(np.arange(4), [50, 31, 12, 7])
    index = gp.data.stratified_split(labels, seed=3)
    n = len(labels)
    assert [len(index[k]) for k in ("val", "test")] == [round(0.1 * n)] * 2
    rows = np.concatenate(list(index.values()))
    np.testing.assert_array_equal(np.sort(rows), np.arange(n))  # disjoint and covering
    for k in ("val", "test"):
        counts = np.bincount(labels[index[k]], minlength=4)
        assert np.all(np.abs(counts - 0.1 * np.bincount(labels)) < 1), (k, counts)
    again = gp.data.stratified_split(labels, seed=3)
    other = gp.data.stratified_split(labels, seed=4)
    assert all(np.array_equal(index[k], again[k]) for k in index)
    assert not np.array_equal(index["test"], other["test"])


def _rows_with_labels(x: np.ndarray, y: np.ndarray) -> collections.Counter:
    return collections.Counter((row.tobytes(), int(label)) for row, label in zip(x, y, strict=True))


def _split_rows(data, scale: float) -> collections.Counter:
    """(grey levels, label) of every row of every split, the scaling undone."""
    out = collections.Counter()
    for k in ("train", "val", "test"):
        out += _rows_with_labels(((getattr(data, k) + 1) * scale).round().astype(np.uint8), data.labels[k])
    return out


def test_digits_shapes_levels_splits_and_source():
    from sklearn.datasets import load_digits

    data = gp.data.load("digits", seed=0)
    assert isinstance(data, gp.data.ImageData) and isinstance(data, gp.data.UCIData)
    assert [x.shape for x in (data.train, data.val, data.test)] == [(1437, 64), (180, 64), (180, 64)]
    assert data.image_shape == (1, 8, 8) and data.dim == 64 and data.num_classes == 10
    assert data.images("test").shape == (180, 1, 8, 8)
    levels = np.concatenate([data.train, data.val, data.test])
    assert levels.dtype == np.float32 and levels.min() == -1.0 and levels.max() == 1.0
    np.testing.assert_array_equal((levels + 1) * 8, np.round((levels + 1) * 8))  # the 17 levels x/8 − 1
    # every source image appears exactly once, with its own label
    bunch = load_digits()
    source = _rows_with_labels(bunch.data.astype(np.uint8), bunch.target)
    assert _split_rows(data, 8) == source
    assert all(y.dtype == np.int64 for y in data.labels.values())
    # stratified: 18 of each class in val and test (10 % of 174..183, largest remainder)
    assert data.metadata["class_counts"]["test"] == [18] * 10 == data.metadata["class_counts"]["val"]
    np.testing.assert_allclose(data.label_prior, np.bincount(bunch.target) / 1797, atol=0.003)
    m = data.metadata
    assert m["sizes"] == {"train": 1437, "val": 180, "test": 180} and m["seed"] == 0
    assert m["scaling"]["rule"] == "x / 8 - 1" and m["image_shape"] == [1, 8, 8]
    (src,) = m["sources"]
    assert src["sha256"] == gp.data.file_digest(src["location"])
    import sklearn

    if sklearn.__version__ == "1.9.1":  # the hash given in shared/data/mnist/PROVENANCE.md
        assert src["sha256"] == "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22"


def test_digits_deterministic_per_seed():
    a, b, c = (gp.data.load("digits", seed=s) for s in (1, 1, 2))
    for k in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
        np.testing.assert_array_equal(a.labels[k], b.labels[k])
    assert not np.array_equal(a.test, c.test)
    assert "ImageData(name='digits'" in repr(a)


# -------------------------------------------------------------------------------------- MNIST
@pytest.mark.skipif(not HAVE_MNIST, reason=f"the MNIST files are not in {SHARED}")
def test_real_mnist():
    data = gp.data.load("mnist", data_dir=SHARED, seed=0)
    assert [x.shape for x in (data.train, data.val, data.test)] == [(8000, 784), (1000, 784), (1000, 784)]
    assert data.image_shape == (1, 28, 28)
    for s in data.metadata["sources"]:
        assert s["sha256"] == s["expected_sha256"] == MNIST_SHA[s["path"]]
        assert Path(s["location"]) == SHARED / s["path"]
    x = np.concatenate([data.train, data.val, data.test])
    assert x.min() == -1.0 and x.max() == 1.0
    images = read_idx(SHARED / MNIST_IMAGES, magic=2051).reshape(10000, 784)
    labels = read_idx(SHARED / MNIST_LABELS, magic=2049)
    assert _split_rows(data, 127.5) == _rows_with_labels(images, labels)
    counts = np.bincount(labels)
    for k in ("val", "test"):
        assert np.all(np.abs(np.asarray(data.metadata["class_counts"][k]) - 0.1 * counts) < 1)


# ----------------------------------------------------------------------------- lookup and checks
def _patch_mnist(monkeypatch, folder: Path) -> None:
    """Register the fake files' hashes as the published ones (content hash: of the decompressed bytes)."""
    spec = DATASETS["mnist"]
    files = tuple(
        replace(
            f,
            sha256=gp.data.file_digest(folder / f.path),
            content_sha256=hashlib.sha256(gzip.decompress((folder / f.path).read_bytes())).hexdigest(),
        )
        for f in spec.files
    )
    monkeypatch.setitem(DATASETS, "mnist", replace(spec, files=files))


def test_lookup_order_with_a_path_list(tmp_path, monkeypatch):
    first, second, explicit = tmp_path / "first", tmp_path / "second", tmp_path / "explicit"
    images, labels = _fake_mnist(first)
    for folder in (second, explicit):
        for p in (MNIST_IMAGES, MNIST_LABELS):
            (folder / p).parent.mkdir(parents=True, exist_ok=True)
            (folder / p).write_bytes((first / p).read_bytes())
    _patch_mnist(monkeypatch, first)
    missing = tmp_path / "missing"
    monkeypatch.setenv("GEBM_DATA_DIR", os.pathsep.join([str(missing), "", str(first), str(second)]))
    assert gp.data.data_dirs() == [missing, first, second]
    data = gp.data.load("mnist", cache_dir=tmp_path / "c")
    assert {s["location"] for s in data.metadata["sources"]} == {str(first / p) for p in (MNIST_IMAGES, MNIST_LABELS)}
    assert data.dim == 784 and sum(data.metadata["sizes"].values()) == 60
    np.testing.assert_array_equal(np.sort(np.concatenate(list(data.labels.values()))), np.sort(labels))
    data = gp.data.load("mnist", data_dir=explicit, cache_dir=tmp_path / "c")  # data_dir comes first
    assert {Path(s["location"]).parent.parent for s in data.metadata["sources"]} == {explicit}
    (first / MNIST_LABELS).unlink()  # each file is looked up on its own, through the list in order
    data = gp.data.load("mnist", cache_dir=tmp_path / "c")
    assert {s["path"]: s["location"] for s in data.metadata["sources"]} == {
        MNIST_IMAGES: str(first / MNIST_IMAGES),
        MNIST_LABELS: str(second / MNIST_LABELS),
    }
    monkeypatch.setenv("GEBM_DATA_DIR", str(missing))
    with pytest.raises(DataNotFoundError) as e:
        gp.data.load("mnist", cache_dir=tmp_path / "c", download=False)
    assert str(missing / MNIST_IMAGES) in str(e.value) and str(tmp_path / "c" / "raw" / MNIST_IMAGES) in str(e.value)


def test_another_gzip_wrapper_is_accepted_other_content_is_not(tmp_path, monkeypatch):
    _fake_mnist(tmp_path / "a")
    _patch_mnist(monkeypatch, tmp_path / "a")
    b = tmp_path / "b"
    for p in (MNIST_IMAGES, MNIST_LABELS):  # same bytes, recompressed at another level with a timestamp
        (b / p).parent.mkdir(parents=True, exist_ok=True)
        (b / p).write_bytes(gzip.compress(gzip.decompress((tmp_path / "a" / p).read_bytes()), 1, mtime=12345))
    assert gp.data.file_digest(b / MNIST_IMAGES) != gp.data.file_digest(tmp_path / "a" / MNIST_IMAGES)
    ref = gp.data.load("mnist", data_dir=tmp_path / "a")
    data = gp.data.load("mnist", data_dir=b)
    np.testing.assert_array_equal(data.train, ref.train)
    write_idx(b / MNIST_LABELS, (np.arange(60) % 10)[::-1].astype(np.uint8))  # other content
    with pytest.raises(ChecksumMismatchError) as e:
        gp.data.load("mnist", data_dir=b)
    msg = str(e.value)
    assert str(b / MNIST_LABELS) in msg and "decompressed bytes" in msg
    assert DATASETS["mnist"].files[1].sha256 in msg and DATASETS["mnist"].files[1].content_sha256 in msg


def test_download_through_a_file_url(tmp_path, monkeypatch):
    served = tmp_path / "served"
    _fake_mnist(served)
    _patch_mnist(monkeypatch, served)
    cache = tmp_path / "c"
    data = gp.data.load("mnist", cache_dir=cache, mirror=served.as_uri())
    raw = {str(cache / "raw" / p) for p in (MNIST_IMAGES, MNIST_LABELS)}
    assert {s["location"] for s in data.metadata["sources"]} == raw
    assert (cache / "raw" / MNIST_IMAGES).read_bytes() == (served / MNIST_IMAGES).read_bytes()
    again = gp.data.load("mnist", cache_dir=cache, download=False)  # now found in the user cache
    np.testing.assert_array_equal(again.test, data.test)
    # a download with the wrong content is refused and nothing is kept
    write_idx(served / MNIST_IMAGES, np.zeros((60, 28, 28), np.uint8))
    with pytest.raises(ChecksumMismatchError, match="Nothing was kept"):
        gp.data.load("mnist", cache_dir=tmp_path / "c2", mirror=served.as_uri())
    assert not (tmp_path / "c2" / "raw" / MNIST_IMAGES).exists()
    assert not [p for p in (tmp_path / "c2" / "raw" / "mnist").iterdir() if p.name.startswith(".")]


def test_official_mnist_url_is_recorded():
    spec = gp.data.get_spec("mnist")
    assert [f.url for f in spec.files] == [f"http://yann.lecun.com/exdb/mnist/{Path(p).name}" for p in MNIST_SHA]
    assert [f.sha256 for f in spec.files] == list(MNIST_SHA.values())
    assert gp.data.dataset_names("images") == ["digits", "mnist"]
