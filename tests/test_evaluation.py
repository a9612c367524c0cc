"""evaluate_gebm against the closed-form Gaussian GEBM: base NLL, GEBM NLL, KALE bound and their errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from common import gaussian_case

from gebm_ppl.evaluation import evaluate_gebm


def gaussian_nll(x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    return -torch.distributions.MultivariateNormal(mean, covariance_matrix=cov).log_prob(x)


def test_matches_the_closed_form():
    torch.manual_seed(0)
    case = gaussian_case(dim=3, seed=1, dtype=torch.float64, strength=0.7)
    gebm = case.gebm
    x = torch.distributions.MultivariateNormal(case.mean, case.cov).sample((400,))
    ev = evaluate_gebm(gebm, x, num_samples=200_000, seed=0)

    base = gebm.base
    base_cov = base.scale_tril @ base.scale_tril.T
    exact_base = gaussian_nll(x, base.loc.detach(), base_cov.detach())
    exact_gebm = gaussian_nll(x, case.mean, case.cov)
    assert ev.num_examples == 400 and ev.num_samples == 200_000
    assert ev.base_nll == pytest.approx(float(exact_base.mean()), abs=1e-9)
    assert ev.base_nll_stderr == pytest.approx(float(exact_base.std() / math.sqrt(400)), rel=1e-9)
    # Â estimates the exact log-partition; 5 standard errors of the estimate
    assert abs(ev.log_partition - case.log_partition) < 5 * ev.log_partition_stderr + 1e-12
    assert abs(ev.nll - float(exact_gebm.mean())) < 5 * ev.log_partition_stderr + 1e-9
    assert 0 < ev.ess <= ev.num_samples
    # c = A exactly (gaussian_case stores it): the KALE bound is tight up to (Â − A)² / 2
    assert ev.c == pytest.approx(case.log_partition)
    assert 0 <= ev.nll_bound - ev.nll < (ev.log_partition - ev.c) ** 2 + 1e-9
    assert ev.kale == pytest.approx(ev.base_nll - ev.nll_bound, abs=1e-9)
    assert ev.delta_nll == pytest.approx(ev.nll - ev.base_nll, abs=1e-12)
    # the paired difference: E(x) + Â per example
    energy = gebm.energy(x).detach().numpy()
    assert ev.delta_nll_stderr == pytest.approx(
        math.sqrt(energy.var(ddof=1) / 400 + ev.log_partition_stderr**2), rel=1e-9
    )
    assert ev.to_dict()["num_examples"] == 400


def test_a_wrong_c_loosens_only_the_bound():
    torch.manual_seed(1)
    case = gaussian_case(dim=2, seed=2, dtype=torch.float64)
    x = torch.distributions.MultivariateNormal(case.mean, case.cov).sample((50,))
    tight = evaluate_gebm(case.gebm, x, num_samples=20_000, seed=1)
    with torch.no_grad():
        case.gebm.log_partition.add_(0.5)
    loose = evaluate_gebm(case.gebm, x, num_samples=20_000, seed=1)
    assert loose.nll == pytest.approx(tight.nll, abs=1e-12)  # the IS NLL does not use c
    # bound − NLL = e^(Â − c) − 1 − (Â − c), with Â − c ≈ −0.5
    gap = loose.log_partition - loose.c
    assert loose.nll_bound - loose.nll == pytest.approx(math.expm1(gap) - gap, rel=1e-9)
    assert loose.nll_bound - loose.nll > 0.1


def test_bad_input():
    case = gaussian_case(dim=2, seed=0)
    with pytest.raises(ValueError, match=r"shape \[\.\.\., 2\]"):
        evaluate_gebm(case.gebm, torch.zeros(5, 3))
    with pytest.raises(ValueError, match="n >= 2"):
        evaluate_gebm(case.gebm, torch.zeros(1, 2))
    with pytest.raises(ValueError, match="NaN or inf"):
        evaluate_gebm(case.gebm, np.full((4, 2), np.nan))
    with pytest.raises(ValueError, match="'num_samples' should be a positive integer"):
        evaluate_gebm(case.gebm, torch.zeros(4, 2), num_samples=0)
