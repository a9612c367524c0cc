"""The IDX format of MNIST: big-endian int32 magic (type code, rank), big-endian int32 dims, then the data."""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from .readers import SourceFormatError

__all__ = ["IDX_DTYPES", "read_idx", "write_idx"]

# IDX type codes (the third byte of the magic number) -> big-endian NumPy dtypes
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def _fail(path: Path, detail: str) -> SourceFormatError:
    return SourceFormatError(f"could not read {str(path)!r} as an IDX file (truncated or corrupt file?): {detail}")


def _read_bytes(path: Path) -> bytes:
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError; a torn stream is an EOFError
        raise _fail(path, f"bad gzip stream ({type(e).__name__}: {e})") from e


def read_idx(path: str | os.PathLike, magic: int | None = None) -> np.ndarray:
    """Parse an IDX file (gzip-compressed or not) into an array of its dims, in native byte order.

    The header is the int32 magic ``0x0000TTRR`` (``TT`` the type code, ``0x08`` = uint8, ``RR``
    the rank), then ``RR`` big-endian int32 dims; the data follow in C order, big-endian.
    MNIST's images have magic 2051 (uint8, rank 3), its labels 2049 (uint8, rank 1).

    Args:
        path: the file (``.gz`` or raw; gzip is recognised by its first two bytes).
        magic: the magic number the file must have (None: any valid one).

    Raises:
        SourceFormatError: a bad gzip stream, a bad or unexpected magic number, a header or data
            shorter than the dims say (truncated), or bytes after the data.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise _fail(path, f"{len(raw)} bytes, shorter than the 4-byte magic number")
    (found,) = struct.unpack(">i", raw[:4])
    zero, code, rank = raw[0] << 8 | raw[1], raw[2], raw[3]
    if zero != 0 or code not in IDX_DTYPES or rank == 0:
        raise _fail(
            path,
            f"bad magic number {found} (0x{found & 0xFFFFFFFF:08x}); expected 0x0000TTRR with a type code TT "
            f"in {sorted(IDX_DTYPES)} and a rank RR >= 1",
        )
    if magic is not None and found != magic:
        raise _fail(path, f"magic number {found}, expected {magic}")
    header = 4 + 4 * rank
    if len(raw) < header:
        raise _fail(path, f"the header of {rank} dims needs {header} bytes, the file has {len(raw)}")
    dims = struct.unpack(f">{rank}i", raw[4:header])
    if any(d < 0 for d in dims):
        raise _fail(path, f"negative dims {dims}")
    dtype = IDX_DTYPES[code]
    need = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    have = len(raw) - header
    if have < need:
        raise _fail(path, f"dims {dims} need {need} data bytes, the file has {have} (truncated)")
    if have > need:
        raise _fail(path, f"{have - need} bytes after the {need} data bytes of dims {dims}")
    x = np.frombuffer(raw, dtype=dtype, count=need // dtype.itemsize, offset=header).reshape(dims)
    return x.astype(dtype.newbyteorder("="), copy=True)


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool | None = None) -> Path:
    """Write ``array`` as an IDX file (gzip-compressed when ``compress`` or, if None, when the name ends in .gz)."""
    path = Path(path)
    x = np.asarray(array)
    codes = {v.newbyteorder("="): k for k, v in IDX_DTYPES.items()}
    key = x.dtype.newbyteorder("=")
    if key not in codes or x.ndim == 0:
        names = sorted(str(d) for d in codes)
        raise ValueError(f"'array' should be a >=1-D array of {names}. Got {x.dtype} {x.shape}.")
    code = codes[key]
    blob = struct.pack(">i", code << 8 | x.ndim) + struct.pack(f">{x.ndim}i", *x.shape)
    blob += np.ascontiguousarray(x, dtype=IDX_DTYPES[code]).tobytes()
    if compress or (compress is None and path.suffix == ".gz"):
        blob = gzip.compress(blob, mtime=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(blob)
    return path
