"""Independent Metropolis–Hastings in latent space with the prior η = N(0, I) as proposal, batched over chains."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from .driver import Kernel, batched_runner
from .registry import Option, SamplerSpec, register_sampler

__all__ = ["IMHState", "init", "step", "stats", "KERNEL", "SPEC"]


class IMHState(NamedTuple):
    """State of C independent Metropolis–Hastings chains.

    Fields:
        z: positions ``[C, d]``.
        potential: U(z) ``[C]``.
        log_weight: log dν/dη(z) + const = ½‖z‖² − U(z) ``[C]``.
        accept_prob: acceptance probability of the last proposal ``[C]``.
        accepted: whether the last proposal was accepted ``[C]`` (bool).
    """

    z: Tensor
    potential: Tensor
    log_weight: Tensor
    accept_prob: Tensor
    accepted: Tensor


def init(z: Tensor, potential: Callable[[Tensor], Tensor], **params) -> IMHState:
    """Start C chains at ``z`` ``[C, d]`` (one potential evaluation per chain, no gradient)."""
    z = z.detach()
    with torch.no_grad():
        u = potential(z)
    log_w = 0.5 * (z * z).sum(-1) - u
    ones = torch.ones_like(u)
    return IMHState(z, u, log_w, ones, torch.ones_like(u, dtype=torch.bool))


def step(state: IMHState, potential: Callable[[Tensor], Tensor], generator: torch.Generator, **params) -> IMHState:
    """Propose z' ∼ η for every chain and accept with probability min(1, w(z')/w(z)), w = dν/dη ∝ e^{−T·E(G z)}.

    The proposal does not depend on the current point, so the ratio of target and proposal densities
    reduces to the ratio of importance weights. Gradient-free.
    """
    z_new = torch.randn(state.z.shape, generator=generator, dtype=state.z.dtype, device=state.z.device)
    with torch.no_grad():
        u_new = potential(z_new)
    log_w_new = 0.5 * (z_new * z_new).sum(-1) - u_new
    log_ratio = log_w_new - state.log_weight
    accept_prob = torch.exp(torch.clamp(log_ratio, max=0.0))
    uniform = torch.rand(accept_prob.shape, generator=generator, dtype=accept_prob.dtype, device=accept_prob.device)
    accepted = uniform < accept_prob
    keep = accepted.unsqueeze(-1)
    return IMHState(
        torch.where(keep, z_new, state.z),
        torch.where(accepted, u_new, state.potential),
        torch.where(accepted, log_w_new, state.log_weight),
        accept_prob,
        accepted,
    )


def stats(state: IMHState) -> dict[str, Tensor]:
    """Per-draw statistics: ``lp`` = −U(z), ``acceptance_rate`` (the acceptance probability) and ``accepted``."""
    return {"lp": -state.potential, "acceptance_rate": state.accept_prob, "accepted": state.accepted}


KERNEL = Kernel(init, step, stats)

SPEC = register_sampler(
    SamplerSpec(
        name="imh",
        summary="independent Metropolis-Hastings, prior proposals (MH-GAN style)",
        gradient_based=False,
        options=(Option("thin", int, 1, "transitions per kept draw", minimum=1),),
        torch_runner=batched_runner(KERNEL),
        jax_kernel="gebm_ppl.numpyro.kernels:IMH",
        stats=("lp", "acceptance_rate", "accepted"),
    )
)
