"""The energy contract: :class:`Energy`, an ``nn.Module`` E: ℝᴰ → ℝ that reweights the base, dQ ∝ exp(−E) dG.

The energy contract (the rest of gebm_ppl relies on nothing else):

* ``dim`` (D): the data dimension, set by the constructor;
* ``forward(x) -> [...]`` (abstract) for ``x`` of shape ``[..., D]``, differentiable in x (the latent
  samplers and the gradient penalty need ∇ₓE);
* ``config`` (optional): the constructor's keyword arguments, so that ``type(energy)(**energy.config)``
  rebuilds it for checkpoints.

A new energy subclasses :class:`Energy` and registers itself with
:func:`gebm_ppl.registry.register_energy` (its config name, JAX twin and docs line); the concrete energies
live beside this module, one per file (:mod:`.mlp`, :mod:`.quadratic`, :mod:`.conv`).
"""

from __future__ import annotations

import abc

from torch import Tensor, nn

__all__ = ["Energy"]


class Energy(nn.Module, metaclass=abc.ABCMeta):
    """Abstract energy E: ``[..., D] → [...]`` (the contract is in the module docstring).

    Example:
        >>> import torch
        >>> class Half(Energy):
        ...     def __init__(self, dim):
        ...         super().__init__()
        ...         self.dim = dim
        ...     def forward(self, x):
        ...         return 0.5 * (x * x).sum(-1)
        >>> Half(2)(torch.ones(3, 2)).shape
        torch.Size([3])
    """

    dim: int

    @abc.abstractmethod
    def forward(self, x: Tensor) -> Tensor:
        """E(x), shape ``[...]`` for ``x`` of shape ``[..., D]``."""
