"""Neural spline flow base (zuko's NSF), with its JAX twin: one file adds a base end to end.

G = T⁻¹ where T: data → noise is zuko's masked autoregressive flow of monotonic rational-quadratic
splines (Durkan et al., 2019, https://arxiv.org/abs/1906.04032): each of ``transforms`` layers maps
x_i ↦ s_i(x_i; φ_i(x_{<i})) with a spline s_i on [−B, B] (B = 5, identity outside) of ``bins`` bins
whose widths, heights and knot slopes φ_i come from a masked MLP. Then
log g(x) = log N(T(x); 0, I) + Σ_layers Σ_i log s_i'(x_i). T is one network pass per layer; G needs
``passes`` (D when fully autoregressive, 2 for coupling) sequential passes per layer.

The torch base is a :class:`~gebm_ppl.TransformBase` around ``zuko.flows.NSF``; the JAX twin
(registered here with :func:`gebm_ppl.jax.register_jax` when JAX is installed) reproduces zuko's
spline formulas, so NumPyro samplers can use it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

from ._validation import check_positive_int
from .bases import TransformBase, register_base

__all__ = ["NSF"]


@register_base
class NSF(TransformBase):
    """Neural spline flow base G = T⁻¹, T = zuko's ``NSF`` (masked autoregressive rational-quadratic splines).

    Args:
        dim: data dimension D (≥ 2).
        transforms: number of autoregressive spline layers (feature order reversed between layers).
        hidden_features: widths of each layer's masked MLP.
        bins: spline bins K per feature (spline on [−5, 5], identity outside: standardise the data).
        passes: None (fully autoregressive: G takes D passes per layer) or 2 (coupling: G takes 2).

    Example:
        >>> base = NSF(2, transforms=2, hidden_features=(16,), bins=4)
        >>> base.log_prob(base.sample(3)).shape
        torch.Size([3])
    """

    def __init__(
        self,
        dim: int,
        transforms: int = 3,
        hidden_features: Sequence[int] = (64, 64),
        bins: int = 8,
        passes: int | None = None,
    ):
        import zuko

        dim = check_positive_int(dim, "dim")
        if dim < 2:
            raise ValueError(f"NSF needs 'dim' >= 2 (an autoregressive layer conditions on other features). Got {dim}.")
        transforms = check_positive_int(transforms, "transforms")
        if isinstance(hidden_features, int | str) or not isinstance(hidden_features, Sequence):
            raise ValueError(f"'hidden_features' should be a sequence of widths. Got {hidden_features!r}.")
        hidden = [check_positive_int(h, "hidden_features") for h in hidden_features]
        bins = check_positive_int(bins, "bins")
        if bins < 2:
            raise ValueError(f"'bins' should be >= 2. Got {bins}.")
        if passes is not None:
            passes = check_positive_int(passes, "passes")
        flow = zuko.flows.NSF(dim, transforms=transforms, hidden_features=hidden, bins=bins, passes=passes)
        super().__init__(flow, dim)
        self._config = dict(dim=dim, transforms=transforms, hidden_features=hidden, bins=bins, passes=passes)

    @property
    def config(self) -> dict:
        return {**self._config, "hidden_features": list(self._config["hidden_features"])}


# ---------------------------------------------------------------------------------------------- JAX twin
try:
    import jax
    import jax.numpy as jnp
    import numpy as np
except ImportError:  # pragma: no cover - the JAX extra is optional
    jax = None


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
        from .jax._nn import mlp

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
        from .jax._nn import check_last_dim

        check_last_dim(x, self.dim, "x")
        logdet = jnp.zeros(x.shape[:-1], x.dtype)
        for layer, weights in zip(self.layers, params["layers"], strict=True):
            x, ladj = self._call_and_ladj(self._knots(layer, weights, x), x)
            logdet = logdet + ladj
        return x, logdet

    def forward_and_log_det(self, params, z):
        """G(z) = T⁻¹(z) (``passes`` fixed-point passes per layer) and log|det ∂G/∂z|."""
        from .jax._nn import check_last_dim

        check_last_dim(z, self.dim, "z")
        logdet = jnp.zeros(z.shape[:-1], z.dtype)
        for layer, weights in zip(reversed(self.layers), reversed(params["layers"]), strict=True):
            x = jnp.zeros_like(z)
            for _ in range(layer.passes):
                x = self._inverse_spline(self._knots(layer, weights, x), z)
            logdet = logdet - self._call_and_ladj(self._knots(layer, weights, x), x)[1]
            z = x
        return z, logdet

    def forward(self, params, z):
        """G(z), ``[..., D] → [..., D]``."""
        return self.forward_and_log_det(params, z)[0]


def _convert_nsf(base: NSF, dtype: type) -> tuple[NSFSpec, dict]:
    """(spec, params) of an :class:`NSF`: masked weights W⊙A of each layer's MLP, in zuko's order."""
    from torch import nn
    from zuko.nn import MaskedLinear

    layers, weights = [], []
    bins = slope = None
    for i, t in enumerate(base.transform.transforms):
        univariate = getattr(t, "univariate", None)
        keywords = getattr(univariate, "keywords", {})
        if not hasattr(t, "hyper") or "slope" not in keywords:
            raise TypeError(f"to_jax: NSF layer {i} is a {type(t).__name__}, which has no JAX twin.")
        slope = float(keywords["slope"])
        bins = (t.total + 1) // 3
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
                raise TypeError(f"to_jax: NSF layer {i} contains a {type(m).__name__}, which has no JAX twin.")
        layers.append(NSFLayerSpec(tuple(ops), int(t.passes)))
        weights.append(w)
    return NSFSpec(base.dim, tuple(layers), int(bins), 5.0, float(slope)), {"layers": weights}


if jax is not None:
    from .jax.convert import register_jax

    register_jax(NSF)(_convert_nsf)

