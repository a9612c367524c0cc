"""The KALE objective, the base loss and the log-partition estimate (pure tensor functions).

Arbel, Zhou & Gretton (2021), "Generalized Energy Based Models", https://arxiv.org/abs/2003.05033
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from ._modes import eval_mode
from ._validation import check_positive_float, check_positive_int

__all__ = [
    "LogPartitionEstimate",
    "estimate_log_partition",
    "fold_log_partition",
    "kale_base_loss",
    "kale_energy_loss",
    "kale_from_log_partition",
    "kale_nll_bound",
    "kale_objective",
    "log_mean_exp",
    "log_partition_from_log_weights",
    "log_partition_table",
    "nll_from_log_partition",
]


def log_mean_exp(a: Tensor, dim: int = -1) -> Tensor:
    """log( (1/M) Σ_i exp(a_i) ), computed with logsumexp."""
    return torch.logsumexp(a, dim) - math.log(a.shape[dim])


def kale_objective(energy_data: Tensor, energy_base: Tensor, log_partition: Tensor) -> Tensor:
    """F(E, c) = −E_P[E + c] − E_G[exp(−(E + c))] + 1 (to be maximised over E and c).

    ``energy_data``: E on data points ``[N]``; ``energy_base``: E on base samples ``[M]``;
    ``log_partition``: the scalar c. The exponential mean is exp(logmeanexp(−(E + c))): the same
    value as the plain mean (no bias, no clamping), without overflow in the intermediate terms.
    At c = A = log E_G[exp(−E)] the bound is tight: F = −E_P[E] − A.
    """
    if energy_data.numel() == 0 or energy_base.numel() == 0:
        raise ValueError(
            "kale_objective needs at least one data point and one base sample. "
            f"Got energy_data {tuple(energy_data.shape)} and energy_base {tuple(energy_base.shape)}."
        )
    exp_term = torch.exp(log_mean_exp(-(energy_base + log_partition), dim=0))
    return -(energy_data + log_partition).mean() - exp_term + 1.0


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
    """
    from .sharding import all_reduce_table

    table = log_partition_table(
        gebm, num_samples, batch_size, temperature, generator, rank=rank, world_size=world_size
    )
    return fold_log_partition(all_reduce_table(table, "max", world_size), num_samples)
