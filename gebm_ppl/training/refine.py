"""An energy trained by KALE on a frozen generator: the GEBM paper's "tune" stage, or refining a GAN: refine_energy."""

from __future__ import annotations

import numpy as np
from torch import Tensor, nn

from .history import TrainingHistory
from .kale_loop import fit_kale

__all__ = ["refine_energy"]


def refine_energy(
    model: nn.Module,
    train: Tensor | np.ndarray,
    val: Tensor | np.ndarray | None = None,
    *,
    energy: nn.Module | None = None,
    **kale_options,
) -> tuple[nn.Module, TrainingHistory]:
    """Train (or fine-tune) an energy E on a frozen generator G_θ by KALE; returns the GEBM and its history.

    The GEBM dQ ∝ exp(−E) dG_θ corrects a generator's law without touching it: at the optimum of the KALE
    objective F(E, c) = −E_P[E + c] − E_G[exp(−(E + c))] + 1, exp(−E − c) = dP/dG_θ on the support of
    G_θ, so samples of Q (latent MCMC on ν(z) ∝ N(z; 0, I) exp(−E(G_θ(z))), or importance weights
    exp(−E(G_θ(z))) on generator draws) put the data's weights on the generator's modes. This is
    :func:`gebm_ppl.fit_kale` with ``train_base=False`` (the same loss, :func:`gebm_ppl.kale_energy_loss`):

    * ``model`` a :class:`gebm_ppl.GEBM`: its energy (and c) are fine-tuned in place on its frozen base, the
      paper's "tune" stage after end-to-end training (the authors: learning rate 1e-5; pass ``energy_lr``).
      Keep the original with ``copy.deepcopy`` first if it is still needed.
    * ``model`` a generator (any gebm_ppl base, e.g. a GAN's generator, with or without a density) and
      ``energy`` an untrained energy of the same data dimension: a new ``GEBM(model, energy)`` is trained.
      This is the post-hoc refinement of a pretrained generator that DOT, DDLS and MH-GAN are about.

    The base stays in eval mode and is never updated (its parameters are not in any optimiser).

    Args:
        model: a GEBM, or a generator base (``nn.Module`` with ``dim``, ``latent_dim``, ``forward(z)``).
        train: training data ``[N, D]``.
        val: optional validation data ``[N_val, D]`` (early stopping on ``kale_val`` for generators).
        energy: the energy to train on a generator ``model`` (``[..., D] → [...]``); must be None for a GEBM.
        **kale_options: keywords of :func:`gebm_ppl.fit_kale` (``epochs``, ``batch_size``, ``noise_factor``,
            ``energy_lr``, ``penalty``, ``max_steps``, ``seed``, ...), except ``train_base``.

    Returns:
        ``(gebm, history)``: the GEBM with the trained energy (``model`` itself when it is a GEBM) and the
        :class:`~gebm_ppl.training.TrainingHistory` of :func:`gebm_ppl.fit_kale`.

    Raises:
        TypeError: ``model`` is neither a GEBM nor a base, ``energy`` is missing for a generator or given for
            a GEBM, or ``train_base`` is passed.

    Reference:
        Arbel, Zhou & Gretton (2021) "Generalized Energy Based Models", ICLR, https://arxiv.org/abs/2003.05033

    Example:
        >>> import torch, gebm_ppl as gp
        >>> generator = gp.MLPGenerator(2, 2, hidden=(8,), output="identity")
        >>> gebm, history = gp.refine_energy(generator, torch.randn(200, 2), energy=gp.EnergyMLP(2, hidden=(8,)),
        ...                                  epochs=1, log_partition_samples=500, progress=False)
        >>> gebm.base is generator
        True
    """
    from ..gebm import GEBM

    if "train_base" in kale_options:
        raise TypeError("refine_energy keeps the generator frozen: 'train_base' is not an option "
                        "(use gebm_ppl.fit_kale(train_base=True) to train both).")
    if isinstance(model, GEBM):
        if energy is not None:
            raise TypeError("'energy' should be None when 'model' is a GEBM (its own energy is fine-tuned).")
        gebm = model
    elif isinstance(model, nn.Module) and hasattr(model, "dim") and hasattr(model, "latent_dim"):
        if energy is None:
            raise TypeError("'energy' is required when 'model' is a generator: the energy to train on it, e.g. "
                            f"gebm_ppl.EnergyMLP({model.dim}).")
        gebm = GEBM(model, energy)
    else:
        raise TypeError(f"'model' should be a gebm_ppl.GEBM or a generator base (nn.Module with 'dim' and "
                        f"'latent_dim'). Got {type(model).__name__}.")
    history = fit_kale(gebm, train, val, train_base=False, **kale_options)
    return gebm, history
