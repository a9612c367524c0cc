"""Discriminator optimal transport (DOT, Tanaka 2019) in latent space: an optimiser, batched over chains.

Each draw starts from a fresh z₀ ∼ η = N(0, I) and moves it deterministically to a minimiser of

.. math:: f_{z_0}(z) = \\lVert z - z_0 \\rVert_2 + V(z) / L, \\qquad V(z) = U(z) - \\tfrac12 \\lVert z \\rVert^2,

where V is the energy term of the latent potential (T·E(G_θ z) for a GEBM; for any other potential, its
part beyond the prior's ½‖z‖²) and L the largest ‖∇_z V‖ over ``lipschitz_samples`` prior draws per chain
(so the constant is measured in latent space, on the energy term; ``lipschitz`` fixes it instead).
The iteration is proximal gradient descent: a gradient step on V/L, then the exact proximal map of the
norm, z ← z₀ + max(0, 1 − γ/‖y − z₀‖)(y − z₀), which handles the kink of ‖z − z₀‖ at z₀.

What it targets: not ν. It returns the push-forward of η by the map z₀ ↦ argmin f_{z₀}. For convex V
that map is: stay at z₀ if ‖∇V(z₀)‖ ≤ L, otherwise stop at the point z of the level set ‖∇V(z)‖ = L
with z₀ − z = (‖z₀ − z‖/L)·∇V(z). For V = a z²/2 in 1-D it is the clip z* = clip(z₀, −L/a, L/a). With L
estimated from V, f changes by the factor 1/T under V → T·V only through L, so the map does not depend
on the temperature; a fixed ``lipschitz`` makes it depend on T.

Reference: [1] Tanaka (2019) "Discriminator optimal transport" https://arxiv.org/abs/1910.06832
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from .driver import Kernel, batched_runner, potential_and_grad
from .registry import Option, SamplerSpec, register_sampler

__all__ = ["DOTState", "KERNEL", "SPEC", "estimate_lipschitz", "init", "step", "stats"]


class DOTState(NamedTuple):
    """State of C DOT "chains" (each draw is a fresh optimisation, independent of the previous one).

    Fields:
        z: the transported points ``[C, d]``.
        z0: their starting points z₀ ∼ N(0, I) ``[C, d]``.
        potential: U(z) ``[C]``.
        lipschitz: L per chain ``[C]``.
    """

    z: Tensor
    z0: Tensor
    potential: Tensor
    lipschitz: Tensor


def _energy_grad(potential: Callable[[Tensor], Tensor], z: Tensor) -> tuple[Tensor, Tensor]:
    """U(z) and ∇V(z) = ∇U(z) − z for ``[C, d]`` points."""
    u, g = potential_and_grad(potential, z)
    return u, g - z


def estimate_lipschitz(
    potential: Callable[[Tensor], Tensor], num_chains: int, dim: int, num: int, generator: torch.Generator,
    dtype: torch.dtype, device: torch.device,
) -> Tensor:
    """L_c = max_m ‖∇V(z_{c,m})‖ over ``num`` prior draws z ∼ N(0, I) per chain → ``[num_chains]``."""
    z = torch.randn((num_chains * num, dim), generator=generator, dtype=dtype, device=device)
    _, g = _energy_grad(potential, z)
    return g.norm(dim=-1).reshape(num_chains, num).amax(-1).clamp_min(torch.finfo(dtype).tiny)


def init(
    z: Tensor,
    potential: Callable[[Tensor], Tensor],
    generator: torch.Generator | None = None,
    *,
    lipschitz: float | None = None,
    lipschitz_samples: int = 256,
    **params,
) -> DOTState:
    """Hold ``z`` ``[C, d]`` (DOT draws do not depend on it) and fix L: ``lipschitz`` or its estimate."""
    z = z.detach()
    c, d = z.shape
    if lipschitz is None:
        if generator is None:
            raise ValueError("DOT needs a torch.Generator to estimate its Lipschitz constant.")
        lip = estimate_lipschitz(potential, c, d, lipschitz_samples, generator, z.dtype, z.device)
    else:
        lip = torch.full((c,), float(lipschitz), dtype=z.dtype, device=z.device)
    with torch.no_grad():
        u = potential(z)
    return DOTState(z, z, u, lip)


def step(
    state: DOTState,
    potential: Callable[[Tensor], Tensor],
    generator: torch.Generator,
    *,
    step_size: float,
    num_steps: int,
    **params,
) -> DOTState:
    """Draw z₀ ∼ N(0, I) per chain and run ``num_steps`` proximal-gradient steps on ‖z − z₀‖ + V(z)/L.

    y = z − (γ/L)∇V(z), then z ← z₀ + max(0, 1 − γ/‖y − z₀‖)(y − z₀). One gradient per chain and step.
    """
    z0 = torch.randn(state.z.shape, generator=generator, dtype=state.z.dtype, device=state.z.device)
    scale = (step_size / state.lipschitz).unsqueeze(-1)
    z = z0
    for _ in range(num_steps):
        _, g = _energy_grad(potential, z)
        y = z - scale * g
        r = y - z0
        norm = r.norm(dim=-1, keepdim=True)
        shrink = torch.clamp(1.0 - step_size / norm.clamp_min(torch.finfo(z.dtype).tiny), min=0.0)
        z = z0 + shrink * r
    with torch.no_grad():
        u = potential(z)
    return DOTState(z, z0, u, state.lipschitz)


def stats(state: DOTState) -> dict[str, Tensor]:
    """Per-draw statistics: ``lp`` = −U(z), ``transport_cost`` ‖z − z₀‖ and ``lipschitz`` L."""
    return {"lp": -state.potential, "transport_cost": (state.z - state.z0).norm(dim=-1), "lipschitz": state.lipschitz}


KERNEL = Kernel(init, step, stats)

SPEC = register_sampler(
    SamplerSpec(
        name="dot",
        summary="discriminator optimal transport (an optimiser, not an exact sampler)",
        gradient_based=True,
        options=(
            Option("step_size", float, 0.1, "proximal-gradient step size gamma"),
            Option("num_steps", int, 50, "optimisation steps per draw", minimum=1),
            Option("lipschitz", float, None, "L; None estimates it from prior draws", allow_none=True),
            Option("lipschitz_samples", int, 256, "prior draws per chain for the estimate of L", minimum=1),
        ),
        torch_runner=batched_runner(KERNEL),
        jax_kernel="gebm_ppl.numpyro.kernels:DOT",
        burn_in=False,
        stats=("lp", "transport_cost", "lipschitz"),
    )
)
