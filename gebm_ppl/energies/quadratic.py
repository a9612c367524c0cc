"""QuadraticEnergy: E(x) = ½ (x − m)ᵀ W Wᵀ (x − m), the closed-form family (Gaussian base → Gaussian GEBM)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._validation import check_positive_int
from ..registry import register_energy
from .base import Energy

__all__ = ["QuadraticEnergy"]


@register_energy(jax="gebm_ppl.jax.convert:convert_quadratic")
class QuadraticEnergy(Energy):
    """E(x) = ½ (x − m)ᵀ P (x − m) with P = W Wᵀ positive semi-definite, ``[..., D] → [...]``.

    With an affine (Gaussian) base N(μ, Σ), the GEBM is N with precision Σ⁻¹ + P; this is the
    closed-form family of the tests and a useful energy in its own right.

    Args:
        dim: dimension D.
        center: ``[D]`` initial m (default 0).
        factor: ``[D, D]`` initial W (default 0, i.e. E ≡ 0).
    """

    def __init__(self, dim: int, center: Tensor | None = None, factor: Tensor | None = None):
        super().__init__()
        self.dim = check_positive_int(dim, "dim")
        dt = torch.get_default_dtype()
        center = torch.zeros(dim, dtype=dt) if center is None else torch.as_tensor(center, dtype=dt)
        factor = torch.zeros(dim, dim, dtype=dt) if factor is None else torch.as_tensor(factor, dtype=dt)
        if center.shape != (dim,) or factor.shape != (dim, dim):
            raise ValueError(
                f"QuadraticEnergy expects center [{dim}] and factor [{dim}, {dim}]. "
                f"Got {tuple(center.shape)} and {tuple(factor.shape)}."
            )
        if not bool(torch.isfinite(center).all() and torch.isfinite(factor).all()):
            raise ValueError("'center' and 'factor' should hold finite values. Got NaN or inf.")
        self.center = nn.Parameter(center.clone())
        self.factor = nn.Parameter(factor.clone())

    @property
    def config(self) -> dict:
        return {"dim": self.dim}

    @property
    def precision(self) -> Tensor:
        return self.factor @ self.factor.T

    def forward(self, x: Tensor) -> Tensor:
        y = (x - self.center) @ self.factor
        return 0.5 * (y * y).sum(-1)
