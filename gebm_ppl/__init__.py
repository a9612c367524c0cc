"""gebm_ppl: Generalized Energy Based Models (Arbel, Zhou & Gretton, ICLR 2021) for Pyro and NumPyro."""

from __future__ import annotations

import importlib

from . import _compat
from .bases import MAF, NSF, AffineBase, Base, ConvGenerator, DensityNotAvailable, MLPGenerator, RealNVP, TransformBase
from .energies import ConvEnergy, Energy, EnergyMLP, QuadraticEnergy, gradient_penalty
from .gebm import GEBM
from .kale import (
    MIN_ESS_FRACTION,
    DegenerateLogPartition,
    LogPartitionEstimate,
    LowESSWarning,
    check_ess,
    estimate_log_partition,
    kale_base_loss,
    kale_energy_loss,
    kale_from_log_partition,
    kale_nll_bound,
    kale_objective,
    nll_from_log_partition,
)
from .pyro.distribution import GEBMDistribution
from .registry import register_base, register_energy

_compat.install()

__version__ = "0.1.0"

# Names whose modules pull in heavier dependencies (training loops, MCMC, JAX, data I/O) are
# imported on first use, so that `import gebm_ppl` stays light and JAX stays optional.
_LAZY = {
    "fit_mle": "gebm_ppl.training",
    "fit_kale": "gebm_ppl.training",
    "fit_adversarial": "gebm_ppl.training",
    "refine_energy": "gebm_ppl.training",
    "TrainingDiverged": "gebm_ppl.training",
    "TrainingHistory": "gebm_ppl.training",
    "sample_latent": "gebm_ppl.sampling",
    "sample_potential": "gebm_ppl.sampling",
    "GEBMReparam": "gebm_ppl.pyro.reparam",
    "from_pyro": "gebm_ppl.pyro.reparam",
    "to_jax": "gebm_ppl.jax",
    "evaluate_gebm": "gebm_ppl.evaluation",
    "GEBMDensity": "gebm_ppl.sklearn",
    "StudentTBase": "gebm_ppl.bases.tails",
}
_LAZY_MODULES = {
    "cli": "gebm_ppl.cli",
    "data": "gebm_ppl.data",
    "diagnostics": "gebm_ppl.diagnostics",
    "evaluation": "gebm_ppl.evaluation",
    "jax": "gebm_ppl.jax",
    "metrics": "gebm_ppl.metrics",
    "numpyro": "gebm_ppl.numpyro",
    "pyro": "gebm_ppl.pyro",
    "registry": "gebm_ppl.registry",
    "runs": "gebm_ppl.runs",
    "sampling": "gebm_ppl.sampling",
    "training": "gebm_ppl.training",
    "units": "gebm_ppl.units",
    # the older top-level names of modules that moved (attribute access keeps working, without a warning)
    "reparam": "gebm_ppl.pyro.reparam",
    "toys": "gebm_ppl.data.toys",
    "userdata": "gebm_ppl.data.userdata",
}

__all__ = [
    "MIN_ESS_FRACTION",
    "DegenerateLogPartition",
    "LowESSWarning",
    "check_ess",
    "MAF",
    "NSF",
    "TransformBase",
    "AffineBase",
    "Base",
    "ConvEnergy",
    "ConvGenerator",
    "DensityNotAvailable",
    "Energy",
    "EnergyMLP",
    "GEBM",
    "GEBMDistribution",
    "GEBMReparam",
    "LogPartitionEstimate",
    "MLPGenerator",
    "QuadraticEnergy",
    "RealNVP",
    "StudentTBase",
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
    "refine_energy",
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
        value = importlib.import_module(_LAZY_MODULES[name])
    else:
        raise AttributeError(f"module 'gebm_ppl' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(_LAZY_MODULES))
