"""Kinetic (underdamped) Langevin dynamics in latent space, batched over chains."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from .driver import Kernel, batched_runner, potential_and_grad
from .registry import SCHEDULE_OPTIONS, Option, SamplerSpec, register_sampler

__all__ = ["KineticState", "init", "step", "stats", "KERNEL", "SPEC"]


class KineticState(NamedTuple):
    """State of C kinetic Langevin chains.

    Fields:
        z: positions ``[C, d]``, the points where the gradient is evaluated.
        v: velocities ``[C, d]`` (zero at the start).
        potential: U(z) ``[C]``.
        grad: ∇U(z) ``[C, d]``.
    """

    z: Tensor
    v: Tensor
    potential: Tensor
    grad: Tensor


def init(z: Tensor, potential: Callable[[Tensor], Tensor], **params) -> KineticState:
    """Start C chains at ``z`` ``[C, d]`` with zero velocity (one gradient evaluation per chain)."""
    u, g = potential_and_grad(potential, z)
    return KineticState(z.detach(), torch.zeros_like(z), u, g)


def step(
    state: KineticState,
    potential: Callable[[Tensor], Tensor],
    generator: torch.Generator,
    *,
    step_size: float,
    friction: float,
    **params,
) -> KineticState:
    """One step of the splitting A(h/2) B(h/2) O(h) B(h/2) A(h/2) of underdamped Langevin dynamics.

    dz = v dt, dv = −∇U(z) dt − κ v dt + √(2κ) dW (unit mass, target ∝ exp(−U(z) − ½‖v‖²)).
    With step h and friction κ (the scheme of Arbel et al.'s code): a half step in z, the gradient
    at the midpoint, the Ornstein–Uhlenbeck refresh v ← e^{−κh}(v − (h/2)∇U) + √(1 − e^{−2κh}) ξ,
    another half kick v ← v − (h/2)∇U and a half step in z. The state holds the midpoints, so that the
    two half steps in z between consecutive gradients merge into one full step: the chain is the same,
    observed where its gradient and potential are known (one gradient per chain and step). Its
    stationary law is O(h²) from the target: for U = ½z² the position variance is 1/(1 − h²/4).
    """
    h = step_size
    decay = math.exp(-friction * h)
    noise = torch.randn(state.v.shape, generator=generator, dtype=state.v.dtype, device=state.v.device)
    v = decay * (state.v - 0.5 * h * state.grad) + math.sqrt(-math.expm1(-2.0 * friction * h)) * noise
    v = v - 0.5 * h * state.grad
    z = state.z + h * v  # the half step of this transition and the half step of the next one
    u, g = potential_and_grad(potential, z)
    return KineticState(z, v, u, g)


def stats(state: KineticState) -> dict[str, Tensor]:
    """Per-draw statistics: ``lp`` = −U(z)."""
    return {"lp": -state.potential}


KERNEL = Kernel(init, step, stats)

SPEC = register_sampler(
    SamplerSpec(
        name="kinetic",
        summary="underdamped (kinetic) Langevin",
        gradient_based=True,
        options=(
            Option("step_size", float, 0.1, "step size h"),
            Option("friction", float, 1.0, "friction kappa"),
            *SCHEDULE_OPTIONS,
            Option("thin", int, 1, "transitions per kept draw", minimum=1),
        ),
        torch_runner=batched_runner(KERNEL),
        jax_kernel="gebm_ppl.numpyro.kernels:Kinetic",
        stats=("lp", "step_size"),
    )
)
