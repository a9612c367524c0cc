"""Training data coercion: ``as_data`` (tensor, array or HDF5 rows → finite [N, D] data) and its resume ``fingerprint``.

Data on disk (a :class:`gebm_ppl.data.H5Array`, or an ``h5py.Dataset`` which is wrapped in one) is
checked chunk by chunk and returned as an H5Array reading rows on demand, never loaded whole.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..data.stream import H5Array, scan

__all__ = ["as_data", "fingerprint"]


def _is_h5py_dataset(x: object) -> bool:
    return type(x).__module__.startswith("h5py") and type(x).__name__ == "Dataset"


def _as_h5array(x: H5Array, name: str, dim: int | None, dtype: torch.dtype, device: torch.device) -> H5Array:
    """``x`` returning ``dtype`` tensors on ``device``, after one chunked pass (shape, finiteness, fingerprint)."""
    want = "D" if dim is None else str(dim)
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"'{name}' should have {dim} columns (the model's dimension). Got shape {tuple(x.shape)}.")
    if x.shape[0] == 0:
        raise ValueError(f"'{name}' is empty: expected at least one row of shape [N, {want}], got {tuple(x.shape)}.")
    out = x.to(device=device, dtype=dtype)
    fp, first, bad = scan(out)
    if first is not None:
        raise ValueError(
            f"'{name}' ({x.path}:{x.name}) has {bad} row(s) with NaN or inf values (first: row {first}); "
            "drop or impute them first."
        )
    out._fingerprint = fp
    return out


def as_data(
    x: object, name: str, dim: int | None, dtype: torch.dtype, device: torch.device, optional: bool = False
) -> Tensor | H5Array | None:
    """Convert ``x`` (tensor or numpy array ``[N, D]``) to a finite tensor of the model's dtype and device.

    An :class:`~gebm_ppl.data.H5Array` (or an ``h5py.Dataset``, opened as one by file name and
    dataset name) is checked chunk by chunk instead and returned as an H5Array of the model's
    dtype and device: rows are read when indexed, so the data never need to fit in memory.

    Raises:
        TypeError: not a tensor / array / H5Array, or not real-valued.
        ValueError: not 2-D, no rows, wrong number of columns, or rows with NaN / inf (the first is named).
    """
    if x is None:
        if optional:
            return None
        raise TypeError(f"'{name}' should be a torch.Tensor or numpy array of shape [N, D]. Got None.")
    if _is_h5py_dataset(x):
        x = H5Array(x.file.filename, x.name)
    if isinstance(x, H5Array):
        return _as_h5array(x, name, dim, dtype, device)
    if isinstance(x, np.ndarray):
        if x.dtype == np.bool_ or not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise TypeError(f"'{name}' should hold real numbers. Got a numpy array of dtype {x.dtype}.")
        x = torch.from_numpy(np.ascontiguousarray(x))
    elif not isinstance(x, Tensor):
        raise TypeError(f"'{name}' should be a torch.Tensor or numpy array of shape [N, D]. Got {type(x).__name__}.")
    if x.is_complex() or x.dtype == torch.bool:
        raise TypeError(f"'{name}' should hold real numbers. Got dtype {x.dtype}.")
    want = "D" if dim is None else str(dim)
    if x.dim() != 2:
        raise ValueError(f"'{name}' should have shape [N, {want}]. Got shape {tuple(x.shape)}.")
    if x.shape[0] == 0:
        raise ValueError(f"'{name}' is empty: expected at least one row of shape [N, {want}], got {tuple(x.shape)}.")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"'{name}' should have {dim} columns (the model's dimension). Got shape {tuple(x.shape)}.")
    x = x.detach().to(device=device, dtype=dtype)
    finite = torch.isfinite(x).all(1)
    if not bool(finite.all()):
        bad = (~finite).nonzero().flatten()
        raise ValueError(
            f"'{name}' has {len(bad)} row(s) with NaN or inf values (first: row {int(bad[0])}) "
            f"after conversion to {dtype}; drop or impute them first."
        )
    return x


def fingerprint(x: Tensor | H5Array) -> list[float]:
    """Shape, sum and sum of squares (float64): enough to notice a different training set on resume.

    An H5Array's is computed chunk by chunk (once: :func:`as_data` keeps it); it agrees with the
    tensor's to float64 rounding, well within the 1e-6 tolerance of the resume check.
    """
    if isinstance(x, H5Array):
        fp = getattr(x, "_fingerprint", None)
        return list(fp) if fp is not None else scan(x)[0]
    xd = x.double()
    return [float(x.shape[0]), float(x.shape[1]), float(xd.sum()), float((xd * xd).sum())]
