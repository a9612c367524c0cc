"""Training loops: maximum likelihood for flow bases (fit_mle) and KALE for GEBMs (fit_kale)."""

from ._options import TrainingOptions
from .adversarial import fit_adversarial
from .history import TrainingDiverged, TrainingHistory
from .kale_loop import fit_kale
from .kale_step import KaleSettings, KaleStep
from .mle import fit_mle

__all__ = [
    "KaleSettings",
    "KaleStep",
    "TrainingDiverged",
    "TrainingHistory",
    "TrainingOptions",
    "fit_adversarial",
    "fit_kale",
    "fit_mle",
]
