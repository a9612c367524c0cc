"""Unadjusted (overdamped) Langevin algorithm in latent space, batched over chains."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from .driver import Kernel, batched_runner, potential_and_grad
from .registry import SCHEDULE_OPTIONS, Option, SamplerSpec, register_sampler

__all__ = ["ULAState", "init", "step", "stats", "KERNEL", "SPEC"]


class ULAState(NamedTuple):
    """State of C ULA chains.

    Fields:
        z: positions ``[C, d]``.
        potential: U(z) ``[C]``.
        grad: ∇U(z) ``[C, d]`` (cached for the next step).
    """

    z: Tensor
    potential: Tensor
    grad: Tensor


def init(z: Tensor, potential: Callable[[Tensor], Tensor], **params) -> ULAState:
    """Start C chains at ``z`` ``[C, d]`` (one gradient evaluation per chain)."""
    u, g = potential_and_grad(potential, z)
    return ULAState(z.detach(), u, g)


def step(
    state: ULAState,
    potential: Callable[[Tensor], Tensor],
    generator: torch.Generator,
    *,
    step_size: float,
    **params,
) -> ULAState:
    """One ULA step z ← z − γ∇U(z) + √(2γ) ξ, ξ ∼ N(0, I), for every chain.

    The Euler–Maruyama discretisation of dz = −∇U(z) dt + √2 dW; without a Metropolis correction its
    stationary law is biased by O(γ) (for N(0, 1): variance 1/(1 − γ/2)). One gradient per chain.
    """
    noise = torch.randn(state.z.shape, generator=generator, dtype=state.z.dtype, device=state.z.device)
    z = state.z - step_size * state.grad + math.sqrt(2.0 * step_size) * noise
    u, g = potential_and_grad(potential, z)
    return ULAState(z, u, g)


def stats(state: ULAState) -> dict[str, Tensor]:
    """Per-draw statistics: ``lp`` = −U(z)."""
    return {"lp": -state.potential}


KERNEL = Kernel(init, step, stats)

SPEC = register_sampler(
    SamplerSpec(
        name="ula",
        summary="overdamped (unadjusted) Langevin",
        gradient_based=True,
        options=(
            Option("step_size", float, 0.01, "Langevin step size gamma"),
            *SCHEDULE_OPTIONS,
            Option("thin", int, 1, "transitions per kept draw", minimum=1),
        ),
        torch_runner=batched_runner(KERNEL),
        jax_kernel="gebm_ppl.numpyro.kernels:ULA",
        stats=("lp", "step_size"),
    )
)
