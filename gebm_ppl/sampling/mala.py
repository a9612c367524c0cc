"""Metropolis-adjusted Langevin algorithm (MALA) in latent space, batched over chains."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from .driver import Kernel, batched_runner, potential_and_grad
from .registry import SCHEDULE_OPTIONS, Option, SamplerSpec, register_sampler

__all__ = ["KERNEL", "MALAState", "init", "log_proposal", "step", "stats"]


class MALAState(NamedTuple):
    """State of C MALA chains.

    Fields:
        z: positions ``[C, d]``.
        potential: U(z) ``[C]``.
        grad: ∇U(z) ``[C, d]``.
        accept_prob: acceptance probability of the last proposal ``[C]``.
        accepted: whether the last proposal was accepted ``[C]`` (bool).
    """

    z: Tensor
    potential: Tensor
    grad: Tensor
    accept_prob: Tensor
    accepted: Tensor


def init(z: Tensor, potential: Callable[[Tensor], Tensor], **params) -> MALAState:
    """Start C chains at ``z`` ``[C, d]`` (one gradient evaluation per chain)."""
    u, g = potential_and_grad(potential, z)
    return MALAState(z.detach(), u, g, torch.ones_like(u), torch.ones_like(u, dtype=torch.bool))


def log_proposal(z_to: Tensor, z_from: Tensor, grad_from: Tensor, step_size: float) -> Tensor:
    """log q(z_to | z_from) + const = −‖z_to − z_from + γ∇U(z_from)‖² / (4γ) for the Langevin proposal."""
    diff = z_to - z_from + step_size * grad_from
    return -(diff * diff).sum(-1) / (4.0 * step_size)


def step(
    state: MALAState,
    potential: Callable[[Tensor], Tensor],
    generator: torch.Generator,
    *,
    step_size: float,
    **params,
) -> MALAState:
    """Propose z' = z − γ∇U(z) + √(2γ) ξ and accept with probability min(1, e^{U(z) − U(z')} q(z | z')/q(z' | z)).

    The Metropolis–Hastings correction makes ν ∝ e^{−U} exactly invariant for every γ (the ULA
    proposal alone is biased by O(γ)); a step-size schedule keeps each transition ν-invariant.
    One gradient per chain (at the proposal).
    """
    z = state.z
    noise = torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
    z_new = z - step_size * state.grad + math.sqrt(2.0 * step_size) * noise
    u_new, g_new = potential_and_grad(potential, z_new)
    log_ratio = (
        state.potential - u_new
        + log_proposal(z, z_new, g_new, step_size)
        - log_proposal(z_new, z, state.grad, step_size)
    )
    log_ratio = torch.nan_to_num(log_ratio, nan=-math.inf)  # a non-finite proposal is rejected
    accept_prob = torch.exp(torch.clamp(log_ratio, max=0.0))
    uniform = torch.rand(accept_prob.shape, generator=generator, dtype=accept_prob.dtype, device=accept_prob.device)
    accepted = uniform < accept_prob
    keep = accepted.unsqueeze(-1)
    return MALAState(
        torch.where(keep, z_new, z),
        torch.where(accepted, u_new, state.potential),
        torch.where(keep, g_new, state.grad),
        accept_prob,
        accepted,
    )


def stats(state: MALAState) -> dict[str, Tensor]:
    """Per-draw statistics: ``lp`` = −U(z), ``acceptance_rate`` (the acceptance probability) and ``accepted``."""
    return {"lp": -state.potential, "acceptance_rate": state.accept_prob, "accepted": state.accepted}


KERNEL = Kernel(init, step, stats)

SPEC = register_sampler(
    SamplerSpec(
        name="mala",
        summary="Metropolis-adjusted Langevin (exact)",
        gradient_based=True,
        options=(
            Option("step_size", float, 0.01, "Langevin step size gamma"),
            *SCHEDULE_OPTIONS,
            Option("thin", int, 1, "transitions per kept draw", minimum=1),
        ),
        torch_runner=batched_runner(KERNEL),
        jax_kernel="gebm_ppl.numpyro.kernels:MALA",
        stats=("lp", "acceptance_rate", "accepted", "step_size"),
    )
)
