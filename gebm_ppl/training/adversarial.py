"""End-to-end adversarial training of a GEBM's base and energy from scratch: KALE or a logistic GAN.

Length: one training function whose closures (energy step, generator step, evaluation, checkpoint
payload) share the random streams and the resumable state, like fit_kale before its split into a step object.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from .. import distributed
from .._modes import eval_mode, train_mode
from .._validation import check_positive_int
from ..kale import kale_from_log_partition, log_partition_from_log_weights
from ._loop import (
    STREAM_EVAL,
    STREAM_STEP,
    Loop,
    NonFinite,
    as_data,
    check_lr,
    check_nonnegative_float,
    check_nonnegative_int,
    check_optional_positive_int,
    data_order,
    fingerprint,
    stream_generator,
)
from ._parallel import EnergyTerms, Shard, base_loss, base_samples, energy_loss, frozen, penalty_pairs
from ._rng import prior_draw
from .history import TrainingHistory
from .kale_step import mean_energy

__all__ = ["OBJECTIVES", "fit_adversarial"]

OBJECTIVES = ("kale", "gan")


def _check_betas(betas: object) -> tuple[float, float]:
    if not isinstance(betas, list | tuple) or len(betas) != 2:
        raise TypeError(f"'betas' should be a pair (beta1, beta2). Got {betas!r}.")
    out = tuple(check_nonnegative_float(b, "betas") for b in betas)
    if not all(b < 1 for b in out):
        raise ValueError(f"'betas' should lie in [0, 1). Got {betas!r}.")
    return out  # type: ignore[return-value]


def fit_adversarial(
    gebm,
    train: Tensor | np.ndarray,
    val: Tensor | np.ndarray | None = None,
    *,
    objective: str = "kale",
    steps: int,
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
    if objective not in OBJECTIVES:
        raise ValueError(f"'objective' should be one of {list(OBJECTIVES)}. Got {objective!r}.")
    kale = objective == "kale"
    steps = check_positive_int(steps, "steps")
    batch_size = check_positive_int(batch_size, "batch_size")
    noise_factor = check_positive_int(noise_factor, "noise_factor")
    energy_steps = check_positive_int(energy_steps, "energy_steps")
    burst_steps = check_nonnegative_int(burst_steps, "burst_steps")
    burst_every = check_optional_positive_int(burst_every, "burst_every")
    penalty = check_nonnegative_float(penalty, "penalty")
    penalty_every = check_positive_int(penalty_every, "penalty_every")
    lr = check_lr(lr, "lr")
    energy_lr = lr if energy_lr is None else check_lr(energy_lr, "energy_lr")
    base_lr = lr if base_lr is None else check_lr(base_lr, "base_lr")
    log_partition_lr = energy_lr if log_partition_lr is None else check_lr(log_partition_lr, "log_partition_lr")
    betas = _check_betas(betas)
    grad_clip = None if grad_clip is None else check_lr(grad_clip, "grad_clip")
    if not isinstance(init_log_partition, bool):
        raise TypeError(f"'init_log_partition' should be True or False. Got {init_log_partition!r}.")
    log_partition_samples = check_positive_int(log_partition_samples, "log_partition_samples")
    eval_every = check_positive_int(eval_every, "eval_every")
    eval_batch_size = check_positive_int(eval_batch_size, "eval_batch_size")
    seed = check_nonnegative_int(seed, "seed")
    checkpoint_every = check_optional_positive_int(checkpoint_every, "checkpoint_every")
    if device is not None:
        gebm.to(distributed.rank_device(device))  # "cuda" under torchrun: this rank's GPU
    base, energy, c = gebm.base, gebm.energy, gebm.log_partition
    energy_params = [p for p in energy.parameters() if p.requires_grad]
    base_params = [p for p in base.parameters() if p.requires_grad]
    if not energy_params:
        raise ValueError("'gebm.energy' has no trainable parameters (none with requires_grad=True).")
    if not base_params:
        raise ValueError("'gebm.base' has no trainable parameters (none with requires_grad=True).")
    dtype, dev = c.dtype, c.device
    x_train = as_data(train, "train", gebm.dim, dtype, dev)
    x_val = as_data(val, "val", gebm.dim, dtype, dev, optional=True)
    n_train = x_train.shape[0]
    if batch_size > n_train:
        raise ValueError(f"'batch_size' ({batch_size}) is larger than the training set ({n_train} rows).")

    energy_groups = [{"params": energy_params, "lr": energy_lr}]
    if kale:
        energy_groups.append({"params": [c], "lr": log_partition_lr})
    energy_opt = torch.optim.Adam(energy_groups, betas=betas)
    base_opt = torch.optim.Adam(base_params, lr=base_lr, betas=betas)
    num_base = batch_size * noise_factor

    settings = dict(
        objective=objective, steps=steps, batch_size=batch_size, noise_factor=noise_factor,
        energy_steps=energy_steps, burst_steps=burst_steps, burst_every=burst_every, penalty=penalty,
        penalty_every=penalty_every, energy_lr=energy_lr, base_lr=base_lr, log_partition_lr=log_partition_lr,
        betas=list(betas),
        grad_clip=grad_clip, init_log_partition=init_log_partition, log_partition_samples=log_partition_samples,
        eval_every=eval_every, seed=seed, train_size=n_train, val_size=None if x_val is None else x_val.shape[0],
        dim=x_train.shape[1], device=str(dev), dtype=str(dtype),
    )  # fmt: skip
    structure = dict(
        objective=objective, batch_size=batch_size, noise_factor=noise_factor, energy_steps=energy_steps,
        burst_steps=burst_steps, burst_every=burst_every, eval_every=eval_every, seed=seed,
        train=fingerprint(x_train), **({"penalty_every": penalty_every} if penalty_every != 1 else {}),
    )  # fmt: skip

    def payload(training: dict) -> dict:
        try:
            return gebm.checkpoint(training=training)
        except (TypeError, AttributeError):  # a base or energy without 'config'
            state = {k: v.detach().cpu() for k, v in gebm.state_dict().items()}
            return {"state_dict": state, "training": training}

    # One Loop "epoch" is a block of eval_every generator steps; the Loop's minibatch indices only
    # count the steps (each step draws its own minibatches from its (seed, step) stream).
    loop = Loop(
        kind="adversarial", model=gebm, optimizers={"energy": energy_opt, "base": base_opt}, schedulers={},
        train_size=eval_every * batch_size, batch_size=batch_size, epochs=math.ceil(steps / eval_every),
        patience=None, eval_every=1, monitor=None, mode="max", seed=seed, max_steps=steps,
        checkpoint_path=checkpoint_path, checkpoint_every=checkpoint_every, progress=progress,
        callback=callback, settings=settings, structure=structure, payload=payload,
        desc=f"fit_adversarial ({objective})", progress_keys=("energy_loss", "base_loss", "kale_val"),
    )  # fmt: skip

    # ------------------------------------------------------------ evaluation
    @torch.no_grad()
    def log_partition():
        g = stream_eval()
        log_w, done = [], 0
        while done < log_partition_samples:
            n = min(eval_batch_size, log_partition_samples - done)
            log_w.append(-energy(base(prior_draw(base, n, g))))
            done += n
        try:
            return log_partition_from_log_weights(torch.cat(log_w))
        except ValueError:
            raise NonFinite("energy on base samples (log-partition estimate)") from None

    def stream_eval() -> torch.Generator:
        return stream_generator(seed, STREAM_EVAL, 0, dev)  # the same draws at every evaluation

    def evaluate() -> dict:
        with eval_mode(gebm):
            est = log_partition()
            if not kale:
                with torch.no_grad():
                    c.fill_(est.estimate)
            a_hat, c_now = est.estimate, float(c.detach())
            if not math.isfinite(c_now):
                raise NonFinite("log-partition c")
            record = {
                "log_partition": c_now,
                "log_partition_estimate": a_hat,
                "log_partition_stderr": est.stderr,
                "ess": est.ess,
            }
            splits = {"kale_train": x_train} if x_val is None else {"kale_train": x_train, "kale_val": x_val}
            for key, x in splits.items():
                record[key] = kale_from_log_partition(mean_energy(energy, x, eval_batch_size), c_now, a_hat)
                if not math.isfinite(record[key]):
                    raise NonFinite(key)
            return record

    # ------------------------------------------------------------ steps
    def clip(params: list[Tensor], what: str) -> None:
        if grad_clip is not None and not bool(torch.isfinite(torch.nn.utils.clip_grad_norm_(params, grad_clip))):
            raise NonFinite(f"{what} gradient norm")

    # Under W ranks (torchrun) every rank draws the step's global minibatch, latents and penalty weights
    # from the step's generator and keeps its share; each share's loss is W times its part of the global
    # loss, so DDP's gradient average is the gradient of the global-batch loss (see training._parallel).
    shard = Shard(dev)  # joins torchrun's process group when launched by it
    order = data_order(x_train)  # a chunked data source's own permutation
    modules: dict[str, torch.nn.Module] = {}

    def ddp(name: str) -> torch.nn.Module:  # built on first use, after c is initialised or restored
        if not modules:
            modules["energy"] = shard.wrap(EnergyTerms(energy, c if kale else None))
            modules["base"] = shard.wrap(base)
        return modules[name]

    def energy_step(g: torch.Generator, penalised: bool = True) -> tuple[float, float]:
        rows, data_rows = shard.rows(num_base), shard.rows(batch_size)
        batch = (torch.randperm(n_train, generator=g, device=dev) if order is None else order(g))[:batch_size]
        x = x_train[batch[data_rows]]
        z = prior_draw(base, num_base, g)
        pairs = penalty_pairs(g, batch_size, num_base, x) if penalty > 0 and penalised else None
        xb, x_pair = base_samples(base, z, shard, rows, data_rows, pairs)
        x_hat = None
        if pairs is not None:
            t = pairs[1][data_rows]
            x_hat = (t * x.detach() + (1 - t) * x_pair.detach()).requires_grad_(True)
        terms = ddp("energy")(x, xb, x_hat)
        # KALE: loss −F(E, c) + λ·penalty; GAN (discriminator logit −E): −log σ(−E(x_data)) − log(1 − σ(−E(G z)))
        local, loss, obj = energy_loss(shard, terms, batch_size, num_base, penalty if pairs is not None else 0.0, 0.0,
                                       kale=kale)
        if not math.isfinite(loss):
            raise NonFinite("energy loss")
        energy_opt.zero_grad(set_to_none=True)
        local.backward()
        clip(energy_params, "energy")
        energy_opt.step()
        if kale and not bool(torch.isfinite(c)):
            raise NonFinite("log-partition c")
        return loss, float("nan") if obj is None else obj

    def base_step(g: torch.Generator) -> float:
        z = prior_draw(base, num_base, g)[shard.rows(num_base)]
        base_opt.zero_grad(set_to_none=True)
        with frozen(energy_params):  # backward on the base alone (DDP accumulates into .grad)
            # KALE: −E_P[E] does not depend on θ; −logmeanexp(−E(G z)) has the gradient of kale_base_loss.
            local, loss = base_loss(shard, energy(ddp("base")(z)), num_base, kale=kale)
            if not math.isfinite(loss):
                raise NonFinite("base loss")
            local.backward()
        clip(base_params, "base")
        base_opt.step()
        return loss

    def n_energy_steps(step: int) -> int:
        burst = step == 0 or (burst_every is not None and step % burst_every == 0)
        return max(burst_steps, energy_steps) if burst else energy_steps

    def train_step(idx: Tensor, step: int) -> dict:
        g = stream_generator(seed, STREAM_STEP, step, dev)
        for j in range(n_energy_steps(step)):
            energy_loss, kale_batch = energy_step(g, j % penalty_every == 0)
        metrics = {"energy_loss": energy_loss, "base_loss": base_step(g)}
        if kale:
            metrics["kale_batch"] = kale_batch
        return metrics

    with train_mode(gebm):
        if resume is not None:
            loop.load(resume)
        elif init_log_partition and kale:
            try:
                with eval_mode(gebm):
                    a0 = log_partition().estimate
            except NonFinite:
                raise ValueError("the energy is not finite on base samples: cannot initialise c.") from None
            with torch.no_grad():
                c.fill_(a0)
        return loop.run(train_step, evaluate)  # the last record set c = Â for the GAN
