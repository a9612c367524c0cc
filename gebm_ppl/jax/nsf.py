"""The JAX twin of :class:`gebm_ppl.NSF`: zuko's rational-quadratic spline layers as pure functions of params."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

if TYPE_CHECKING:
    from ..bases.nsf import NSF

__all__ = ["NSFLayerSpec", "NSFSpec", "autoregressive_forward", "convert_nsf", "masked_layers"]


class NSFLayerSpec(NamedTuple):
    """One autoregressive spline layer: the masked MLP ops (weights W⊙A folded in) and its inverse passes."""

    net: tuple
    passes: int


class NSFSpec(NamedTuple):
    """Static structure of :class:`NSF` (params: ``{"layers": [mlp weights per layer]}``).

    Fields: D, the layers in zuko order (data → noise), bins K, spline bound B and minimum slope.
    """

    dim: int
    layers: tuple[NSFLayerSpec, ...]
    bins: int
    bound: float
    slope: float

    @property
    def latent_dim(self) -> int:
        return self.dim

    def _knots(self, layer: NSFLayerSpec, weights, x):
        from ._nn import mlp

        k = self.bins
        phi = mlp(layer.net, weights, x).reshape(*x.shape[:-1], self.dim, 3 * k - 1)
        w, h, d = phi[..., :k], phi[..., k : 2 * k], phi[..., 2 * k :]
        log_slope = math.log(self.slope)
        w = w / (1 + jnp.abs(2 * w / log_slope))
        h = h / (1 + jnp.abs(2 * h / log_slope))
        d = d / (1 + jnp.abs(d / log_slope))
        pad0 = [(0, 0)] * (w.ndim - 1)
        w = jnp.pad(jax.nn.softmax(w, -1), pad0 + [(1, 0)])
        h = jnp.pad(jax.nn.softmax(h, -1), pad0 + [(1, 0)])
        d = jnp.pad(d, pad0 + [(1, 1)])
        b = self.bound
        return b * (2 * jnp.cumsum(w, -1) - 1), b * (2 * jnp.cumsum(h, -1) - 1), jnp.exp(d)

    def _bin(self, knots, seq, v):
        hs, vs, ds = knots
        k = jnp.sum(seq < v[..., None], -1) - 1
        mask = (k >= 0) & (k < self.bins)
        k = k % self.bins

        def at(a, i):
            return jnp.take_along_axis(a, i[..., None], -1)[..., 0]

        x0, x1, y0, y1 = at(hs, k), at(hs, k + 1), at(vs, k), at(vs, k + 1)
        d0, d1 = at(ds, k), at(ds, k + 1)
        return mask, x0, x1, y0, y1, d0, d1, (y1 - y0) / (x1 - x0)

    def _call_and_ladj(self, knots, x):
        mask, x0, x1, y0, y1, d0, d1, s = self._bin(knots, knots[0], x)
        z = mask * (x - x0) / (x1 - x0)
        denom = s + (d0 + d1 - 2 * s) * z * (1 - z)
        y = y0 + (y1 - y0) * (s * z**2 + d0 * z * (1 - z)) / denom
        jac = s**2 * (2 * s * z * (1 - z) + d0 * (1 - z) ** 2 + d1 * z**2) / denom**2
        return jnp.where(mask, y, x), jnp.sum(mask * jnp.log(jac), -1)

    def _inverse_spline(self, knots, y):
        mask, x0, x1, y0, y1, d0, d1, s = self._bin(knots, knots[1], y)
        y_ = mask * (y - y0)
        a = (y1 - y0) * (s - d0) + y_ * (d0 + d1 - 2 * s)
        b = (y1 - y0) * d0 - y_ * (d0 + d1 - 2 * s)
        c = -s * y_
        z = 2 * c / (-b - jnp.sqrt(b**2 - 4 * a * c))
        return jnp.where(mask, x0 + z * (x1 - x0), y)

    def inverse(self, params, x):
        """T(x) = G⁻¹(x) and log|det ∂G⁻¹/∂x| (one pass per layer)."""
        from ._nn import check_last_dim

        check_last_dim(x, self.dim, "x")
        logdet = jnp.zeros(x.shape[:-1], x.dtype)
        for layer, weights in zip(self.layers, params["layers"], strict=True):
            x, ladj = self._call_and_ladj(self._knots(layer, weights, x), x)
            logdet = logdet + ladj
        return x, logdet

    def forward_and_log_det(self, params, z):
        """G(z) = T⁻¹(z) (``passes`` fixed-point passes per layer) and log|det ∂G/∂z|."""
        from ._nn import check_last_dim

        check_last_dim(z, self.dim, "z")
        return autoregressive_forward(self.layers, params["layers"], z,
                                      lambda layer, w, x, y: self._inverse_spline(self._knots(layer, w, x), y),
                                      lambda layer, w, x: self._call_and_ladj(self._knots(layer, w, x), x)[1])

    def forward(self, params, z):
        """G(z), ``[..., D] → [..., D]``."""
        return self.forward_and_log_det(params, z)[0]


def autoregressive_forward(layers, weights, z, invert, ladj):
    """G(z) = T⁻¹(z) through masked autoregressive layers (zuko order, data → noise), and log|det ∂G/∂z|.

    Each layer is inverted by ``layer.passes`` fixed-point passes x ← invert(layer, w, x, y) from x = 0
    (exact after ``passes`` passes: pass k fixes the features of the k-th autoregressive block), and
    log|det ∂G/∂z| = −Σ_layers ladj(layer, w, x), ladj the layer's log|det ∂T/∂x| at its input x.
    """
    logdet = jnp.zeros(z.shape[:-1], z.dtype)
    for layer, w in zip(reversed(layers), reversed(weights), strict=True):
        x = jnp.zeros_like(z)
        for _ in range(layer.passes):
            x = invert(layer, w, x, z)
        logdet = logdet - ladj(layer, w, x)
        z = x
    return z, logdet


def masked_layers(base, what: str, dtype: type) -> tuple[list[NSFLayerSpec], list[list[dict]], list]:
    """The masked-MLP layers of a zuko autoregressive base: (layer specs, masked weights W⊙A and biases per
    layer, zuko's layers). Only ReLU MLPs have a twin; ``what`` names the base in errors."""
    from torch import nn
    from zuko.nn import MaskedLinear

    layers, weights, transforms = [], [], list(base.transform.transforms)
    for i, t in enumerate(transforms):
        if not hasattr(t, "hyper"):
            raise TypeError(f"to_jax: {what} layer {i} is a {type(t).__name__}, which has no JAX twin.")
        ops, w = [], []
        for m in t.hyper.children():
            if isinstance(m, MaskedLinear):
                ops.append(("linear",))
                w.append({
                    "weight": jnp.asarray(np.asarray((m.mask * m.weight).detach().cpu().numpy(), dtype=dtype)),
                    "bias": jnp.asarray(np.asarray(m.bias.detach().cpu().numpy(), dtype=dtype)),
                })
            elif type(m) is nn.ReLU:
                ops.append(("relu",))
            else:
                raise TypeError(f"to_jax: {what} layer {i} contains a {type(m).__name__}, which has no JAX twin.")
        layers.append(NSFLayerSpec(tuple(ops), int(t.passes)))
        weights.append(w)
    return layers, weights, transforms


def convert_nsf(base: NSF, dtype: type) -> tuple[NSFSpec, dict]:
    """(spec, params) of an :class:`NSF`: masked weights W⊙A of each layer's MLP, in zuko's order."""
    layers, weights, transforms = masked_layers(base, "NSF", dtype)
    bins = slope = None
    for i, t in enumerate(transforms):
        keywords = getattr(getattr(t, "univariate", None), "keywords", {})
        if "slope" not in keywords:
            raise TypeError(f"to_jax: NSF layer {i} is a {type(t).__name__}, which has no JAX twin.")
        slope = float(keywords["slope"])
        bins = (t.total + 1) // 3
    return NSFSpec(base.dim, tuple(layers), int(bins), 5.0, float(slope)), {"layers": weights}
