"""The builders of the image sets (scikit-learn's 8×8 digits, MNIST's test set): source files → pixels and labels."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from .checksums import ChecksumMismatchError, file_digest
from .idx import read_idx
from .readers import SourceFormatError

__all__ = ["DIGITS_CONTENT_SHA256", "DIGITS_FILE_SHA256", "build_digits", "build_mnist"]

# sha256 of the decoded digits (uint8 pixels [1797, 64] then uint8 labels [1797], C order): the check
# does not depend on the gzip wrapper of the copy inside the scikit-learn wheel
DIGITS_CONTENT_SHA256 = "87ff0c9e40dc7e2c0e34e7257799c2e3f3aec1a016363bb11cad869ec428a826"
# sha256 of sklearn/datasets/data/digits.csv.gz in scikit-learn 1.9.1 (recorded, not required)
DIGITS_FILE_SHA256 = "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22"


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
