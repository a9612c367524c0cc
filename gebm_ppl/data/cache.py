"""HDF5 cache of preprocessed splits: one file per dataset and seed, keyed by sources and preprocessing.

Each cache file ends with a trailer holding the SHA-256 of every byte before it (HDF5 ignores bytes
past its own end of file), written in the same atomic write. :func:`read_cache` checks it before
h5py opens the file: HDF5 can loop forever (in C code that no signal interrupts) on a file with a
single damaged byte, so a file whose digest does not match is never opened, but rebuilt.
"""

from __future__ import annotations

import hashlib
import io
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
_TRAILER_TAG = b"\ngebm_ppl-sha256 "
_TRAILER_SIZE = len(_TRAILER_TAG) + 64 + 1  # tag, hex digest, newline
_log = logging.getLogger(__name__)


def cache_key(**parts) -> str:
    """SHA-256 of the canonical JSON of ``parts`` (dataset, protocol version, seed, source hashes)."""
    blob = json.dumps({"cache_version": CACHE_VERSION, **parts}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


def _array_digest(x: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()


def _trailer(content: bytes) -> bytes:
    return _TRAILER_TAG + hashlib.sha256(content).hexdigest().encode() + b"\n"


def write_cache(path: str | os.PathLike, key: str, splits: dict[str, np.ndarray], metadata: dict) -> None:
    """Write the float32 splits, ``metadata`` (JSON attribute), the key and per-split digests atomically.

    The HDF5 file is followed by the trailer ``"\\ngebm_ppl-sha256 <hex>\\n"``, the SHA-256 of all
    bytes before it, in the same atomic write (so no crash can separate the file from its digest).
    """
    with atomic_open(path, "w+b") as f:
        _write_hdf5(f, key, splits, metadata)
        f.seek(0)
        content = f.read()
        f.seek(0, os.SEEK_END)
        f.write(_trailer(content))


def _write_hdf5(f, key: str, splits: dict[str, np.ndarray], metadata: dict) -> None:
    import h5py

    with h5py.File(f, "w") as h5:
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

    A missing or mismatched whole-file SHA-256 (checked before h5py sees the file: a cache written
    by an older version, a torn or damaged file), a corrupt file, another format version, a
    different key (stale: other sources, preprocessing or seed) or an array whose digest differs
    all give None, so the caller rebuilds.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        return None
    try:
        content = path.read_bytes()
    except OSError as e:
        _log.info("cache %s is unreadable (%s: %s); rebuilding", path, type(e).__name__, e)
        return None
    body, trailer = content[:-_TRAILER_SIZE], content[-_TRAILER_SIZE:]
    if len(content) <= _TRAILER_SIZE or trailer != _trailer(body):
        _log.info("cache %s does not end with its SHA-256 or fails it (damaged or older); rebuilding", path)
        return None
    try:
        with h5py.File(io.BytesIO(body), "r") as h5:
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
