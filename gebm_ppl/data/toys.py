"""The paper's toy: 3-D data on a deformed 2-sphere from a known generator G: R² → R³ and a known energy.

Generator: z ~ N(0, I₂) is mapped onto the unit sphere by the inverse stereographic projection
u(z) = (2z₁, 2z₂, ‖z‖² − 1) / (‖z‖² + 1) (z = 0 is the south pole), then pushed along u to the
deformed radius r(u) = 1 + 0.2 (u_x² − u_y²) + 0.15 sin(3 u_z + 0.5): G(z) = r(u) u.
Energy: E(x) = −log( (1/K) Σ_k exp(κ (⟨x/‖x‖, μ_k⟩ − 1)) ) ≥ 0, with K = 3 unit directions μ_k
and κ = 3; the data are the GEBM q(x) ∝ exp(−E(x)) on the generator's support, drawn exactly by
rejection (accept a generator draw with probability exp(−E) ≤ 1).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["SphereEnergy", "SphereGenerator", "SphereToy", "deformed_radius"]


def deformed_radius(u: Tensor) -> Tensor:
    """r(u) = 1 + 0.2 (u_x² − u_y²) + 0.15 sin(3 u_z + 0.5) for unit directions ``u`` ``[..., 3]`` → ``[...]``."""
    return 1.0 + 0.2 * (u[..., 0] ** 2 - u[..., 1] ** 2) + 0.15 * torch.sin(3.0 * u[..., 2] + 0.5)


class SphereGenerator(nn.Module):
    """G(z) = r(u(z)) u(z): latent ``[..., 2]`` → points ``[..., 3]`` on the deformed sphere (no parameters)."""

    latent_dim = 2
    dim = 3

    def forward(self, z: Tensor) -> Tensor:
        if z.shape[-1] != 2:
            raise ValueError(f"expected latent points [..., 2]. Got shape {tuple(z.shape)}.")
        q = (z * z).sum(-1, keepdim=True)
        u = torch.cat([2.0 * z, q - 1.0], -1) / (q + 1.0)
        return deformed_radius(u).unsqueeze(-1) * u


class SphereEnergy(nn.Module):
    """E(x) = −log mean_k exp(κ (⟨x/‖x‖, μ_k⟩ − 1)) ≥ 0: ``[..., 3]`` → ``[...]``, minimal (0) along the μ_k."""

    def __init__(self, kappa: float = 3.0):
        super().__init__()
        mu = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, -0.3], [-0.5, 0.87, -0.3]])
        self.register_buffer("directions", mu / mu.norm(dim=-1, keepdim=True))
        self.kappa = float(kappa)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != 3:
            raise ValueError(f"expected points [..., 3]. Got shape {tuple(x.shape)}.")
        u = x / x.norm(dim=-1, keepdim=True)
        cos = u @ self.directions.to(u.dtype).T
        k = self.directions.shape[0]
        return -(torch.logsumexp(self.kappa * (cos - 1.0), -1) - math.log(k))


class SphereToy:
    """Exact draws from a known GEBM on a deformed 2-sphere in R³, and measures against held-out data.

    Attributes:
        generator: :class:`SphereGenerator` (G: R² → R³).
        energy: :class:`SphereEnergy` (E ≥ 0).
        seed: seeds the internal generator used when ``sample`` gets none (successive calls differ).

    Example:
        >>> toy = SphereToy(seed=0)
        >>> x = toy.sample(1000)
        >>> bool(toy.manifold_error(x).max() < 1e-5)
        True
    """

    latent_dim = 2
    dim = 3

    def __init__(self, seed: int = 0, kappa: float = 3.0):
        self.seed = int(seed)
        self.generator = SphereGenerator()
        self.energy = SphereEnergy(kappa)
        self._gen = torch.Generator().manual_seed(self.seed)

    def _g(self, generator: torch.Generator | None) -> torch.Generator:
        return self._gen if generator is None else generator

    @staticmethod
    def _n(n: int) -> int:
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
            raise ValueError(f"'n' should be a positive integer. Got {n!r}.")
        return int(n)

    @torch.no_grad()
    def sample_base(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``[n, 3]`` generator draws G(z), z ~ N(0, I₂) (the base, not the data)."""
        z = torch.randn(self._n(n), 2, generator=self._g(generator))
        return self.generator(z)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``[n, 3]`` exact draws from q ∝ exp(−E) on the support of G, by rejection from the generator."""
        n = self._n(n)
        g = self._g(generator)
        out: list[Tensor] = []
        have = 0
        while have < n:
            x = self.sample_base(max(4 * (n - have), 256), generator=g)
            keep = torch.rand(len(x), generator=g) < torch.exp(-self.energy(x))
            out.append(x[keep])
            have += int(keep.sum())
        return torch.cat(out)[:n]

    @staticmethod
    def radius(x) -> Tensor:
        """‖x‖, ``[...]``."""
        return torch.as_tensor(x).norm(dim=-1)

    def surface_radius(self, x) -> Tensor:
        """The deformed sphere's radius r(x/‖x‖) in the direction of ``x``, ``[...]``."""
        x = torch.as_tensor(x)
        return deformed_radius(x / x.norm(dim=-1, keepdim=True))

    def manifold_error(self, x) -> Tensor:
        """|‖x‖ − r(x/‖x‖)|: the distance along the ray from ``x`` to the surface, ``[...]``."""
        return (self.radius(x) - self.surface_radius(x)).abs()

    @torch.no_grad()
    def log_partition(self, num_samples: int = 1_000_000, seed: int = 0) -> tuple[float, float]:
        """Monte Carlo A = log E_z[exp(−E(G(z)))] and its standard error (delta method)."""
        w = torch.exp(-self.energy(self.sample_base(num_samples, torch.Generator().manual_seed(seed))).double())
        mean = float(w.mean())
        return math.log(mean), float(w.std() / math.sqrt(len(w)) / mean)

    def dataset(self, n_train: int = 2000, n_val: int = 500, n_test: int = 2000, seed: int | None = None):
        """Fresh exact draws as a :class:`~gebm_ppl.data.UCIData` (float32 splits, metadata name ``"sphere-toy"``)."""
        from .load import UCIData

        seed = self.seed if seed is None else int(seed)
        g = torch.Generator().manual_seed(seed)
        splits = [self.sample(k, generator=g).numpy().astype(np.float32) for k in (n_train, n_val, n_test)]
        meta = {"name": "sphere-toy", "protocol": "toy", "dim": 3, "seed": seed,
                "sizes": {k: len(s) for k, s in zip(("train", "val", "test"), splits, strict=True)},
                "energy": {"kappa": self.energy.kappa, "directions": self.energy.directions.tolist()}}  # fmt: skip
        return UCIData(*splits, metadata=meta)

    def compare(self, x, reference, bandwidth: float | None = None) -> dict:
        """Measures of model samples ``x`` ``[N, 3]`` against held-out ``reference`` draws ``[M, 3]``.

        Keys: ``mmd`` (unbiased RBF MMD², bandwidth = median pairwise distance of ``reference`` unless
        given, so that it is the same for every model), ``radius_w1`` and ``radius_ks`` (1-D
        Wasserstein-1 distance and Kolmogorov–Smirnov statistic between the radii ‖x‖),
        ``manifold_error`` (mean |‖x‖ − r(x/‖x‖)|), ``bandwidth``, ``n``.
        """
        from scipy import stats

        from ..metrics import median_bandwidth, mmd

        x = torch.as_tensor(x, dtype=torch.float64)
        ref = torch.as_tensor(reference, dtype=torch.float64)
        for name, v in (("x", x), ("reference", ref)):
            if v.ndim != 2 or v.shape[1] != 3 or len(v) < 2:
                raise ValueError(f"'{name}' should be points [N, 3] with N >= 2. Got shape {tuple(v.shape)}.")
        if bandwidth is None:
            bandwidth = median_bandwidth(ref[: len(ref) // 2].numpy(), ref[len(ref) // 2 :].numpy())
        rx, rr = self.radius(x).numpy(), self.radius(ref).numpy()
        return {
            "mmd": mmd(x.numpy(), ref.numpy(), bandwidth=bandwidth),
            "radius_w1": float(stats.wasserstein_distance(rx, rr)),
            "radius_ks": float(stats.ks_2samp(rx, rr).statistic),
            "manifold_error": float(self.manifold_error(x).mean()),
            "bandwidth": float(bandwidth),
            "n": len(x),
        }
