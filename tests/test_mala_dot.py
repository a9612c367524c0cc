"""MALA, DOT, step-size schedules and temperature, on closed forms, with both backends."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import gebm_ppl as gp
from gebm_ppl.sampling import dot, sample_potential
from gebm_ppl.sampling.driver import CountingPotential
from tests.common import assert_moments, gaussian_case

try:
    import numpyro  # noqa: F401

    HAS_NUMPYRO = True
except ImportError:  # pragma: no cover
    HAS_NUMPYRO = False

needs_numpyro = pytest.mark.skipif(not HAS_NUMPYRO, reason="NumPyro not installed")


def _harmonic(z):
    return 0.5 * (z * z).sum(-1)


def _latent(idata):
    return torch.tensor(np.array(idata.posterior["z"].values)).reshape(-1, idata.posterior["z"].shape[-1])


def _closed_form(case, temperature):
    """ν_T = N(μ_z, Λ_z⁻¹), Λ_z = I + T·LᵀPL, μ_z = −Λ_z⁻¹ T LᵀPδ (δ = m − c), from U = ½‖z‖² + T·E(m + Lz)."""
    d = case.latent_mean.shape[0]
    z0 = torch.zeros(d, dtype=torch.float64)

    def energy(z):
        return case.gebm.latent_potential(z, 1.0) - 0.5 * (z * z).sum(-1)

    hess = temperature * torch.autograd.functional.hessian(energy, z0)  # T·LᵀPL
    grad0 = temperature * torch.autograd.functional.jacobian(energy, z0)  # T·LᵀPδ
    prec = torch.eye(d, dtype=torch.float64) + hess
    cov = torch.linalg.inv(prec)
    return -cov @ grad0, cov


def test_mala_is_exact_where_ula_is_biased():
    # U = ½‖z‖², γ = 0.5: ULA's AR(1) chain z' = (1 − γ)z + √(2γ)ξ has variance 1/(1 − γ/2) = 4/3; MALA's is 1.
    kw = dict(num_samples=1500, warmup_steps=100, step_size=0.5, seed=1)
    start = torch.zeros(8, 2, dtype=torch.float64)
    mala = _latent(sample_potential(_harmonic, start, "mala", **kw))
    ula = _latent(sample_potential(_harmonic, start, "ula", **kw))
    # 12000 MALA draws (lag-1 autocorrelation ≈ 0.5): standard error of a variance ≈ 0.025
    np.testing.assert_allclose(mala.var(0).numpy(), 1.0, atol=0.07)
    np.testing.assert_allclose(ula.var(0).numpy(), 4 / 3, atol=0.1)
    assert mala.mean(0).abs().max() < 0.06


def test_mala_recovers_the_gaussian_closed_form():
    case = gaussian_case(3, seed=2)
    idata = gp.sample_latent(case.gebm, "mala", num_samples=1500, warmup_steps=200, num_chains=8, seed=0,
                             step_size=0.15)
    stats = idata.sample_stats
    acc = stats["acceptance_rate"].values
    assert stats["accepted"].dtype == bool and 0.5 < acc.mean() < 1.0
    assert abs(stats["accepted"].values.mean() - acc.mean()) < 0.03  # accepted with the recorded probability
    # 12000 draws, integrated autocorrelation ≲ 10: MC error of means/covariances ≲ 0.04
    assert_moments(_latent(idata), case.latent_mean, case.latent_cov, mean_tol=0.12, cov_tol=0.12)
    x = torch.tensor(np.array(idata.posterior["x"].values)).reshape(-1, 3)
    assert_moments(x, case.mean, case.cov, mean_tol=0.15, cov_tol=0.2)
    assert idata.attrs["num_grad_evals"] == idata.attrs["num_energy_evals"] == 8 * (1 + 200 + 1500)


def test_temperature_scales_the_energy_as_the_closed_form_says():
    # U_T = ½‖z‖² + T·E(G z): ν_T = N(μ_T, Λ_T⁻¹) with Λ_T = I + T·LᵀPL; T = 4 is far from T = 1.
    case = gaussian_case(2, seed=3)
    mean4, cov4 = _closed_form(case, 4.0)
    mean1, cov1 = _closed_form(case, 1.0)
    torch.testing.assert_close(mean1, case.latent_mean)
    torch.testing.assert_close(cov1, case.latent_cov)
    assert (cov4 - cov1).abs().max() > 0.1 or (mean4 - mean1).abs().max() > 0.3
    idata = gp.sample_latent(case.gebm, "mala", num_samples=1500, warmup_steps=200, num_chains=8, seed=0,
                             temperature=4.0, step_size=0.05)
    assert idata.attrs["temperature"] == 4.0
    assert_moments(_latent(idata), mean4, cov4, mean_tol=0.08, cov_tol=0.06)


def test_step_size_schedule():
    # γ_t = γ₀ ρ^⌊t/k⌋ with t counting every transition, warmup included; draw j follows transition 5 + j.
    case = gaussian_case(2, seed=0)
    for method in ("ula", "kinetic", "mala"):
        idata = gp.sample_latent(case.gebm, method, num_samples=12, warmup_steps=5, num_chains=2, seed=0,
                                 step_size=0.2, step_size_decay=0.5, decay_every=4)
        t = 5 + np.arange(12)
        want = 0.2 * 0.5 ** (t // 4)
        np.testing.assert_allclose(idata.sample_stats["step_size"].values, np.broadcast_to(want, (2, 12)))
        assert idata.attrs["step_size_decay"] == 0.5 and idata.attrs["decay_every"] == 4
    with pytest.raises(ValueError, match="'step_size_decay' should be a number > 0 and <= 1"):
        gp.sample_latent(case.gebm, "ula", num_samples=2, step_size_decay=1.5)
    with pytest.raises(ValueError, match="'decay_every'"):
        gp.sample_latent(case.gebm, "mala", num_samples=2, decay_every=0)


@pytest.mark.parametrize("method", ["ula", "mala"])
def test_with_zero_energy_latent_samplers_reproduce_the_generator(method):
    # Control: E ≡ 0 makes ν = N(0, I), so x = G(z) must follow the generator's own law; G is a
    # nonlinear (random RealNVP) map, its moments estimated from 200k prior draws.
    torch.manual_seed(0)
    base = gp.RealNVP(2, hidden_features=8, num_layers=2).double()
    energy = gp.QuadraticEnergy(2).double()
    with torch.no_grad():
        energy.factor.zero_()
    gebm = gp.GEBM(base, energy)
    with torch.no_grad():
        x_ref = base(torch.randn(200_000, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    step = 0.02 if method == "ula" else 0.8  # ULA's bias: variance 1/(1 − γ/2) ≈ 1.01
    idata = gp.sample_latent(gebm, method, num_samples=400, warmup_steps=100, num_chains=64, seed=2, step_size=step,
                             thin=5 if method == "ula" else 1)
    z = _latent(idata)
    x = torch.tensor(np.array(idata.posterior["x"].values)).reshape(-1, 2)
    assert_moments(z, torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64), 0.08, 0.1)
    scale = x_ref.std(0).max().item()
    assert_moments(x, x_ref.mean(0), torch.cov(x_ref.T), 0.08 * scale, 0.12 * scale**2)
    # and the quantiles of each coordinate of x (a distribution check beyond two moments)
    qs = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    assert (torch.quantile(x, qs, dim=0) - torch.quantile(x_ref, qs, dim=0)).abs().max() < 0.1 * scale


def _quadratic_1d(a: float):
    """G(z) = z and E(x) = ½ a x² in 1-D: V(z) = T·a z²/2."""
    base = gp.AffineBase(1).double()
    energy = gp.QuadraticEnergy(1).double()
    with torch.no_grad():
        base.loc.zero_()
        base.raw_tril.zero_()  # unit scale
        energy.center.zero_()
        energy.factor.fill_(math.sqrt(a))
    return gp.GEBM(base, energy)


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_dot_converges_to_the_clip_in_one_dimension(temperature):
    # argmin_z |z − z₀| + T·a z²/(2L) = clip(z₀, −L/(T a), L/(T a)) (subgradient: |T a z / L| ≤ 1 at z = z₀).
    a = 2.0
    gebm = _quadratic_1d(a)
    potential = CountingPotential(lambda z: gebm.latent_potential(z, temperature), 1, torch.float64)
    gen = torch.Generator().manual_seed(0)
    for lipschitz in (1.5, None):
        state = dot.init(torch.zeros(500, 1, dtype=torch.float64), potential, gen, lipschitz=lipschitz,
                         lipschitz_samples=64)
        state = dot.step(state, potential, gen, step_size=0.2, num_steps=400)
        bound = state.lipschitz / (temperature * a)  # fixed L: depends on T; estimated L: T cancels
        want = torch.maximum(torch.minimum(state.z0[:, 0], bound), -bound)
        # the unmoved points are exact; the moved ones converge linearly (factor 1 − γTa/L per step)
        torch.testing.assert_close(state.z[:, 0], want, atol=1e-6, rtol=0)
        moved = (state.z0[:, 0].abs() > bound).float().mean().item()
        if lipschitz is not None:  # P(|z₀| > L/(T a)) under N(0, 1)
            p = math.erfc(1.5 / (temperature * a) / math.sqrt(2))
            assert abs(moved - p) < 4 * math.sqrt(p * (1 - p) / 500)
        else:  # L = T a max|z_m| over 64 prior draws: the bound is that maximum, whatever T
            assert moved < 0.1
            torch.testing.assert_close(bound, bound[0].expand_as(bound), atol=10.0, rtol=0)  # finite, per chain


def test_dot_reaches_its_documented_fixed_points_on_the_gaussian_case():
    # V(z) = ½(z − b)ᵀA(z − b) + const. Fixed point of ‖z − z₀‖ + V/L: z₀ if ‖A(z₀ − b)‖ ≤ L, else
    # z = b + (I + sA)⁻¹(z₀ − b) with s > 0 solving ‖A(I + sA)⁻¹(z₀ − b)‖ = L.
    case = gaussian_case(3, seed=1)
    potential = CountingPotential(lambda z: case.gebm.latent_potential(z), 3, torch.float64)
    zero = torch.zeros(3, dtype=torch.float64)

    def energy(z):
        return case.gebm.latent_potential(z) - 0.5 * (z * z).sum(-1)

    A = torch.autograd.functional.hessian(energy, zero)
    b = -torch.linalg.solve(A, torch.autograd.functional.jacobian(energy, zero))
    eye = torch.eye(3, dtype=torch.float64)

    def fixed_point(z0, lip):
        r0 = z0 - b
        if (A @ r0).norm() <= lip:
            return z0

        def excess(s):
            return (A @ torch.linalg.solve(eye + s * A, r0)).norm() - lip

        lo, hi = 0.0, 1.0
        while excess(hi) > 0:
            hi *= 2
        for _ in range(80):
            lo, hi = ((lo + hi) / 2, hi) if excess((lo + hi) / 2) > 0 else (lo, (lo + hi) / 2)
        return b + torch.linalg.solve(eye + hi * A, r0)

    gen = torch.Generator().manual_seed(3)
    state = dot.init(torch.zeros(200, 3, dtype=torch.float64), potential, gen, lipschitz=2.0)
    state = dot.step(state, potential, gen, step_size=0.05, num_steps=600)
    want = torch.stack([fixed_point(state.z0[i], 2.0) for i in range(200)])
    moved = (state.z - state.z0).norm(dim=-1) > 1e-6
    assert 0.3 < moved.float().mean() < 1.0
    torch.testing.assert_close(state.z, want, atol=2e-3, rtol=0)
    # through sample_latent: independent draws, the recorded cost ‖z − z₀‖, L, and the counts
    idata = gp.sample_latent(case.gebm, "dot", num_samples=5, warmup_steps=50, num_chains=3, seed=0, num_steps=20,
                             lipschitz_samples=16)
    stats = idata.sample_stats
    assert set(stats.data_vars) >= {"lp", "transport_cost", "lipschitz"}
    assert idata.attrs["num_grad_evals"] == 3 * (16 + 5 * 20)  # warmup ignored: the draws are independent


@needs_numpyro
@pytest.mark.parametrize("method", ["ula", "kinetic", "mala", "imh"])
def test_numpyro_kernels_agree_with_torch_in_distribution(method):
    # Same kernel, same settings, both backends: moments of their draws against each other (ULA and kinetic
    # share the same O(γ) / O(h²) discretisation bias) and against the closed form (MALA, IMH: exact).
    case = gaussian_case(2, seed=4)
    settings = {"ula": dict(step_size=0.05), "kinetic": dict(step_size=0.2, friction=1.0),
                "mala": dict(step_size=0.3), "imh": {}}[method]
    runs = {
        backend: gp.sample_latent(case.gebm, method, backend, num_samples=1500, warmup_steps=200, num_chains=8,
                                  seed=0, **settings)
        for backend in ("pyro", "numpyro")
    }
    z = {b: _latent(r) for b, r in runs.items()}
    assert runs["numpyro"].attrs["num_grad_evals"] == runs["pyro"].attrs["num_grad_evals"]
    assert runs["numpyro"].attrs["num_energy_evals"] == runs["pyro"].attrs["num_energy_evals"]
    assert set(runs["numpyro"].sample_stats.data_vars) == set(runs["pyro"].sample_stats.data_vars)
    # 12000 draws per backend, integrated autocorrelation ≲ 20: MC error ≲ 0.04 per backend
    assert_moments(z["numpyro"], z["pyro"].mean(0), torch.cov(z["pyro"].T), 0.12, 0.12)
    if method in ("mala", "imh"):
        for b in z:
            assert_moments(z[b], case.latent_mean, case.latent_cov, 0.1, 0.1)
    if method == "mala":
        acc = {b: r.sample_stats["acceptance_rate"].values.mean() for b, r in runs.items()}
        assert abs(acc["pyro"] - acc["numpyro"]) < 0.03


@needs_numpyro
def test_numpyro_dot_matches_the_clip_and_the_schedule_is_shared():
    # 1-D quadratic, fixed L: every JAX DOT draw is clip(z₀, ±L/a); moved draws sit on the bound and the
    # moved fraction is P(|z₀| > L/a). Its cost ‖z − z₀‖ = max(|z₀| − L/a, 0).
    a, lip = 2.0, 1.5
    gebm = _quadratic_1d(a)
    idata = gp.sample_latent(gebm, "dot", "numpyro", num_samples=500, num_chains=2, seed=0, lipschitz=lip,
                             num_steps=200, step_size=0.05)
    z = idata.posterior["z"].values.reshape(-1)
    cost = idata.sample_stats["transport_cost"].values.reshape(-1)
    bound = lip / a
    assert np.abs(z).max() <= bound + 1e-4
    moved = cost > 1e-4
    np.testing.assert_allclose(np.abs(z[moved]), bound, atol=1e-4)
    p = math.erfc(bound / math.sqrt(2))
    assert abs(moved.mean() - p) < 4 * math.sqrt(p * (1 - p) / 1000)
    assert idata.attrs["num_grad_evals"] == 2 * 500 * 200


@needs_numpyro
def test_sample_potential_runs_a_jax_potential():
    # any latent potential, here U(z) = ½‖z − 1‖²/σ² with σ = 0.5 in JAX: MALA's draws have mean 1, variance σ².
    import jax.numpy as jnp

    idata = sample_potential(lambda z: 0.5 * jnp.sum((z - 1.0) ** 2) / 0.25, np.zeros((4, 2)), "mala", "numpyro",
                             num_samples=1000, warmup_steps=100, step_size=0.1, seed=0)
    z = idata.posterior["z"].values.reshape(-1, 2)
    assert idata.attrs["backend"] == "numpyro" and idata.attrs["num_grad_evals"] == 4 * 1101
    np.testing.assert_allclose(z.mean(0), 1.0, atol=0.05)
    np.testing.assert_allclose(z.var(0), 0.25, atol=0.03)
