"""Shared test helpers: the closed-form Gaussian GEBM and moment asserts."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor

import gebm_ppl as gp


class GaussianCase(NamedTuple):
    """A GEBM that is Gaussian in closed form.

    Base N(m, Σ) with G(z) = m + L z (Σ = L Lᵀ) and energy E(x) = ½ (x − c)ᵀ P (x − c):
    Q = N(μ, Λ⁻¹) with Λ = Σ⁻¹ + P, μ = Λ⁻¹(Σ⁻¹ m + P c), and
    A = −½ log det(I + Σ P) − ½ δᵀ P (I + Σ P)⁻¹ δ with δ = m − c.
    In latent space ν = N(μ_z, Λ_z⁻¹) with Λ_z = I + Lᵀ P L and μ_z = −Λ_z⁻¹ Lᵀ P δ.
    """

    gebm: gp.GEBM
    mean: Tensor
    cov: Tensor
    log_partition: float
    latent_mean: Tensor
    latent_cov: Tensor


def gaussian_case(
    dim: int = 3, seed: int = 0, dtype: torch.dtype = torch.float64, strength: float = 1.0
) -> GaussianCase:
    """Random affine base + quadratic energy, with the exact GEBM moments and log-partition."""
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(dim, generator=g, dtype=dtype)
    a = torch.randn(dim, dim, generator=g, dtype=dtype) / dim**0.5
    L = torch.linalg.cholesky(a @ a.T + 0.5 * torch.eye(dim, dtype=dtype))
    c = torch.randn(dim, generator=g, dtype=dtype)
    W = strength * torch.randn(dim, dim, generator=g, dtype=dtype) / dim**0.5
    with torch.no_grad():
        base = gp.AffineBase(dim).to(dtype)
        base.loc.copy_(m)
        base.raw_tril.copy_(L.tril(-1) + torch.diag(torch.log(torch.diagonal(L))))
        energy = gp.QuadraticEnergy(dim).to(dtype)
        energy.center.copy_(c)
        energy.factor.copy_(W)
    gebm = gp.GEBM(base, energy)
    eye = torch.eye(dim, dtype=dtype)
    S = L @ L.T
    P = W @ W.T
    prec = torch.linalg.inv(S) + P
    cov = torch.linalg.inv(prec)
    mean = cov @ (torch.linalg.solve(S, m) + P @ c)
    d = m - c
    log_z = -0.5 * torch.logdet(eye + S @ P) - 0.5 * d @ P @ torch.linalg.solve(eye + S @ P, d)
    prec_z = eye + L.T @ P @ L
    cov_z = torch.linalg.inv(prec_z)
    mean_z = -cov_z @ L.T @ P @ d
    with torch.no_grad():
        gebm.log_partition.fill_(float(log_z))
    return GaussianCase(gebm, mean, cov, float(log_z), mean_z, cov_z)


def assert_moments(samples: Tensor, mean: Tensor, cov: Tensor, mean_tol: float, cov_tol: float) -> None:
    """Sample mean and covariance of ``[N, D]`` samples within absolute tolerances (max-norm)."""
    samples = samples.to(mean.dtype)
    emp_mean = samples.mean(0)
    emp_cov = torch.cov(samples.T)
    err_mean = (emp_mean - mean).abs().max().item()
    err_cov = (emp_cov - cov).abs().max().item()
    assert err_mean < mean_tol, f"mean error {err_mean:.4f} >= {mean_tol} (got {emp_mean}, want {mean})"
    assert err_cov < cov_tol, f"covariance error {err_cov:.4f} >= {cov_tol} (got {emp_cov}, want {cov})"


RED_WINE = "wine-quality/winequality-red.csv"
SHARED_UCI = Path(__file__).resolve().parents[2] / "shared" / "data" / "uci"


def uci_dir() -> Path:
    """The folder holding the UCI files: the first entry of $GEBM_DATA_DIR (a path list) with red-wine,
    else ``../shared/data/uci`` beside the checkout (tests that need the files skip when it is absent)."""
    return next((d for d in gp.data.data_dirs() if (d / RED_WINE).is_file()), SHARED_UCI)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """torch on one thread inside the block (small nets on a shared machine), restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
