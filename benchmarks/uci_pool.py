"""A pool of base samples for KALE on a frozen base: G(z) drawn once, then reused across energy steps.

KALE's energy step needs ``noise_factor × batch`` base samples G(z); a frozen base's samples do not
change during training, so drawing them afresh each step only buys more independent draws. For bases
whose G is slow (an autoregressive MAF inverts in D sequential passes per layer; a spline flow's
inverse solves a quadratic per bin and feature), :class:`PooledBase` draws a pool X_1..X_N = G(z_1..z_N)
once, and its generator maps a latent z to the pool entry ⌊Φ(z_1)·N⌋ (Φ the standard normal CDF, so
z ~ N(0, I) picks a uniform entry). KALE then trains the energy against the pool's empirical
distribution, an N-sample estimate of G; the density (``log_prob``, ``inverse``) is the base's own.
The benchmark swaps the real base back before evaluation, so Â and the test NLL use fresh draws of G.
"""

from __future__ import annotations

import math
import time

import torch
from torch import Tensor

from gebm_ppl.bases import Base

__all__ = ["PooledBase"]


class PooledBase(Base):
    """The frozen ``base`` with a pool of ``num_samples`` draws as its generator (see the module docstring).

    Args:
        base: a density base (its parameters are not trained through the pool).
        num_samples: N, the pool size.
        seed: seed of the pool's latent draws.
        batch_size: draws per forward pass while the pool is built.
    """

    has_density = True

    def __init__(self, base: Base, num_samples: int, seed: int, batch_size: int = 10_000):
        super().__init__()
        if int(num_samples) < 1:
            raise ValueError(f"'num_samples' should be >= 1. Got {num_samples!r}.")
        self.base = base
        self.dim, self.latent_dim = base.dim, base.latent_dim
        g = torch.Generator().manual_seed(int(seed))
        p = next(base.parameters())
        c0 = time.process_time()
        chunks = []
        was_training = base.training
        base.eval()
        with torch.no_grad():
            for start in range(0, int(num_samples), batch_size):
                n = min(batch_size, int(num_samples) - start)
                z = torch.randn(n, base.latent_dim, generator=g).to(device=p.device, dtype=p.dtype)
                chunks.append(base(z))
        base.train(was_training)
        self.register_buffer("pool", torch.cat(chunks), persistent=False)
        self.build_cpu_time = time.process_time() - c0
        """CPU seconds spent drawing the pool."""

    def forward(self, z: Tensor) -> Tensor:
        """The pool entry ⌊Φ(z_1)·N⌋ for each latent z, ``[..., d] → [..., D]``."""
        u = 0.5 * (1 + torch.erf(z[..., 0].detach() / math.sqrt(2)))
        n = self.pool.shape[0]
        return self.pool[(u * n).long().clamp(0, n - 1)]

    def inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The base's own G⁻¹(x) and log|det ∂G⁻¹/∂x|."""
        return self.base.inverse(x)
