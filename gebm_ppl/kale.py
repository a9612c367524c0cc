"""The only KALE maths: energy loss, base loss, gradient penalty, Â with its se/ESS, and the ESS rule.

Pure tensor functions; the training loops (:mod:`gebm_ppl.training`) and the evaluation call them,
and the data-parallel code only adds their per-rank pieces (sums add, log-sum-exps combine by
log-sum-exp).

Arbel, Zhou & Gretton (2021), "Generalized Energy Based Models", https://arxiv.org/abs/2003.05033
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from typing import NamedTuple

import torch
from torch import Tensor

from ._modes import eval_mode
from ._validation import check_positive_float, check_positive_int

__all__ = [
    "MIN_ESS_FRACTION",
    "DegenerateLogPartition",
    "LogPartitionEstimate",
    "LowESSWarning",
    "check_ess",
    "data_log_weight_cap",
    "estimate_log_partition",
    "fold_log_partition",
    "gradient_penalty",
    "kale_base_loss",
    "kale_base_loss_pieces",
    "kale_energy_loss",
    "kale_energy_sums",
    "kale_from_log_partition",
    "kale_from_sums",
    "kale_nll_bound",
    "kale_objective",
    "log_mean_exp",
    "log_partition_from_log_weights",
    "log_partition_from_samples",
    "log_partition_table",
    "low_ess_message",
    "nll_from_log_partition",
    "penalty_interpolates",
    "squared_gradient_norm_sum",
    "stable_log_weights",
]

#: The one ESS rule of gebm_ppl: a Monte-Carlo Â whose importance-weight effective sample size is
#: below this fraction of its M base draws is unreliable (:func:`check_ess`).
MIN_ESS_FRACTION = 0.01


class LowESSWarning(UserWarning):
    """Â rests on too few effective base draws (ESS < :data:`MIN_ESS_FRACTION` · M): it is unreliable."""


class DegenerateLogPartition(ValueError):
    """Raised instead of :class:`LowESSWarning` where a caller asks to refuse an unreliable Â."""


def log_mean_exp(a: Tensor, dim: int = -1) -> Tensor:
    """log( (1/M) Σ_i exp(a_i) ), computed with logsumexp."""
    return torch.logsumexp(a, dim) - math.log(a.shape[dim])


def data_log_weight_cap(energy_data: Tensor, log_partition: Tensor, num_base: int) -> Tensor:
    """u* = max_j −(E(x_j) + c) + log M, detached: the largest base log-weight the data justify.

    A base sample with u = −(E + c) > u* would alone outweigh M base samples at the data's lowest
    energy: the energy is lower there than at every data point, which no data point supports (the
    KALE-optimal energy −log(dP/dG) + const is high, not low, where the base has no data). Such
    samples are rare draws of a heavy-tailed base on which an untrained energy extrapolates
    (:func:`stable_log_weights` bounds their weight). Over shards of the data, u* is the max of the
    shards' values.
    """
    return (-(energy_data.detach() + log_partition.detach())).max() + math.log(num_base)


def stable_log_weights(log_weights: Tensor, cap: Tensor | float) -> Tensor:
    """ψ(u) = min(u, u*) + log(1 + max(u − u*, 0)): the log of the exponential linearised beyond u*.

    exp(ψ(u)) = e^u for u ≤ u* (the same values and gradients, bit for bit) and e^{u*}(1 + u − u*)
    beyond: continuous with its first derivative, increasing, so a weight past the cap still pulls
    the energy up at its sample, with a bounded force, instead of an exp(u) that reaches 1e75.
    """
    return torch.minimum(log_weights, torch.as_tensor(cap, dtype=log_weights.dtype)) + torch.log1p(
        torch.relu(log_weights - cap)
    )


def kale_energy_sums(
    energy_data: Tensor, energy_base: Tensor, log_partition: Tensor, cap: Tensor | float | None = None
) -> tuple[Tensor, Tensor]:
    """The two sums F(E, c) is made of: (S, L) = (Σ_j (E(x_j) + c), log Σ_i exp(−(E(G z_i) + c))).

    Over disjoint shards of the points, the S add and the L combine by logsumexp, exactly; then
    :func:`kale_from_sums` gives F. ``energy_data`` ``[N]``, ``energy_base`` ``[M]``, c a scalar.
    With ``cap`` (u*, e.g. :func:`data_log_weight_cap`), L uses :func:`stable_log_weights` of the
    log-weights −(E + c): identical while every log-weight is ≤ u*.
    """
    log_w = -(energy_base + log_partition)
    if cap is not None:
        log_w = stable_log_weights(log_w, cap)
    return (energy_data + log_partition).sum(), torch.logsumexp(log_w, 0)


def kale_from_sums(data_sum: Tensor, base_log_sum: Tensor, n: int, m: int) -> Tensor:
    """F(E, c) = −S/N − exp(L − log M) + 1 from the sums of :func:`kale_energy_sums` over N data points, M base samples.

    exp(L − log M) is the plain mean (1/M) Σ exp(−(E + c)) (no bias, no clamping) without overflow
    in the intermediate terms; it is inf past e^709 in float64.
    """
    return -data_sum / n - torch.exp(base_log_sum - math.log(m)) + 1.0


def kale_objective(energy_data: Tensor, energy_base: Tensor, log_partition: Tensor, stable: bool = False) -> Tensor:
    """F(E, c) = −E_P[E + c] − E_G[exp(−(E + c))] + 1 (to be maximised over E and c).

    ``energy_data``: E on data points ``[N]``; ``energy_base``: E on base samples ``[M]``;
    ``log_partition``: the scalar c. The exponential mean is exp(logmeanexp(−(E + c))): the same
    value as the plain mean (no bias, no clamping), without overflow in the intermediate terms.
    At c = A = log E_G[exp(−E)] the bound is tight: F = −E_P[E] − A. Computed as
    :func:`kale_from_sums` of :func:`kale_energy_sums`, the functions the training step combines.
    ``stable=True`` is the training steps' form: base log-weights beyond :func:`data_log_weight_cap`
    enter linearised (:func:`stable_log_weights`); it equals F whenever no weight passes the cap.
    """
    if energy_data.numel() == 0 or energy_base.numel() == 0:
        raise ValueError(
            "kale_objective needs at least one data point and one base sample. "
            f"Got energy_data {tuple(energy_data.shape)} and energy_base {tuple(energy_base.shape)}."
        )
    ed, eb = energy_data.reshape(-1), energy_base.reshape(-1)
    cap = data_log_weight_cap(ed, torch.as_tensor(log_partition), eb.numel()) if stable else None
    data_sum, base_log_sum = kale_energy_sums(ed, eb, log_partition, cap)
    return kale_from_sums(data_sum, base_log_sum, energy_data.numel(), energy_base.numel())


def _float(value: object, name: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"'{name}' should be a real number (or a one-element tensor/array). Got {value!r}.") from e


def kale_from_log_partition(mean_energy_data: float, log_partition: float, log_partition_estimate: float) -> float:
    """F(E, c) = −E_P[E] − c − exp(Â − c) + 1, the KALE value with E_G[exp(−E)] estimated by exp(Â).

    Args:
        mean_energy_data: E_P[E], the mean energy over the data points (train, validation or test).
        log_partition: c, the GEBM's learned log-partition parameter.
        log_partition_estimate: Â = logmeanexp_i(−E(G(z_i))), the Monte-Carlo log-partition.

    Returns:
        F as a float. Â − c is capped at 700 inside the exponential, so a far-off c gives a huge
        negative (finite) value instead of an overflow. At c = Â, F = −E_P[E] − Â.

    Example:
        >>> kale_from_log_partition(0.5, 0.2, 0.2)  # c = Â: F = −E_P[E] − Â
        -0.7
    """
    e = _float(mean_energy_data, "mean_energy_data")
    c = _float(log_partition, "log_partition")
    a = _float(log_partition_estimate, "log_partition_estimate")
    return -e - c - math.exp(min(a - c, 700.0)) + 1.0


def nll_from_log_partition(base_nll: float, mean_energy_data: float, log_partition_estimate: float) -> float:
    """The GEBM's NLL per example: −E_P[log g − E] + Â = NLL_base + E_P[E] + Â (nats)."""
    return (
        _float(base_nll, "base_nll")
        + _float(mean_energy_data, "mean_energy_data")
        + _float(log_partition_estimate, "log_partition_estimate")
    )


def kale_nll_bound(
    base_nll: float, mean_energy_data: float, log_partition: float, log_partition_estimate: float
) -> float:
    """The KALE upper bound on the GEBM's NLL: NLL_base − F(E, c), with F from :func:`kale_from_log_partition`.

    It is ≥ :func:`nll_from_log_partition` because exp(Â − c) ≥ 1 + Â − c, with equality at c = Â.
    """
    kale = kale_from_log_partition(mean_energy_data, log_partition, log_partition_estimate)
    return _float(base_nll, "base_nll") - kale


def kale_energy_loss(energy_data: Tensor, energy_base: Tensor, log_partition: Tensor) -> Tensor:
    """−F(E, c): the loss the energy and c minimise."""
    return -kale_objective(energy_data, energy_base, log_partition)


def kale_base_loss(energy_base: Tensor) -> Tensor:
    """Surrogate loss for the base: Σ_i w_i E(G_θ(z_i)) with w = softmax(−E) held constant.

    Its gradient in θ is the self-normalised estimate of ∇_θ KALE = E_Q[∇ₓE(G_θ(z)) ∇_θ G_θ(z)]
    because ∇_θ K(θ) = −∇_θ A(θ) at the optimal c.
    """
    weights = torch.softmax(-energy_base.detach(), dim=0)
    return (weights * energy_base).sum()


def kale_base_loss_pieces(energy_base: Tensor) -> tuple[Tensor, Tensor]:
    """(L, S) for one shard of the base samples: L = log Σ_i exp(−E_i) (held constant), S = Σ_i softmax(−E)_i E_i.

    Over shards r, :func:`kale_base_loss` of all the samples is Σ_r exp(L_r − logsumexp_r L_r) S_r:
    each shard's S weighted by its mass of the global softmax (the data-parallel base step).
    """
    neg = -energy_base.detach()
    log_sum = torch.logsumexp(neg, 0)
    return log_sum, (torch.exp(neg - log_sum) * energy_base).sum()


def penalty_interpolates(x_data: Tensor, x_base: Tensor, t: Tensor) -> Tensor:
    """x̂ = t·x_data + (1 − t)·x_base ``[N, D]`` (``t`` ``[N, 1]``), detached and requiring a gradient."""
    return (t * x_data.detach() + (1 - t) * x_base.detach()).requires_grad_(True)


def squared_gradient_norm_sum(energy: Callable[[Tensor], Tensor], x_hat: Tensor) -> Tensor:
    """Σ_j ‖∇ₓE(x̂_j)‖², differentiable in the energy's parameters (``create_graph=True``)."""
    (grad,) = torch.autograd.grad(energy(x_hat).sum(), x_hat, create_graph=True)
    return (grad * grad).sum()


def gradient_penalty(
    energy: Callable[[Tensor], Tensor],
    x_data: Tensor,
    x_base: Tensor,
    weight: float = 0.1,
    generator: torch.Generator | None = None,
) -> Tensor:
    """λ·E‖∇ₓE(x̂)‖² at random interpolates x̂ = t·x_data + (1 − t)·x_base, t ~ U(0, 1) per row.

    ``x_data`` is ``[N, D]``, ``x_base`` ``[M, D]``: with M ≠ N, row j of the data is paired with
    base row idx_j ~ U{0, …, M − 1}; with M = N row j with row j. The draws come from ``generator``
    in this order (idx, then t), the order the training steps replay. Returns
    λ·:func:`squared_gradient_norm_sum`/N, differentiable in the energy's parameters.
    """
    n = x_data.shape[0]
    if x_base.shape[0] != n:
        idx = torch.randint(0, x_base.shape[0], (n,), device=x_base.device, generator=generator)
        x_base = x_base[idx]
    t = torch.rand(n, 1, device=x_data.device, dtype=x_data.dtype, generator=generator)
    return weight * squared_gradient_norm_sum(energy, penalty_interpolates(x_data, x_base, t)) / n


class LogPartitionEstimate(NamedTuple):
    """Monte-Carlo estimate of A = log E_η[exp(−E(G(z)))].

    Fields:
        estimate: Â = logmeanexp_i(−E(G(z_i))).
        stderr: delta-method standard error of Â, sqrt((M/ESS − 1)/(M − 1)).
        ess: importance-weight effective sample size (Σw)²/Σw² with w_i = exp(−E(G(z_i))).
        num_samples: M.
    """

    estimate: float
    stderr: float
    ess: float
    num_samples: int


def _combine(log_w: Tensor) -> tuple[Tensor, Tensor]:
    return torch.logsumexp(log_w, 0), torch.logsumexp(2 * log_w, 0)


def _finish(lse1: Tensor, lse2: Tensor, m: int) -> LogPartitionEstimate:
    estimate = float(lse1) - math.log(m)
    log_ess = 2 * float(lse1) - float(lse2)
    ess = math.exp(log_ess)
    ratio = math.exp(math.log(m) - log_ess)  # M / ESS ≥ 1
    stderr = math.sqrt(max(ratio - 1.0, 0.0) / (m - 1)) if m > 1 else math.inf
    return LogPartitionEstimate(estimate, stderr, ess, m)


def log_partition_from_log_weights(log_weights: Tensor) -> LogPartitionEstimate:
    """Â, its delta-method standard error and the ESS from log-weights ``[M]`` (in float64)."""
    log_w = log_weights.detach().reshape(-1).double()
    if not bool(torch.isfinite(log_w).all()):
        raise ValueError("the log-weights contain NaN or inf: the energy is not finite on base samples.")
    lse1, lse2 = _combine(log_w)
    return _finish(lse1, lse2, log_w.numel())


@torch.no_grad()
def log_partition_from_samples(
    energy: Callable[[Tensor], Tensor], samples: Iterable[Tensor], cap: float | None = None
) -> LogPartitionEstimate:
    """Â = logmeanexp_i(−E(x_i)) with se and ESS from base samples x_i = G(z_i) given in batches ``[m_b, D]``.

    The training loops' estimate (fixed latent draws, G(z) cached when the base is frozen): the
    log-weights of all batches are concatenated and reduced by :func:`log_partition_from_log_weights`.
    With ``cap`` (u*), the log-weights first go through :func:`stable_log_weights` (the same values
    while all are ≤ u*): the estimate of the partition the data justify, used to start c when the
    plain Â fails the ESS rule.
    """
    log_w = torch.cat([-energy(x) for x in samples])
    if cap is not None:
        log_w = stable_log_weights(log_w.double(), cap)
    return log_partition_from_log_weights(log_w)


def low_ess_message(ess: float, num_samples: int, min_fraction: float = MIN_ESS_FRACTION) -> str | None:
    """The ESS rule's verdict: a message when ESS < ``min_fraction`` · M, else None."""
    if ess < min_fraction * num_samples:
        return (f"importance-weight ESS {ess:.0f} of {num_samples} base samples: Â "
                "(and the IS NLL) is unreliable")  # fmt: skip
    return None


def check_ess(
    estimate: LogPartitionEstimate,
    *,
    what: str = "Â",
    on_low: str = "warn",
    min_fraction: float = MIN_ESS_FRACTION,
    hint: str = "",
    stacklevel: int = 2,
) -> str | None:
    """Apply the ESS rule to ``estimate``: Â is unreliable when its ESS < ``min_fraction`` · M.

    The one rule behind :func:`estimate_log_partition`, :func:`gebm_ppl.fit_kale`,
    :meth:`gebm_ppl.GEBM.distribution` and ``gebm evaluate``. A low ESS means that a few base draws
    (the largest exp(−E(G z))) carry the estimate: the base rarely reaches where Q puts its mass.

    Args:
        estimate: a :class:`LogPartitionEstimate`.
        what: what the estimate is used for, named in the message.
        on_low: ``"warn"`` (:class:`LowESSWarning`), ``"raise"`` (:class:`DegenerateLogPartition`)
            or ``"ignore"`` (return the message only).
        min_fraction: the fraction (default :data:`MIN_ESS_FRACTION`).
        hint: advice appended to the message.
        stacklevel: of the warning.

    Returns:
        The message when the rule fails, else None.
    """
    if on_low not in ("warn", "raise", "ignore"):
        raise ValueError(f"'on_low' should be 'warn', 'raise' or 'ignore'. Got {on_low!r}.")
    message = low_ess_message(estimate.ess, estimate.num_samples, min_fraction)
    if message is None:
        return None
    message = f"{what}: {message} (below {min_fraction:g} of the draws; Â = {estimate.estimate:.4g})" + hint
    if on_low == "raise":
        raise DegenerateLogPartition(message)
    if on_low == "warn":
        warnings.warn(message, LowESSWarning, stacklevel=stacklevel + 1)
    return message


@torch.no_grad()
def log_partition_table(
    gebm,
    num_samples: int = 100_000,
    batch_size: int = 10_000,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    *,
    rank: int = 0,
    world_size: int = 1,
) -> Tensor:
    """``[B, 2]`` float64: (logsumexp_i w_i, logsumexp_i 2w_i), w_i = −T·E(G(z_i)), per batch of base draws.

    Rank ``rank`` of ``world_size`` fills the batches b ≡ rank (mod world_size) and leaves −inf at
    the others (see :mod:`gebm_ppl.sharding`); every rank draws all the latents from ``generator``
    (cheap) so that batch b holds the same draws on every rank: seed ``generator`` alike on all
    ranks. :func:`fold_log_partition` of the MAX-combined tables is :func:`estimate_log_partition`.
    """
    from .sharding import check_shard, owns

    if not hasattr(gebm, "latent_energy") or not hasattr(gebm, "base"):
        raise TypeError(f"'gebm' should be a gebm_ppl.GEBM. Got {type(gebm).__name__}.")
    num_samples = check_positive_int(num_samples, "num_samples")
    batch_size = check_positive_int(batch_size, "batch_size")
    temperature = check_positive_float(temperature, "temperature")
    rank, world_size = check_shard(rank, world_size)
    table = torch.full((-(-num_samples // batch_size), 2), -math.inf, dtype=torch.float64)
    with eval_mode(gebm):
        done = b = 0
        while done < num_samples:
            n = min(batch_size, num_samples - done)
            z = gebm.base.sample_prior(n, generator=generator)
            if owns(b, rank, world_size):
                log_w = (-temperature * gebm.latent_energy(z)).double().cpu()
                if not bool(torch.isfinite(log_w).all()):
                    raise ValueError(
                        "the energy is NaN or inf on base samples: the log-partition cannot be estimated."
                    )
                table[b, 0], table[b, 1] = _combine(log_w)
            done += n
            b += 1
    return table


def fold_log_partition(table: Tensor, num_samples: int) -> LogPartitionEstimate:
    """Â, se(Â) and ESS from a combined ``[B, 2]`` table of :func:`log_partition_table`, folded in batch order."""
    lse1 = lse2 = torch.tensor(-math.inf, dtype=torch.float64)
    for b1, b2 in table.double().cpu():
        lse1, lse2 = torch.logaddexp(lse1, b1), torch.logaddexp(lse2, b2)
    return _finish(lse1, lse2, num_samples)


@torch.no_grad()
def estimate_log_partition(
    gebm,
    num_samples: int = 100_000,
    batch_size: int = 10_000,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    *,
    rank: int = 0,
    world_size: int = 1,
    on_low_ess: str = "warn",
) -> LogPartitionEstimate:
    """Estimate A = log E_{z∼η}[exp(−T·E(G(z)))] by streaming ``num_samples`` base draws in batches.

    Memory is O(batch_size); sums are accumulated as running logsumexps in float64.

    Args:
        gebm: a :class:`gebm_ppl.GEBM`.
        num_samples: M, the number of base samples.
        batch_size: samples per batch.
        temperature: T (1 is the model itself).
        generator: optional torch.Generator for the latent draws.
        rank: this process's rank r: it evaluates the batches b ≡ r (mod ``world_size``) only.
        world_size: W > 1 combines the per-batch logsumexps over the initialised
            ``torch.distributed`` group (MAX of tables that hold −inf elsewhere): the result
            equals the unsharded one bit for bit. All ranks need the same ``generator`` seed.
            Default 1: one process.
        on_low_ess: the ESS rule (:func:`check_ess`) when ESS < :data:`MIN_ESS_FRACTION` · M:
            ``"warn"`` (default, :class:`LowESSWarning`), ``"raise"`` (:class:`DegenerateLogPartition`)
            or ``"ignore"``.
    """
    from .sharding import all_reduce_table

    if on_low_ess not in ("warn", "raise", "ignore"):
        raise ValueError(f"'on_low_ess' should be 'warn', 'raise' or 'ignore'. Got {on_low_ess!r}.")
    table = log_partition_table(
        gebm, num_samples, batch_size, temperature, generator, rank=rank, world_size=world_size
    )
    est = fold_log_partition(all_reduce_table(table, "max", world_size), num_samples)
    check_ess(est, what="estimate_log_partition", on_low=on_low_ess, stacklevel=3,
              hint="; more num_samples, a base closer to the GEBM or a smaller temperature help.")  # fmt: skip
    return est
