"""GEBMDistribution: a GEBM as a Pyro distribution, log q(x) = log g_θ(x) − E(x) − A."""

from __future__ import annotations

import math

import torch
from pyro.distributions import TorchDistribution
from torch import Tensor
from torch.distributions import constraints

from .._modes import eval_mode
from .._validation import check_points, check_positive_int

__all__ = ["GEBMDistribution"]

_SIR_CHUNK_ROWS = 1 << 16  # proposals evaluated per energy call in sample()


class GEBMDistribution(TorchDistribution):
    """Generalized Energy Based Model as a Pyro distribution over ``event_shape = (D,)``.

    log q(x) = log g_θ(x) − E(x) − A, where g_θ is the base density and A the log-partition:
    the ``log_partition`` given here, or else the GEBM's stored c (its KALE estimate of A; call
    :func:`gebm_ppl.estimate_log_partition` for a Monte-Carlo value with a standard error).
    ``sample`` is sampling–importance–resampling: for each draw, ``num_proposals`` base samples
    are drawn and one is kept with probability ∝ exp(−E); the law tends to Q as that count grows.
    For MCMC in latent space use :func:`gebm_ppl.sample_latent` or :class:`gebm_ppl.GEBMReparam`.

    Args:
        gebm: a :class:`gebm_ppl.GEBM`.
        log_partition: A (float or 0-d tensor); None uses ``gebm.log_partition``.
        num_proposals: proposals per draw in ``sample``.
        batch_shape: batch shape (all batch members share the GEBM).

    Reference:
        [1] Arbel, Zhou & Gretton (2021) "Generalized Energy Based Models", https://arxiv.org/abs/2003.05033

    Example:
        >>> import pyro, gebm_ppl as gp
        >>> gebm = gp.GEBM(gp.RealNVP(2, hidden_features=8, num_layers=2), gp.EnergyMLP(2, hidden=(8,)))
        >>> d = gebm.distribution()
        >>> d.log_prob(d.sample((3,))).shape
        torch.Size([3])
    """

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = False

    def __init__(
        self,
        gebm,
        log_partition: Tensor | float | None = None,
        num_proposals: int = 256,
        batch_shape: torch.Size | tuple = torch.Size(),
        *,
        validate_args: bool | None = None,
    ):
        if not hasattr(gebm, "latent_energy") or not hasattr(gebm, "base"):
            raise TypeError(f"'gebm' should be a gebm_ppl.GEBM. Got {type(gebm).__name__}.")
        self.gebm = gebm
        if log_partition is not None:
            try:
                log_partition = torch.as_tensor(log_partition, dtype=gebm.log_partition.dtype)
            except (TypeError, ValueError, RuntimeError) as e:
                raise TypeError(f"'log_partition' should be a finite scalar. Got {log_partition!r}.") from e
            if log_partition.dim() != 0 or not bool(torch.isfinite(log_partition)):
                raise ValueError(f"'log_partition' should be a finite scalar. Got {log_partition}.")
        self._log_partition = log_partition
        self.num_proposals = check_positive_int(num_proposals, "num_proposals")
        super().__init__(torch.Size(batch_shape), torch.Size((gebm.dim,)), validate_args=validate_args)

    @property
    def log_partition(self) -> Tensor:
        """A used by :meth:`log_prob`."""
        return self.gebm.log_partition if self._log_partition is None else self._log_partition

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(GEBMDistribution, _instance)
        new.gebm = self.gebm
        new._log_partition = self._log_partition
        new.num_proposals = self.num_proposals
        super(GEBMDistribution, new).__init__(torch.Size(batch_shape), self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def _broadcast(self, out: Tensor) -> Tensor:
        shape = torch.broadcast_shapes(out.shape, self.batch_shape)
        return out.expand(shape)

    def unnormalized_log_prob(self, value: Tensor) -> Tensor:
        """log g_θ(x) − E(x), shape ``sample_shape + batch_shape``."""
        check_points(value, self.event_shape[0], "value")
        return self._broadcast(self.gebm.unnormalized_log_prob(value))

    def log_prob(self, value: Tensor) -> Tensor:
        """log q(x) = log g_θ(x) − E(x) − A, shape ``sample_shape + batch_shape``."""
        return self.unnormalized_log_prob(value) - self.log_partition

    def latent_potential(self, z: Tensor, temperature: float = 1.0) -> Tensor:
        """U(z) = ½‖z‖² + T·E(G_θ(z)): if z ∼ exp(−U) then G_θ(z) ∼ Q (for T = 1)."""
        return self.gebm.latent_potential(z, temperature)

    @torch.no_grad()
    def sample(self, sample_shape: torch.Size | tuple = torch.Size()) -> Tensor:
        """Draw ``sample_shape + batch_shape + (D,)`` points by sampling–importance–resampling."""
        shape = self._extended_shape(torch.Size(sample_shape))
        n = math.prod(shape[:-1])
        k = self.num_proposals
        gebm = self.gebm
        with eval_mode(gebm):
            per_chunk = max(1, _SIR_CHUNK_ROWS // k)
            out = []
            for start in range(0, n, per_chunk):
                m = min(per_chunk, n - start)
                z = gebm.base.sample_prior(m * k)
                x = gebm.base(z)
                log_w = -gebm.energy(x).reshape(m, k)
                idx = torch.distributions.Categorical(logits=log_w).sample()
                out.append(x.reshape(m, k, -1)[torch.arange(m), idx])
        return torch.cat(out).reshape(shape) if out else torch.empty(shape)
