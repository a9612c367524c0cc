"""Training loops: maximum likelihood for flow bases (fit_mle), KALE for GEBMs (fit_kale), end to end (fit_adversarial),
an energy on a frozen generator (refine_energy).

Each ``fit_*`` takes keywords; ``run_kale`` / ``run_adversarial`` take the same options as dataclasses
(``KaleSettings`` / ``AdversarialSettings`` and ``TrainingOptions``), checked once on construction.
"""

from ._options import TrainingOptions
from .adversarial import fit_adversarial, run_adversarial
from .adversarial_step import AdversarialSettings, AdversarialStep
from .history import TrainingDiverged, TrainingHistory
from .kale_loop import fit_kale, run_kale
from .kale_step import KaleSettings, KaleStep
from .mle import fit_mle
from .refine import refine_energy

__all__ = [
    "AdversarialSettings",
    "AdversarialStep",
    "KaleSettings",
    "KaleStep",
    "TrainingDiverged",
    "TrainingHistory",
    "TrainingOptions",
    "fit_adversarial",
    "fit_kale",
    "fit_mle",
    "refine_energy",
    "run_adversarial",
    "run_kale",
]
