"""Held-out evaluation of a GEBM: base NLL, importance-sampling NLL and the KALE bound, with standard errors."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from ._validation import check_points, check_positive_int
from .kale import estimate_log_partition

__all__ = ["GEBMEvaluation", "evaluate_gebm"]


class GEBMEvaluation(NamedTuple):
    """Test-set figures of a GEBM with a density base, in nats per example.

    Fields:
        num_examples: n, the number of evaluated points.
        base_nll: −(1/n) Σ log g_θ(x_j), the base alone.
        base_nll_stderr: its standard error over examples.
        nll: −(1/n) Σ [log g_θ(x_j) − E(x_j)] + Â, the GEBM's importance-sampling NLL.
        nll_stderr: sqrt(Var_j[log g − E]/n + se(Â)²): the spread over examples and the error of Â.
        nll_bound: NLL_base − F(E, c), the KALE upper bound (Arbel et al., 2021), with
            F(E, c) = −(1/n) Σ E(x_j) − c − exp(Â − c) + 1 (E_G[exp(−E)] = exp(Â)).
        nll_bound_stderr: sqrt(Var_j[log g − E]/n + (exp(Â − c) se(Â))²).
        kale: F(E, c) on these examples.
        gain: NLL_base − NLL, the paired improvement per example over the base.
        gain_stderr: sqrt(Var_j[E(x_j)]/n + se(Â)²), the standard error of the paired difference.
        log_partition: Â, the Monte-Carlo log-partition.
        log_partition_stderr: se(Â) (delta method).
        ess: importance-weight effective sample size of Â.
        num_samples: base samples M behind Â.
        c: the GEBM's learned log-partition parameter.
    """

    num_examples: int
    base_nll: float
    base_nll_stderr: float
    nll: float
    nll_stderr: float
    nll_bound: float
    nll_bound_stderr: float
    kale: float
    gain: float
    gain_stderr: float
    log_partition: float
    log_partition_stderr: float
    ess: float
    num_samples: int
    c: float

    def to_dict(self) -> dict:
        """The fields as a JSON-ready dict."""
        return {k: (int(v) if isinstance(v, int) else float(v)) for k, v in self._asdict().items()}


def _stderr(values: np.ndarray) -> float:
    n = values.size
    return float(values.std(ddof=1) / math.sqrt(n)) if n > 1 else math.inf


@torch.no_grad()
def evaluate_gebm(
    gebm,
    x: Tensor | np.ndarray,
    *,
    num_samples: int = 100_000,
    batch_size: int = 10_000,
    seed: int = 0,
) -> GEBMEvaluation:
    """Evaluate a GEBM with a density base on held-out points ``x`` ``[n, D]``.

    log q(x) = log g_θ(x) − E(x) − A is computed with the Monte-Carlo estimate
    Â = logmeanexp_i(−E(G_θ(z_i))) from ``num_samples`` fresh base draws
    (:func:`gebm_ppl.estimate_log_partition`); the KALE bound uses the learned c instead of Â and
    holds for any c, so a large gap between ``nll`` and ``nll_bound`` says c is off.

    Args:
        gebm: a :class:`gebm_ppl.GEBM` whose base has ``log_prob``.
        x: ``[n, D]`` points (tensor or array; converted to the GEBM's dtype), n ≥ 2.
        num_samples: M base draws for Â.
        batch_size: rows per forward pass (data and base draws).
        seed: seed of the base draws.

    Returns:
        :class:`GEBMEvaluation`.

    Raises:
        ValueError: ``x`` has the wrong dimension, non-finite entries or fewer than 2 rows, or the
            energy is not finite on base samples.

    Example:
        >>> import torch, gebm_ppl as gp
        >>> gebm = gp.GEBM(gp.RealNVP(2, hidden_features=8, num_layers=2), gp.EnergyMLP(2, hidden=(8,)))
        >>> ev = evaluate_gebm(gebm, torch.randn(50, 2), num_samples=1000)
        >>> ev.nll <= ev.nll_bound + 1e-6  # e^(Â − c) ≥ 1 + Â − c
        True
    """
    num_samples = check_positive_int(num_samples, "num_samples")
    batch_size = check_positive_int(batch_size, "batch_size")
    c = gebm.log_partition
    x = check_points(torch.as_tensor(x, dtype=c.dtype, device=c.device), gebm.dim, "x")
    if x.dim() != 2 or x.shape[0] < 2:
        raise ValueError(f"'x' should have shape [n, {gebm.dim}] with n >= 2. Got shape {tuple(x.shape)}.")
    was_training = gebm.training
    gebm.eval()
    try:
        log_g, energy = [], []
        for chunk in x.split(batch_size):
            log_g.append(gebm.base.log_prob(chunk).double().cpu())
            energy.append(gebm.energy(chunk).double().cpu())
        generator = torch.Generator(device=c.device).manual_seed(int(seed))
        est = estimate_log_partition(gebm, num_samples=num_samples, batch_size=batch_size, generator=generator)
    finally:
        gebm.train(was_training)
    log_g = torch.cat(log_g).numpy()
    energy = torch.cat(energy).numpy()
    if not (np.isfinite(log_g).all() and np.isfinite(energy).all()):
        raise ValueError("the base log-density or the energy is not finite on some of the evaluated points.")
    n = log_g.size
    a_hat, se_a, c_val = est.estimate, est.stderr, float(c)
    unnorm = log_g - energy
    spread = unnorm.std(ddof=1) ** 2 / n
    exp_term = math.exp(min(a_hat - c_val, 700.0))
    base_nll = float(-log_g.mean())
    kale = float(-energy.mean() - c_val - exp_term + 1.0)
    nll = float(-unnorm.mean() + a_hat)
    return GEBMEvaluation(
        num_examples=n,
        base_nll=base_nll,
        base_nll_stderr=_stderr(log_g),
        nll=nll,
        nll_stderr=math.sqrt(spread + se_a**2),
        nll_bound=base_nll - kale,
        nll_bound_stderr=math.sqrt(spread + (exp_term * se_a) ** 2),
        kale=kale,
        gain=base_nll - nll,
        gain_stderr=math.sqrt(energy.std(ddof=1) ** 2 / n + se_a**2),
        log_partition=a_hat,
        log_partition_stderr=se_a,
        ess=est.ess,
        num_samples=num_samples,
        c=c_val,
    )
