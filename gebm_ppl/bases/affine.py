"""AffineBase: the Gaussian base G(z) = μ + L z, with a closed-form density (the tests' reference family)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._validation import check_points, check_positive_int
from ..registry import register_base
from .base import Base

__all__ = ["AffineBase"]


@register_base(jax="gebm_ppl.jax.convert:convert_affine")
class AffineBase(Base):
    """Gaussian base with an affine generator G(z) = loc + L z (L lower triangular, positive diagonal).

    The base distribution is N(loc, L Lᵀ). With a quadratic energy the GEBM is Gaussian in closed
    form, which makes this base the reference case of the tests; it is also a sensible base for
    nearly Gaussian data.

    Args:
        dim: dimension D.
        loc: ``[D]`` initial mean (default 0).
        scale_tril: ``[D, D]`` initial lower-triangular factor (default I).
    """

    def __init__(self, dim: int, loc: Tensor | None = None, scale_tril: Tensor | None = None):
        super().__init__()
        dim = check_positive_int(dim, "dim")
        self.dim = self.latent_dim = dim
        loc = torch.zeros(dim) if loc is None else torch.as_tensor(loc)
        if not loc.is_floating_point():
            loc = loc.to(torch.get_default_dtype())
        tril = torch.eye(dim, dtype=loc.dtype) if scale_tril is None else torch.as_tensor(scale_tril, dtype=loc.dtype)
        if loc.shape != (dim,) or tril.shape != (dim, dim):
            raise ValueError(
                f"AffineBase expects loc [{dim}] and scale_tril [{dim}, {dim}]. "
                f"Got {tuple(loc.shape)} and {tuple(tril.shape)}."
            )
        diag = torch.diagonal(tril)
        if not bool(torch.isfinite(loc).all() and torch.isfinite(tril).all()):
            raise ValueError("'loc' and 'scale_tril' should hold finite values. Got NaN or inf.")
        if not bool((diag > 0).all()) or not torch.allclose(tril, tril.tril()):
            raise ValueError("'scale_tril' should be lower triangular with a positive diagonal.")
        self.loc = nn.Parameter(loc.clone())
        # unconstrained: strictly-lower part as is, log of the diagonal on the diagonal
        self.raw_tril = nn.Parameter(tril.tril(-1) + torch.diag(torch.log(diag)))

    @property
    def config(self) -> dict:
        return {"dim": self.dim}

    @property
    def scale_tril(self) -> Tensor:
        return self.raw_tril.tril(-1) + torch.diag(torch.exp(torch.diagonal(self.raw_tril)))

    def forward(self, z: Tensor) -> Tensor:
        return self.loc + z @ self.scale_tril.T

    def inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        check_points(x, self.dim, dtype=self.loc.dtype)
        tril = self.scale_tril
        flat = (x - self.loc).reshape(-1, self.dim)
        z = torch.linalg.solve_triangular(tril, flat.T, upper=False).T.reshape(x.shape)
        logabsdet = -torch.diagonal(self.raw_tril).sum()
        return z, logabsdet.expand(x.shape[:-1])
