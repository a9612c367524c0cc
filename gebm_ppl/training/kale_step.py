"""One KALE training step of a GEBM (energy and c, optionally the base) and its evaluation: ``KaleStep``.

The maths is in :mod:`gebm_ppl.kale`; this module holds the optimizers, the random streams and the
numerical safeguards (float64 objective, scaled backward pass, gradient clipping).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .._modes import eval_mode
from ..bases import DensityNotAvailable
from ..kale import (
    LogPartitionEstimate,
    check_ess,
    kale_from_log_partition,
    kale_nll_bound,
    log_partition_from_samples,
    low_ess_message,
    nll_from_log_partition,
    penalty_interpolates,
)
from ._checks import check_lr, check_nonnegative_float, check_nonnegative_int, check_positive_int
from ._data import fingerprint
from ._loop import NonFinite
from ._options import TrainingOptions, make_scheduler
from ._parallel import EnergyTerms, Shard, base_loss, base_samples, energy_loss, frozen, penalty_pairs
from ._rng import STREAM_BASE, STREAM_EVAL, STREAM_STEP, prior_chunks, prior_draw, stream_generator
from .mle import mean_nll

__all__ = ["KaleSettings", "KaleStep", "clip_scaled_grad", "gebm_payload", "has_density", "log_partition_record",
           "max_log_weight", "mean_energy"]


def has_density(base, x: Tensor) -> bool:
    """Whether ``base.log_prob`` works on ``x[:1]`` (False for bases without a density)."""
    try:
        with torch.no_grad():
            base.log_prob(x[:1])
    except (DensityNotAvailable, NotImplementedError):
        return False
    return True


@torch.no_grad()
def max_log_weight(energy, x: Tensor, batch_size: int) -> float:
    """max_j −E(x_j) over the rows of ``x``, in batches (the data's largest log-weight)."""
    return max(float((-energy(chunk)).max()) for chunk in x.split(batch_size))


@torch.no_grad()
def mean_energy(energy, x: Tensor, batch_size: int) -> float:
    """E_P[E] = mean of E over the rows of ``x``, in batches, summed in float64."""
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    for chunk in x.split(batch_size):
        total += energy(chunk).double().sum()
    return float(total) / x.shape[0]


def log_partition_record(est: LogPartitionEstimate, c: Tensor) -> dict:
    """The record's log-partition values: c, Â, se(Â) and the ESS; :class:`NonFinite` if c is not finite."""
    c_now = float(c.detach())
    if not math.isfinite(c_now):
        raise NonFinite("log-partition c")
    return {"log_partition": c_now, "log_partition_estimate": est.estimate, "log_partition_stderr": est.stderr,
            "ess": est.ess}  # fmt: skip


def gebm_payload(gebm, training: dict) -> dict:
    """A checkpoint of ``gebm`` carrying the loop's ``training`` state: :meth:`gebm_ppl.GEBM.checkpoint`
    (so ``GEBM.load`` reads it), or the bare state dict for a base or energy without ``config``."""
    try:
        return gebm.checkpoint(training=training)
    except (TypeError, AttributeError):  # a base or energy without 'config'
        state = {k: v.detach().cpu() for k, v in gebm.state_dict().items()}
        return {"state_dict": state, "training": training}


def clip_scaled_grad(params: list[Tensor], max_norm: float, scale: float) -> bool:
    """Clip the gradient of a loss whose gradients were computed for ``scale · loss``, in place.

    The true gradient is g / scale; it is clipped to norm ``max_norm`` exactly (the direction is
    kept), while backpropagating the scaled loss keeps a single base-sample outlier (an exp term
    of 1e30) from overflowing float32 gradients. Returns False if the norm is not finite.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return True
    norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.double()) for g in grads])))
    if not math.isfinite(norm):
        return False
    factor = 1.0 / scale if norm == 0.0 else min(1.0 / scale, max_norm / norm, 1e30)
    if factor != 1.0:
        for grad in grads:
            grad.mul_(factor)
    return True


@dataclass
class KaleSettings:
    """The KALE-specific options of :func:`~gebm_ppl.fit_kale` (see its docstring), checked on construction.

    ``log_partition_lr=None`` becomes ``energy_lr``; ``grad_clip=None`` disables clipping.
    """

    train_base: bool = False
    noise_factor: int = 20
    energy_lr: float = 3e-3
    base_lr: float = 1e-4
    log_partition_lr: float | None = None
    n_energy_steps: int = 50
    warmup_energy_steps: int = 500
    penalty: float = 0.1
    penalty_every: int = 1
    energy_l2: float = 0.0
    energy_weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    log_partition_samples: int = 20_000
    init_log_partition: bool = True
    reestimate_log_partition: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.train_base, bool):
            raise TypeError(f"'train_base' should be True or False. Got {self.train_base!r}.")
        self.noise_factor = check_positive_int(self.noise_factor, "noise_factor")
        self.energy_lr = check_lr(self.energy_lr, "energy_lr")
        self.base_lr = check_lr(self.base_lr, "base_lr")
        lr = self.log_partition_lr
        self.log_partition_lr = self.energy_lr if lr is None else check_lr(lr, "log_partition_lr")
        self.n_energy_steps = check_positive_int(self.n_energy_steps, "n_energy_steps")
        self.warmup_energy_steps = check_nonnegative_int(self.warmup_energy_steps, "warmup_energy_steps")
        self.penalty = check_nonnegative_float(self.penalty, "penalty")
        self.penalty_every = check_positive_int(self.penalty_every, "penalty_every")
        self.energy_l2 = check_nonnegative_float(self.energy_l2, "energy_l2")
        self.energy_weight_decay = check_nonnegative_float(self.energy_weight_decay, "energy_weight_decay")
        self.grad_clip = None if self.grad_clip is None else check_lr(self.grad_clip, "grad_clip")
        self.log_partition_samples = check_positive_int(self.log_partition_samples, "log_partition_samples")


class KaleStep:
    """The energy step, the base step, the log-partition estimate and the evaluation of one ``fit_kale`` run.

    Built on a GEBM already on its device and on the converted data; :func:`~gebm_ppl.fit_kale`
    passes ``step`` (the energy step, callable as ``step(indices, step_number)``) and
    ``step.evaluate`` to :meth:`Loop.run <gebm_ppl.training._loop.Loop.run>`. Attributes
    ``optimizers``, ``schedulers``, ``monitor``, ``mode``, ``density`` feed the loop.

    Args:
        gebm: the :class:`gebm_ppl.GEBM` trained in place.
        x_train: training data ``[N, D]`` (finite, the GEBM's dtype and device).
        x_val: validation data ``[N_val, D]`` or None.
        kale: the KALE settings.
        options: the loop options (batch size, seed, schedule, epochs, evaluation batch size).
    """

    def __init__(self, gebm, x_train: Tensor, x_val: Tensor | None, kale: KaleSettings, options: TrainingOptions):
        self.gebm, self.kale, self.options = gebm, kale, options
        self.base, self.energy, self.c = gebm.base, gebm.energy, gebm.log_partition
        self.x_train, self.x_val = x_train, x_val
        self.energy_params = [p for p in self.energy.parameters() if p.requires_grad]
        self.base_params = [p for p in self.base.parameters() if p.requires_grad] if kale.train_base else []
        if not self.energy_params:
            raise ValueError("'gebm.energy' has no trainable parameters (none with requires_grad=True).")
        if kale.train_base and not self.base_params:
            raise ValueError("train_base=True but 'gebm.base' has no trainable parameters.")
        self.device = self.c.device
        self.density = x_val is not None and has_density(self.base, x_val)
        # KALE is maximised over the energy but minimised over the base: with a base being trained and
        # no density (so no val_nll), no single direction of kale_val is "better", so nothing is monitored
        # (no early stopping; the final weights are kept), as in fit_adversarial.
        if x_val is None or (kale.train_base and not self.density):
            self.monitor = None
        else:
            self.monitor = "val_nll" if self.density else "kale_val"
        self.mode = "min" if self.density else "max"
        groups = [
            {"params": self.energy_params, "lr": kale.energy_lr, "weight_decay": kale.energy_weight_decay},
            {"params": [self.c], "lr": kale.log_partition_lr, "weight_decay": 0.0},
        ]
        self.energy_opt = torch.optim.Adam(groups)
        self.clipped = [*self.energy_params, self.c]  # together: one base-sample outlier must not poison Adam
        self.optimizers = {"energy": self.energy_opt}
        self.schedulers = {"energy": make_scheduler(self.energy_opt, options.schedule, options.epochs, self.mode)}
        self.base_opt = None
        if kale.train_base:
            self.base_opt = torch.optim.Adam(self.base_params, lr=kale.base_lr)
            self.optimizers["base"] = self.base_opt
            self.schedulers["base"] = make_scheduler(self.base_opt, options.schedule, options.epochs, self.mode)
        self.num_base = options.batch_size * kale.noise_factor
        self.shard = Shard(self.device)  # joins torchrun's process group when launched by it
        self._cache: dict[str, object] = {}

    # ------------------------------------------------------------ what the loop stores
    def settings(self) -> dict:
        """The hyperparameters recorded in ``history.settings``."""
        k, o, x_val = self.kale, self.options, self.x_val
        return dict(
            train_base=k.train_base, epochs=o.epochs, batch_size=o.batch_size, noise_factor=k.noise_factor,
            energy_lr=k.energy_lr, base_lr=k.base_lr, log_partition_lr=k.log_partition_lr,
            n_energy_steps=k.n_energy_steps, warmup_energy_steps=k.warmup_energy_steps, penalty=k.penalty,
            penalty_every=k.penalty_every, energy_l2=k.energy_l2, energy_weight_decay=k.energy_weight_decay,
            grad_clip=k.grad_clip, log_partition_samples=k.log_partition_samples,
            init_log_partition=k.init_log_partition, reestimate_log_partition=k.reestimate_log_partition,
            eval_every=o.eval_every, patience=o.patience, schedule=o.schedule, seed=o.seed, max_steps=o.max_steps,
            train_size=self.x_train.shape[0], val_size=None if x_val is None else x_val.shape[0],
            dim=self.x_train.shape[1], device=str(self.device), dtype=str(self.c.dtype),
        )  # fmt: skip

    def structure(self) -> dict:
        """The settings a resumed run must share with its checkpoint."""
        k, tb = self.kale, self.kale.train_base
        return dict(
            batch_size=self.options.batch_size, noise_factor=k.noise_factor, seed=self.options.seed, train_base=tb,
            n_energy_steps=k.n_energy_steps if tb else None, warmup_energy_steps=k.warmup_energy_steps if tb else None,
            penalty_every=k.penalty_every, monitor=self.monitor, train=fingerprint(self.x_train),
        )  # fmt: skip

    def payload(self, training: dict) -> dict:
        """The checkpoint: :func:`gebm_payload` of this run's GEBM."""
        return gebm_payload(self.gebm, training)

    # ------------------------------------------------------------ log-partition and evaluation
    def _latent_chunks(self):
        g = stream_generator(self.options.seed, STREAM_EVAL, 0, self.device)  # the same draws every evaluation
        return prior_chunks(self.base, self.kale.log_partition_samples, self.options.eval_batch_size, g)

    @torch.no_grad()
    def log_partition(self, cap: float | None = None) -> LogPartitionEstimate:
        """Â from ``log_partition_samples`` draws; with a frozen base G(z) is computed once.

        ``cap``: the log-weights' cap u* of :func:`gebm_ppl.kale.log_partition_from_samples` (None: plain Â).
        """
        base = self.base
        if self.kale.train_base:
            samples = (base(z) for z in self._latent_chunks())
        else:
            if "base_samples" not in self._cache:
                self._cache["base_samples"] = [base(z) for z in self._latent_chunks()]
            samples = self._cache["base_samples"]
        try:
            return log_partition_from_samples(self.energy, samples, cap)
        except ValueError:
            raise NonFinite("energy on base samples (log-partition estimate)") from None

    def initialise_log_partition(self) -> None:
        """Set c to Â (in eval mode); ValueError if the energy is not finite on base samples.

        When Â fails the ESS rule (:func:`gebm_ppl.kale.check_ess`: a few base draws carry it, typically
        rare far-out samples of a heavy-tailed base where the untrained energy extrapolates far below
        its values on the data), c starts instead at the Â of the log-weights capped at what the
        training data justify, u* = max_j −E(x_j) + log M (:func:`gebm_ppl.kale.data_log_weight_cap`,
        the cap of every energy step), and a :class:`~gebm_ppl.kale.LowESSWarning` says so. Otherwise
        c starts at Â exactly as before.
        """
        with eval_mode(self.gebm):
            try:
                est = self.log_partition()
                a0 = est.estimate
                if low_ess_message(est.ess, est.num_samples) is not None:
                    cap = max_log_weight(self.energy, self.x_train, self.options.eval_batch_size)
                    cap += math.log(est.num_samples)
                    a0 = self.log_partition(cap).estimate
                    check_ess(est, what="fit_kale: the start of c", stacklevel=4, hint=(
                        f"; c starts at {a0:.4g}, the estimate with each log-weight capped at what the data "
                        f"justify (max over the training data of −E + log M = {cap:.4g}), instead of "
                        f"{est.estimate:.4g}. A base with lighter tails (e.g. RealNVP(scale_bound=1.0)) or an "
                        "energy floor (EnergyMLP(floor=-5.0)) removes the cause."))  # fmt: skip
            except NonFinite:
                raise ValueError("the energy is not finite on base samples: cannot initialise c.") from None
        with torch.no_grad():
            self.c.fill_(a0)

    def check_final(self) -> None:
        """Apply the ESS rule to the returned GEBM's Â (in eval mode): a LowESSWarning when it fails."""
        with eval_mode(self.gebm):
            try:
                est = self.log_partition()
            except NonFinite:
                return  # the loop has already stopped on a non-finite evaluation
        check_ess(est, what="fit_kale: the trained GEBM's Â", stacklevel=4, hint=(
            "; gebm.distribution() and the IS NLL would rest on a few base draws: train longer, add an "
            "energy floor or a gradient penalty, or use a base closer to the data."))  # fmt: skip

    def evaluate(self) -> dict:
        """The record's evaluation values (c, Â and its stderr, ESS, KALE values, NLLs), in eval mode."""
        bs = self.options.eval_batch_size
        with eval_mode(self.gebm):
            record = log_partition_record(self.log_partition(), self.c)
            c_now, a_hat = record["log_partition"], record["log_partition_estimate"]
            record["kale_train"] = kale_from_log_partition(mean_energy(self.energy, self.x_train, bs), c_now, a_hat)
            if self.x_val is not None:
                e_val = mean_energy(self.energy, self.x_val, bs)
                record["kale_val"] = kale_from_log_partition(e_val, c_now, a_hat)
                if self.density:
                    if self.kale.train_base or "base_val_nll" not in self._cache:
                        self._cache["base_val_nll"] = mean_nll(self.base, self.x_val, bs)
                    base_nll = self._cache["base_val_nll"]
                    record["base_val_nll"] = base_nll
                    record["val_nll"] = nll_from_log_partition(base_nll, e_val, a_hat)
                    record["val_nll_bound"] = kale_nll_bound(base_nll, e_val, c_now, a_hat)
            if self.kale.reestimate_log_partition:
                with torch.no_grad():
                    self.c.fill_(a_hat)
        return record

    # ------------------------------------------------------------ steps
    def _ddp(self) -> tuple[nn.Module, nn.Module | None]:
        """The energy-step module (energy and c) and the trained base, in DDP when W > 1; built on first use,
        after c is initialised or a checkpoint restored (DDP broadcasts rank 0's weights when it wraps)."""
        if "ddp" not in self._cache:
            terms = self.shard.wrap(EnergyTerms(self.energy, self.c, self.num_base))
            base = self.shard.wrap(self.base) if self.kale.train_base else None
            self._cache["ddp"] = (terms, base)
        return self._cache["ddp"]

    def base_step(self, step: int) -> float:
        """One Adam step of the base on :func:`gebm_ppl.kale_base_loss` with fresh base samples.

        Under W ranks each takes its share of the step's global latent draws; the softmax weights are
        normalised over all of them (see :func:`~gebm_ppl.training._parallel.base_loss`), DDP averages the
        gradients, and the energy's parameters are frozen meanwhile (DDP accumulates into ``.grad``, so
        the gradient is taken by ``backward`` on the base alone, not by ``autograd.grad``).
        """
        sh, params = self.shard, self.base_params
        _, base = self._ddp()
        g = stream_generator(self.options.seed, STREAM_BASE, step, self.device)
        z = prior_draw(self.base, self.num_base, generator=g)[sh.rows(self.num_base)]
        self.base_opt.zero_grad(set_to_none=True)
        with frozen(self.energy_params):
            local, value = base_loss(sh, self.energy(base(z)), self.num_base, kale=True)
            if not math.isfinite(value):
                raise NonFinite("KALE base loss")
            local.backward()
        clip = self.kale.grad_clip
        if clip is not None and not bool(torch.isfinite(torch.nn.utils.clip_grad_norm_(params, clip))):
            raise NonFinite("base gradient norm")
        self.base_opt.step()
        return value

    def energy_step(self, idx: Tensor, step: int) -> dict:
        """One Adam step of (E, c) on −F(E, c) + regularisers; then a base step when one is due.

        ``idx`` is the step's global minibatch; under W ranks this rank takes its share of it and of the
        step's global base and penalty draws, and DDP averages the gradients of the shares' losses (each W
        times its share of the global loss), which is the gradient of the global-batch loss.
        """
        k, c, sh = self.kale, self.c, self.shard
        terms_module, _ = self._ddp()
        g = stream_generator(self.options.seed, STREAM_STEP, step, self.device)
        n, m = len(idx), self.num_base
        rows, data_rows = sh.rows(m), sh.rows(n)
        x = self.x_train[idx[data_rows].to(self.device)]
        z = prior_draw(self.base, m, generator=g)
        penalised = k.penalty > 0 and step % k.penalty_every == 0
        pairs = penalty_pairs(g, n, m, x) if penalised else None
        xb, x_pair = base_samples(self.base, z, sh, rows, data_rows, pairs)
        x_hat = None
        if pairs is not None:
            x_hat = penalty_interpolates(x, x_pair, pairs[1][data_rows])
        local, loss, objective = energy_loss(sh, terms_module(x, xb, x_hat), n, m, k.penalty if penalised else 0.0,
                                             k.energy_l2, kale=True)
        if not math.isfinite(loss):
            raise NonFinite("KALE energy loss")
        self.energy_opt.zero_grad(set_to_none=True)
        scale = 1.0 / max(1.0, abs(loss)) if k.grad_clip is not None else 1.0
        (local * scale).backward()
        if k.grad_clip is not None and not clip_scaled_grad(self.clipped, k.grad_clip, scale):
            raise NonFinite("energy gradient norm")
        self.energy_opt.step()
        if not bool(torch.isfinite(c)):
            raise NonFinite("log-partition c")
        metrics = {"train_loss": loss, "kale_batch": objective}
        done, warmup = step + 1, k.warmup_energy_steps
        if k.train_base and done >= warmup and (done - warmup) % k.n_energy_steps == 0:
            metrics["base_loss"] = self.base_step(step)
        return metrics

    __call__ = energy_step
