"""Rows of an HDF5 dataset ``[N, D]`` read on demand: :class:`H5Array`, and the streamed split cache.

An :class:`H5Array` stands in for a ``[N, D]`` tensor wherever the training and evaluation code
reads data (``x[indices]``, ``x[a:b]``, ``for chunk in x.split(b)``, ``x.shape``), so that
:func:`gebm_ppl.fit_mle`, :func:`gebm_ppl.fit_kale` and :func:`gebm_ppl.evaluate_gebm` run on
data larger than memory. Its :meth:`H5Array.permutation` is a chunk-local shuffle: a minibatch
drawn from it touches only the chunks of one block, so the array's chunk cache (one block) reads
each chunk about once per epoch. :func:`open_cache` checks a split cache written by
:func:`gebm_ppl.data.write_cache` without loading it (for ``gp.data.load(..., stream=True)``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .cache import _TRAILER_SIZE, _TRAILER_TAG, CACHE_FORMAT, CACHE_VERSION, SPLITS

__all__ = ["H5Array", "open_cache", "scan"]

_VIRTUAL_CHUNK_BYTES = 1 << 20  # rows per "chunk" of a contiguous dataset: 1 MiB of them
_BLOCK_BYTES = 64 << 20  # default shuffle block (and chunk cache): 64 MiB


class H5Array:
    """A ``[N, D]`` HDF5 dataset that reads rows when indexed; returns tensors of ``dtype`` on ``device``.

    The file is opened lazily, once per process (an H5Array pickles as its path and settings, so
    DataLoader workers and spawned ranks reopen it). Reads: ``x[idx]`` for an index tensor or
    array (the rows are taken from whole chunks held in a least-recently-used cache of one
    shuffle block, then returned in the order of ``idx``, repeats included), ``x[a:b]`` / ``x[i]``
    (read directly), and ``x.split(size)``, a generator of contiguous ``[size, D]`` tensors (so
    ``for chunk in x.split(b)`` works as on a tensor).

    Chunks: the dataset's HDF5 chunks (``chunk_rows`` rows), or for a contiguous dataset blocks of
    ``chunk_rows`` rows (default: 1 MiB of rows); the chunked passes (the finiteness check and
    fingerprint of :func:`scan`) read one chunk at a time. :meth:`permutation` shuffles the order
    of the chunks, groups them into blocks of ``block_bytes`` (default 64 MiB) and shuffles the
    rows within each block; a data set that fits in one block gets ``torch.randperm(N, generator)``,
    the order the training loop uses for a tensor, so streamed and in-memory training then see the
    same minibatches. Following that order, an epoch reads every chunk about once; a uniform
    random index over an array larger than a block would read about one chunk per row instead.

    Memory bound: the chunk cache (at most ``block_bytes``, default 64 MiB, and at least one
    chunk), plus the rows a read returns (``len(idx) × D``, or one ``size × D`` chunk of
    ``split(size)`` at a time); an index permutation is 8 bytes per row. A data set smaller than
    ``block_bytes`` ends up wholly in the cache (at its own size); a larger one is never all in
    memory.

    Args:
        path: the HDF5 file.
        name: the dataset inside it (e.g. ``"train"``).
        dtype: dtype of the returned tensors (default float32).
        device: device of the returned tensors (default CPU).
        block_bytes: shuffle block and chunk-cache size in bytes.
        chunk_rows: rows per chunk of a contiguous dataset (ignored for a chunked one, whose
            HDF5 chunks are used).

    Raises:
        FileNotFoundError: no file at ``path``.
        KeyError: the file has no dataset ``name`` (the message lists the datasets it has).
        ValueError: the dataset is not 2-D or has no rows or columns. TypeError: not real numbers.

    Example:
        >>> import h5py, numpy as np, torch, gebm_ppl as gp
        >>> with h5py.File("rows.h5", "w") as f:
        ...     _ = f.create_dataset("train", data=np.random.default_rng(0).normal(size=(500, 2)).astype("float32"))
        >>> x = gp.data.H5Array("rows.h5", "train")
        >>> x.shape, x[torch.tensor([3, 1, 3])].shape
        (torch.Size([500, 2]), torch.Size([3, 2]))
        >>> base = gp.RealNVP(2, hidden_features=8, num_layers=2)
        >>> len(gp.fit_mle(base, x, epochs=2, batch_size=100, progress=False).records)  # streams the rows
        2
    """

    def __init__(
        self,
        path: str | os.PathLike,
        name: str,
        *,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        block_bytes: int = _BLOCK_BYTES,
        chunk_rows: int | None = None,
    ):
        import h5py

        self.path, self.name = str(Path(path).expanduser()), str(name)
        self.dtype, self.device = dtype, torch.device(device)
        if isinstance(block_bytes, bool) or not isinstance(block_bytes, int) or block_bytes < 1:
            raise ValueError(f"'block_bytes' should be a positive integer. Got {block_bytes!r}.")
        self.block_bytes = block_bytes
        bad_rows = isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1
        if chunk_rows is not None and bad_rows:
            raise ValueError(f"'chunk_rows' should be None or a positive integer. Got {chunk_rows!r}.")
        if not Path(self.path).is_file():
            raise FileNotFoundError(f"H5Array: no HDF5 file at {self.path!r}.")
        with h5py.File(self.path, "r") as f:
            if self.name not in f or not isinstance(f[self.name], h5py.Dataset):
                have = sorted(k for k, v in f.items() if isinstance(v, h5py.Dataset))
                raise KeyError(f"H5Array: {self.path!r} has no dataset {self.name!r}; it has {have}.")
            ds = f[self.name]
            shape, self.file_dtype, chunks = tuple(ds.shape), ds.dtype, ds.chunks
        if len(shape) != 2 or shape[0] == 0 or shape[1] == 0:
            raise ValueError(f"H5Array: {self.path!r}:{self.name} should have shape [N, D], N, D >= 1. Got {shape}.")
        if self.file_dtype == np.bool_ or not (
            np.issubdtype(self.file_dtype, np.floating) or np.issubdtype(self.file_dtype, np.integer)
        ):
            raise TypeError(f"H5Array: {self.path!r}:{self.name} should hold real numbers. Got {self.file_dtype}.")
        self.shape = torch.Size(shape)
        row_bytes = shape[1] * self.file_dtype.itemsize
        self.chunked = chunks is not None
        if chunks is not None:
            self.chunk_rows = int(chunks[0])
        else:
            self.chunk_rows = chunk_rows if chunk_rows is not None else max(1, _VIRTUAL_CHUNK_BYTES // row_bytes)
        self.block_chunks = max(1, block_bytes // (self.chunk_rows * row_bytes))
        self._file = self._ds = self._pid = None
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    # ------------------------------------------------------------ tensor-like surface
    def __len__(self) -> int:
        return self.shape[0]

    def dim(self) -> int:
        return 2

    ndim = 2

    def __repr__(self) -> str:
        where = f"{self.path!r}, {self.name!r}"
        return f"H5Array({where}, shape={tuple(self.shape)}, dtype={self.dtype}, device={self.device})"

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> H5Array:
        """The same rows returned as ``dtype`` on ``device`` (a new H5Array over the same file)."""
        if isinstance(device, torch.dtype):  # x.to(torch.float64), as on a tensor
            device, dtype = None, device
        out = object.__new__(H5Array)
        out.__setstate__(self.__getstate__())
        out.dtype = self.dtype if dtype is None else dtype
        out.device = self.device if device is None else torch.device(device)
        return out

    # ------------------------------------------------------------ pickling: reopen per process
    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("_file", "_ds", "_pid", "_cache")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._file, self._ds, self._pid = None, None, None
        self._cache = OrderedDict()

    def _dataset(self):
        if self._file is None or self._pid != os.getpid():
            import h5py

            self._file = h5py.File(self.path, "r")
            self._ds = self._file[self.name]
            self._pid = os.getpid()
            self._cache.clear()
        return self._ds

    def close(self) -> None:
        """Close the file handle (it reopens on the next read)."""
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = self._ds = None
        self._cache.clear()

    # ------------------------------------------------------------ reads
    def _read(self, sel) -> np.ndarray:
        """The one place rows leave the file: ``dataset[sel]`` (a slice or sorted unique indices)."""
        return self._dataset()[sel]

    def _tensor(self, a: np.ndarray) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(device=self.device, dtype=self.dtype)

    def _chunk(self, c: int) -> np.ndarray:
        """Chunk ``c`` (rows ``c·chunk_rows`` onwards) from the cache, read whole on a miss."""
        self._dataset()  # (re)opens per process, clearing a cache inherited over fork
        block = self._cache.get(c)
        if block is None:
            block = self._read(slice(c * self.chunk_rows, min((c + 1) * self.chunk_rows, self.shape[0])))
            self._cache[c] = block
            while len(self._cache) > self.block_chunks:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(c)
        return block

    def read(self, start: int, stop: int) -> Tensor:
        """Rows ``start:stop`` as a tensor."""
        return self._tensor(self._read(slice(start, stop)))

    def __getitem__(self, idx) -> Tensor:
        n = self.shape[0]
        if isinstance(idx, slice):
            start, stop, step = idx.indices(n)
            if step == 1:
                return self.read(start, max(start, stop))
            idx = torch.arange(start, stop, step)
        if isinstance(idx, int | np.integer) and not isinstance(idx, bool):
            i = int(idx) + n if idx < 0 else int(idx)
            if not 0 <= i < n:
                raise IndexError(f"index {int(idx)} is out of range for an H5Array of {n} rows.")
            return self.read(i, i + 1)[0]
        if isinstance(idx, Tensor):
            if idx.dtype == torch.bool:
                idx = idx.nonzero().flatten()
            idx = idx.detach().cpu().numpy()
        idx = np.asarray(idx)
        if idx.dtype == np.bool_:
            idx = np.flatnonzero(idx)
        if not np.issubdtype(idx.dtype, np.integer) or idx.ndim != 1:
            raise IndexError(f"H5Array indices should be a 1-D integer tensor or array. Got {idx.dtype}, {idx.shape}.")
        idx = np.where(idx < 0, idx + n, idx).astype(np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"H5Array index out of range [0, {n}): min {int(idx.min())}, max {int(idx.max())}.")
        if idx.size == 0:
            return self._tensor(np.empty((0, self.shape[1]), dtype=self.file_dtype))
        out = np.empty((idx.size, self.shape[1]), dtype=self.file_dtype)
        chunk_of = idx // self.chunk_rows
        order = np.argsort(chunk_of, kind="stable")  # positions grouped by chunk
        cuts = np.flatnonzero(np.diff(chunk_of[order])) + 1
        for group in np.split(order, cuts):
            c = int(chunk_of[group[0]])
            out[group] = self._chunk(c)[idx[group] - c * self.chunk_rows]
        return self._tensor(out)

    def split(self, size: int) -> Iterator[Tensor]:
        """Contiguous ``[size, D]`` tensors (the last may be smaller), read one at a time."""
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"'size' should be a positive integer. Got {size!r}.")
        for start in range(0, self.shape[0], size):
            yield self.read(start, min(start + size, self.shape[0]))

    # ------------------------------------------------------------ shuffling
    def permutation(self, generator: torch.Generator | None = None) -> Tensor:
        """A chunk-local random order of the rows (a LongTensor ``[N]`` on the CPU).

        The chunks are put in random order and taken ``block_chunks`` at a time; the rows of each
        such block are shuffled uniformly. When every chunk fits in one block this is exactly
        ``torch.randperm(N, generator=generator)``.
        """
        n, rows = self.shape[0], self.chunk_rows
        n_chunks = -(-n // rows)
        if n_chunks <= self.block_chunks:
            return torch.randperm(n, generator=generator)
        order = torch.randperm(n_chunks, generator=generator)
        parts = []
        for b in range(0, n_chunks, self.block_chunks):
            members = order[b : b + self.block_chunks].sort().values
            idx = torch.cat([torch.arange(c * rows, min((c + 1) * rows, n)) for c in members.tolist()])
            parts.append(idx[torch.randperm(idx.numel(), generator=generator)])
        return torch.cat(parts)


def scan(x: H5Array) -> tuple[list[float], int | None, int]:
    """One pass over ``x``, a chunk at a time: (fingerprint, first non-finite row or None, number of such rows).

    The fingerprint is [N, D, Σx, Σx²] in float64, the same quantities as
    :func:`gebm_ppl.training._data.fingerprint` of the tensor (equal to float64 rounding).
    """
    size = x.chunk_rows
    total = total_sq = 0.0
    first, bad = None, 0
    for start in range(0, x.shape[0], size):
        a = np.asarray(x._read(slice(start, min(start + size, x.shape[0]))), dtype=np.float64)
        finite = np.isfinite(a).all(1)
        if not finite.all():
            if first is None:
                first = start + int(np.flatnonzero(~finite)[0])
            bad += int((~finite).sum())
            a = a[finite]
        total += float(a.sum())
        total_sq += float((a * a).sum())
    return [float(x.shape[0]), float(x.shape[1]), total, total_sq], first, bad


# ------------------------------------------------------------ the split cache, checked without loading it
def _file_digest_ok(path: Path) -> bool:
    size = path.stat().st_size
    if size <= _TRAILER_SIZE:
        return False
    h = hashlib.sha256()
    with open(path, "rb") as f:
        left = size - _TRAILER_SIZE
        while left > 0:
            block = f.read(min(left, 1 << 22))
            if not block:
                return False
            h.update(block)
            left -= len(block)
        trailer = f.read()
    return trailer == _TRAILER_TAG + h.hexdigest().encode() + b"\n"


def _split_digest(ds, rows: int) -> str:
    h = hashlib.sha256()
    for start in range(0, ds.shape[0], rows):
        h.update(np.ascontiguousarray(ds[start : start + rows]).tobytes())
    return h.hexdigest()


def open_cache(path: str | os.PathLike, key: str) -> dict | None:
    """The metadata of a valid split cache at ``path`` with ``key``, checked in chunks; else None.

    Checks what :func:`gebm_ppl.data.read_cache` checks (the whole-file SHA-256 trailer first,
    then format, version, key, and each split's SHA-256 and float32 [N, D] layout) while holding
    at most 4 MiB of the file in memory, so a cache larger than memory can be streamed.
    """
    import h5py

    path = Path(path)
    try:
        if not path.is_file() or not _file_digest_ok(path):
            return None
        with h5py.File(path, "r") as h5:
            if h5.attrs.get("format") != CACHE_FORMAT or int(h5.attrs.get("version", -1)) != CACHE_VERSION:
                return None
            if h5.attrs.get("key") != key:
                return None
            digests = json.loads(h5.attrs["digests"])
            for k in SPLITS:
                ds = h5[k]
                if ds.dtype != np.float32 or ds.ndim != 2:
                    return None
                if _split_digest(ds, max(1, (4 << 20) // (4 * max(1, ds.shape[1])))) != digests.get(k):
                    return None
            return json.loads(h5.attrs["metadata"])
    except Exception:  # h5py raises OSError, KeyError, ValueError, ... on damaged files: rebuild
        return None
