"""The JAX twin of :class:`gebm_ppl.MAF`: zuko's masked autoregressive affine layers as pure functions of params."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import jax.numpy as jnp

from .nsf import NSFLayerSpec, autoregressive_forward, masked_layers

if TYPE_CHECKING:
    from ..bases.maf import MAF

__all__ = ["MAFSpec", "convert_maf"]


class MAFSpec(NamedTuple):
    """Static structure of :class:`MAF` (params: ``{"layers": [mlp weights per layer]}``).

    Fields: D, the layers in zuko order (data → noise; masked MLP ops and inverse passes) and the minimum
    slope s of zuko's ``MonotonicAffineTransform`` (log-scale a = ã / (1 + |ã / log s|)).
    """

    dim: int
    layers: tuple[NSFLayerSpec, ...]
    slope: float

    @property
    def latent_dim(self) -> int:
        return self.dim

    def _shift_log_scale(self, layer: NSFLayerSpec, weights, x):
        """(b, a) of x ↦ exp(a) x + b at every feature, from the layer's masked MLP at x."""
        from ._nn import mlp

        phi = mlp(layer.net, weights, x).reshape(*x.shape[:-1], self.dim, 2)  # zuko: (shift, scale) per feature
        a = phi[..., 1]
        return phi[..., 0], a / (1 + jnp.abs(a / math.log(self.slope)))

    def _ladj(self, layer: NSFLayerSpec, weights, x):
        return jnp.sum(self._shift_log_scale(layer, weights, x)[1], -1)

    def _invert(self, layer: NSFLayerSpec, weights, x, y):
        b, a = self._shift_log_scale(layer, weights, x)
        return (y - b) * jnp.exp(-a)

    def inverse(self, params, x):
        """T(x) = G⁻¹(x) and log|det ∂G⁻¹/∂x| (one pass per layer)."""
        from ._nn import check_last_dim

        check_last_dim(x, self.dim, "x")
        logdet = jnp.zeros(x.shape[:-1], x.dtype)
        for layer, weights in zip(self.layers, params["layers"], strict=True):
            b, a = self._shift_log_scale(layer, weights, x)
            x = x * jnp.exp(a) + b
            logdet = logdet + jnp.sum(a, -1)
        return x, logdet

    def forward_and_log_det(self, params, z):
        """G(z) = T⁻¹(z) (``passes`` fixed-point passes per layer) and log|det ∂G/∂z|."""
        from ._nn import check_last_dim

        check_last_dim(z, self.dim, "z")
        return autoregressive_forward(self.layers, params["layers"], z, self._invert, self._ladj)

    def forward(self, params, z):
        """G(z), ``[..., D] → [..., D]``."""
        return self.forward_and_log_det(params, z)[0]


def convert_maf(base: MAF, dtype: type) -> tuple[MAFSpec, dict]:
    """(spec, params) of a :class:`MAF`: masked weights W⊙A of each layer's MLP, in zuko's order."""
    from zuko.transforms import MonotonicAffineTransform

    layers, weights, transforms = masked_layers(base, "MAF", dtype)
    for i, t in enumerate(transforms):
        if t.univariate is not MonotonicAffineTransform:
            raise TypeError(f"to_jax: MAF layer {i} uses {t.univariate!r}, which has no JAX twin.")
    return MAFSpec(base.dim, tuple(layers), 1e-3), {"layers": weights}
