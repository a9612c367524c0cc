"""Maximum-likelihood training of a flow base: ``fit_mle``."""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from .. import distributed
from .._modes import eval_mode, train_mode
from ._checks import check_lr, check_nonnegative_float
from ._data import as_data, fingerprint
from ._loop import Loop, NonFinite, data_order
from ._options import TrainingOptions, make_scheduler
from ._parallel import LogProb, Shard
from ._rng import STREAM_NOISE, stream_generator
from .history import TrainingHistory

__all__ = ["OPTIMIZERS", "fit_mle", "mean_nll"]

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
"""``fit_mle(optimizer=...)``: Adam with L2 weight decay (the default) or AdamW with decoupled decay."""


@torch.no_grad()
def mean_nll(model: nn.Module, x: Tensor, batch_size: int = 8192) -> float:
    """−mean log p(x) over ``x`` ``[N, D]`` in batches, with ``model`` in eval mode; float64 sum."""
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    with eval_mode(model):
        for chunk in x.split(batch_size):
            total += model.log_prob(chunk).double().sum()
    return -float(total) / x.shape[0]


def _model_config(model: nn.Module) -> dict | None:
    try:
        config = getattr(model, "config", None)
    except TypeError:  # gebm_ppl.Base raises for bases that define no config
        return None
    return config if isinstance(config, dict) else None


def fit_mle(
    base: nn.Module,
    train: Tensor | np.ndarray,
    val: Tensor | np.ndarray | None = None,
    *,
    epochs: int = 200,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    optimizer: str = "adam",
    noise_std: float = 0.0,
    patience: int | None = 20,
    grad_clip: float | None = 10.0,
    schedule: str | None = "cosine",
    eval_every: int = 1,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool | None = None,
    callback: Callable[[dict], bool | None] | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: str | os.PathLike | None = None,
    max_steps: int | None = None,
    eval_batch_size: int = 8192,
) -> TrainingHistory:
    """Fit a density model by maximum likelihood: minimise −(1/N) Σ_n log g_θ(x_n) with Adam or AdamW.

    Mini-batches are reshuffled every epoch. With ``val``, the validation NLL −mean log g_θ(x_val)
    is evaluated every ``eval_every`` epochs, training stops after ``patience`` evaluations without
    improvement, and the best weights are restored into ``base`` at the end; without ``val`` the
    final weights are kept.

    Started by ``torchrun --nproc_per_node W`` (or ``gebm fit --nproc W``), the run is data-parallel on W
    processes (DistributedDataParallel, gloo on the CPU, NCCL on CUDA with ``device="cuda"``: rank r on
    ``cuda:r``): every step uses the one-process run's global minibatch and random draws, each rank its
    share, so the result equals the one-process run up to float rounding; rank 0 writes the checkpoints,
    which resume with any number of processes (see :mod:`gebm_ppl.distributed`).

    Args:
        base: any ``nn.Module`` with ``log_prob(x) -> [N]`` (a :class:`gebm_ppl.RealNVP`, an nflows
            ``Flow`` in a small adapter, ...). It is trained in place.
        train: training data ``[N, D]`` (tensor or numpy array), converted to the dtype and device
            of ``base``'s parameters.
        val: optional validation data ``[N_val, D]``.
        epochs: maximum number of passes over ``train``.
        batch_size: minibatch size (the last batch of an epoch may be smaller).
        lr: Adam learning rate (> 0).
        weight_decay: weight decay λ (>= 0), applied as ``optimizer`` says.
        optimizer: ``"adam"`` (default): Adam on the gradient plus λθ (an L2 penalty, rescaled by Adam's
            per-parameter step sizes); ``"adamw"``: AdamW (Loshchilov & Hutter, 2019,
            https://arxiv.org/abs/1711.05101), decoupled decay θ ← θ(1 − lr·λ) before Adam's step on the NLL
            gradient alone.
        noise_std: σ of Gaussian input noise (>= 0): each training minibatch is x + σ ε, ε ~ N(0, I),
            drawn afresh every step (a regulariser: the fitted density is g_θ smoothed by N(0, σ² I)
            during training; evaluation uses the clean data). 0: none.
        patience: evaluations without improvement of the validation NLL before stopping
            (None: never stop early).
        grad_clip: maximum gradient norm (None: no clipping).
        schedule: per-epoch learning-rate schedule: ``"cosine"`` (to 0 over ``epochs``),
            ``"step"`` (×0.1 at 50 % and 75 %), ``"plateau"`` (×0.5 after 5 flat evaluations) or None.
        eval_every: evaluate every this many epochs (and after the last one).
        seed: seed of the minibatch order (every epoch's permutation is a function of (seed, epoch)).
        device: move ``base`` there first (default: where its parameters are).
        progress: None or True: a tqdm bar over epochs when stderr is a terminal, else one log line
            (epoch/total, losses, monitored value, elapsed, ETA) every 10 s at most and a summary at
            the end, on stderr or the ``gebm_ppl.training`` logger once it has a handler; False: silent.
        callback: called with each epoch's record (a dict); returning True stops training.
        checkpoint_path: where to write checkpoints atomically (model, optimizer, scheduler, RNG
            states, loop position and history): after every epoch, or every ``checkpoint_every``
            steps, and at the end.
        checkpoint_every: checkpoint every this many optimizer steps instead of every epoch.
        resume: a checkpoint written by an earlier ``fit_mle`` call with the same data, batch size
            and seed; training continues exactly where it stopped (optimizer and schedule state
            come from the checkpoint).
        max_steps: stop once this many optimizer steps have been taken in total (resumes
            included), possibly mid-epoch.
        eval_batch_size: rows per forward pass when evaluating.

    Returns:
        :class:`TrainingHistory` with records ``train_loss`` (mean minibatch NLL, nats per
        example), ``val_nll``, ``lr``, ``epoch_time``, ``eval_time``, ``wall_time``.

    Raises:
        TrainingDiverged: the training loss, the gradient norm or the validation NLL is not
            finite; the error names the step and the last good checkpoint.

    Example:
        >>> import torch, gebm_ppl as gp
        >>> base = gp.RealNVP(2, hidden_features=8, num_layers=2)
        >>> history = gp.fit_mle(base, torch.randn(64, 2), torch.randn(32, 2), epochs=2, progress=False)
        >>> len(history.records)
        2
    """
    if not isinstance(base, nn.Module) or not callable(getattr(base, "log_prob", None)):
        raise TypeError(f"'base' should be an nn.Module with log_prob(x) -> [N]. Got {type(base).__name__}.")
    options = TrainingOptions.pick(locals())  # epochs, batch_size, seed, checkpoint_path, ...
    epochs, batch_size, patience, schedule = options.epochs, options.batch_size, options.patience, options.schedule
    eval_every, seed, max_steps = options.eval_every, options.seed, options.max_steps
    eval_batch_size = options.eval_batch_size
    lr = check_lr(lr, "lr")
    weight_decay = check_nonnegative_float(weight_decay, "weight_decay")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"'optimizer' should be one of {list(OPTIMIZERS)}. Got {optimizer!r}.")
    noise_std = check_nonnegative_float(noise_std, "noise_std")
    grad_clip = None if grad_clip is None else check_lr(grad_clip, "grad_clip")
    if device is not None:
        base.to(distributed.rank_device(device))  # "cuda" under torchrun: this rank's GPU
    params = [p for p in base.parameters() if p.requires_grad]
    if not params:
        raise ValueError("'base' has no trainable parameters (none with requires_grad=True).")
    dtype, dev = params[0].dtype, params[0].device
    x_train = as_data(train, "train", getattr(base, "dim", None), dtype, dev)
    x_val = as_data(val, "val", x_train.shape[1], dtype, dev, optional=True)

    optimizer_name = optimizer
    optimizer = OPTIMIZERS[optimizer_name](params, lr=lr, weight_decay=weight_decay)
    scheduler = make_scheduler(optimizer, schedule, epochs, "min")
    settings = dict(
        epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, optimizer=optimizer_name,
        noise_std=noise_std,
        patience=patience, grad_clip=grad_clip, schedule=schedule, eval_every=eval_every, seed=seed,
        max_steps=max_steps, train_size=x_train.shape[0], val_size=None if x_val is None else x_val.shape[0],
        dim=x_train.shape[1], device=str(dev), dtype=str(dtype),
    )  # fmt: skip
    monitor = None if x_val is None else "val_nll"
    structure = dict(batch_size=batch_size, seed=seed, monitor=monitor, train=fingerprint(x_train))
    model_class, config = type(base).__name__, _model_config(base)

    def payload(training: dict) -> dict:
        state = {k: v.detach().cpu() for k, v in base.state_dict().items()}
        return {"model_class": model_class, "config": config, "state_dict": state, "training": training}

    loop = Loop(
        kind="mle", model=base, optimizers={"model": optimizer}, schedulers={"model": scheduler},
        train_size=x_train.shape[0], monitor=monitor, mode="min", settings=settings, structure=structure,
        payload=payload, desc="fit_mle", order=data_order(x_train), **options.loop_kwargs(),
    )  # fmt: skip
    if options.resume is not None:
        loop.load(options.resume)
    shard = Shard(dev)  # joins torchrun's process group when launched by it
    log_prob = shard.wrap(LogProb(base))  # DDP when W > 1 (after the resume: DDP broadcasts rank 0's weights)

    def train_step(idx: Tensor, step: int) -> dict:
        # W ranks: this rank's share of the global minibatch and of its global noise draw; its loss is
        # −(W/B) Σ_share log g_θ(x), so DDP's gradient average is that of the global-batch NLL.
        rows = shard.rows(len(idx))
        x = x_train[idx[rows].to(dev)]
        if noise_std > 0:  # ε is a function of (seed, step): a resumed run draws the same noise
            g = stream_generator(seed, STREAM_NOISE, step, dev)
            eps = torch.randn((len(idx), x.shape[1]), generator=g, device=dev, dtype=x.dtype)
            x = x + noise_std * eps[rows]
        total = log_prob(x).sum()
        loss = -float(shard.gather(total.double()).sum()) / len(idx)
        if not math.isfinite(loss):
            raise NonFinite("training NLL")
        optimizer.zero_grad(set_to_none=True)
        (-shard.world / len(idx) * total).backward()
        if grad_clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
            if not bool(torch.isfinite(norm)):
                raise NonFinite("gradient norm")
        optimizer.step()
        return {"train_loss": loss}

    def evaluate() -> dict:
        if x_val is None:
            return {}
        return {"val_nll": mean_nll(base, x_val, eval_batch_size)}

    with train_mode(base):
        return loop.run(train_step, evaluate)
