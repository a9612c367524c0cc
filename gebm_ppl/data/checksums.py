"""File digests (streamed, memoised) and the checksum error: the lowest layer of the data package."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["ChecksumMismatchError", "file_digest"]

_CHUNK = 1 << 20


class ChecksumMismatchError(ValueError):
    """A file's hash differs from the published one."""


_DIGESTS: dict[tuple[str, str, int, int], str] = {}


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file, streamed; memoised per (path, size, mtime) within the process."""
    path = Path(path)
    st = path.stat()
    key = (algorithm, str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.new(algorithm)
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]
