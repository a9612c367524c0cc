"""GEBMDistribution: exact log-density, SIR sampling, shapes, Pyro integration, bad input."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from common import assert_moments, gaussian_case
from test_bases import _randomise

import gebm_ppl as gp


def test_log_prob_is_the_exact_gaussian_density():
    case = gaussian_case(3, seed=0)
    x = torch.randn(20, 3, dtype=torch.float64) * 2
    exact = torch.distributions.MultivariateNormal(case.mean, case.cov).log_prob(x)
    d = case.gebm.distribution()
    torch.testing.assert_close(d.log_prob(x), exact, rtol=1e-4, atol=1e-4)
    # an explicitly given log-partition is used instead of the stored c
    d2 = case.gebm.distribution(log_partition=case.log_partition + 1.0)
    torch.testing.assert_close(d2.log_prob(x), exact - 1.0, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(d.unnormalized_log_prob(x), exact + case.log_partition, rtol=1e-4, atol=1e-4)


def test_sir_samples_have_the_exact_moments():
    # 4000 draws with 512 proposals each; the MC error of the mean is ~ 0.02 here, of the covariance ~ 0.03.
    case = gaussian_case(3, seed=2)
    torch.manual_seed(0)
    x = case.gebm.distribution(num_proposals=512).sample((4000,))
    assert_moments(x, case.mean, case.cov, mean_tol=0.08, cov_tol=0.12)


def test_latent_potential_is_the_latent_posterior():
    # U(z) = −log ν(z) + const with ν = N(μ_z, Σ_z) in the Gaussian case.
    case = gaussian_case(3, seed=3)
    z = torch.randn(10, 3, dtype=torch.float64)
    nu = torch.distributions.MultivariateNormal(case.latent_mean, case.latent_cov)
    diff = case.gebm.distribution().latent_potential(z) + nu.log_prob(z)
    torch.testing.assert_close(diff, diff[0].expand(10))


def test_random_gebm_log_prob_integrates_to_one_in_2d():
    torch.manual_seed(0)
    base = gp.RealNVP(2, hidden_features=16, num_layers=4)
    _randomise(base, 0.1)
    energy = gp.EnergyMLP(2, hidden=(32, 32), spectral_norm=False)
    gebm = gp.GEBM(base, energy)
    est = gp.estimate_log_partition(gebm, num_samples=100_000, generator=torch.Generator().manual_seed(1))
    grid = torch.linspace(-9, 9, 501)
    xx, yy = torch.meshgrid(grid, grid, indexing="ij")
    pts = torch.stack([xx, yy], -1).reshape(-1, 2)
    with torch.no_grad():
        mass = gebm.distribution(log_partition=est.estimate).log_prob(pts).double().exp().sum()
    mass = mass.item() * (grid[1] - grid[0]).item() ** 2
    assert abs(mass - 1) < 0.02, mass


def test_shapes_and_expand():
    case = gaussian_case(3)
    d = case.gebm.distribution()
    assert d.batch_shape == () and d.event_shape == (3,)
    assert d.log_prob(torch.randn(7, 3, dtype=torch.float64)).shape == (7,)
    assert d.log_prob(torch.randn(2, 7, 3, dtype=torch.float64)).shape == (2, 7)
    assert d.sample().shape == (3,)
    assert d.sample((5,)).shape == (5, 3)
    e = d.expand((4,))
    assert isinstance(e, gp.GEBMDistribution) and e.batch_shape == (4,)
    assert e.sample((2,)).shape == (2, 4, 3)
    assert e.log_prob(torch.randn(3, dtype=torch.float64)).shape == (4,)
    assert e.log_prob(torch.randn(2, 4, 3, dtype=torch.float64)).shape == (2, 4)
    assert d.support is torch.distributions.constraints.real_vector and not d.has_rsample


def test_inside_a_pyro_model():
    case = gaussian_case(3)
    d = case.gebm.distribution()
    y = torch.tensor([0.5, -0.2, 1.0], dtype=torch.float64)

    def model(x_obs=None):
        x = pyro.sample("x", d, obs=x_obs)
        pyro.sample("y", dist.Normal(x, 0.5).to_event(1), obs=y)
        return x

    pyro.set_rng_seed(0)
    tr = pyro.poutine.trace(model).get_trace()
    assert tr.nodes["x"]["value"].shape == (3,)
    tr.compute_log_prob()
    expected = d.log_prob(tr.nodes["x"]["value"])
    torch.testing.assert_close(tr.nodes["x"]["log_prob"], expected)
    x_obs = torch.zeros(3, dtype=torch.float64)
    tr = pyro.poutine.trace(model).get_trace(x_obs)
    assert tr.nodes["x"]["is_observed"]
    joint = tr.log_prob_sum()
    torch.testing.assert_close(joint, d.log_prob(x_obs) + dist.Normal(x_obs, 0.5).log_prob(y).sum())
    with pyro.plate("batch", 4):
        tr = pyro.poutine.trace(lambda: pyro.sample("x", d)).get_trace()
    assert tr.nodes["x"]["value"].shape == (4, 3)


def test_bad_input():
    case = gaussian_case(3)
    d = case.gebm.distribution()
    with pytest.raises(ValueError, match=r"shape \[\.\.\., 3\]"):
        d.log_prob(torch.zeros(5, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="NaN or inf"):
        d.log_prob(torch.tensor([[0.0, math.inf, 0.0]], dtype=torch.float64))
    with pytest.raises(ValueError, match="NaN or inf"):
        d.log_prob(torch.tensor([0.0, math.nan, 0.0], dtype=torch.float64))
    with pytest.raises(TypeError, match="torch.Tensor"):
        d.log_prob([0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="'num_proposals'"):
        case.gebm.distribution(num_proposals=0)
    with pytest.raises(ValueError, match="'log_partition'"):
        case.gebm.distribution(log_partition=math.nan)
    with pytest.raises(TypeError, match="gebm_ppl.GEBM"):
        gp.GEBMDistribution(object())
