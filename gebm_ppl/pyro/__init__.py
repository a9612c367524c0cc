"""The Pyro side of a GEBM (mirrors :mod:`gebm_ppl.numpyro`): the distribution and the latent reparameterizer."""

from .distribution import GEBMDistribution
from .reparam import GEBMReparam, from_pyro

__all__ = ["GEBMDistribution", "GEBMReparam", "from_pyro"]
