"""The JAX twin of a GEBM: pure functions of (static spec, params pytree), and the JaxGEBM pytree.

The functions carry the names of the torch side (:class:`gebm_ppl.GEBM`): ``forward`` (G),
``inverse``, ``base_log_prob``, ``energy``, ``latent_energy``, ``latent_potential``,
``unnormalized_log_prob`` and ``log_prob``. Each takes the static :class:`GEBMSpec` and the
params pytree ``{"base": …, "energy": …, "log_partition": c}`` first, so that
``functools.partial(latent_potential, spec)`` is a pure function of params and z, ready for
``jax.jit``/``jax.grad``/``jax.vmap``. :class:`JaxGEBM` bundles both as a pytree (params are its
leaves, the spec its static part) with the same functions as methods.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from . import bases as _bases
from . import energies as _energies

__all__ = [
    "GEBMSpec",
    "JaxGEBM",
    "base_log_prob",
    "energy",
    "forward",
    "forward_and_log_det",
    "inverse",
    "latent_energy",
    "latent_potential",
    "log_prob",
    "unnormalized_log_prob",
]


class GEBMSpec(NamedTuple):
    """Static (hashable) structure of a GEBM: the base spec and the energy spec (see :mod:`gebm_ppl.jax.convert`)."""

    base: Any
    energy: Any


def forward(spec: GEBMSpec, params: dict, z: jax.Array) -> jax.Array:
    """G_θ(z): latent ``[..., d]`` → data ``[..., D]``."""
    return _bases.base_forward(spec.base, params["base"], z)


def forward_and_log_det(spec: GEBMSpec, params: dict, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """G_θ(z) ``[..., D]`` and log|det ∂G_θ(z)/∂z| ``[...]``."""
    return _bases.base_forward_and_log_det(spec.base, params["base"], z)


def inverse(spec: GEBMSpec, params: dict, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """G_θ⁻¹(x) ``[..., d]`` and log|det ∂G_θ⁻¹(x)/∂x| ``[...]``."""
    return _bases.base_inverse(spec.base, params["base"], x)


def base_log_prob(spec: GEBMSpec, params: dict, x: jax.Array) -> jax.Array:
    """log g_θ(x), the base density, ``[..., D] → [...]``."""
    return _bases.base_log_prob(spec.base, params["base"], x)


def energy(spec: GEBMSpec, params: dict, x: jax.Array) -> jax.Array:
    """E(x), ``[..., D] → [...]``."""
    return _energies.energy(spec.energy, params["energy"], x)


def latent_energy(spec: GEBMSpec, params: dict, z: jax.Array) -> jax.Array:
    """E(G_θ(z)), ``[..., d] → [...]``."""
    return energy(spec, params, forward(spec, params, z))


def latent_potential(spec: GEBMSpec, params: dict, z: jax.Array, temperature: float = 1.0) -> jax.Array:
    """U(z) = ½‖z‖² + T·E(G_θ(z)), ``[..., d] → [...]``: the potential of ν ∝ η·exp(−T·E∘G_θ)."""
    return 0.5 * jnp.sum(z * z, -1) + temperature * latent_energy(spec, params, z)


def unnormalized_log_prob(spec: GEBMSpec, params: dict, x: jax.Array) -> jax.Array:
    """log g_θ(x) − E(x), ``[..., D] → [...]``."""
    return base_log_prob(spec, params, x) - energy(spec, params, x)


def log_prob(
    spec: GEBMSpec, params: dict, x: jax.Array, log_partition: jax.Array | float | None = None
) -> jax.Array:
    """log q(x) = log g_θ(x) − E(x) − A, ``[..., D] → [...]``; A = ``log_partition``, else the stored c."""
    a = params["log_partition"] if log_partition is None else log_partition
    return unnormalized_log_prob(spec, params, x) - a


@jax.tree_util.register_pytree_node_class
class JaxGEBM:
    """A GEBM in pure JAX: ``params`` (a pytree of arrays, the leaves) and ``spec`` (static structure).

    Built by :func:`gebm_ppl.jax.to_jax`. Being a pytree, a JaxGEBM can be passed straight through
    ``jax.jit``/``jax.grad``/``jax.vmap``; ``jax.grad(lambda g: g.log_prob(x).sum())(jgebm)`` returns
    a JaxGEBM of parameter gradients.

    Attributes:
        params: ``{"base": …, "energy": …, "log_partition": c}``.
        spec: the :class:`GEBMSpec`.
    """

    def __init__(self, params: dict, spec: GEBMSpec):
        self.params = params
        self.spec = spec

    def tree_flatten(self):
        return (self.params,), self.spec

    @classmethod
    def tree_unflatten(cls, spec: GEBMSpec, children) -> JaxGEBM:
        return cls(children[0], spec)

    def replace(self, params: dict) -> JaxGEBM:
        """The same GEBM structure with other params."""
        return JaxGEBM(params, self.spec)

    def __repr__(self) -> str:
        base, energy = _spec_name(self.spec.base), _spec_name(self.spec.energy)
        return (
            f"JaxGEBM(base={base}, energy={energy}, dim={self.dim}, latent_dim={self.latent_dim}, "
            f"dtype={self.dtype})"
        )

    @property
    def dim(self) -> int:
        """D, the data dimension."""
        return self.spec.base.dim

    @property
    def latent_dim(self) -> int:
        """d, the latent dimension."""
        return self.spec.base.latent_dim

    @property
    def has_density(self) -> bool:
        """Whether the base has a density (its spec has an ``inverse``)."""
        return hasattr(self.spec.base, "inverse")

    @property
    def dtype(self) -> jnp.dtype:
        """The floating-point dtype of the params."""
        return jnp.result_type(self.params["log_partition"])

    @property
    def log_partition(self) -> jax.Array:
        """The stored c, KALE's estimate of A."""
        return self.params["log_partition"]

    def forward(self, z: jax.Array) -> jax.Array:
        """G_θ(z), ``[..., d] → [..., D]``."""
        return forward(self.spec, self.params, z)

    __call__ = forward

    def forward_and_log_det(self, z: jax.Array) -> tuple[jax.Array, jax.Array]:
        """G_θ(z) and log|det ∂G_θ(z)/∂z|."""
        return forward_and_log_det(self.spec, self.params, z)

    def inverse(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """G_θ⁻¹(x) and log|det ∂G_θ⁻¹(x)/∂x|."""
        return inverse(self.spec, self.params, x)

    def base_log_prob(self, x: jax.Array) -> jax.Array:
        """log g_θ(x), ``[..., D] → [...]``."""
        return base_log_prob(self.spec, self.params, x)

    def energy(self, x: jax.Array) -> jax.Array:
        """E(x), ``[..., D] → [...]``."""
        return energy(self.spec, self.params, x)

    def latent_energy(self, z: jax.Array) -> jax.Array:
        """E(G_θ(z)), ``[..., d] → [...]``."""
        return latent_energy(self.spec, self.params, z)

    def latent_potential(self, z: jax.Array, temperature: float = 1.0) -> jax.Array:
        """U(z) = ½‖z‖² + T·E(G_θ(z)), ``[..., d] → [...]``."""
        return latent_potential(self.spec, self.params, z, temperature)

    def unnormalized_log_prob(self, x: jax.Array) -> jax.Array:
        """log g_θ(x) − E(x), ``[..., D] → [...]``."""
        return unnormalized_log_prob(self.spec, self.params, x)

    def log_prob(self, x: jax.Array, log_partition: jax.Array | float | None = None) -> jax.Array:
        """log q(x) = log g_θ(x) − E(x) − A, ``[..., D] → [...]``."""
        return log_prob(self.spec, self.params, x, log_partition)

    def sample_prior(self, key: jax.Array, n: int) -> jax.Array:
        """``[n, d]`` draws from the prior η = N(0, I_d) in the params' dtype."""
        return jax.random.normal(key, (n, self.latent_dim), self.dtype)

    def sample_latent(self, key: jax.Array, n: int) -> jax.Array:
        """Deprecated alias of :meth:`sample_prior`."""
        warnings.warn("JaxGEBM.sample_latent is deprecated: use sample_prior.", DeprecationWarning, stacklevel=2)
        return self.sample_prior(key, n)

    def sample(self, key: jax.Array, n: int) -> jax.Array:
        """``[n, D]`` draws from the base, G_θ(z) with z ~ η."""
        return self.forward(self.sample_prior(key, n))


_SPEC_NAMES = {"AffineSpec": "AffineBase"}


def _spec_name(spec: Any) -> str:
    name = type(spec).__name__
    return _SPEC_NAMES.get(name, name.removesuffix("Spec"))
