"""NumPyro backend: a GEBM distribution, a latent reparameterisation and JIT-compiled NUTS on the JAX twin."""

from .distribution import GEBMDistribution
from .mcmc import sample_latent_numpyro, set_host_devices
from .reparam import GEBMReparam

__all__ = ["GEBMDistribution", "GEBMReparam", "sample_latent_numpyro", "set_host_devices"]
