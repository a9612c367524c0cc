"""Argument checks shared by the training loops (each returns the checked value or raises naming the argument)."""

from __future__ import annotations

import math

import numpy as np

from .._validation import check_positive_float, check_positive_int

__all__ = [
    "check_lr",
    "check_nonnegative_float",
    "check_nonnegative_int",
    "check_optional_positive_int",
    "check_positive_int",
]


def check_nonnegative_float(value: object, name: str) -> float:
    """A finite real number >= 0, as ``float``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"'{name}' should be a non-negative number. Got {value!r}.")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"'{name}' should be a finite number >= 0. Got {value}.")
    return float(value)


def check_nonnegative_int(value: object, name: str) -> int:
    """An integer >= 0, as ``int``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"'{name}' should be a non-negative integer. Got {value!r}.")
    if value < 0:
        raise ValueError(f"'{name}' should be an integer >= 0. Got {value}.")
    return int(value)


def check_optional_positive_int(value: object, name: str) -> int | None:
    """None, or an integer >= 1."""
    return None if value is None else check_positive_int(value, name)


def check_lr(value: object, name: str) -> float:
    """A learning rate: a finite number > 0."""
    return check_positive_float(value, name)
