"""``load(name)``: locate and verify the sources, preprocess (or read the HDF5 cache), return the splits."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .cache import cache_key, read_cache, write_cache
from .dataset import UCIData
from .fetch import default_cache_dir, locate
from .images import load_images
from .registry import get_spec, resolve_protocol
from .stream import H5Array, open_cache

__all__ = ["UCIData", "load"]


def load(
    name: str,
    data_dir: str | os.PathLike | None = None,
    seed: int = 0,
    *,
    cache_dir: str | os.PathLike | None = None,
    download: bool = True,
    mirror: str | None = None,
    refresh: bool = False,
    protocol: str | None = None,
    stream: bool = False,
) -> UCIData:
    """Load a benchmark dataset as preprocessed, float32 train / validation / test splits.

    The source files are looked up in ``data_dir``, then each folder of ``$GEBM_DATA_DIR`` (a list
    separated by ``os.pathsep``, like PATH), then the user cache
    (``cache_dir``, default ``$GEBM_CACHE_DIR`` or ``~/.cache/gebm_ppl``), and finally downloaded
    from the official source; each is verified against its published SHA-256. The preprocessed
    splits are cached in ``cache_dir/splits/<name>/seed<seed>.h5`` (fixed-split protocols:
    ``split.h5``; another protocol than the dataset's own: ``seed<seed>.<protocol>.h5``), keyed by
    the protocol, the source hashes and the preprocessing version; a stale or corrupt cache file is
    rebuilt.

    Image sets (``"digits"``: scikit-learn's bundled 8×8 digits; ``"mnist"``: the 10,000 MNIST test
    images, found as ``mnist/t10k-images-idx3-ubyte.gz`` and ``mnist/t10k-labels-idx1-ubyte.gz`` in
    the same folders) return an :class:`~gebm_ppl.data.ImageData`: flat pixels in [−1, 1] split
    80 / 10 / 10 stratified by label with ``seed``, plus ``labels`` and ``image_shape``. They are
    rebuilt from the source at each call (no split cache: it would be slower than decoding).

    Args:
        name: a name in :data:`gebm_ppl.data.DATASETS` (``"red-wine"``, ``"white-wine"``,
            ``"parkinsons"``, ``"hepmass"``, ``"miniboone"``, ``"power"``, ``"gas"``,
            ``"hepmass-maf"``, ``"miniboone-maf"``, ``"bsds300"``, ``"digits"``, ``"mnist"``).
        data_dir: a folder holding the source files (must exist when given).
        seed: shuffling and dequantisation seed (kexpfam protocol; the MAF splits are fixed).
        cache_dir: cache folder (raw downloads and preprocessed splits).
        download: allow downloading missing files.
        mirror: base URL to download from instead of the official one (``$GEBM_DATA_MIRROR``).
        refresh: rebuild the preprocessed cache even if it is valid.
        stream: return the splits as :class:`~gebm_ppl.data.H5Array` views of the cache file
            (rows read on demand; ``fit_mle``, ``fit_kale`` and ``evaluate_gebm`` accept them)
            instead of arrays; a valid cache is checked chunk by chunk, never loaded whole (a
            first build still preprocesses in memory). Ignored for image sets.
        protocol: None (default) for the dataset's own protocol (``"kexpfam"``, ``"maf"``,
            ``"images"``), or ``"kexpfam-paper"`` (red-wine, white-wine, parkinsons): the
            preprocessing of the authors' code, whitened with statistics of all rows and
            dequantised for the wines only (see :mod:`gebm_ppl.data.kexpfam`). Recorded in
            ``metadata["protocol"]`` and in the cache key; an unknown name raises ValueError.

    Returns:
        :class:`UCIData` with ``train``, ``val``, ``test`` (``[N, D]`` float32) and ``metadata``.

    Example:
        >>> data = load("red-wine", seed=0)  # doctest: +SKIP
        >>> data.train.shape, data.metadata["protocol"]  # doctest: +SKIP
        ((1296, 11), 'kexpfam')
    """
    spec = get_spec(name)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"'seed' should be a non-negative integer. Got {seed!r}.")
    seed = int(seed)
    protocol, builder = resolve_protocol(spec, protocol)
    cache_root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if spec.protocol == "images":
        return load_images(spec, data_dir, seed, cache_dir=cache_root, download=download, mirror=mirror)
    found = locate(spec, data_dir=data_dir, cache_dir=cache_root, download=download, mirror=mirror)
    sources = [
        {
            "path": s.path,
            "location": str(found[s.path][0]),
            "sha256": found[s.path][1],
            "expected_sha256": s.sha256,
            "url": s.url,
            "archive": s.archive,
        }
        for s in spec.files
    ]
    split_seed = seed if spec.seeded else None
    key = cache_key(
        name=spec.name,
        protocol=protocol,
        version=spec.version,
        seed=split_seed,
        sources={s["path"]: s["sha256"] for s in sources},
    )
    stem = f"seed{seed}" if spec.seeded else "split"
    suffix = "" if protocol == spec.protocol else f".{protocol}"  # the default protocol keeps its file name
    cache_path = cache_root / "splits" / spec.name / f"{stem}{suffix}.h5"
    if stream:  # check the cache file in chunks instead of loading it
        streamed = None if refresh else open_cache(cache_path, key)
        cached = None if streamed is None else (None, streamed)
    else:
        cached = None if refresh else read_cache(cache_path, key)
    if cached is not None:
        splits, metadata = cached
        metadata["sources"] = sources  # where the files were found this time
    else:
        paths = {p: loc for p, (loc, _) in found.items()}
        train, val, test, params = builder(paths, split_seed)
        splits = {
            k: np.ascontiguousarray(x, dtype=np.float32)
            for k, x in zip(("train", "val", "test"), (train, val, test), strict=True)
        }
        for k, x in splits.items():
            if not np.isfinite(x).all():
                raise ValueError(f"{spec.name}: the preprocessed {k} split has NaN or inf entries.")
        metadata = {
            "name": spec.name,
            "protocol": protocol,
            "description": spec.description,
            "dim": int(splits["train"].shape[1]),
            "published_dim": spec.dim,
            "sizes": {k: int(x.shape[0]) for k, x in splits.items()},
            "seed": split_seed,
            "sources": sources,
            "preprocessing": params,
        }
        write_cache(cache_path, key, splits, metadata)
    metadata["cache"] = str(cache_path)
    metadata["from_cache"] = cached is not None
    if stream:  # the splits as rows of the cache file, read on demand
        return UCIData(*(H5Array(cache_path, k) for k in ("train", "val", "test")), metadata)
    return UCIData(splits["train"], splits["val"], splits["test"], metadata)
