"""Bases G_θ as pure JAX functions of a weights pytree: the RealNVP flow and the affine (Gaussian) base.

Each base is a static, hashable spec (a NamedTuple) and a params pytree; the spec carries its own
functions, as methods of (params, input): ``forward(params, z)`` = G(z), and for density bases
``forward_and_log_det(params, z)`` and ``inverse(params, x) -> (z, logabsdet)`` with
logabsdet = log|det ∂G⁻¹(x)/∂x|. The module functions ``base_*`` dispatch to them;
``base_log_prob(x)`` = log η(G⁻¹(x)) + logabsdet.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular

from ._nn import MLPOps, check_last_dim, mlp

__all__ = [
    "AffineSpec",
    "RealNVPSpec",
    "base_forward",
    "base_forward_and_log_det",
    "base_inverse",
    "base_log_prob",
    "standard_normal_log_prob",
]


class CouplingSpec(NamedTuple):
    """One affine coupling layer: which features pass unchanged, which are transformed, and its MLP."""

    identity: tuple[int, ...]
    transform: tuple[int, ...]
    net: MLPOps


class RealNVPSpec(NamedTuple):
    """Static structure of a RealNVP flow (params: ``{"layers": [mlp weights per coupling]}``).

    Fields:
        dim: D.
        layers: the couplings in nflows order (data → noise); G applies their inverses in reverse.
        scale: ``"exp_tanh"`` (scale = exp(b·tanh(u/b))) or ``"sigmoid"`` (scale = sigmoid(u + 2) + 1e-3).
        scale_bound: b.
    """

    dim: int
    layers: tuple[CouplingSpec, ...]
    scale: str
    scale_bound: float

    @property
    def latent_dim(self) -> int:
        return self.dim

    def forward_and_log_det(self, params, z: jax.Array) -> tuple[jax.Array, jax.Array]:
        """G(z) and log|det ∂G/∂z|."""
        check_last_dim(z, self.dim, "z")
        return _realnvp_generate(self, params, z)

    def forward(self, params, z: jax.Array) -> jax.Array:
        """G(z), ``[..., D] → [..., D]``."""
        return self.forward_and_log_det(params, z)[0]

    def inverse(self, params, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """G⁻¹(x) and log|det ∂G⁻¹/∂x|."""
        check_last_dim(x, self.dim, "x")
        return _realnvp_normalize(self, params, x)


class AffineSpec(NamedTuple):
    """Static structure of the affine base G(z) = loc + L z.

    Params: ``{"loc": [D], "scale_tril": [D, D]}`` (L lower triangular with a positive diagonal).
    """

    dim: int

    @property
    def latent_dim(self) -> int:
        return self.dim

    def forward_and_log_det(self, params, z: jax.Array) -> tuple[jax.Array, jax.Array]:
        """G(z) = loc + L z and log|det L|."""
        check_last_dim(z, self.dim, "z")
        tril = params["scale_tril"]
        x = params["loc"] + z @ tril.T
        logdet = jnp.sum(jnp.log(jnp.diagonal(tril)))
        return x, jnp.broadcast_to(logdet, z.shape[:-1])

    def forward(self, params, z: jax.Array) -> jax.Array:
        """G(z) = loc + L z."""
        return self.forward_and_log_det(params, z)[0]

    def inverse(self, params, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """L⁻¹(x − loc) and −log|det L|."""
        check_last_dim(x, self.dim, "x")
        tril = params["scale_tril"]
        flat = (x - params["loc"]).reshape(-1, self.dim)
        z = solve_triangular(tril, flat.T, lower=True).T.reshape(x.shape)
        logdet = -jnp.sum(jnp.log(jnp.diagonal(tril)))
        return z, jnp.broadcast_to(logdet, x.shape[:-1])


def standard_normal_log_prob(z: jax.Array) -> jax.Array:
    """log N(z; 0, I) summed over the last dimension, ``[..., d] → [...]``."""
    return -0.5 * jnp.sum(z * z, -1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)


def _log_scale_and_shift(spec: RealNVPSpec, layer: CouplingSpec, weights, inputs: jax.Array):
    h = mlp(layer.net, weights, inputs)
    n = len(layer.transform)
    shift, u = h[..., :n], h[..., n:]
    if spec.scale == "exp_tanh":
        b = spec.scale_bound
        log_scale = b * jnp.tanh(u / b)
        return jnp.exp(log_scale), log_scale, shift
    scale = jax.nn.sigmoid(u + 2.0) + 1e-3  # nflows' AffineCouplingTransform
    return scale, jnp.log(scale), shift


def _merge(layer: CouplingSpec, identity: jax.Array, transformed: jax.Array) -> jax.Array:
    order = np.argsort(np.asarray(layer.identity + layer.transform))
    return jnp.concatenate([identity, transformed], -1)[..., order]


def _realnvp_generate(spec: RealNVPSpec, params, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    logdet = jnp.zeros(z.shape[:-1], z.dtype)
    for layer, weights in zip(reversed(spec.layers), reversed(params["layers"]), strict=True):
        keep = z[..., np.asarray(layer.identity)]
        moved = z[..., np.asarray(layer.transform)]
        scale, log_scale, shift = _log_scale_and_shift(spec, layer, weights, keep)
        z = _merge(layer, keep, (moved - shift) / scale)
        logdet = logdet - jnp.sum(log_scale, -1)
    return z, logdet


def _realnvp_normalize(spec: RealNVPSpec, params, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    logdet = jnp.zeros(x.shape[:-1], x.dtype)
    for layer, weights in zip(spec.layers, params["layers"], strict=True):
        keep = x[..., np.asarray(layer.identity)]
        moved = x[..., np.asarray(layer.transform)]
        scale, log_scale, shift = _log_scale_and_shift(spec, layer, weights, keep)
        x = _merge(layer, keep, moved * scale + shift)
        logdet = logdet + jnp.sum(log_scale, -1)
    return x, logdet


def _no_density(spec, what: str) -> Exception:
    from ..bases import DensityNotAvailable

    name = type(spec).__name__.removesuffix("Spec")
    return DensityNotAvailable(
        f"the JAX twin of {name} has no {what}: the base is a generator without a density "
        "(use the latent potential, KALE or samples instead)."
    )


def base_forward_and_log_det(spec, params, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """G(z) and log|det ∂G(z)/∂z|, shapes ``[..., D]`` and ``[...]`` for z of shape ``[..., d]``."""
    if not hasattr(spec, "forward_and_log_det"):
        raise _no_density(spec, "forward_and_log_det")
    return spec.forward_and_log_det(params, z)


def base_forward(spec, params, z: jax.Array) -> jax.Array:
    """The generator G(z): latent ``[..., d]`` → data ``[..., D]``."""
    return spec.forward(params, z)


def base_inverse(spec, params, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """G⁻¹(x) and log|det ∂G⁻¹(x)/∂x|, shapes ``[..., D]`` and ``[...]``."""
    if not hasattr(spec, "inverse"):
        raise _no_density(spec, "inverse")
    return spec.inverse(params, x)


def base_log_prob(spec, params, x: jax.Array) -> jax.Array:
    """log g_θ(x) = log η(G⁻¹(x)) + log|det ∂G⁻¹(x)/∂x|, ``[..., D] → [...]``."""
    z, logdet = base_inverse(spec, params, x)
    return standard_normal_log_prob(z) + logdet
