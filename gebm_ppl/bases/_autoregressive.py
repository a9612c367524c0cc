"""Argument checks shared by the zuko-backed autoregressive bases (:class:`~gebm_ppl.MAF`, :class:`~gebm_ppl.NSF`)."""

from __future__ import annotations

from collections.abc import Sequence

from .._validation import check_positive_int

__all__ = ["check_autoregressive"]


def check_autoregressive(
    name: str, dim: int, transforms: int, hidden_features: Sequence[int], passes: int | None
) -> tuple[int, int, list[int], int | None]:
    """``(dim, transforms, hidden widths, passes)`` checked for a masked autoregressive flow called ``name``.

    Raises:
        ValueError: ``dim`` < 2 (an autoregressive layer conditions on other features), a non-positive count,
            or ``hidden_features`` not a sequence of widths.
    """
    dim = check_positive_int(dim, "dim")
    if dim < 2:
        raise ValueError(f"{name} needs 'dim' >= 2 (an autoregressive layer conditions on other features). Got {dim}.")
    transforms = check_positive_int(transforms, "transforms")
    if isinstance(hidden_features, int | str) or not isinstance(hidden_features, Sequence):
        raise ValueError(f"'hidden_features' should be a sequence of widths. Got {hidden_features!r}.")
    hidden = [check_positive_int(h, "hidden_features") for h in hidden_features]
    if passes is not None:
        passes = check_positive_int(passes, "passes")
    return dim, transforms, hidden, passes
