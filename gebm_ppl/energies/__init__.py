"""Energies E: ℝᴰ → ℝ that reweight the base, dQ ∝ exp(−E) dG: the :class:`Energy` contract, one module per energy.

Every concrete energy registers itself (:func:`gebm_ppl.registry.register_energy`) with its config name
and JAX twin; :data:`ENERGIES` is the ``{name: class}`` view of the registry's energies.
"""

from ..registry import ComponentView, register_energy
from .base import Energy
from .conv import ConvEnergy, check_flat_images
from .mlp import EnergyMLP, check_optional_floor, gradient_penalty, smooth_floor
from .quadratic import QuadraticEnergy

ENERGIES = ComponentView("energy")
"""``{config name: energy class}``, a view of :data:`gebm_ppl.registry.COMPONENTS` (add with ``register_energy``)."""

__all__ = [
    "ENERGIES",
    "ConvEnergy",
    "Energy",
    "EnergyMLP",
    "QuadraticEnergy",
    "check_flat_images",
    "check_optional_floor",
    "gradient_penalty",
    "register_energy",
    "smooth_floor",
]
