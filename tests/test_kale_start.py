"""Issue 21.1: a stable KALE start on a heavy-tailed base; one ESS rule for Â (estimate, fit_kale, distribution)."""

import math
import warnings

import pytest
import torch
from torch import nn

import gebm_ppl as gp
from gebm_ppl.evaluation import low_ess_warning
from gebm_ppl.kale import (
    MIN_ESS_FRACTION,
    DegenerateLogPartition,
    LogPartitionEstimate,
    LowESSWarning,
    check_ess,
    data_log_weight_cap,
    low_ess_message,
    stable_log_weights,
)

torch.set_num_threads(1)


class HeavyTailBase(nn.Module):
    """G(z) = z·exp(z²/4) in 2-D, z ~ N(0, I): rare draws land hundreds of units out (like an MLE RealNVP's tails)."""

    dim = latent_dim = 2

    def sample_prior(self, n, generator=None):
        return torch.randn(n, 2, generator=generator, dtype=torch.float64)

    def forward(self, z):
        return z * torch.exp(z * z / 4)

    def log_prob(self, x):
        raise NotImplementedError


class LinearEnergy(nn.Module):
    """E(x) = −x₀ (an untrained energy that falls linearly where only the base's outliers go)."""

    dim = 2

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1).double()
        with torch.no_grad():
            self.linear.weight.copy_(torch.tensor([[-1.0, 0.0]]))
            self.linear.bias.zero_()

    def forward(self, x):
        return self.linear(x).squeeze(-1)


def _heavy_gebm() -> gp.GEBM:
    return gp.GEBM(HeavyTailBase(), LinearEnergy()).double()


def test_kale_start_on_a_heavy_tailed_base_reports_bounded_losses():
    # Â from 2000 draws rests on one far-out sample (ESS ≈ 1): fit_kale says so and starts c at the
    # estimate the data justify; then no step's loss is exponential in the outliers' energy (before:
    # c ≈ 66 and minibatch losses of e^{100} and more, or an overflow).
    x = 0.5 * torch.randn(200, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    gebm = _heavy_gebm()
    with pytest.warns(LowESSWarning) as caught:
        history = gp.fit_kale(gebm, x, epochs=3, batch_size=100, log_partition_samples=2000, penalty=0.0,
                              progress=False)  # fmt: skip
    messages = [str(w.message) for w in caught]
    assert any("start of c" in m for m in messages)  # the degenerate start, said
    assert any("trained GEBM" in m for m in messages)  # three epochs do not lift every outlier: said too
    first = history.records[0]
    assert first["log_partition"] < 10  # not the degenerate Â (≈ 66)
    for record in history.records:
        assert abs(record["train_loss"]) < 50 and abs(record["kale_batch"]) < 50, record


def test_stable_log_weights_are_the_identity_below_the_cap():
    u = torch.tensor([-3.0, 0.0, 1.999, 2.0, 2.5, 40.0], dtype=torch.float64, requires_grad=True)
    cap = torch.tensor(2.0, dtype=torch.float64)
    psi = stable_log_weights(u, cap)
    assert torch.equal(psi[:3], u[:3].detach())  # bit for bit
    assert psi[3] == 2.0
    torch.testing.assert_close(psi[4:], cap + torch.log1p(u[4:].detach() - cap))
    (grad,) = torch.autograd.grad(psi[:3].sum(), u)
    assert torch.equal(grad, torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0], dtype=torch.float64))
    # exp(ψ) is the exponential linearised beyond the cap: value and slope match at the cap
    assert math.exp(float(psi[5].detach())) == pytest.approx(math.exp(2.0) * (1 + 38.0), rel=1e-12)


def test_stable_kale_objective_equals_kale_objective_unless_a_sample_passes_the_cap():
    e_data = torch.tensor([0.5, -0.2, 1.0], dtype=torch.float64)
    c = torch.tensor(0.1, dtype=torch.float64)
    e_base = torch.tensor([0.0, 0.3, -1.0, 2.0], dtype=torch.float64)
    assert torch.equal(gp.kale_objective(e_data, e_base, c, stable=True), gp.kale_objective(e_data, e_base, c))
    # a base sample with E = −60, far below every data point (u* = 0.2 − 0.1 + log 4): linearised
    far = torch.tensor([0.0, 0.3, -1.0, -60.0], dtype=torch.float64)
    cap = float(data_log_weight_cap(e_data, c, 4))
    assert cap == pytest.approx(0.2 - 0.1 + math.log(4))
    exp_mean = (math.exp(-0.1) + math.exp(-0.4) + math.exp(0.9) + math.exp(cap) * (1 + 59.9 - cap)) / 4
    expected = -float((e_data + c).mean()) - exp_mean + 1
    assert float(gp.kale_objective(e_data, far, c, stable=True)) == pytest.approx(expected, rel=1e-12)
    assert float(gp.kale_objective(e_data, far, c)) < -1e20  # the plain F: e^{59.9}/4


def test_estimate_log_partition_applies_the_ess_rule():
    gebm = _heavy_gebm()
    g = torch.Generator().manual_seed(0)
    with pytest.warns(LowESSWarning, match="estimate_log_partition"):
        est = gp.estimate_log_partition(gebm, num_samples=5000, batch_size=1000, generator=g)
    assert est.ess < MIN_ESS_FRACTION * est.num_samples
    with pytest.raises(DegenerateLogPartition, match="ESS"):
        gp.estimate_log_partition(gebm, num_samples=5000, batch_size=1000, on_low_ess="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gp.estimate_log_partition(gebm, num_samples=5000, batch_size=1000, on_low_ess="ignore")
    with pytest.raises(ValueError, match="on_low_ess"):
        gp.estimate_log_partition(gebm, num_samples=10, on_low_ess="loud")


def test_the_rule_is_one_fraction_of_the_draws():
    m = 10_000
    below = LogPartitionEstimate(0.0, 0.1, MIN_ESS_FRACTION * m - 1, m)
    at = LogPartitionEstimate(0.0, 0.1, MIN_ESS_FRACTION * m, m)
    assert check_ess(at) is None and low_ess_message(at.ess, m) is None
    with pytest.warns(LowESSWarning):
        assert "ESS 99 of 10000" in check_ess(below)
    assert check_ess(below, on_low="ignore") is not None
    with pytest.raises(DegenerateLogPartition):
        check_ess(below, on_low="raise")


def test_distribution_and_gebm_evaluate_use_the_same_rule():
    gebm = _heavy_gebm()
    low = LogPartitionEstimate(3.0, 1.0, 1.0, 5000)
    with pytest.warns(LowESSWarning, match="GEBM.distribution"):
        d = gebm.distribution(low)
    assert float(d.log_partition) == 3.0
    with pytest.raises(DegenerateLogPartition):
        gebm.distribution(low, on_low_ess="raise")
    good = LogPartitionEstimate(0.5, 0.01, 4000.0, 5000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert float(gebm.distribution(good).log_partition) == 0.5
    # gebm evaluate's message (runs/evaluate.py calls low_ess_warning) is the rule's message
    gauss = gp.GEBM(gp.AffineBase(2), gp.QuadraticEnergy(2)).double()
    ev = gp.evaluate_gebm(gauss, torch.randn(20, 2, dtype=torch.float64), num_samples=500)
    assert low_ess_warning(ev) is None
    ev_low = ev._replace(ess=4.0)
    assert low_ess_warning(ev_low) == low_ess_message(4.0, 500) is not None
