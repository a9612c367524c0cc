"""End-to-end adversarial training of a GEBM's base and energy from scratch (KALE or logistic GAN): fit_adversarial.

The steps are :class:`~gebm_ppl.training.adversarial_step.AdversarialStep` (beside ``KaleStep``); the
options are an :class:`~gebm_ppl.training.adversarial_step.AdversarialSettings` and a
:class:`~gebm_ppl.training.TrainingOptions`, checked once.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch
from torch import Tensor

from .._modes import train_mode
from ._loop import Loop, place_gebm_data
from ._options import TrainingOptions, resolve
from .adversarial_step import OBJECTIVES, AdversarialSettings, AdversarialStep
from .history import TrainingHistory

__all__ = ["OBJECTIVES", "fit_adversarial", "run_adversarial"]


def fit_adversarial(
    gebm,
    train: Tensor | np.ndarray,
    val: Tensor | np.ndarray | None = None,
    *,
    objective: str = "kale",
    steps: int | None = None,
    batch_size: int = 64,
    noise_factor: int = 1,
    energy_steps: int = 5,
    burst_steps: int = 100,
    burst_every: int | None = 500,
    penalty: float = 1.0,
    penalty_every: int = 1,
    lr: float = 1e-4,
    energy_lr: float | None = None,
    base_lr: float | None = None,
    log_partition_lr: float | None = None,
    betas: tuple[float, float] = (0.5, 0.999),
    grad_clip: float | None = None,
    init_log_partition: bool = True,
    log_partition_samples: int = 10_000,
    eval_every: int = 100,
    eval_batch_size: int = 1000,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool | None = None,
    callback: Callable[[dict], bool | None] | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: str | os.PathLike | None = None,
    options: TrainingOptions | None = None,
    settings: AdversarialSettings | None = None,
) -> TrainingHistory:
    """Train the base G_θ (a generator, no density needed) and the energy E of a GEBM together, from scratch.

    ``objective="kale"`` (Arbel, Zhou & Gretton, 2021): the energy and c minimise
    E_P[E + c] + E_G[exp(−(E + c))] − 1 + λ·E‖∇ₓE(x̂)‖² (:func:`gebm_ppl.kale_energy_loss`, the
    gradient penalty at interpolates x̂ between data and base samples, :func:`gebm_ppl.gradient_penalty`);
    the generator minimises the KALE −E_P[E] − logmeanexp(−E(G_θ(z))), whose θ-gradient is the
    self-normalised E_Q[∇ₓE(G_θ(z)) ∇_θG_θ(z)] of :func:`gebm_ppl.kale_base_loss`. c starts at the
    Monte-Carlo Â = logmeanexp(−E(G_θ(z))) and is learned with the energy.

    ``objective="gan"``: the same networks, loop and penalty, with logistic GAN losses and the
    energy as discriminator, logit −E: the energy minimises softplus(E(x_data)) + softplus(−E(G_θ(z)))
    and the generator the non-saturating softplus(E(G_θ(z))). c is not trained; it is set to Â at
    every evaluation (the last one at the end), so the result is a GEBM too (at the optimal discriminator
    exp(−E) = p/g, the density ratio).

    Each generator step follows ``energy_steps`` energy steps (``burst_steps`` before generator
    step 0 and before every ``burst_every``-th one), each on a fresh data minibatch (drawn without
    replacement within the batch) and ``batch_size · noise_factor`` fresh base samples. Adam with
    ``betas`` for both networks. Every draw is a function of (seed, generator step), so a resumed
    run continues exactly. Both networks are in train mode while training (BatchNorm uses batch
    statistics; spectral normalisation runs its power iteration) and in eval mode at evaluations.

    Every ``eval_every`` generator steps (and at the end) a record holds the mean ``energy_loss``,
    ``base_loss`` and (KALE) ``kale_batch`` over those steps, and ``log_partition`` (c),
    ``log_partition_estimate`` (Â from ``log_partition_samples`` fixed latent draws),
    ``log_partition_stderr``, ``ess``, ``kale_train`` / ``kale_val``: F(E, c) = −E_P[E] − c −
    exp(Â − c) + 1 on the whole train / validation set (the KALE estimate between the data and the
    base; with c = Â it is −E_P[E] − Â). No early stopping: the final weights are kept. A
    record's ``epoch`` counts blocks of ``eval_every`` generator steps (and so does the epoch
    named in a :class:`TrainingDiverged` message).

    Started by ``torchrun --nproc_per_node W`` (or ``gebm fit --nproc W``), the run is data-parallel on W
    processes (DistributedDataParallel, gloo on the CPU, NCCL on CUDA with ``device="cuda"``: rank r on
    ``cuda:r``): every step uses the one-process run's global minibatch and random draws, each rank its
    share, so the result equals the one-process run up to float rounding; rank 0 writes the checkpoints,
    which resume with any number of processes (see :mod:`gebm_ppl.distributed`).

    Args:
        gebm: a :class:`gebm_ppl.GEBM` (any base: a generator, a flow, ...), trained in place.
        train: training data ``[N, D]`` (flat images for image models).
        val: optional validation data ``[N_val, D]``.
        objective: ``"kale"`` or ``"gan"``.
        steps: generator steps in total (resumes included).
        batch_size: data points per energy step and base samples per generator step (× ``noise_factor``).
        noise_factor: base samples per data point.
        energy_steps: energy steps per generator step (the paper: 5).
        burst_steps: energy steps before generator step 0 and every ``burst_every`` steps (the paper: 100).
        burst_every: period of the bursts in generator steps (the paper: 500); None: only at the start.
        penalty: gradient-penalty weight λ (the paper: 1 for images; 0 disables it).
        penalty_every: the penalty (its double backward is about half an energy step's cost on conv nets)
            only at the energy steps j ≡ 0 mod ``penalty_every`` of each generator step (j = 0, 1, …), as
            ``fit_kale``'s option; 1 (default): at every energy step.
        lr: Adam learning rate of both networks (the paper: 1e-4).
        energy_lr: the energy's learning rate (default ``lr``).
        base_lr: the generator's learning rate (default ``lr``).
        log_partition_lr: c's learning rate (default: the energy's).
        betas: Adam betas (the paper: (0.5, 0.999)).
        grad_clip: clip the gradient norm of each network's step, or None.
        init_log_partition: start c at the Monte-Carlo Â (else keep the GEBM's c).
        log_partition_samples: base draws for Â.
        eval_every: generator steps between records.
        eval_batch_size: rows per forward pass when evaluating.
        seed: seed of every draw.
        device: move the GEBM there first.
        progress: True / False / None: progress over the records (None: a tqdm bar on a terminal,
            periodic lines elsewhere), showing the losses and ``kale_val``.
        callback: called with each record; returning True stops.
        checkpoint_path: atomic :meth:`gebm_ppl.GEBM.checkpoint` (``GEBM.load`` reads it) with the
            training state in ``extra["training"]``, written at every record (or every
            ``checkpoint_every`` generator steps) and at the end.
        checkpoint_every: checkpoint every this many generator steps instead.
        resume: a checkpoint of an earlier call with the same data, objective, batch size, noise
            factor, energy-step schedule, ``eval_every`` and seed: training continues exactly.
        options: the loop keywords (``batch_size``, ``eval_every``, ``eval_batch_size``, ``seed``,
            ``device``, ``progress``, ``callback``, checkpoints, ``resume``) as one checked
            :class:`~gebm_ppl.training.TrainingOptions`, instead of keywords.
        settings: the other keywords (``objective``, ``steps``, …) as one checked
            :class:`~gebm_ppl.training.AdversarialSettings`. A keyword changed beside the dataclass
            that holds it is a TypeError.

    Returns:
        :class:`TrainingHistory` (kind ``"adversarial"``; ``steps`` count generator steps).

    Raises:
        TrainingDiverged: a loss, c or an evaluation is not finite; the error names the step and
            the last good checkpoint.

    Reference:
        Arbel, Zhou & Gretton (2021) "Generalized Energy Based Models", ICLR, https://arxiv.org/abs/2003.05033

    Example:
        >>> import torch, gebm_ppl as gp
        >>> gebm = gp.GEBM(gp.MLPGenerator(2, 3, hidden=(16,), output="identity"), gp.EnergyMLP(3, hidden=(16,)))
        >>> h = gp.fit_adversarial(gebm, torch.randn(256, 3), steps=10, batch_size=32, burst_steps=5,
        ...                        eval_every=5, log_partition_samples=500, progress=False)
        >>> len(h.records), "kale_train" in h.last
        (2, True)
    """
    if not all(hasattr(gebm, a) for a in ("base", "energy", "log_partition", "latent_energy")):
        raise TypeError(f"'gebm' should be a gebm_ppl.GEBM. Got {type(gebm).__name__}.")
    if steps is None and settings is None:
        raise TypeError("fit_adversarial needs 'steps' (generator steps) or settings=AdversarialSettings(steps=...).")
    values = locals()
    adv = resolve(AdversarialSettings, settings, values, fit_adversarial, "settings")  # objective, steps, ...
    loop = resolve(TrainingOptions, options, values, fit_adversarial, "options")  # batch_size, eval_every, ...
    return run_adversarial(gebm, train, val, adv, loop)


def run_adversarial(gebm, train: Tensor | np.ndarray, val: Tensor | np.ndarray | None,
                    settings: AdversarialSettings, options: TrainingOptions) -> TrainingHistory:  # fmt: skip
    """:func:`fit_adversarial` with its keywords already gathered in ``settings`` and ``options``.

    Of ``options`` it uses ``batch_size``, ``eval_every`` (generator steps per record), ``eval_batch_size``,
    ``seed``, ``device``, ``progress``, ``callback``, ``checkpoint_path``, ``checkpoint_every`` and ``resume``;
    the run length is ``settings.steps`` (no early stopping, no schedule).
    """
    x_train, x_val = place_gebm_data(gebm, train, val, options.device)
    step = AdversarialStep(gebm, x_train, x_val, settings, options)
    # One Loop "epoch" is a block of eval_every generator steps; the Loop's minibatch indices only
    # count the steps (each step draws its own minibatches from its (seed, step) stream).
    every = options.eval_every
    blocks = replace(options, epochs=math.ceil(settings.steps / every), patience=None, schedule=None, eval_every=1,
                     max_steps=settings.steps)  # fmt: skip
    loop = Loop.from_options(
        blocks, kind="adversarial", model=gebm, optimizers=step.optimizers, schedulers={},
        train_size=every * options.batch_size, monitor=None, mode="max", settings=step.settings(),
        structure=step.structure(), payload=step.payload, desc=f"fit_adversarial ({settings.objective})",
        progress_keys=("energy_loss", "base_loss", "kale_val"),
    )  # fmt: skip
    step.start()
    with train_mode(gebm):
        if options.resume is not None:
            loop.load(options.resume)
        elif settings.init_log_partition and settings.kale:
            step.initialise_log_partition()
        return loop.run(step, step.evaluate)  # the last record set c = Â for the GAN
