"""GEBMReparam: run a ``pyro.sample`` site with a GEBM prior in latent space, z ∼ N(0, I), x = G_θ(z)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pyro
import pyro.distributions as dist
import torch
from pyro.infer.reparam.reparam import Reparam

from ..bases.base import DensityNotAvailable
from .distribution import GEBMDistribution

__all__ = ["GEBMReparam", "from_pyro"]


class GEBMReparam(Reparam):
    """Reparameterise a latent site ``x ~ GEBMDistribution`` by the GEBM's latent variable.

    The site ``pyro.sample(name, gebm.distribution())`` becomes

    * ``z = pyro.sample(f"{name}_latent", N(0, I))`` (shape ``batch_shape + (d,)``),
    * ``pyro.factor(f"{name}_energy", −E(G_θ(z)) − A)``,
    * ``x = G_θ(z)``, returned as a masked ``Delta`` at the original site (as ``pyro.deterministic``).

    With a ``.to_event(k)`` around the GEBM (e.g. ``gebm.distribution().expand([k]).to_event(1)``:
    k independent GEBM draws as one event) the factor is the sum over the k members,
    Σᵢ (−E(G_θ(zᵢ)) − A), so the site's log-density subtracts k·A.

    The model's density in z is η(z)·exp(−E(G_θ(z)) − A), whose push-forward by G_θ is the GEBM Q
    (Arbel, Zhou & Gretton, 2021, https://arxiv.org/abs/2003.05033): the same model after the change
    of variables x = G_θ(z), exact when A (the distribution's ``log_partition``) is. MCMC then runs in
    latent space, where the geometry is the one the flow has made nearly Gaussian, and no density of
    the base is needed. Only latent (unobserved) sites can be reparameterised.

    If the site carries an initial value (e.g. from ``init_to_value``) and the base is invertible,
    the latent site is initialised at G_θ⁻¹(value).

    Pyro's MCMC stores only the latent sites (``x_latent``); :func:`from_pyro` builds the ArviZ
    InferenceData with ``x`` added to the posterior.

    Args:
        trainable: whether gradients reach the GEBM's weights through ``x`` and the factor (to learn
            them, e.g. by SVI). By default the prior is fixed: ``x`` and the factor are differentiable
            in z only, so a trace's ``x`` is a plain value when z is one.

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

    def __init__(self, trainable: bool = False):
        if not isinstance(trainable, bool):
            raise TypeError(f"'trainable' should be a bool. Got {trainable!r}.")
        self.trainable = trainable

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

        with contextlib.nullcontext() if self.trainable else _frozen(gebm):
            x = gebm.base(z)
            log_factor = -gebm.energy(x) - (fn.log_partition if self.trainable else fn.log_partition.detach())
        if extra:
            log_factor = log_factor.sum(tuple(range(-extra, 0)))
        pyro.factor(f"{name}_energy", log_factor)
        if value is None:
            value = x
        new_fn = dist.Delta(value, event_dim=event_dim).mask(False)
        return {"fn": new_fn, "value": value, "is_observed": True}


@contextlib.contextmanager
def _frozen(module: torch.nn.Module) -> Iterator[None]:
    """Compute with ``module``'s parameters out of autograd (restoring their ``requires_grad`` after)."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def _is_deterministic(site: dict) -> bool:
    """A ``pyro.deterministic`` site, or the value site x = G(z) of a :class:`GEBMReparam`."""
    if site["type"] != "sample" or not site["is_observed"]:
        return False
    fn = site["fn"]
    masked_delta = isinstance(fn, dist.MaskedDistribution) and isinstance(fn.base_dist, dist.Delta)
    return bool(site["infer"].get("_deterministic")) or (masked_delta and fn._mask is False)


def _is_factor(site: dict) -> bool:
    return site["type"] == "sample" and site["is_observed"] and isinstance(site["fn"], dist.Unit)


def from_pyro(mcmc, **kwargs):
    """``arviz.from_pyro(mcmc, **kwargs)`` with the model's deterministic sites in the posterior.

    Pyro's MCMC stores only the latent sites, so for a model with a :class:`GEBMReparam` site
    ``x`` the ArviZ posterior would hold ``x_latent`` alone, and ArviZ would list ``x`` (one prior
    draw) and the factor ``x_energy`` as observed data. Here every deterministic site (x = G_θ(z) of
    a reparameterised GEBM site, and any ``pyro.deterministic``) is computed for each posterior draw
    by rerunning the model on that draw, without gradients, and added to ``posterior`` under its
    own name; ``observed_data`` and ``log_likelihood`` keep only the observed sites with a
    likelihood (deterministic and ``pyro.factor`` sites removed).

    Args:
        mcmc: a ``pyro.infer.MCMC`` that has run.
        **kwargs: passed to :func:`arviz.from_pyro` (``coords``, ``dims``, ``log_likelihood``, ...).

    Returns:
        arviz.InferenceData.
    """
    import arviz as az
    import numpy as np
    from pyro import poutine

    model, args, kw = mcmc.kernel.model, mcmc._args, mcmc._kwargs  # as arviz.from_pyro reads them
    samples = mcmc.get_samples(group_by_chain=True)
    chains, draws = next(iter(samples.values())).shape[:2]
    values: dict[str, list] = {}
    with torch.no_grad():
        for c in range(chains):
            for s in range(draws):
                draw = {k: v[c, s] for k, v in samples.items()}
                tr = poutine.trace(poutine.condition(model, data=draw)).get_trace(*args, **kw)
                for name, site in tr.nodes.items():
                    if name not in samples and _is_deterministic(site):
                        values.setdefault(name, []).append(site["value"].detach().cpu().numpy())
        tr = poutine.trace(model).get_trace(*args, **kw)
    hidden = [n for n, site in tr.nodes.items() if _is_deterministic(site) or _is_factor(site)]
    with torch.no_grad():  # ArviZ converts the traced values with .numpy()
        idata = az.from_pyro(mcmc, **kwargs)
    det = {k: np.stack(v).reshape((chains, draws) + v[0].shape) for k, v in values.items()}
    if det:
        extra = az.from_dict(posterior=det, coords=kwargs.get("coords"), dims=kwargs.get("dims"))
        idata.posterior = idata.posterior.merge(extra.posterior, compat="override")
    for group in ("observed_data", "log_likelihood"):
        if group in idata.groups():
            data = idata[group].drop_vars([n for n in hidden if n in idata[group].data_vars])
            idata[group] = data.drop_dims([d for d in data.dims if not any(d in v.dims for v in data.values())])
    return idata
