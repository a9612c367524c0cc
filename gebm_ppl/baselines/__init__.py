"""Baselines beside GEBMs: an energy-based model in data space trained by contrastive divergence (:mod:`.ebm`)."""

from .ebm import fit_ebm, langevin_data_space, sample_ebm

__all__ = ["fit_ebm", "langevin_data_space", "sample_ebm"]
