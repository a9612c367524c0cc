"""A small offline image classifier (MLP or CNN) trained on a data set's training split, cached on disk."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from .._io import atomic_torch_save
from .._modes import eval_mode

__all__ = ["CLASSIFIER_VERSION", "ImageClassifier", "default_arch", "load_classifier", "train_classifier"]

CLASSIFIER_VERSION = 1
_FORMAT = "gebm_ppl.metrics.classifier"
_log = logging.getLogger(__name__)


def default_arch(image_shape: tuple) -> dict:
    """The default architecture and training schedule for images of ``image_shape`` = (C, H, W).

    8×8 digits: MLP 64 → 256 → 128 (features) → 10, 40 epochs; 28×28: a CNN (two 5×5 conv + max-pool
    blocks of 16 and 32 channels, then 128 features), 6 epochs. Adam, lr 1e-3, batch 64, weight decay 1e-4.
    """
    c, h, w = image_shape
    if h * w <= 16 * 16:
        return {"arch": "mlp", "hidden": [256, 128], "epochs": 40, "lr": 1e-3, "batch_size": 64, "weight_decay": 1e-4}
    return {"arch": "cnn", "channels": [16, 32], "features": 128, "epochs": 6, "lr": 1e-3, "batch_size": 64,
            "weight_decay": 1e-4}  # fmt: skip


class ImageClassifier(nn.Module):
    """Classifier of flat images ``[N, C·H·W]`` in [−1, 1]; ``features`` is the penultimate layer.

    Attributes:
        image_shape: (C, H, W).
        num_classes: K.
        config: architecture and training keywords (see :func:`default_arch`).
        info: val_accuracy, train_accuracy, train_seconds, cache file, key (filled by :func:`load_classifier`).
    """

    def __init__(self, image_shape: tuple, num_classes: int, config: dict):
        super().__init__()
        self.image_shape = tuple(int(s) for s in image_shape)
        self.num_classes = int(num_classes)
        self.config = dict(config)
        self.info: dict = {}
        c, h, w = self.image_shape
        dim = c * h * w
        if config["arch"] == "mlp":
            layers: list[nn.Module] = []
            width = dim
            for hidden in config["hidden"]:
                layers += [nn.Linear(width, hidden), nn.ReLU()]
                width = hidden
            self.body = nn.Sequential(*layers)
        elif config["arch"] == "cnn":
            c1, c2 = config["channels"]
            self.body = nn.Sequential(
                nn.Unflatten(1, self.image_shape),
                nn.Conv2d(c, c1, 5, padding=2),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(c1, c2, 5, padding=2),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Flatten(),
                nn.Linear(c2 * (h // 4) * (w // 4), config["features"]),
                nn.ReLU(),
            )
            width = config["features"]
        else:
            raise ValueError(f"'arch' should be 'mlp' or 'cnn'. Got {config['arch']!r}.")
        self.head = nn.Linear(width, self.num_classes)

    @property
    def dim(self) -> int:
        c, h, w = self.image_shape
        return c * h * w

    def _check(self, x) -> Tensor:
        x = torch.as_tensor(x, dtype=torch.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(
                f"expected flat images [N, {self.dim}] (image_shape {self.image_shape}). Got shape {tuple(x.shape)}."
            )
        return x

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[N, K]``."""
        return self.head(self.body(x))

    @torch.no_grad()
    def _batched(self, x, fn, batch: int = 1000) -> np.ndarray:
        x = self._check(x)
        with eval_mode(self):
            out = [fn(x[i : i + batch]) for i in range(0, len(x), batch)]
        return torch.cat(out).double().numpy()

    def features(self, x) -> np.ndarray:
        """Penultimate-layer features ``[N, F]`` (float64 NumPy)."""
        return self._batched(x, self.body)

    def predict_proba(self, x) -> np.ndarray:
        """Class probabilities ``[N, K]`` (softmax of the logits, float64 NumPy)."""
        return self._batched(x, lambda b: torch.softmax(self(b), -1))

    def accuracy(self, x, labels) -> float:
        return float(np.mean(self.predict_proba(x).argmax(1) == np.asarray(labels)))


def _data_key(data) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(data.train, dtype=np.float32).tobytes())
    h.update(np.ascontiguousarray(data.labels["train"], dtype=np.int64).tobytes())
    return h.hexdigest()


def _key(data, seed: int, config: dict) -> str:
    blob = {"version": CLASSIFIER_VERSION, "data": _data_key(data), "shape": list(data.image_shape), "seed": seed,
            "config": config}  # fmt: skip
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


def _check_data(data) -> None:
    for attr in ("train", "val", "labels", "image_shape"):
        if not hasattr(data, attr):
            raise TypeError(f"'data' should be an ImageData (gp.data.load('digits') or 'mnist'); it has no {attr!r}.")


def train_classifier(data, seed: int = 0, config: dict | None = None) -> ImageClassifier:
    """Train an :class:`ImageClassifier` on ``data.train`` / ``data.labels["train"]`` only (cross-entropy, Adam).

    Seeded: initialisation and mini-batch order come from ``seed``. Records the validation accuracy.
    """
    _check_data(data)
    config = {**default_arch(data.image_shape), **(config or {})}
    x = torch.as_tensor(np.asarray(data.train), dtype=torch.float32)
    y = torch.as_tensor(np.asarray(data.labels["train"]), dtype=torch.int64)
    num_classes = int(max(int(v.max()) for v in data.labels.values()) + 1)
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ImageClassifier(data.image_shape, num_classes, config)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=config["lr"], weight_decay=config["weight_decay"])
    model.train()
    for _ in range(int(config["epochs"])):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), int(config["batch_size"])):
            idx = perm[i : i + int(config["batch_size"])]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()
    model.info = {
        "train_seconds": time.perf_counter() - start,
        "train_accuracy": model.accuracy(data.train, data.labels["train"]),
        "val_accuracy": model.accuracy(data.val, data.labels["val"]),
        "seed": seed,
        "torch_threads": torch.get_num_threads(),
    }
    return model


def load_classifier(
    data,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    *,
    config: dict | None = None,
    refresh: bool = False,
) -> ImageClassifier:
    """The classifier of ``data``: read from the disk cache, or trained once on the training split and cached.

    The cache file ``<cache_dir>/classifiers/<name>-<arch>-seed<seed>-<key>.pt`` is keyed by the SHA-256
    of the training pixels and labels, the seed, the architecture/schedule and the format version, and
    written atomically; a stale, torn or foreign file is retrained and replaced. The validation
    accuracy is in ``classifier.info["val_accuracy"]``.

    Args:
        data: an :class:`~gebm_ppl.data.ImageData`.
        seed: initialisation and mini-batch seed.
        cache_dir: cache root (default the data loaders' user cache, ``$GEBM_CACHE_DIR`` or ``~/.cache/gebm_ppl``).
        config: overrides of :func:`default_arch` (``arch``, ``hidden``, ``channels``, ``features``, ``epochs``, ...).
        refresh: retrain even if a valid cache file exists.

    Example:
        >>> import gebm_ppl as gp
        >>> data = gp.data.load("digits")
        >>> clf = load_classifier(data)  # doctest: +SKIP
        >>> clf.info["val_accuracy"] > 0.9, clf.features(data.test).shape  # doctest: +SKIP
        (True, (180, 128))
    """
    from ..data.fetch import default_cache_dir

    _check_data(data)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"'seed' should be a non-negative integer. Got {seed!r}.")
    seed = int(seed)
    config = {**default_arch(data.image_shape), **(config or {})}
    key = _key(data, seed, config)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    name = str(getattr(data, "metadata", {}).get("name", "data"))
    path = root / "classifiers" / f"{name}-{config['arch']}-seed{seed}-{key[:16]}.pt"
    if not refresh and path.is_file():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            if blob.get("format") != _FORMAT or blob.get("key") != key:
                raise ValueError("another format or key")
            model = ImageClassifier(tuple(blob["image_shape"]), int(blob["num_classes"]), blob["config"])
            model.load_state_dict(blob["state_dict"])
            model.eval()
            model.info = {**blob["info"], "cache": str(path), "key": key, "from_cache": True}
            return model
        except Exception as e:  # torn / foreign / stale file: retrain
            _log.info("classifier cache %s unusable (%s: %s); retraining", path, type(e).__name__, e)
    model = train_classifier(data, seed=seed, config=config)
    blob = {
        "format": _FORMAT,
        "version": CLASSIFIER_VERSION,
        "key": key,
        "image_shape": list(model.image_shape),
        "num_classes": model.num_classes,
        "config": config,
        "info": model.info,
        "state_dict": model.state_dict(),
    }
    atomic_torch_save(blob, path)
    model.info = {**model.info, "cache": str(path), "key": key, "from_cache": False}
    return model
