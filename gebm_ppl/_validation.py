"""Argument checks shared by the public API: shapes, finiteness, counts."""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

__all__ = ["check_finite_float", "check_points", "check_positive_int", "check_positive_float"]


def check_points(x: object, dim: int, name: str = "x", dtype: torch.dtype | None = None) -> Tensor:
    """Check that ``x`` is a finite tensor of shape ``[..., dim]`` (and of ``dtype``, if given) and return it.

    Raises:
        TypeError: ``x`` is not a floating-point tensor, or not of ``dtype``.
        ValueError: wrong last dimension, or NaN/inf entries.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"'{name}' should be a torch.Tensor of shape [..., {dim}]. Got {type(x).__name__}.")
    if x.dim() < 1 or x.shape[-1] != dim:
        raise ValueError(f"'{name}' should have shape [..., {dim}]. Got shape {tuple(x.shape)}.")
    if not x.is_floating_point():
        raise TypeError(f"'{name}' should be a floating-point tensor. Got dtype {x.dtype}.")
    if dtype is not None and x.dtype != dtype:
        raise TypeError(
            f"'{name}' has dtype {x.dtype} but the model's parameters are {dtype}; "
            f"convert one of them (e.g. {name}.to({dtype}))."
        )
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).any(-1).sum())
        raise ValueError(f"'{name}' contains NaN or inf values (in {bad} of its rows).")
    return x


def check_positive_int(value: object, name: str) -> int:
    """Check that ``value`` is an integer >= 1 and return it as ``int``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"'{name}' should be a positive integer. Got {value!r}.")
    if value < 1:
        raise ValueError(f"'{name}' should be a positive integer. Got {value}.")
    return int(value)


def check_positive_float(value: object, name: str) -> float:
    """Check that ``value`` is a finite real number > 0 and return it as ``float``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"'{name}' should be a positive number. Got {value!r}.")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"'{name}' should be a positive finite number. Got {value}.")
    return float(value)


def check_finite_float(value: object, name: str) -> float:
    """Check that ``value`` is a finite real number (or a 0-d real tensor) and return it as ``float``."""
    if isinstance(value, Tensor):
        if value.dim() != 0 or value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"'{name}' should be a finite real number. Got a tensor of shape {tuple(value.shape)}.")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"'{name}' should be a finite real number. Got {value!r}.")
    if not math.isfinite(value):
        raise ValueError(f"'{name}' should be a finite real number. Got {value}.")
    return float(value)
