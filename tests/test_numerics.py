"""Numerical extremes in the core: huge energies, far tails, very peaked and very flat GEBMs."""

import math

import pytest
import torch
from common import gaussian_case

import gebm_ppl as gp
from gebm_ppl.kale import LowESSWarning, log_partition_from_log_weights


class ConstantEnergy(torch.nn.Module):
    """E(x) = value + slope·x₀ (a flat or steep energy with a known gradient)."""

    def __init__(self, dim: int, value: float, slope: float = 0.0):
        super().__init__()
        self.dim, self.value, self.slope = dim, value, slope

    def forward(self, x):
        return self.value + self.slope * x[..., 0]


def _gebm(energy_value: float, slope: float = 0.0, dim: int = 2) -> gp.GEBM:
    return gp.GEBM(gp.AffineBase(dim).double(), ConstantEnergy(dim, energy_value, slope))


def test_huge_constant_energies_give_exact_log_partition():
    # E ≡ ±1e4: A = ∓1e4 exactly, ESS = M, stderr = 0, and log q = log g.
    for value in (1e4, -1e4):
        gebm = _gebm(value)
        est = gp.estimate_log_partition(gebm, num_samples=5000, batch_size=1000)
        assert math.isclose(est.estimate, -value, rel_tol=1e-12) and est.stderr == 0.0
        assert math.isclose(est.ess, 5000, rel_tol=1e-9)
        x = torch.randn(4, 2, dtype=torch.float64)
        lq = gebm.distribution(log_partition=est.estimate).log_prob(x)
        torch.testing.assert_close(lq, gebm.base.log_prob(x))


def test_log_weights_spanning_thousands_of_nats():
    # A single dominant weight: the estimate is its log-weight − log M, the ESS is 1.
    log_w = torch.tensor([-1e4, 0.0, 1e4], dtype=torch.float64)
    est = log_partition_from_log_weights(log_w)
    assert math.isclose(est.estimate, 1e4 - math.log(3), rel_tol=1e-12)
    assert math.isclose(est.ess, 1.0, rel_tol=1e-9)
    assert math.isfinite(est.stderr)


def test_kale_objective_and_gradients_with_extreme_energies():
    # float32 energies of ±1e4 with c at its optimum: F and its gradients stay finite.
    e_data = torch.full((8,), 1e4, requires_grad=True)
    e_base = torch.tensor([-1e4, 0.0, 1e4, 5.0], requires_grad=True)
    c = (torch.logsumexp(-e_base.detach(), 0) - math.log(4)).requires_grad_(True)
    f = gp.kale_objective(e_data, e_base, c)
    assert torch.isfinite(f)
    f.backward()
    for t in (e_data, e_base, c):
        assert torch.isfinite(t.grad).all()


def test_steep_energy_far_in_the_tails():
    # E(x) = 50·x₀ on a standard normal base: Q = N((−50, 0), I), A = 50²/2 = 1250.
    gebm = _gebm(0.0, slope=50.0)
    x = torch.tensor([[-50.0, 0.0], [-60.0, 3.0]], dtype=torch.float64)
    exact = torch.distributions.MultivariateNormal(
        torch.tensor([-50.0, 0.0], dtype=torch.float64), torch.eye(2, dtype=torch.float64)
    ).log_prob(x)
    torch.testing.assert_close(gebm.distribution(log_partition=1250.0).log_prob(x), exact)
    # importance sampling from the base cannot reach a mode 50 sd away: the estimate is finite and
    # the ESS shows that it is unreliable.
    with pytest.warns(LowESSWarning, match="ESS"):  # the ESS rule (issue 21): not silent
        est = gp.estimate_log_partition(gebm, num_samples=20_000)
    assert math.isfinite(est.estimate) and est.ess < 5


def test_very_peaked_gebm_log_prob_is_finite():
    case = gaussian_case(3, seed=0, strength=100.0)  # energy precision ~1e4 × the base's
    x = case.mean + 1e-3 * torch.randn(10, 3, dtype=torch.float64)
    lq = case.gebm.log_prob(x)
    exact = torch.distributions.MultivariateNormal(case.mean, case.cov).log_prob(x)
    torch.testing.assert_close(lq, exact, rtol=1e-6, atol=1e-6)
    assert torch.isfinite(case.gebm.log_prob(torch.full((1, 3), 1e3, dtype=torch.float64))).all()
