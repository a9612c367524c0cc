"""One generator step of end-to-end adversarial training (KALE or logistic GAN) and its evaluation: ``AdversarialStep``.

The maths is in :mod:`gebm_ppl.kale` (and the data-parallel combination in ``training._parallel``); this
module holds the options, the optimizers, the random streams and the order of the steps, beside
:class:`~gebm_ppl.training.kale_step.KaleStep`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .._modes import eval_mode
from ..kale import LogPartitionEstimate, kale_from_log_partition, log_partition_from_samples, penalty_interpolates
from ._checks import (
    check_lr,
    check_nonnegative_float,
    check_nonnegative_int,
    check_optional_positive_int,
    check_positive_int,
)
from ._data import fingerprint
from ._loop import NonFinite, data_order
from ._options import TrainingOptions
from ._parallel import EnergyTerms, Shard, base_loss, base_samples, energy_loss, frozen, penalty_pairs
from ._rng import STREAM_EVAL, STREAM_STEP, prior_chunks, prior_draw, stream_generator
from .kale_step import gebm_payload, log_partition_record, mean_energy

__all__ = ["OBJECTIVES", "AdversarialSettings", "AdversarialStep"]

OBJECTIVES = ("kale", "gan")


def _check_betas(betas: object) -> tuple[float, float]:
    if not isinstance(betas, list | tuple) or len(betas) != 2:
        raise TypeError(f"'betas' should be a pair (beta1, beta2). Got {betas!r}.")
    out = tuple(check_nonnegative_float(b, "betas") for b in betas)
    if not all(b < 1 for b in out):
        raise ValueError(f"'betas' should lie in [0, 1). Got {betas!r}.")
    return out  # type: ignore[return-value]


@dataclass
class AdversarialSettings:
    """The options of :func:`~gebm_ppl.fit_adversarial` proper to it (see its docstring), checked on construction.

    ``energy_lr`` / ``base_lr`` None become ``lr``; ``log_partition_lr`` None becomes the energy's.
    The loop options (batch size, seed, ``eval_every``, checkpoints, ...) are a
    :class:`~gebm_ppl.training.TrainingOptions`.
    """

    steps: int
    objective: str = "kale"
    noise_factor: int = 1
    energy_steps: int = 5
    burst_steps: int = 100
    burst_every: int | None = 500
    penalty: float = 1.0
    penalty_every: int = 1
    lr: float = 1e-4
    energy_lr: float | None = None
    base_lr: float | None = None
    log_partition_lr: float | None = None
    betas: tuple[float, float] = (0.5, 0.999)
    grad_clip: float | None = None
    init_log_partition: bool = True
    log_partition_samples: int = 10_000

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"'objective' should be one of {list(OBJECTIVES)}. Got {self.objective!r}.")
        self.steps = check_positive_int(self.steps, "steps")
        self.noise_factor = check_positive_int(self.noise_factor, "noise_factor")
        self.energy_steps = check_positive_int(self.energy_steps, "energy_steps")
        self.burst_steps = check_nonnegative_int(self.burst_steps, "burst_steps")
        self.burst_every = check_optional_positive_int(self.burst_every, "burst_every")
        self.penalty = check_nonnegative_float(self.penalty, "penalty")
        self.penalty_every = check_positive_int(self.penalty_every, "penalty_every")
        self.lr = check_lr(self.lr, "lr")
        self.energy_lr = self.lr if self.energy_lr is None else check_lr(self.energy_lr, "energy_lr")
        self.base_lr = self.lr if self.base_lr is None else check_lr(self.base_lr, "base_lr")
        lp = self.log_partition_lr
        self.log_partition_lr = self.energy_lr if lp is None else check_lr(lp, "log_partition_lr")
        self.betas = _check_betas(self.betas)
        self.grad_clip = None if self.grad_clip is None else check_lr(self.grad_clip, "grad_clip")
        if not isinstance(self.init_log_partition, bool):
            raise TypeError(f"'init_log_partition' should be True or False. Got {self.init_log_partition!r}.")
        self.log_partition_samples = check_positive_int(self.log_partition_samples, "log_partition_samples")

    @property
    def kale(self) -> bool:
        """Whether the objective is KALE (else the logistic GAN)."""
        return self.objective == "kale"


class AdversarialStep:
    """The energy steps, the generator step, Â and the evaluation of one ``fit_adversarial`` run.

    Called as ``step(indices, step_number)`` by :meth:`Loop.run <gebm_ppl.training._loop.Loop.run>`
    (the indices only count: each generator step draws its minibatches from its (seed, step) stream):
    ``energy_steps`` energy steps (``burst_steps`` at step 0 and every ``burst_every``), then one
    generator step. ``evaluate`` gives a record's values. Attributes ``optimizers`` feed the loop.

    Args:
        gebm: the :class:`gebm_ppl.GEBM` trained in place (already on its device).
        x_train: training data ``[N, D]`` (the GEBM's dtype and device).
        x_val: validation data ``[N_val, D]`` or None.
        settings: the adversarial settings.
        options: the loop options (batch size, seed, ``eval_every``, evaluation batch size).
    """

    def __init__(self, gebm, x_train: Tensor, x_val: Tensor | None, settings: AdversarialSettings,
                 options: TrainingOptions):  # fmt: skip
        self.gebm, self.adv, self.options = gebm, settings, options
        self.base, self.energy, self.c = gebm.base, gebm.energy, gebm.log_partition
        self.kale = settings.kale
        self.energy_params = [p for p in self.energy.parameters() if p.requires_grad]
        self.base_params = [p for p in self.base.parameters() if p.requires_grad]
        if not self.energy_params:
            raise ValueError("'gebm.energy' has no trainable parameters (none with requires_grad=True).")
        if not self.base_params:
            raise ValueError("'gebm.base' has no trainable parameters (none with requires_grad=True).")
        self.x_train, self.x_val = x_train, x_val
        self.n_train = x_train.shape[0]
        if options.batch_size > self.n_train:
            raise ValueError(
                f"'batch_size' ({options.batch_size}) is larger than the training set ({self.n_train} rows)."
            )
        self.device = self.c.device
        energy_groups = [{"params": self.energy_params, "lr": settings.energy_lr}]
        if self.kale:
            energy_groups.append({"params": [self.c], "lr": settings.log_partition_lr})
        self.energy_opt = torch.optim.Adam(energy_groups, betas=settings.betas)
        self.base_opt = torch.optim.Adam(self.base_params, lr=settings.base_lr, betas=settings.betas)
        self.optimizers = {"energy": self.energy_opt, "base": self.base_opt}
        self.num_base = options.batch_size * settings.noise_factor
        self.shard: Shard | None = None  # joins torchrun's process group: built by start(), after the Loop
        self.order = data_order(x_train)  # a chunked data source's own permutation
        self._modules: dict[str, nn.Module] = {}

    # ------------------------------------------------------------ what the loop stores
    def settings(self) -> dict:
        """The hyperparameters recorded in ``history.settings``."""
        a, o, x_val = self.adv, self.options, self.x_val
        return dict(
            objective=a.objective, steps=a.steps, batch_size=o.batch_size, noise_factor=a.noise_factor,
            energy_steps=a.energy_steps, burst_steps=a.burst_steps, burst_every=a.burst_every, penalty=a.penalty,
            penalty_every=a.penalty_every, energy_lr=a.energy_lr, base_lr=a.base_lr,
            log_partition_lr=a.log_partition_lr, betas=list(a.betas),
            grad_clip=a.grad_clip, init_log_partition=a.init_log_partition,
            log_partition_samples=a.log_partition_samples, eval_every=o.eval_every, seed=o.seed,
            train_size=self.n_train, val_size=None if x_val is None else x_val.shape[0],
            dim=self.x_train.shape[1], device=str(self.device), dtype=str(self.c.dtype),
        )  # fmt: skip

    def structure(self) -> dict:
        """The settings a resumed run must share with its checkpoint."""
        a, o = self.adv, self.options
        return dict(
            objective=a.objective, batch_size=o.batch_size, noise_factor=a.noise_factor, energy_steps=a.energy_steps,
            burst_steps=a.burst_steps, burst_every=a.burst_every, eval_every=o.eval_every, seed=o.seed,
            train=fingerprint(self.x_train), **({"penalty_every": a.penalty_every} if a.penalty_every != 1 else {}),
        )  # fmt: skip

    def payload(self, training: dict) -> dict:
        """The checkpoint: :func:`~gebm_ppl.training.kale_step.gebm_payload` of this run's GEBM."""
        return gebm_payload(self.gebm, training)

    def start(self) -> None:
        """Join torchrun's process group (if launched by it): called once the Loop exists, as before the split."""
        self.shard = Shard(self.device)

    # ------------------------------------------------------------ log-partition and evaluation
    @torch.no_grad()
    def log_partition(self) -> LogPartitionEstimate:
        """Â from ``log_partition_samples`` latent draws, the same draws at every evaluation."""
        base, o = self.base, self.options
        g = stream_generator(o.seed, STREAM_EVAL, 0, self.device)
        samples = (base(z) for z in prior_chunks(base, self.adv.log_partition_samples, o.eval_batch_size, g))
        try:
            return log_partition_from_samples(self.energy, samples)
        except ValueError:
            raise NonFinite("energy on base samples (log-partition estimate)") from None

    def initialise_log_partition(self) -> None:
        """Set c to Â (in eval mode); ValueError if the energy is not finite on base samples."""
        try:
            with eval_mode(self.gebm):
                a0 = self.log_partition().estimate
        except NonFinite:
            raise ValueError("the energy is not finite on base samples: cannot initialise c.") from None
        with torch.no_grad():
            self.c.fill_(a0)

    def evaluate(self) -> dict:
        """The record's evaluation values (c, Â, its stderr, ESS, KALE on train / val); the GAN sets c = Â."""
        c = self.c
        with eval_mode(self.gebm):
            est = self.log_partition()
            if not self.kale:
                with torch.no_grad():
                    c.fill_(est.estimate)
            record = log_partition_record(est, c)
            c_now, a_hat = record["log_partition"], record["log_partition_estimate"]
            x_train, x_val = self.x_train, self.x_val
            splits = {"kale_train": x_train} if x_val is None else {"kale_train": x_train, "kale_val": x_val}
            for key, x in splits.items():
                record[key] = kale_from_log_partition(
                    mean_energy(self.energy, x, self.options.eval_batch_size), c_now, a_hat
                )
                if not math.isfinite(record[key]):
                    raise NonFinite(key)
            return record

    # ------------------------------------------------------------ steps
    def _clip(self, params: list[Tensor], what: str) -> None:
        clip = self.adv.grad_clip
        if clip is not None and not bool(torch.isfinite(torch.nn.utils.clip_grad_norm_(params, clip))):
            raise NonFinite(f"{what} gradient norm")

    # Under W ranks (torchrun) every rank draws the step's global minibatch, latents and penalty weights
    # from the step's generator and keeps its share; each share's loss is W times its part of the global
    # loss, so DDP's gradient average is the gradient of the global-batch loss (see training._parallel).
    def _ddp(self, name: str) -> nn.Module:
        """The energy-step module or the base, in DDP when W > 1; built on first use, after c is set."""
        if not self._modules:
            terms = EnergyTerms(self.energy, self.c if self.kale else None, self.num_base)
            self._modules["energy"] = self.shard.wrap(terms)
            self._modules["base"] = self.shard.wrap(self.base)
        return self._modules[name]

    def energy_step(self, g: torch.Generator, penalised: bool = True) -> tuple[float, float]:
        """One Adam step of (E, c) on a fresh minibatch and fresh base samples drawn from ``g``.

        KALE: loss −F(E, c) + λ·penalty; GAN (discriminator logit −E): −log σ(−E(x_data)) − log(1 − σ(−E(G z)))
        + λ·penalty. Not ``penalised``: λ = 0 and no penalty draws. Returns (the loss, F or NaN for the GAN).
        """
        sh, bs, m = self.shard, self.options.batch_size, self.num_base
        penalty = self.adv.penalty if penalised else 0.0
        rows, data_rows = sh.rows(m), sh.rows(bs)
        order, dev = self.order, self.device
        batch = (torch.randperm(self.n_train, generator=g, device=dev) if order is None else order(g))[:bs]
        x = self.x_train[batch[data_rows]]
        z = prior_draw(self.base, m, g)
        pairs = penalty_pairs(g, bs, m, x) if penalty > 0 else None
        xb, x_pair = base_samples(self.base, z, sh, rows, data_rows, pairs)
        x_hat = None if pairs is None else penalty_interpolates(x, x_pair, pairs[1][data_rows])
        terms = self._ddp("energy")(x, xb, x_hat)
        local, loss, obj = energy_loss(sh, terms, bs, m, penalty, 0.0, kale=self.kale)
        if not math.isfinite(loss):
            raise NonFinite("energy loss")
        self.energy_opt.zero_grad(set_to_none=True)
        local.backward()
        self._clip(self.energy_params, "energy")
        self.energy_opt.step()
        if self.kale and not bool(torch.isfinite(self.c)):
            raise NonFinite("log-partition c")
        return loss, float("nan") if obj is None else obj

    def base_step(self, g: torch.Generator) -> float:
        """One Adam step of the generator on fresh latents from ``g``.

        KALE: −E_P[E] does not depend on θ; −logmeanexp(−E(G z)) has the gradient of
        :func:`gebm_ppl.kale_base_loss`. GAN: the non-saturating softplus(E(G z)).
        """
        z = prior_draw(self.base, self.num_base, g)[self.shard.rows(self.num_base)]
        self.base_opt.zero_grad(set_to_none=True)
        with frozen(self.energy_params):  # backward on the base alone (DDP accumulates into .grad)
            local, loss = base_loss(self.shard, self.energy(self._ddp("base")(z)), self.num_base, kale=self.kale)
            if not math.isfinite(loss):
                raise NonFinite("base loss")
            local.backward()
        self._clip(self.base_params, "base")
        self.base_opt.step()
        return loss

    def n_energy_steps(self, step: int) -> int:
        """Energy steps before generator step ``step``: ``burst_steps`` at 0 and every ``burst_every``."""
        a = self.adv
        burst = step == 0 or (a.burst_every is not None and step % a.burst_every == 0)
        return max(a.burst_steps, a.energy_steps) if burst else a.energy_steps

    def __call__(self, idx: Tensor, step: int) -> dict:
        """Generator step ``step``: its energy steps then one base step, all drawn from its (seed, step) stream."""
        g = stream_generator(self.options.seed, STREAM_STEP, step, self.device)
        for j in range(self.n_energy_steps(step)):
            energy_loss_value, kale_batch = self.energy_step(g, j % self.adv.penalty_every == 0)
        metrics = {"energy_loss": energy_loss_value, "base_loss": self.base_step(g)}
        if self.kale:
            metrics["kale_batch"] = kale_batch
        return metrics
