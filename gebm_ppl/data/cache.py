"""HDF5 cache of preprocessed splits: one file per dataset and seed, keyed by sources and preprocessing."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from .._io import atomic_open

__all__ = ["CACHE_FORMAT", "cache_key", "read_cache", "write_cache"]

CACHE_FORMAT = "gebm_ppl.data.splits"
CACHE_VERSION = 1
SPLITS = ("train", "val", "test")
_log = logging.getLogger(__name__)


def cache_key(**parts) -> str:
    """SHA-256 of the canonical JSON of ``parts`` (dataset, protocol version, seed, source hashes)."""
    blob = json.dumps({"cache_version": CACHE_VERSION, **parts}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


def _array_digest(x: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()


def write_cache(path: str | os.PathLike, key: str, splits: dict[str, np.ndarray], metadata: dict) -> None:
    """Write the float32 splits, ``metadata`` (JSON attribute), the key and per-split digests atomically."""
    import h5py

    with atomic_open(path, "w+b") as f, h5py.File(f, "w") as h5:
        h5.attrs["format"] = CACHE_FORMAT
        h5.attrs["version"] = CACHE_VERSION
        h5.attrs["key"] = key
        h5.attrs["metadata"] = json.dumps(metadata)
        h5.attrs["digests"] = json.dumps({k: _array_digest(splits[k]) for k in SPLITS})
        sources = metadata.get("sources", [])
        h5.attrs["source_sha256"] = json.dumps({s["path"]: s["sha256"] for s in sources})
        h5.attrs["preprocessing"] = json.dumps(metadata.get("preprocessing", {}))
        for k in SPLITS:
            h5.create_dataset(k, data=splits[k])


def read_cache(path: str | os.PathLike, key: str) -> tuple[dict[str, np.ndarray], dict] | None:
    """The cached ``(splits, metadata)`` if the file exists, reads back intact and has ``key``; else None.

    A torn or corrupt file, another format version, a different key (stale: other sources,
    preprocessing or seed) or an array whose digest differs all give None, so the caller rebuilds.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        return None
    try:
        with h5py.File(path, "r") as h5:
            if h5.attrs.get("format") != CACHE_FORMAT or int(h5.attrs.get("version", -1)) != CACHE_VERSION:
                _log.info("cache %s has another format or version; rebuilding", path)
                return None
            if h5.attrs.get("key") != key:
                _log.info("cache %s is stale (key differs); rebuilding", path)
                return None
            digests = json.loads(h5.attrs["digests"])
            splits = {k: np.asarray(h5[k][()]) for k in SPLITS}
            metadata = json.loads(h5.attrs["metadata"])
    except Exception as e:  # h5py raises OSError, KeyError, ValueError, ... on corrupt files
        _log.info("cache %s is unreadable (%s: %s); rebuilding", path, type(e).__name__, e)
        return None
    for k, x in splits.items():
        if x.dtype != np.float32 or x.ndim != 2 or _array_digest(x) != digests.get(k):
            _log.info("cache %s: split %r fails its digest; rebuilding", path, k)
            return None
    return splits, metadata
