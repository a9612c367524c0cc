"""Image data sets (scikit-learn's 8×8 digits, MNIST's test set): ``ImageData``, builders, stratified splits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .dataset import UCIData
from .fetch import locate
from .image_sources import build_digits, build_mnist

__all__ = ["SPLIT_FRACTIONS", "ImageData", "build_digits", "build_mnist", "stratified_split"]

SPLIT_FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}
SPLITS = ("train", "val", "test")



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
