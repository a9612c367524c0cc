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
