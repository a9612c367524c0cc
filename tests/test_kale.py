"""KALE objective, base loss and log-partition estimate against closed forms."""

import math

import numpy as np
import pytest
import torch
from common import gaussian_case

import gebm_ppl as gp
from gebm_ppl.kale import log_partition_from_log_weights


def test_kale_is_tight_at_the_log_partition():
    # With c = logmeanexp(−E_G) on the same base samples, E_G[exp(−(E + c))] = 1 exactly,
    # so F = −E_P[E] − c: the gain in log-likelihood over the base.
    torch.manual_seed(0)
    e_data, e_base = torch.randn(50, dtype=torch.float64), 2 * torch.randn(400, dtype=torch.float64)
    c = torch.logsumexp(-e_base, 0) - math.log(400)
    f = gp.kale_objective(e_data, e_base, c)
    torch.testing.assert_close(f, -e_data.mean() - c)
    # ... and c = A maximises F over c.
    for dc in (-0.3, 0.2):
        assert gp.kale_objective(e_data, e_base, c + dc) < f
    torch.testing.assert_close(gp.kale_energy_loss(e_data, e_base, c), -f)


def test_kale_objective_does_not_overflow():
    e_base = torch.tensor([-200.0, 0.0, 5.0])  # exp(200) overflows float32
    f = gp.kale_objective(torch.zeros(3), e_base, torch.tensor(195.0))
    assert torch.isfinite(f)


def test_base_loss_gradient_is_the_self_normalised_kale_gradient():
    # ∇θ Σ w_i E(G_θ z_i) with w = softmax(−E) fixed equals ∇θ[−logmeanexp(−E(G_θ z_i))] = −∇θ Â.
    case = gaussian_case(3, seed=1)
    z = torch.randn(256, 3, dtype=torch.float64)
    base = case.gebm.base
    loss = gp.kale_base_loss(case.gebm.latent_energy(z))
    g1 = torch.autograd.grad(loss, list(base.parameters()))
    a_hat = torch.logsumexp(-case.gebm.latent_energy(z), 0)
    g2 = torch.autograd.grad(-a_hat, list(base.parameters()))
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b)


def test_log_partition_from_log_weights_matches_numpy():
    rng = np.random.default_rng(0)
    log_w = rng.normal(size=1000) * 1.5
    est = log_partition_from_log_weights(torch.from_numpy(log_w))
    w = np.exp(log_w)
    assert est.estimate == pytest.approx(np.log(w.mean()), rel=1e-12)
    assert est.ess == pytest.approx(w.sum() ** 2 / (w**2).sum(), rel=1e-10)
    # delta method: sd(w) / (sqrt(M) mean(w))
    assert est.stderr == pytest.approx(w.std(ddof=1) / (np.sqrt(len(w)) * w.mean()), rel=1e-10)


@pytest.mark.parametrize("seed", [0, 1])
def test_estimate_log_partition_gaussian_closed_form(seed):
    case = gaussian_case(3, seed=seed)
    est = gp.estimate_log_partition(
        case.gebm, num_samples=40_000, batch_size=7_000, generator=torch.Generator().manual_seed(seed)
    )
    assert est.num_samples == 40_000 and 0 < est.ess <= 40_000
    assert abs(est.estimate - case.log_partition) < 4 * est.stderr, (est, case.log_partition)
    assert est.stderr < 0.05


def test_estimate_log_partition_bad_input():
    case = gaussian_case(2)
    with pytest.raises(ValueError, match="'num_samples'"):
        gp.estimate_log_partition(case.gebm, num_samples=0)
    with pytest.raises(ValueError, match="'batch_size'"):
        gp.estimate_log_partition(case.gebm, num_samples=10, batch_size=-1)
    with pytest.raises(ValueError, match="NaN or inf"):
        log_partition_from_log_weights(torch.tensor([0.0, math.nan]))


# ------------------------------------------------------------------ the KALE value and NLL from Â
def test_kale_from_log_partition_matches_the_objective_on_the_same_samples():
    # With Â = logmeanexp(−E_G) on the base samples, exp(Â − c) is exactly E_G[exp(−(E + c))],
    # so the scalar formula equals kale_objective for any c.
    torch.manual_seed(1)
    e_data, e_base = torch.randn(40, dtype=torch.float64), 1.5 * torch.randn(300, dtype=torch.float64)
    a_hat = float(torch.logsumexp(-e_base, 0) - math.log(300))
    for c in (a_hat, a_hat - 0.7, a_hat + 1.3):
        f = gp.kale_objective(e_data, e_base, torch.tensor(c, dtype=torch.float64))
        assert gp.kale_from_log_partition(float(e_data.mean()), c, a_hat) == pytest.approx(float(f), abs=1e-12)
    # tight at c = Â: F = −E_P[E] − Â
    assert gp.kale_from_log_partition(0.5, 0.2, 0.2) == pytest.approx(-0.7, abs=1e-15)


def test_nll_and_kale_bound_from_log_partition():
    base_nll, e_mean, a_hat = 3.0, -0.4, 0.1
    nll = gp.nll_from_log_partition(base_nll, e_mean, a_hat)
    assert nll == pytest.approx(3.0 - 0.4 + 0.1)
    # NLL_base − F(E, c) ≥ NLL, with equality at c = Â (exp(Â − c) ≥ 1 + Â − c)
    assert gp.kale_nll_bound(base_nll, e_mean, a_hat, a_hat) == pytest.approx(nll, abs=1e-12)
    for c in (a_hat - 2.0, a_hat - 0.1, a_hat + 0.5, a_hat + 3.0):
        bound = gp.kale_nll_bound(base_nll, e_mean, c, a_hat)
        assert bound > nll
        assert bound - nll == pytest.approx(math.exp(a_hat - c) - 1 - (a_hat - c), rel=1e-9)
    # tensors and numpy scalars are accepted; a far-off c gives a finite (huge) value, not OverflowError
    assert gp.kale_from_log_partition(torch.tensor(0.0), np.float32(0.0), torch.tensor([0.0])) == pytest.approx(0.0)
    assert math.isfinite(gp.kale_from_log_partition(0.0, -1e4, 0.0))
    with pytest.raises(TypeError, match="mean_energy_data"):
        gp.kale_from_log_partition("x", 0.0, 0.0)
