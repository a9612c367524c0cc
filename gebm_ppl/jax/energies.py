"""Energies E: ℝᴰ → ℝ as pure JAX functions of a weights pytree: the MLP and the quadratic energy.

Mirrors :mod:`gebm_ppl.energies`; each spec carries its function ``energy(params, x)``.
A spectrally normalised MLP is exported with its normalised
weights W/σ(W) folded in, so the JAX energy needs no power iteration.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ._nn import MLPOps, check_last_dim, mlp, softplus

__all__ = ["EnergyMLPSpec", "QuadraticEnergySpec", "energy"]


class EnergyMLPSpec(NamedTuple):
    """Static structure of :class:`gebm_ppl.EnergyMLP` (params: ``{"net": [{"weight", "bias"}, ...]}``).

    E(x) = lipschitz · f(x), then, with a floor, E = floor + softplus(E − floor) (torch's softplus).
    """

    dim: int
    net: MLPOps
    lipschitz: float
    floor: float | None

    def energy(self, params, x: jax.Array) -> jax.Array:
        """E(x), ``[..., D] → [...]``."""
        check_last_dim(x, self.dim, "x")
        e = self.lipschitz * mlp(self.net, params["net"], x)[..., 0]
        if self.floor is not None:
            e = self.floor + softplus(e - self.floor, 1.0, 20.0)
        return e


class QuadraticEnergySpec(NamedTuple):
    """Static structure of E(x) = ½‖(x − m)ᵀ W‖² (params: ``{"center": [D], "factor": [D, D]}``)."""

    dim: int

    def energy(self, params, x: jax.Array) -> jax.Array:
        """E(x), ``[..., D] → [...]``."""
        check_last_dim(x, self.dim, "x")
        y = (x - params["center"]) @ params["factor"]
        return 0.5 * jnp.sum(y * y, -1)


def energy(spec, params, x: jax.Array) -> jax.Array:
    """E(x), shape ``[...]`` for x of shape ``[..., D]`` (the spec's own ``energy``)."""
    return spec.energy(params, x)
