"""Image data sets (scikit-learn's 8×8 digits, MNIST's test set): ``ImageData``, builders, stratified splits."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .fetch import ChecksumMismatchError, file_digest, locate
from .idx import read_idx
from .load import UCIData
from .readers import SourceFormatError

__all__ = ["SPLIT_FRACTIONS", "ImageData", "build_digits", "build_mnist", "stratified_split"]

SPLIT_FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}
SPLITS = ("train", "val", "test")
# sha256 of the decoded digits (uint8 pixels [1797, 64] then uint8 labels [1797], C order): the check
# does not depend on the gzip wrapper of the copy inside the scikit-learn wheel
DIGITS_CONTENT_SHA256 = "87ff0c9e40dc7e2c0e34e7257799c2e3f3aec1a016363bb11cad869ec428a826"
# sha256 of sklearn/datasets/data/digits.csv.gz in scikit-learn 1.9.1 (recorded, not required)
DIGITS_FILE_SHA256 = "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22"


@dataclass(frozen=True, kw_only=True)
class ImageData(UCIData):
    """Flattened images in [−1, 1] with labels, split by the project (stratified by label).

    Attributes:
        train, val, test: ``[N, D]`` float32 pixels, ``D = C·H·W`` (C order of ``(C, H, W)``).
        labels: ``{"train", "val", "test"} -> [N]`` int64 class labels.
        image_shape: ``(C, H, W)``.
        metadata: name, protocol ``"images"``, dim, image_shape, sizes, seed, sources (location,
            sha256, expected sha256), scaling, class counts per split.
    """

    labels: dict
    image_shape: tuple

    @property
    def num_classes(self) -> int:
        return int(max(int(y.max()) for y in self.labels.values()) + 1)

    @property
    def label_prior(self) -> np.ndarray:
        """Class frequencies of the training split, ``[num_classes]`` float64."""
        counts = np.bincount(self.labels["train"], minlength=self.num_classes)
        return counts / counts.sum()

    def images(self, split: str = "train") -> np.ndarray:
        """One split as ``[N, C, H, W]`` images (a view of the flat array)."""
        if split not in SPLITS:
            raise ValueError(f"'split' should be one of {SPLITS}. Got {split!r}.")
        return getattr(self, split).reshape(-1, *self.image_shape)

    def __repr__(self) -> str:
        m = self.metadata
        return (
            f"ImageData(name={m.get('name')!r}, image_shape={tuple(self.image_shape)}, train={len(self.train)}, "
            f"val={len(self.val)}, test={len(self.test)}, classes={self.num_classes}, seed={m.get('seed')!r})"
        )


def _allocate(total: int, counts: np.ndarray, fraction: float) -> np.ndarray:
    """Per-class counts summing to ``total``, proportional to ``counts`` (largest remainder)."""
    quota = counts * fraction
    out = np.floor(quota).astype(np.int64)
    order = np.argsort(-(quota - out), kind="stable")
    out[order[: total - out.sum()]] += 1
    return out


def stratified_split(labels: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Row indices of train / val / test, 80 / 10 / 10 within every class.

    The test and validation sizes are ``round(0.1·N)`` each, shared between classes in proportion
    to their counts (largest remainder); within a class the rows are ``default_rng(seed)``'s
    permutation (test first, then val, the rest train), and each split is then shuffled.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    n = len(labels)
    n_test = _allocate(round(SPLIT_FRACTIONS["test"] * n), counts, SPLIT_FRACTIONS["test"])
    n_val = _allocate(round(SPLIT_FRACTIONS["val"] * n), counts, SPLIT_FRACTIONS["val"])
    parts: dict[str, list[np.ndarray]] = {k: [] for k in SPLITS}
    for c, t, v in zip(classes, n_test, n_val, strict=True):
        rows = rng.permutation(np.flatnonzero(labels == c))
        parts["test"].append(rows[:t])
        parts["val"].append(rows[t : t + v])
        parts["train"].append(rows[t + v :])
    return {k: rng.permutation(np.concatenate(parts[k])) for k in SPLITS}


def _digits_file() -> Path:
    import importlib.resources

    return Path(str(importlib.resources.files("sklearn.datasets.data") / "digits.csv.gz"))


def build_digits(paths: dict | None = None):
    """scikit-learn's copy of the UCI optical digits: 1797 images 8×8, 17 grey levels 0..16.

    Scaling x ↦ x/8 − 1 maps the levels onto [−1, 1]. The decoded pixels and labels are checked
    against their known SHA-256 (the file's own hash is recorded).
    """
    import sklearn
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pixels = np.asarray(bunch.data)
    labels = np.asarray(bunch.target)
    if pixels.shape != (1797, 64) or pixels.min() < 0 or pixels.max() > 16 or not np.all(pixels == np.round(pixels)):
        raise SourceFormatError(f"scikit-learn's digits have an unexpected shape or range: {pixels.shape}")
    pixels = pixels.astype(np.uint8)
    labels = labels.astype(np.uint8)
    path = _digits_file()
    content = hashlib.sha256(pixels.tobytes() + labels.tobytes()).hexdigest()
    if content != DIGITS_CONTENT_SHA256:
        raise ChecksumMismatchError(
            f"the digits of scikit-learn {sklearn.__version__} ({str(path)!r}) differ from the known data: "
            f"decoded pixels+labels have SHA-256 {content}, expected {DIGITS_CONTENT_SHA256}."
        )
    sources = [
        {
            "path": "sklearn/datasets/data/digits.csv.gz",
            "location": str(path),
            "sha256": file_digest(path) if path.is_file() else None,
            "expected_sha256": DIGITS_FILE_SHA256,
            "content_sha256": content,
            "url": "https://archive.ics.uci.edu/dataset/80/optical+recognition+of+handwritten+digits",
            "scikit_learn": sklearn.__version__,
        }
    ]
    scaling = {"levels": 17, "rule": "x / 8 - 1", "scale": 1 / 8, "shift": -1.0}
    return pixels, labels.astype(np.int64), (1, 8, 8), {"scaling": scaling, "sources": sources}


def build_mnist(paths: dict):
    """MNIST's 10,000 test images (28×28, 256 grey levels) from the IDX files; x ↦ x/127.5 − 1."""
    images_path = paths["mnist/t10k-images-idx3-ubyte.gz"]
    labels_path = paths["mnist/t10k-labels-idx1-ubyte.gz"]
    images = read_idx(images_path, magic=2051)
    labels = read_idx(labels_path, magic=2049)
    if images.shape[1:] != (28, 28):
        raise SourceFormatError(f"{str(images_path)!r}: expected 28x28 images, got dims {images.shape}")
    if labels.shape[0] != images.shape[0]:
        raise SourceFormatError(
            f"{str(labels_path)!r} has {labels.shape[0]} labels but {str(images_path)!r} has {images.shape[0]} "
            "images; the counts should match."
        )
    if labels.size and labels.max() > 9:
        raise SourceFormatError(f"{str(labels_path)!r}: labels should be digits 0..9, found {int(labels.max())}.")
    scaling = {"levels": 256, "rule": "x / 127.5 - 1", "scale": 1 / 127.5, "shift": -1.0}
    return images.reshape(len(images), -1), labels.astype(np.int64), (1, 28, 28), {"scaling": scaling}


def make_image_data(name: str, pixels: np.ndarray, labels: np.ndarray, image_shape: tuple, params: dict,
                    seed: int, sources: list[dict]) -> ImageData:  # fmt: skip
    """Scale the grey levels to [−1, 1], split 80/10/10 stratified by label, and wrap as :class:`ImageData`."""
    scaling = params["scaling"]
    x = (pixels.astype(np.float32) * np.float32(scaling["scale"]) + np.float32(scaling["shift"])).astype(np.float32)
    index = stratified_split(labels, seed)
    splits = {k: np.ascontiguousarray(x[index[k]]) for k in SPLITS}
    split_labels = {k: labels[index[k]].astype(np.int64) for k in SPLITS}
    num_classes = int(labels.max()) + 1
    metadata = {
        "name": name,
        "protocol": "images",
        "dim": int(x.shape[1]),
        "image_shape": list(image_shape),
        "sizes": {k: int(len(index[k])) for k in SPLITS},
        "split": {"fractions": SPLIT_FRACTIONS, "stratified_by": "label", "rule": "numpy default_rng(seed)"},
        "seed": seed,
        "sources": sources,
        "scaling": scaling,
        "class_counts": {k: np.bincount(split_labels[k], minlength=num_classes).tolist() for k in SPLITS},
    }
    return ImageData(
        splits["train"], splits["val"], splits["test"], metadata, labels=split_labels, image_shape=tuple(image_shape)
    )


def load_images(spec, data_dir, seed: int, *, cache_dir: Path, download: bool, mirror: str | None) -> ImageData:
    """Locate and verify the sources of an image set (none for the bundled digits), decode, scale and split."""
    if spec.files:
        found = locate(spec, data_dir=data_dir, cache_dir=cache_dir, download=download, mirror=mirror)
        sources = [
            {
                "path": s.path,
                "location": str(found[s.path][0]),
                "sha256": found[s.path][1],
                "expected_sha256": s.sha256,
                "content_sha256": s.content_sha256,
                "url": s.url,
            }
            for s in spec.files
        ]
        pixels, labels, image_shape, params = spec.builder({p: loc for p, (loc, _) in found.items()})
    else:
        if data_dir is not None and not Path(data_dir).expanduser().is_dir():
            raise FileNotFoundError(f"data_dir {str(data_dir)!r} does not exist or is not a folder.")
        pixels, labels, image_shape, params = spec.builder({})
        sources = params.pop("sources")
    data = make_image_data(spec.name, pixels, labels, image_shape, params, seed, sources)
    data.metadata["description"] = spec.description
    data.metadata["from_cache"] = False
    return data
