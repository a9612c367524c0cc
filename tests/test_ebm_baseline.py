"""The data-space EBM baseline (gebm_ppl.baselines.ebm): its Langevin sampler targets exp(−T·E) (Gaussian closed
form, with ULA's known O(γ) variance bias), and contrastive divergence recovers a Gaussian's mean and variance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gebm_ppl as gp
from gebm_ppl.baselines import fit_ebm, langevin_data_space, sample_ebm


def _quadratic(mean, scale):
    """E(x) = ½ Σ_i ((x_i − m_i) / s_i)², so exp(−T·E) is N(m, diag(s²) / T)."""
    mean = torch.as_tensor(mean, dtype=torch.float64)
    return gp.QuadraticEnergy(len(mean), center=mean, factor=torch.diag(1.0 / torch.as_tensor(scale,
                                                                                             dtype=torch.float64)))


def test_sample_ebm_targets_exp_minus_temperature_energy():
    mean, scale, temperature, gamma = [1.0, -2.0], [0.5, 2.0], 2.0, 0.02
    energy = _quadratic(mean, scale).double()
    idata = sample_ebm(energy, 4000, steps=400, step_size=gamma, temperature=temperature, bounds=None, seed=0,
                       init=torch.zeros(4000, 2, dtype=torch.float64))
    x = np.asarray(idata.posterior["x"].values)[:, -1]
    target_var = np.square(scale) / temperature
    # ULA on U = (x − m)² / (2v): x' = x − γ(x − m)/v + √(2γ) ξ has stationary variance v / (1 − γ / (2v))
    ula_var = target_var / (1.0 - gamma / (2.0 * target_var))
    # 400 steps contract the start's offset by (1 − γ / v)^400 ≤ 0.02: the means within 4 standard errors + 0.05
    assert np.all(np.abs(x.mean(0) - mean) < 4 * np.sqrt(ula_var / 4000) + 0.05), (x.mean(0), mean)
    np.testing.assert_allclose(x.var(0), ula_var, rtol=0.07)
    assert idata.attrs["num_grad_evals"] >= 4000 * 400


def test_langevin_bounds_and_errors():
    energy = _quadratic([0.0], [1.0]).double()
    gen = torch.Generator().manual_seed(0)
    x = langevin_data_space(energy, torch.zeros(5, 1, dtype=torch.float64), steps=3, step_size=0.1, generator=gen)
    assert x.shape == (5, 1) and torch.isfinite(x).all()
    idata = sample_ebm(energy, 50, steps=20, step_size=0.5, num_recorded=4, bounds=(-0.5, 0.5), seed=1)
    assert np.abs(idata.posterior["x"].values).max() <= 0.5 and idata.posterior["x"].shape == (50, 4, 1)
    with pytest.raises(ValueError, match="multiple of 'num_recorded'"):
        sample_ebm(energy, 5, steps=10, step_size=0.1, num_recorded=3)
    with pytest.raises(ValueError, match="bounds"):
        sample_ebm(energy, 5, steps=10, step_size=0.1, bounds=(1.0, -1.0))
    with pytest.raises(TypeError, match="'energy'"):
        fit_ebm(torch.nn.Linear(1, 1), np.zeros((10, 1)))


def test_contrastive_divergence_recovers_gaussian():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    data = rng.normal(1.0, 0.5, size=(2000, 1))
    energy = gp.QuadraticEnergy(1, factor=torch.ones(1, 1, dtype=torch.float64)).double()
    records = fit_ebm(energy, data, data[:200], steps=400, batch_size=100, langevin_steps=20, step_size=0.02, lr=0.02,
                      betas=(0.5, 0.999), energy_l2=0.0, buffer_size=1000, bounds=None, eval_every=400, seed=0)
    precision = float(energy.precision.detach()[0, 0])
    # the model exp(−E) is N(m, 1 / P): the data's N(1, 0.25) up to CD's short-run and ULA biases
    assert abs(float(energy.center.detach()[0]) - 1.0) < 0.1, float(energy.center.detach()[0])
    assert abs(1.0 / precision - 0.25) < 0.06, 1.0 / precision
    assert records[-1]["step"] == 400 and np.isfinite(records[-1]["val_energy"])
