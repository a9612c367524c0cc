"""JAX twin of a trained GEBM: pure functions of a weights pytree, for NumPyro and other JAX code."""

from .bases import AffineSpec, RealNVPSpec
from .convert import converter_for, register_jax, to_jax
from .energies import EnergyMLPSpec, QuadraticEnergySpec
from .gebm import (
    GEBMSpec,
    JaxGEBM,
    base_log_prob,
    energy,
    forward,
    forward_and_log_det,
    inverse,
    latent_energy,
    latent_potential,
    log_prob,
    unnormalized_log_prob,
)

__all__ = [
    "AffineSpec",
    "EnergyMLPSpec",
    "GEBMSpec",
    "JaxGEBM",
    "QuadraticEnergySpec",
    "RealNVPSpec",
    "base_log_prob",
    "converter_for",
    "energy",
    "forward",
    "forward_and_log_det",
    "inverse",
    "latent_energy",
    "latent_potential",
    "log_prob",
    "register_jax",
    "to_jax",
    "unnormalized_log_prob",
]
