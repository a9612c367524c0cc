"""examples/inpainting.py against a closed form: a linear Gaussian generator base with a quadratic energy.

Base G(z) = m + W z, z ~ N(0, I_d), d < D (``gp.MLPGenerator`` with no hidden layer and identity output,
no density) and energy E(x) = ½ (x − c)ᵀ P (x − c), P = F Fᵀ. The latent GEBM is then Gaussian,
ν = N(μ_z, Λ_z⁻¹) with Λ_z = I + Wᵀ P W and μ_z = −Λ_z⁻¹ Wᵀ P (m − c), and with y = x_O + N(0, σ² I) the
latent posterior is Gaussian with precision Λ = Λ_z + W_Oᵀ W_O / σ² and mean
μ = Λ⁻¹ (Λ_z μ_z + W_Oᵀ (y − m_O) / σ²); the posterior over the hidden pixels is N(m_H + W_H μ, W_H Λ⁻¹ W_Hᵀ).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

import gebm_ppl as gp

ROOT = Path(__file__).resolve().parents[1]
D, d, SIGMA = 8, 3, 0.5


def _example():
    spec = importlib.util.spec_from_file_location("inpainting_example", ROOT / "examples" / "inpainting.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def example():
    return _example()


@pytest.fixture(scope="module")
def case():
    """The linear Gaussian GEBM, a truth x* = G(z*) far from the prior mean, its observation y and the closed form."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    base = gp.MLPGenerator(d, D, hidden=(), output="identity")
    energy = gp.QuadraticEnergy(D, center=torch.randn(D, generator=g),
                                factor=0.5 * torch.randn(D, D, generator=g) / D**0.5)
    gebm = gp.GEBM(base, energy).eval()
    with torch.no_grad():
        m = base.net[0].bias.double()
        W = base.net[0].weight.double()
        c, P = energy.center.double(), energy.precision.double()
    mask = torch.zeros(D, dtype=torch.bool)
    mask[:5] = True
    prec_z = torch.eye(d, dtype=torch.float64) + W.T @ P @ W
    mu_z = -torch.linalg.solve(prec_z, W.T @ P @ (m - c))
    z_true = mu_z + 2.0 * torch.linalg.cholesky(torch.linalg.inv(prec_z)) @ torch.ones(d, dtype=torch.float64)
    x_true = m + W @ z_true
    y = (x_true[mask] + SIGMA * torch.randn(int(mask.sum()), generator=g, dtype=torch.float64)).float()
    W_o, W_h = W[mask], W[~mask]
    prec = prec_z + W_o.T @ W_o / SIGMA**2
    mu = torch.linalg.solve(prec, prec_z @ mu_z + W_o.T @ (y.double() - m[mask]) / SIGMA**2)
    return dict(gebm=gebm, mask=mask, y=y, x_true=x_true,
                post_mean=m[~mask] + W_h @ mu, post_sd=torch.diagonal(W_h @ torch.linalg.solve(prec, W_h.T)).sqrt(),
                prior_mean=m + W @ mu_z, prior_cov_h=W_h @ torch.linalg.solve(prec_z, W_h.T),
                post_cov_h=W_h @ torch.linalg.solve(prec, W_h.T))


@pytest.fixture(scope="module")
def pyro_post(example, case):
    """300 posterior images by the example's Pyro NUTS on z (150 warmup steps, seed 0)."""
    return example.pyro_posterior(case["gebm"], case["mask"], SIGMA, case["y"], draws=300, warmup=150, seed=0)


def test_pyro_nuts_recovers_closed_form_posterior_mean(pyro_post, case):
    """Pyro NUTS through the example's reparameterised model: hidden-pixel posterior mean within 4 Monte Carlo
    standard errors (300 draws; autocorrelation allowed for by a factor 2) plus 0.01, sd within 25 %."""
    draws, post = 300, pyro_post
    assert post.shape == (draws, D)
    mean_h = post[:, ~case["mask"]].double().mean(0)
    tol = 4 * 2 * case["post_sd"] / draws**0.5 + 0.01
    err = (mean_h - case["post_mean"]).abs()
    assert bool((err < tol).all()), f"Pyro posterior mean {mean_h} vs closed form {case['post_mean']} (tol {tol})"
    sd_h = post[:, ~case["mask"]].double().std(0)
    assert bool(((sd_h / case["post_sd"] - 1).abs() < 0.25).all()), f"sd {sd_h} vs {case['post_sd']}"


def test_numpyro_nuts_matches_closed_form(example, case):
    """The NumPyro twin (``gp.to_jax`` of the same GEBM) gives the same posterior mean within the same tolerance."""
    pytest.importorskip("numpyro")
    draws = 300
    post = example.numpyro_posterior(case["gebm"], case["mask"], SIGMA, case["y"], draws=draws, warmup=150, seed=0)
    assert post.shape == (draws, D)
    mean_h = torch.as_tensor(np.asarray(post)[:, ~case["mask"].numpy()], dtype=torch.float64).mean(0)
    tol = 4 * 2 * case["post_sd"] / draws**0.5 + 0.01
    err = (mean_h - case["post_mean"]).abs()
    assert bool((err < tol).all()), f"NumPyro posterior mean {mean_h} vs closed form {case['post_mean']} (tol {tol})"


def test_posterior_mean_beats_prior_mean_on_hidden_pixels(example, case, pyro_post):
    """Why it must: averaged over truths x ~ Q and their y, the hidden-pixel squared error of the posterior mean is
    tr Cov(x_H | y) and that of the prior mean tr Cov(x_H), and Cov(x_H | y) = W_H Λ⁻¹ W_Hᵀ ⪯ W_H Λ_z⁻¹ W_Hᵀ since
    Λ ⪰ Λ_z (law of total variance). For the single truth here, z* sits 2 prior standard deviations from μ_z in
    every whitened direction and the 5 observed pixels pin all d = 3 latent directions (W_O has full column rank),
    so the posterior error is O(σ) while the prior-mean error is O(1)."""
    assert float(torch.trace(case["post_cov_h"])) < float(torch.trace(case["prior_cov_h"]))
    hidden = ~case["mask"]
    x_h = case["x_true"][hidden]
    err_post = float((case["post_mean"] - x_h).norm())
    err_prior = float((case["prior_mean"][hidden] - x_h).norm())
    assert err_post < 0.5 * err_prior, (err_post, err_prior)
    # the example's own prior mean (self-normalised importance weights) agrees with the closed form ...
    prior_is = example.prior_mean(case["gebm"], n=20_000, seed=0).double()
    assert float((prior_is - case["prior_mean"]).abs().max()) < 0.05
    # ... and its NUTS posterior mean is closer to the truth than it on the hidden pixels
    err_nuts = float((pyro_post[:, hidden].double().mean(0) - x_h).norm())
    assert err_nuts < float((prior_is[hidden] - x_h).norm()), (err_nuts, err_prior)


def test_model_site_shapes(example, case):
    """The example's Pyro model: x ~ GEBM of shape [D], y observed at the masked pixels with scale σ."""
    import pyro
    from pyro import poutine

    pyro.set_rng_seed(0)
    with torch.no_grad():
        trace = poutine.trace(poutine.reparam(example.model, config={"x": gp.GEBMReparam()})).get_trace(
            case["gebm"], case["mask"], SIGMA, case["y"])
    assert trace.nodes["x"]["value"].shape == (D,)
    assert trace.nodes["x_latent"]["value"].shape == (d,)
    assert trace.nodes["y"]["is_observed"]
    assert torch.allclose(trace.nodes["y"]["fn"].base_dist.loc, trace.nodes["x"]["value"][case["mask"]])
