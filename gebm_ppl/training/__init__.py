"""Training loops: maximum likelihood for flow bases (fit_mle) and KALE for GEBMs (fit_kale)."""

from .adversarial import fit_adversarial
from .history import TrainingDiverged, TrainingHistory
from .kale_loop import fit_kale
from .mle import fit_mle

__all__ = ["TrainingDiverged", "TrainingHistory", "fit_adversarial", "fit_kale", "fit_mle"]
