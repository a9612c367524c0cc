"""GEBMReparam for NumPyro: run a GEBM site in latent space, z ∼ N(0, I) with a factor, x = G_θ(z)."""

from __future__ import annotations

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.distributions.util import sum_rightmost
from numpyro.infer.reparam import Reparam

from .distribution import GEBMDistribution

__all__ = ["GEBMReparam"]


class GEBMReparam(Reparam):
    """Reparameterise a :class:`~gebm_ppl.numpyro.GEBMDistribution` site into its latent space.

    The site ``numpyro.sample(name, GEBMDistribution(gebm))`` becomes

    * ``z = numpyro.sample(f"{name}_latent", N(0, I))`` (shape ``batch_shape + (d,)``),
    * ``numpyro.factor(f"{name}_energy", −E(G_θ(z)) − A)``,
    * ``x = G_θ(z)``, recorded as a deterministic site under the original name (so NumPyro's MCMC
      stores it and ``arviz.from_numpyro`` puts it in the posterior beside ``x_latent``).

    With a ``.to_event(k)`` around the GEBM (e.g. ``GEBMDistribution(gebm).expand([k]).to_event(1)``:
    k independent GEBM draws as one event) the factor is Σᵢ (−E(G_θ(zᵢ)) − A), subtracting k·A.

    The density in z is η(z)·exp(−E(G_θ(z)) − A), whose push-forward by G_θ is the GEBM Q (Arbel,
    Zhou & Gretton, 2021, https://arxiv.org/abs/2003.05033): the same model after the change of
    variables x = G_θ(z), exact when A (the distribution's ``log_partition``) is. NUTS then runs in
    latent space, where the flow has made the geometry nearly Gaussian, and no base density is needed.
    The twin of the Pyro :class:`gebm_ppl.GEBMReparam` (same site names), in the style of NumPyro's
    :class:`~numpyro.infer.reparam.NeuTraReparam`.

    Raises (when the model runs):
        ValueError: the site is observed (a latent reparameterisation cannot condition on data).
        TypeError: the site's distribution is not a GEBMDistribution.

    Example (then run ``MCMC(NUTS(reparam_model), ...)`` as for any NumPyro model):
        >>> import jax, numpyro, numpyro.distributions as dist, gebm_ppl as gp
        >>> from numpyro import handlers
        >>> from gebm_ppl.numpyro import GEBMDistribution, GEBMReparam
        >>> gebm = gp.GEBM(gp.RealNVP(2, hidden_features=8, num_layers=2), gp.EnergyMLP(2, hidden=(8,)))
        >>> prior = GEBMDistribution(gebm)
        >>> def model(y):
        ...     x = numpyro.sample("x", prior)
        ...     numpyro.sample("y", dist.Normal(x, 0.5).to_event(1), obs=y)
        >>> reparam_model = handlers.reparam(model, config={"x": GEBMReparam()})
        >>> trace = handlers.trace(handlers.seed(reparam_model, 0)).get_trace(jax.numpy.ones(2))
        >>> [(name, site["type"]) for name, site in trace.items()]
        [('x_latent', 'sample'), ('x_energy', 'sample'), ('x', 'deterministic'), ('y', 'sample')]
    """

    def __call__(self, name: str, fn, obs):
        if obs is not None:
            raise ValueError(
                f"At numpyro.sample({name!r}, ..., obs=...): GEBMReparam cannot reparameterise an observed "
                f"site; remove {name!r} from the reparam config (an observed GEBM site is scored by its "
                "log_prob)."
            )
        gebm_dist, expand_shape, event_dim = self._unwrap(fn)
        if not isinstance(gebm_dist, GEBMDistribution):
            raise TypeError(
                f"At numpyro.sample({name!r}, ...): GEBMReparam expects a gebm_ppl.numpyro.GEBMDistribution, "
                f"but got {type(gebm_dist).__name__}."
            )
        gebm = gebm_dist.gebm
        # latent noise: the site's batch shape + (d,), with the site's event dims
        shape = tuple(expand_shape) + (gebm.latent_dim,)
        prior = dist.Normal(jnp.zeros((), gebm.dtype), 1.0).expand(shape).to_event(event_dim)
        z = numpyro.sample(f"{name}_latent", prior)
        x = gebm.forward(z)
        # one factor −E(G_θ(zᵢ)) − A per GEBM draw, summed over the event dims added by .to_event():
        # k independent draws in one event subtract k·A, as k separate sites would
        log_factor = sum_rightmost(-gebm.energy(x) - gebm_dist.log_partition, event_dim - 1)
        numpyro.factor(f"{name}_energy", log_factor)
        return None, x
