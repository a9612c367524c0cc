"""GEBMReparam: run a ``pyro.sample`` site with a GEBM prior in latent space, z ∼ N(0, I), x = G_θ(z)."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.infer.reparam.reparam import Reparam

from .bases import DensityNotAvailable
from .distribution import GEBMDistribution

__all__ = ["GEBMReparam"]


class GEBMReparam(Reparam):
    """Reparameterise a latent site ``x ~ GEBMDistribution`` by the GEBM's latent variable.

    The site ``pyro.sample(name, gebm.distribution())`` becomes

    * ``z = pyro.sample(f"{name}_latent", N(0, I))`` (shape ``batch_shape + (d,)``),
    * ``pyro.factor(f"{name}_energy", −E(G_θ(z)) − A)``,
    * ``x = G_θ(z)``, returned as a masked ``Delta`` at the original site (as ``pyro.deterministic``).

    The model's density in z is η(z)·exp(−E(G_θ(z)) − A), whose push-forward by G_θ is the GEBM Q
    (Arbel, Zhou & Gretton, 2021, https://arxiv.org/abs/2003.05033): the same model after the change
    of variables x = G_θ(z), exact when A (the distribution's ``log_partition``) is. MCMC then runs in
    latent space, where the geometry is the one the flow has made nearly Gaussian, and no density of
    the base is needed. Only latent (unobserved) sites can be reparameterised.

    If the site carries an initial value (e.g. from ``init_to_value``) and the base is invertible,
    the latent site is initialised at G_θ⁻¹(value).

    Example:
        >>> import pyro, torch, gebm_ppl as gp
        >>> from pyro import poutine
        >>> gebm = gp.GEBM(gp.RealNVP(2, hidden_features=8, num_layers=2), gp.EnergyMLP(2, hidden=(8,)))
        >>> def model(y):
        ...     x = pyro.sample("x", gebm.distribution())
        ...     pyro.sample("y", pyro.distributions.Normal(x[..., 0], 0.5), obs=y)
        >>> reparam_model = poutine.reparam(model, config={"x": gp.GEBMReparam()})
        >>> sorted(poutine.trace(reparam_model).get_trace(torch.tensor(0.3)).nodes)[:3]
        ['_INPUT', '_RETURN', 'x']
    """

    def apply(self, msg: dict) -> dict:
        name = msg["name"]
        fn, event_dim = self._unwrap(msg["fn"])
        if not isinstance(fn, GEBMDistribution):
            raise TypeError(
                f"At pyro.sample({name!r}, ...): GEBMReparam expects a GEBMDistribution, but got {type(fn).__name__}."
            )
        if msg["is_observed"]:
            raise ValueError(
                f"At pyro.sample({name!r}, ..., obs=...): GEBMReparam cannot reparameterise an observed site; "
                f"remove {name!r} from the reparam config (an observed GEBM site is scored by its log_prob)."
            )
        gebm = fn.gebm
        batch_shape = fn.batch_shape
        extra = event_dim - fn.event_dim  # event dims added by .to_event() around the GEBM
        p = gebm.log_partition
        loc = torch.zeros(batch_shape + (gebm.latent_dim,), dtype=p.dtype, device=p.device)
        latent = dist.Normal(loc, 1.0).to_event(1 + extra)

        # An initial value (set by an init strategy) is kept when the base can map it to the latent.
        value = msg["value"]
        z_init = None
        if value is not None:
            try:
                z_init = gebm.base.inverse(value.detach())[0]
            except DensityNotAvailable:
                value = None  # Pyro then warns that this site falls back to the default initialisation
        z = pyro.sample(f"{name}_latent", latent, obs=z_init, infer={"is_observed": False})

        x = gebm.base(z)
        log_factor = -gebm.energy(x) - fn.log_partition
        if extra:
            log_factor = log_factor.sum(tuple(range(-extra, 0)))
        pyro.factor(f"{name}_energy", log_factor)
        if value is None:
            value = x
        new_fn = dist.Delta(value, event_dim=event_dim).mask(False)
        return {"fn": new_fn, "value": value, "is_observed": True}
