"""Training data coercion: ``as_data`` (tensor or array → finite [N, D] tensor) and its resume ``fingerprint``."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["as_data", "fingerprint"]


def as_data(
    x: object, name: str, dim: int | None, dtype: torch.dtype, device: torch.device, optional: bool = False
) -> Tensor | None:
    """Convert ``x`` (tensor or numpy array ``[N, D]``) to a finite tensor of the model's dtype and device.

    Raises:
        TypeError: not a tensor / array, or not real-valued.
        ValueError: not 2-D, no rows, wrong number of columns, or rows with NaN / inf.
    """
    if x is None:
        if optional:
            return None
        raise TypeError(f"'{name}' should be a torch.Tensor or numpy array of shape [N, D]. Got None.")
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


def fingerprint(x: Tensor) -> list[float]:
    """Shape, sum and sum of squares (float64): enough to notice a different training set on resume."""
    xd = x.double()
    return [float(x.shape[0]), float(x.shape[1]), float(xd.sum()), float((xd * xd).sum())]
