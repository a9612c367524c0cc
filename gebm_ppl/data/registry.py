"""The dataset registry: names, protocols, source files (paths, sha256, URLs) and builders."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from . import kexpfam, maf
from .image_sources import build_digits, build_mnist

__all__ = [
    "ARCHIVES",
    "DATASETS",
    "PROTOCOLS",
    "Archive",
    "DatasetSpec",
    "SourceFile",
    "dataset_names",
    "get_spec",
    "resolve_protocol",
]

_UCI = "https://archive.ics.uci.edu/ml/machine-learning-databases"


@dataclass(frozen=True)
class Archive:
    """A compressed archive that holds source files as members.

    Attributes:
        name: key in :data:`ARCHIVES`.
        url: official download URL.
        md5: the checksum the archive's host publishes (Zenodo publishes MD5 only).
        prefix: path prefix of the members inside the archive.
        filename: file name of the archive.
    """

    name: str
    url: str
    md5: str
    prefix: str
    filename: str


@dataclass(frozen=True)
class SourceFile:
    """One source file of a dataset.

    Attributes:
        path: path relative to a data folder, e.g. ``"wine-quality/winequality-red.csv"``.
        sha256: the expected SHA-256, or None when no independent hash is published (then the
            actual hash is recorded in the metadata but cannot be checked).
        url: official download URL (None for archive members).
        archive: name of the :class:`Archive` holding the file, if any.
        content_sha256: for a gzip file, the SHA-256 of its decompressed bytes: a file whose own
            hash differs from ``sha256`` is still accepted when its content has this hash (the
            same data in another gzip wrapper, e.g. the official download vs a copy).
    """

    path: str
    sha256: str | None
    url: str | None = None
    archive: str | None = None
    content_sha256: str | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset: its name, protocol, published dimension, source files and builder.

    ``builder(paths, seed)`` maps ``{relative path: local path}`` to ``(train, val, test, params)``:
    float64 arrays ``[N, D]`` and a dict of preprocessing parameters (plain JSON values).
    ``seeded`` is False for protocols with fixed published splits (MAF), where ``seed`` is ignored.
    ``variants`` maps the other protocols the dataset can be built under (e.g. ``"kexpfam-paper"``)
    to their builders, with the same signature.
    Image sets (protocol ``"images"``) have ``builder(paths) -> (pixels, labels, image_shape, params)``
    instead: raw ``[N, D]`` grey levels, int labels, ``(C, H, W)`` and the scaling; the project splits them.
    """

    name: str
    protocol: str
    dim: int
    files: tuple[SourceFile, ...]
    builder: Callable = field(repr=False)
    description: str = ""
    seeded: bool = True
    version: int = 1
    variants: Mapping[str, Callable] = field(default_factory=dict, repr=False)


ARCHIVES: dict[str, Archive] = {
    "maf": Archive(
        name="maf",
        url="https://zenodo.org/record/1161203/files/data.tar.gz",
        md5="9b9c9b0375315ad270eba4ce80c093ab",
        prefix="data/",
        filename="maf-data.tar.gz",
    )
}

_RED = SourceFile(
    "wine-quality/winequality-red.csv",
    "4a402cf041b025d4566d954c3b9ba8635a3a8a01e039005d97d6a710278cf05e",
    f"{_UCI}/wine-quality/winequality-red.csv",
)
_WHITE = SourceFile(
    "wine-quality/winequality-white.csv",
    "76c3f809815c17c07212622f776311faeb31e87610d52c26d87d6e361b169836",
    f"{_UCI}/wine-quality/winequality-white.csv",
)
_PARKINSONS = SourceFile(
    "parkinsons-telemonitoring/parkinsons_updrs.data",
    "f2c7d5025dec4e92e7feae367a5f7ccf58789a10ac6b54bdf15976c599f9dd39",
    f"{_UCI}/parkinsons/telemonitoring/parkinsons_updrs.data",
)
_POWER = SourceFile("power/data.npy", None, archive="maf")
_GAS = SourceFile("gas/ethylene_CO.pickle", None, archive="maf")
_HEPMASS = (
    SourceFile("hepmass/1000_train.csv", None, archive="maf"),
    SourceFile("hepmass/1000_test.csv", None, archive="maf"),
)
_MINIBOONE = SourceFile("miniboone/data.npy", None, archive="maf")
_BSDS300 = SourceFile("BSDS300/BSDS300.hdf5", None, archive="maf")
_MNIST_URL = "http://yann.lecun.com/exdb/mnist"
_MNIST = (
    SourceFile(
        "mnist/t10k-images-idx3-ubyte.gz",
        "167310007f03058885c7e95e6c0b19c20de5c7fd3031f4cbdadc9014a523d80b",
        f"{_MNIST_URL}/t10k-images-idx3-ubyte.gz",
        content_sha256="0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    ),
    SourceFile(
        "mnist/t10k-labels-idx1-ubyte.gz",
        "fc607395669ec21321ea83e4b82c0544b7e8e63ff5b34337c06bc0a17cc0da3c",
        f"{_MNIST_URL}/t10k-labels-idx1-ubyte.gz",
        content_sha256="ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ),
)


def _specs() -> dict[str, DatasetSpec]:
    specs = [
        DatasetSpec(
            "red-wine", "kexpfam", 11, (_RED,), kexpfam.build_wine, "Wine Quality (red), UCI id 186",
            variants={"kexpfam-paper": kexpfam.build_wine_paper},
        ),
        DatasetSpec(
            "white-wine", "kexpfam", 11, (_WHITE,), kexpfam.build_wine, "Wine Quality (white), UCI id 186",
            variants={"kexpfam-paper": kexpfam.build_wine_paper},
        ),
        DatasetSpec(
            "parkinsons",
            "kexpfam",
            15,
            (_PARKINSONS,),
            kexpfam.build_parkinsons,
            "Parkinsons Telemonitoring, UCI id 189",
            variants={"kexpfam-paper": kexpfam.build_parkinsons_paper},
        ),
        DatasetSpec("hepmass", "kexpfam", 22, _HEPMASS, kexpfam.build_hepmass, "HEPMASS (positive class), MAF archive"),
        DatasetSpec("miniboone", "kexpfam", 43, (_MINIBOONE,), kexpfam.build_miniboone, "MiniBooNE, MAF archive"),
        DatasetSpec("power", "maf", 6, (_POWER,), maf.build_power, "Household power consumption", seeded=False),
        DatasetSpec("gas", "maf", 8, (_GAS,), maf.build_gas, "Gas sensor array (ethylene + CO)", seeded=False),
        DatasetSpec("hepmass-maf", "maf", 21, _HEPMASS, maf.build_hepmass, "HEPMASS (positive class)", seeded=False),
        DatasetSpec("miniboone-maf", "maf", 43, (_MINIBOONE,), maf.build_miniboone, "MiniBooNE", seeded=False),
        DatasetSpec("bsds300", "maf", 63, (_BSDS300,), maf.build_bsds300, "BSDS300 8x8 patches", seeded=False),
        DatasetSpec("digits", "images", 64, (), build_digits, "UCI optical digits 8x8 (scikit-learn's copy)"),
        DatasetSpec("mnist", "images", 784, _MNIST, build_mnist, "MNIST test set, 28x28 (10,000 images)"),
    ]
    return {s.name: s for s in specs}


DATASETS: dict[str, DatasetSpec] = _specs()
PROTOCOLS: tuple[str, ...] = ("kexpfam", "kexpfam-paper", "maf", "images")
"""Every protocol name: a dataset's own (``DatasetSpec.protocol``) or one of its ``variants``."""


def dataset_names(protocol: str | None = None) -> list[str]:
    """Registered dataset names, optionally only those of one protocol (``"kexpfam"``, ``"maf"``, ``"images"``)."""
    return [n for n, s in DATASETS.items() if protocol is None or s.protocol == protocol]


def resolve_protocol(spec: DatasetSpec, protocol: str | None) -> tuple[str, Callable]:
    """``(protocol, builder)`` of ``spec`` under ``protocol`` (None: the dataset's own protocol).

    Raises:
        ValueError: an unknown protocol name (the known ones are listed), or one this dataset is not
            offered under (its protocols are listed).
    """
    if protocol is None or protocol == spec.protocol:
        return spec.protocol, spec.builder
    if not isinstance(protocol, str) or protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}. Known protocols: {', '.join(PROTOCOLS)}.")
    if protocol not in spec.variants:
        offered = ", ".join([spec.protocol, *spec.variants])
        raise ValueError(f"dataset {spec.name!r} has no protocol {protocol!r}; its protocols: {offered}.")
    return protocol, spec.variants[protocol]


def get_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of ``name``; a ValueError listing the known names otherwise."""
    if not isinstance(name, str):
        raise TypeError(f"'name' should be a dataset name (str). Got {type(name).__name__}.")
    key = name.strip().lower().replace("_", "-")
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}. Known datasets: {', '.join(DATASETS)}.")
    return DATASETS[key]
