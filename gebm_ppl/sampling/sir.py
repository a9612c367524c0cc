"""Sampling–importance–resampling in latent space with the prior η = N(0, I) as proposal, batched over chains."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from .driver import Kernel, batched_runner
from .registry import Option, SamplerSpec, register_sampler

__all__ = ["SIRState", "init", "step", "stats", "KERNEL", "SPEC"]


class SIRState(NamedTuple):
    """State of C SIR "chains" (each draw is independent of the previous one).

    Fields:
        z: the resampled points ``[C, d]``.
        potential: U(z) ``[C]``.
        ess: effective sample size (Σw)²/Σw² of the proposals' importance weights ``[C]``.
    """

    z: Tensor
    potential: Tensor
    ess: Tensor


def init(z: Tensor, potential: Callable[[Tensor], Tensor], **params) -> SIRState:
    """Hold the starting points ``z`` ``[C, d]`` (SIR draws do not depend on them)."""
    z = z.detach()
    with torch.no_grad():
        u = potential(z)
    return SIRState(z, u, torch.ones_like(u))


def step(
    state: SIRState,
    potential: Callable[[Tensor], Tensor],
    generator: torch.Generator,
    *,
    num_proposals: int,
    **params,
) -> SIRState:
    """For every chain draw K = ``num_proposals`` points z_k ∼ η and keep one with probability ∝ w(z_k).

    w = dν/dη ∝ exp(−T·E(G_θ(z))); the kept point's law tends to ν as K grows (bias O(1/K)).
    Gradient-free; K potential evaluations per chain.
    """
    c, d = state.z.shape
    k = num_proposals
    z = torch.randn((c, k, d), generator=generator, dtype=state.z.dtype, device=state.z.device)
    with torch.no_grad():
        u = potential(z)  # [C, K]
    log_w = 0.5 * (z * z).sum(-1) - u
    log_w = log_w - torch.logsumexp(log_w, -1, keepdim=True)  # normalised: log of weights summing to one
    idx = torch.multinomial(log_w.exp(), 1, generator=generator).squeeze(-1)
    rows = torch.arange(c, device=z.device)
    ess = torch.exp(-torch.logsumexp(2 * log_w, -1))
    return SIRState(z[rows, idx], u[rows, idx], ess)


def stats(state: SIRState) -> dict[str, Tensor]:
    """Per-draw statistics: ``lp`` = −U(z) and ``importance_ess`` (ESS of the K proposals, out of K)."""
    return {"lp": -state.potential, "importance_ess": state.ess}


KERNEL = Kernel(init, step, stats)

SPEC = register_sampler(
    SamplerSpec(
        name="sir",
        summary="sampling-importance-resampling from prior proposals",
        gradient_based=False,
        options=(Option("num_proposals", int, 256, "prior proposals per kept draw", minimum=1),),
        torch_runner=batched_runner(KERNEL),
        burn_in=False,  # SIR draws are independent: nothing to burn in
        stats=("lp", "importance_ess"),
    )
)
