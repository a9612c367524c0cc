"""Bases G_θ = (G_θ)#η, η = N(0, I_d): the :class:`Base` contract and one module per concrete base.

Every concrete base registers itself (:func:`gebm_ppl.registry.register_base`) with its config name and
JAX twin; :data:`BASES` is the ``{name: class}`` view of the registry's bases.
"""

from ..registry import ComponentView, register_base
from .affine import AffineBase
from .base import Base, DensityNotAvailable, standard_normal_log_prob
from .generators import ConvGenerator, MLPGenerator
from .maf import MAF
from .nsf import NSF
from .realnvp import ExpTanhAffineCoupling, NflowsTransformBase, RealNVP
from .tails import StudentTBase
from .transform import TransformBase

BASES = ComponentView("base")
"""``{config name: base class}``, a view of :data:`gebm_ppl.registry.COMPONENTS` (add with ``register_base``)."""

__all__ = [
    "BASES",
    "MAF",
    "NSF",
    "AffineBase",
    "Base",
    "ConvGenerator",
    "DensityNotAvailable",
    "ExpTanhAffineCoupling",
    "MLPGenerator",
    "NflowsTransformBase",
    "RealNVP",
    "StudentTBase",
    "TransformBase",
    "register_base",
    "standard_normal_log_prob",
]
