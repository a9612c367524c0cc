"""UCIData: the preprocessed train/val/test splits of a dataset with their metadata."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .stream import H5Array

__all__ = ["UCIData"]


@dataclass(frozen=True)
class UCIData:
    """Preprocessed splits of a dataset.

    Attributes:
        train: ``[N_train, D]`` float32 (an :class:`~gebm_ppl.data.H5Array` with ``stream=True``).
        val: ``[N_val, D]`` float32 (likewise).
        test: ``[N_test, D]`` float32 (likewise).
        metadata: name, protocol, dim, sizes, seed, sources (path, location, sha256, expected
            sha256), preprocessing parameters, cache file.
    """

    train: np.ndarray | H5Array
    val: np.ndarray | H5Array
    test: np.ndarray | H5Array
    metadata: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.metadata["name"]

    @property
    def dim(self) -> int:
        return int(self.train.shape[1])

    def tensors(self, dtype=None, device=None) -> tuple:
        """(train, val, test) as torch tensors (float32 unless ``dtype`` says otherwise); streamed: H5Arrays of them."""
        import torch

        dtype = torch.float32 if dtype is None else dtype
        return tuple(
            x.to(device=device, dtype=dtype)
            if isinstance(x, H5Array)
            else torch.as_tensor(x, dtype=dtype, device=device)
            for x in (self.train, self.val, self.test)
        )

    def __repr__(self) -> str:
        m = self.metadata
        return (
            f"UCIData(name={m.get('name')!r}, protocol={m.get('protocol')!r}, dim={self.dim}, "
            f"train={len(self.train)}, val={len(self.val)}, test={len(self.test)}, seed={m.get('seed')!r})"
        )
