"""gebm_ppl: Generalized Energy Based Models (Arbel, Zhou & Gretton, ICLR 2021) for Pyro and NumPyro."""

from __future__ import annotations

import importlib

from .bases import AffineBase, Base, DensityNotAvailable, RealNVP, TransformBase, register_base
from .distribution import GEBMDistribution
from .energies import EnergyMLP, QuadraticEnergy, gradient_penalty, register_energy
from .gebm import GEBM
from .generators import ConvGenerator, MLPGenerator
from .image_energies import ConvEnergy
from .kale import (
    LogPartitionEstimate,
    estimate_log_partition,
    kale_base_loss,
    kale_energy_loss,
    kale_from_log_partition,
    kale_nll_bound,
    kale_objective,
    nll_from_log_partition,
)

__version__ = "0.1.0"

# Names whose modules pull in heavier dependencies (training loops, MCMC, JAX, data I/O) are
# imported on first use, so that `import gebm_ppl` stays light and JAX stays optional.
_LAZY = {
    "fit_mle": "gebm_ppl.training",
    "fit_kale": "gebm_ppl.training",
    "fit_adversarial": "gebm_ppl.training",
    "TrainingDiverged": "gebm_ppl.training",
    "TrainingHistory": "gebm_ppl.training",
    "sample_latent": "gebm_ppl.sampling",
    "sample_potential": "gebm_ppl.sampling",
    "GEBMReparam": "gebm_ppl.reparam",
    "from_pyro": "gebm_ppl.reparam",
    "to_jax": "gebm_ppl.jax",
    "NSF": "gebm_ppl.nsf",
    "evaluate_gebm": "gebm_ppl.evaluation",
    "GEBMDensity": "gebm_ppl.sklearn",
}
_LAZY_MODULES = {
    "data",
    "diagnostics",
    "evaluation",
    "jax",
    "metrics",
    "numpyro",
    "reparam",
    "runs",
    "sampling",
    "toys",
    "training",
    "units",
    "userdata",
}

__all__ = [
    "NSF",
    "TransformBase",
    "AffineBase",
    "Base",
    "ConvEnergy",
    "ConvGenerator",
    "DensityNotAvailable",
    "EnergyMLP",
    "GEBM",
    "GEBMDistribution",
    "GEBMReparam",
    "LogPartitionEstimate",
    "MLPGenerator",
    "QuadraticEnergy",
    "RealNVP",
    "TrainingDiverged",
    "TrainingHistory",
    "estimate_log_partition",
    "evaluate_gebm",
    "fit_adversarial",
    "fit_kale",
    "fit_mle",
    "from_pyro",
    "gradient_penalty",
    "kale_base_loss",
    "kale_energy_loss",
    "kale_from_log_partition",
    "kale_nll_bound",
    "kale_objective",
    "nll_from_log_partition",
    "register_base",
    "register_energy",
    "sample_latent",
    "sample_potential",
    "to_jax",
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in _LAZY_MODULES:
        value = importlib.import_module(f"gebm_ppl.{name}")
    else:
        raise AttributeError(f"module 'gebm_ppl' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | _LAZY_MODULES)
