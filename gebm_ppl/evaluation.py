"""Held-out evaluation of a GEBM: base NLL, importance-sampling NLL and the KALE bound, with standard errors.

Sign convention (everywhere in gebm_ppl, its CLI and its benchmarks): a paired difference is
Δ NLL = NLL(model) − NLL(reference) per example, averaged; **negative is better** for the model.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from ._modes import eval_mode
from ._validation import check_points, check_positive_int
from .data.stream import H5Array
from .kale import MIN_ESS_FRACTION, estimate_log_partition, kale_from_log_partition, kale_nll_bound, low_ess_message
from .sharding import all_reduce_table, batch_ranges, check_shard, owns

__all__ = ["GEBMEvaluation", "evaluate_gebm", "low_ess_warning", "paired_difference", "stderr"]


class GEBMEvaluation(NamedTuple):
    """Held-out figures of a GEBM, in nats per example.

    Fields (the NLL fields are None for a base without a density: only Â, its ESS and the KALE
    value can be computed then):
        num_examples: n, the number of evaluated points.
        base_nll: −(1/n) Σ log g_θ(x_j), the base alone.
        base_nll_stderr: its standard error over examples.
        nll: −(1/n) Σ [log g_θ(x_j) − E(x_j)] + Â, the GEBM's importance-sampling NLL.
        nll_stderr: sqrt(Var_j[log g − E]/n + se(Â)²): the spread over examples and the error of Â.
        nll_bound: NLL_base − F(E, c), the KALE upper bound (Arbel et al., 2021), with
            F(E, c) = −(1/n) Σ E(x_j) − c − exp(Â − c) + 1 (E_G[exp(−E)] = exp(Â)).
        nll_bound_stderr: sqrt(Var_j[log g − E]/n + (exp(Â − c) se(Â))²).
        kale: F(E, c) on these examples.
        delta_nll: NLL − NLL_base = (1/n) Σ E(x_j) + Â, the paired difference to the base (< 0: the GEBM is better).
        delta_nll_stderr: sqrt(Var_j[E(x_j)]/n + se(Â)²), its standard error.
        log_partition: Â, the Monte-Carlo log-partition.
        log_partition_stderr: se(Â) (delta method).
        ess: importance-weight effective sample size of Â.
        num_samples: base samples M behind Â.
        c: the GEBM's learned log-partition parameter.
        nll_per_example: ``[n]`` float64 per-example GEBM NLLs (None without a density; not in :meth:`to_dict`).
        base_nll_per_example: ``[n]`` per-example base NLLs (likewise).
    """

    num_examples: int
    base_nll: float | None
    base_nll_stderr: float | None
    nll: float | None
    nll_stderr: float | None
    nll_bound: float | None
    nll_bound_stderr: float | None
    kale: float
    delta_nll: float | None
    delta_nll_stderr: float | None
    log_partition: float
    log_partition_stderr: float
    ess: float
    num_samples: int
    c: float
    nll_per_example: np.ndarray | None = None
    base_nll_per_example: np.ndarray | None = None

    @property
    def has_density(self) -> bool:
        """Whether the NLL fields are set (the base has a density)."""
        return self.nll is not None

    def to_dict(self) -> dict:
        """The scalar fields as a JSON-ready dict (None stays None)."""
        out = {}
        for k, v in self._asdict().items():
            if isinstance(v, np.ndarray) or k.endswith("_per_example"):
                continue
            out[k] = None if v is None else (int(v) if isinstance(v, int) else float(v))
        return out


def stderr(values: np.ndarray) -> float:
    """Standard error of the mean of ``values`` (inf for fewer than 2)."""
    values = np.asarray(values, dtype=np.float64)
    n = values.size
    return float(values.std(ddof=1) / math.sqrt(n)) if n > 1 else math.inf


def paired_difference(nll: np.ndarray, reference_nll: np.ndarray, extra_stderr: float = 0.0) -> tuple[float, float]:
    """Δ NLL = mean_j (nll_j − reference_j) and its standard error sqrt(se(d)² + extra_stderr²).

    The per-example statistics are :func:`gebm_ppl.units.paired_difference`'s; ``extra_stderr`` is an
    error that shifts every example alike (se(Â) for a GEBM's NLL).
    """
    from .units import paired_difference as paired

    mean, se, _ = paired(np.asarray(nll, dtype=np.float64) - np.asarray(reference_nll, dtype=np.float64))
    return mean, math.sqrt(se**2 + float(extra_stderr) ** 2)


def low_ess_warning(ev: GEBMEvaluation, fraction: float = MIN_ESS_FRACTION) -> str | None:
    """The ESS rule of :func:`gebm_ppl.kale.check_ess` on an evaluation: a message when the importance-weight
    ESS of Â is below ``fraction`` (default :data:`~gebm_ppl.kale.MIN_ESS_FRACTION`) of the base samples, else None."""
    return low_ess_message(ev.ess, ev.num_samples, fraction)


@torch.no_grad()
def evaluate_gebm(
    gebm,
    x: Tensor | np.ndarray,
    *,
    num_samples: int = 100_000,
    batch_size: int = 10_000,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> GEBMEvaluation:
    """Evaluate a GEBM on held-out points ``x`` ``[n, D]``.

    log q(x) = log g_θ(x) − E(x) − A is computed with the Monte-Carlo estimate
    Â = logmeanexp_i(−E(G_θ(z_i))) from ``num_samples`` fresh base draws
    (:func:`gebm_ppl.estimate_log_partition`); the KALE bound uses the learned c instead of Â and
    holds for any c, so a large gap between ``nll`` and ``nll_bound`` says c is off. For a base
    without a density (``base.has_density`` False) only Â, its ESS and F(E, c) are computed.

    Args:
        gebm: a :class:`gebm_ppl.GEBM`.
        x: ``[n, D]`` points (tensor or array; converted to the GEBM's dtype), n ≥ 2.
        num_samples: M base draws for Â.
        batch_size: rows per forward pass (data and base draws).
        seed: seed of the base draws.
        rank: this process's rank r: it evaluates the batches b ≡ r (mod ``world_size``) of
            rows and of base draws (:mod:`gebm_ppl.sharding`).
        world_size: W > 1 shards the work over the ranks of an initialised ``torch.distributed``
            group: the per-row values and per-batch logsumexps are all-reduced, and every rank
            returns the unsharded result bit for bit. Default 1: one process.

    ``x`` may be a :class:`gebm_ppl.data.H5Array` (rows on disk): it is read one batch at a
    time (a rank reads only its batches); memory is O(batch_size · D) plus 16 bytes per row for
    the per-example values.

    Returns:
        :class:`GEBMEvaluation`. Its ``ess`` is not judged here: :func:`low_ess_warning` applies the
        ESS rule of :func:`gebm_ppl.kale.check_ess` to it (``gebm evaluate`` prints its message).

    Raises:
        ValueError: ``x`` has the wrong dimension, non-finite entries or fewer than 2 rows, or the
            energy (or Â) is not finite.

    Example:
        >>> import torch, gebm_ppl as gp
        >>> gebm = gp.GEBM(gp.RealNVP(2, hidden_features=8, num_layers=2), gp.EnergyMLP(2, hidden=(8,)))
        >>> ev = evaluate_gebm(gebm, torch.randn(50, 2), num_samples=1000)
        >>> ev.nll <= ev.nll_bound + 1e-6  # e^(Â − c) ≥ 1 + Â − c
        True
    """
    num_samples = check_positive_int(num_samples, "num_samples")
    batch_size = check_positive_int(batch_size, "batch_size")
    rank, world_size = check_shard(rank, world_size)
    c = gebm.log_partition
    if isinstance(x, H5Array):
        x = x.to(device=c.device, dtype=c.dtype)
        if x.shape[1] != gebm.dim:
            raise ValueError(f"'x' should have shape [..., {gebm.dim}]. Got shape {tuple(x.shape)}.")
    else:
        x = check_points(torch.as_tensor(x, dtype=c.dtype, device=c.device), gebm.dim, "x")
    if x.dim() != 2 or x.shape[0] < 2:
        raise ValueError(f"'x' should have shape [n, {gebm.dim}] with n >= 2. Got shape {tuple(x.shape)}.")
    density = bool(getattr(gebm.base, "has_density", True))
    with eval_mode(gebm):
        tables = [torch.zeros(x.shape[0], dtype=torch.float64) for _ in range(2 if density else 1)]
        for b, start, stop in batch_ranges(x.shape[0], batch_size):
            if owns(b, rank, world_size):
                chunk = x[start:stop]
                if not bool(torch.isfinite(chunk).all()):
                    row = start + int((~torch.isfinite(chunk).all(1)).nonzero()[0])
                    raise ValueError(f"'x' contains NaN or inf values (first in row {row}).")
                tables[0][start:stop] = gebm.energy(chunk).double().cpu()
                if density:
                    tables[1][start:stop] = gebm.base.log_prob(chunk).double().cpu()
        tables = [all_reduce_table(t, "sum", world_size) for t in tables]
        energy = tables[0].numpy()
        log_g = tables[1].numpy() if density else None
        generator = torch.Generator(device=c.device).manual_seed(int(seed))
        est = estimate_log_partition(gebm, num_samples=num_samples, batch_size=batch_size, generator=generator,
                                     rank=rank, world_size=world_size, on_low_ess="ignore")  # fmt: skip
    if not np.isfinite(energy).all() or (log_g is not None and not np.isfinite(log_g).all()):
        raise ValueError("the base log-density or the energy is not finite on some of the evaluated points.")
    a_hat, se_a, c_val = est.estimate, est.stderr, float(c)
    if not (math.isfinite(a_hat) and math.isfinite(c_val)):
        raise ValueError(f"the log-partition is not finite (Â = {a_hat}, c = {c_val}).")
    n = energy.size
    exp_term = math.exp(min(a_hat - c_val, 700.0))  # for the standard error of the bound
    kale = kale_from_log_partition(float(energy.mean()), c_val, a_hat)
    common = dict(num_examples=n, kale=kale, log_partition=a_hat, log_partition_stderr=se_a, ess=est.ess,
                  num_samples=num_samples, c=c_val)
    if log_g is None:
        return GEBMEvaluation(base_nll=None, base_nll_stderr=None, nll=None, nll_stderr=None, nll_bound=None,
                              nll_bound_stderr=None, delta_nll=None, delta_nll_stderr=None, **common)
    base_per_example = -log_g
    per_example = -(log_g - energy) + a_hat
    spread = stderr(per_example) ** 2
    base_nll = float(base_per_example.mean())
    nll = float(per_example.mean())
    delta, delta_se = paired_difference(per_example, base_per_example, se_a)
    return GEBMEvaluation(
        base_nll=base_nll,
        base_nll_stderr=stderr(base_per_example),
        nll=nll,
        nll_stderr=math.sqrt(spread + se_a**2),
        nll_bound=kale_nll_bound(base_nll, float(energy.mean()), c_val, a_hat),
        nll_bound_stderr=math.sqrt(spread + (exp_term * se_a) ** 2),
        delta_nll=delta,
        delta_nll_stderr=delta_se,
        nll_per_example=per_example,
        base_nll_per_example=base_per_example,
        **common,
    )
