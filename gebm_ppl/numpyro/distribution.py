"""GEBMDistribution for NumPyro: log q(x) = log g_θ(x) − E(x) − A, sampled by SIR, over a JAX twin."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from numpyro.distributions import Distribution, constraints
from numpyro.distributions.util import validate_sample

from ..jax import JaxGEBM, to_jax

__all__ = ["GEBMDistribution", "as_jax_gebm"]

_SIR_CHUNK_ROWS = 1 << 16  # proposals evaluated at once in sample(), as on the torch side


def as_jax_gebm(gebm) -> JaxGEBM:
    """``gebm`` itself if it is a :class:`~gebm_ppl.jax.JaxGEBM`, else :func:`~gebm_ppl.jax.to_jax` of it."""
    return gebm if isinstance(gebm, JaxGEBM) else to_jax(gebm)


class GEBMDistribution(Distribution):
    """Generalized Energy Based Model as a NumPyro distribution over ``event_shape = (D,)``.

    log q(x) = log g_θ(x) − E(x) − A, with g_θ the base density and A the log-partition: the
    ``log_partition`` given here, or else the GEBM's stored c. ``sample`` is sampling–importance–
    resampling: for each draw, ``num_proposals`` base samples G_θ(z), z ~ N(0, I), are drawn and one
    is kept with probability ∝ exp(−E); its law tends to Q as that count grows. For MCMC in latent
    space use :func:`gebm_ppl.sample_latent` (``backend="numpyro"``) or
    :class:`gebm_ppl.numpyro.GEBMReparam`. The twin of :class:`gebm_ppl.GEBMDistribution`.

    Args:
        gebm: a :class:`~gebm_ppl.jax.JaxGEBM`, or a torch :class:`gebm_ppl.GEBM` (exported with
            :func:`gebm_ppl.to_jax`).
        log_partition: A (scalar); None uses the GEBM's c.
        num_proposals: proposals per draw in ``sample``.
        batch_shape: batch shape (every batch member shares the GEBM).
        validate_args: NumPyro's argument validation.

    Reference:
        [1] Arbel, Zhou & Gretton (2021) "Generalized Energy Based Models", https://arxiv.org/abs/2003.05033

    Example:
        >>> import jax, gebm_ppl as gp
        >>> from gebm_ppl.numpyro import GEBMDistribution
        >>> gebm = gp.GEBM(gp.RealNVP(2, hidden_features=8, num_layers=2), gp.EnergyMLP(2, hidden=(8,)))
        >>> d = GEBMDistribution(gebm)
        >>> d.log_prob(d.sample(jax.random.PRNGKey(0), (3,))).shape
        (3,)
    """

    arg_constraints: dict = {}
    support = constraints.real_vector
    pytree_data_fields = ("gebm", "log_partition")
    pytree_aux_fields = ("num_proposals",)

    def __init__(
        self,
        gebm,
        log_partition: jax.Array | float | None = None,
        num_proposals: int = 256,
        batch_shape: tuple[int, ...] = (),
        *,
        validate_args: bool | None = None,
    ):
        self.gebm = as_jax_gebm(gebm)
        if log_partition is None:
            log_partition = self.gebm.log_partition
        else:
            log_partition = jnp.asarray(log_partition, dtype=self.gebm.dtype)
            if log_partition.ndim != 0:
                raise ValueError(f"'log_partition' should be a scalar. Got shape {log_partition.shape}.")
            if not isinstance(log_partition, jax.core.Tracer) and not bool(jnp.isfinite(log_partition)):
                raise ValueError(f"'log_partition' should be finite. Got {log_partition}.")
        self.log_partition = log_partition
        if isinstance(num_proposals, bool) or not isinstance(num_proposals, int) or num_proposals < 1:
            raise ValueError(f"'num_proposals' should be a positive integer. Got {num_proposals!r}.")
        self.num_proposals = num_proposals
        super().__init__(tuple(batch_shape), (self.gebm.dim,), validate_args=validate_args)

    @property
    def has_rsample(self) -> bool:
        """False: SIR draws are not differentiable in the GEBM's parameters."""
        return False

    def _check_value(self, value: jax.Array) -> None:
        shape = jnp.shape(value)
        if len(shape) < 1 or shape[-1] != self.event_shape[0]:
            dim = self.event_shape[0]
            raise ValueError(f"'value' should have shape [..., {dim}]. Got shape {tuple(shape)}.")

    def _broadcast(self, out: jax.Array) -> jax.Array:
        return jnp.broadcast_to(out, jnp.broadcast_shapes(jnp.shape(out), self.batch_shape))

    def unnormalized_log_prob(self, value: jax.Array) -> jax.Array:
        """log g_θ(x) − E(x), shape ``sample_shape + batch_shape``."""
        self._check_value(value)
        return self._broadcast(_unnormalized_log_prob(self.gebm, value))

    @validate_sample
    def log_prob(self, value: jax.Array) -> jax.Array:
        """log q(x) = log g_θ(x) − E(x) − A, shape ``sample_shape + batch_shape``."""
        return self.unnormalized_log_prob(value) - self.log_partition

    def latent_potential(self, z: jax.Array, temperature: float = 1.0) -> jax.Array:
        """U(z) = ½‖z‖² + T·E(G_θ(z)): if z ∼ exp(−U) then G_θ(z) ∼ Q (for T = 1)."""
        return self.gebm.latent_potential(z, temperature)

    def sample(self, key: jax.Array, sample_shape: tuple[int, ...] = ()) -> jax.Array:
        """Draw ``sample_shape + batch_shape + (D,)`` points by sampling–importance–resampling."""
        shape = tuple(sample_shape) + self.batch_shape
        n = math.prod(shape)
        if n == 0:
            return jnp.zeros(shape + self.event_shape, self.gebm.dtype)
        x = _sir(jax.lax.stop_gradient(self.gebm), key, n, self.num_proposals)
        return x.reshape(shape + self.event_shape)


@jax.jit
def _unnormalized_log_prob(gebm: JaxGEBM, value: jax.Array) -> jax.Array:
    # one compiled program per (GEBM structure, shape) when called eagerly; inlined under an outer jit
    return gebm.unnormalized_log_prob(value)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _sir(gebm: JaxGEBM, key: jax.Array, n: int, k: int) -> jax.Array:
    """``[n, D]`` SIR draws, each picked ∝ exp(−E) among k base draws; compiled once per (structure, n, k)."""

    def one(key: jax.Array) -> jax.Array:
        key_z, key_pick = jax.random.split(key)
        x = gebm.sample(key_z, k)
        return x[jax.random.categorical(key_pick, -gebm.energy(x))]

    keys = jax.random.split(key, n)
    return jax.lax.map(one, keys, batch_size=max(1, min(n, _SIR_CHUNK_ROWS // k)))
