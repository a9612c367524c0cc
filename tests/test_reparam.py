"""GEBMReparam: trace structure, exact change of variables, NUTS vs importance weighting, bad sites."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import MCMC, NUTS
from test_bases import _randomise

import gebm_ppl as gp


def _random_gebm(seed: int = 0) -> gp.GEBM:
    """A non-Gaussian 2-D GEBM in float64: a randomised RealNVP and an MLP energy of a few nats' range."""
    torch.manual_seed(seed)
    base = gp.RealNVP(2, hidden_features=16, num_layers=3).double()
    _randomise(base, 0.2, seed=seed)
    energy = gp.EnergyMLP(2, hidden=(16, 16), spectral_norm=False, lipschitz=2.0).double()
    gebm = gp.GEBM(base, energy).double()
    est = gp.estimate_log_partition(gebm, num_samples=20_000, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        gebm.log_partition.fill_(est.estimate)
    return gebm.eval()


def _model(gebm, y, noise=0.5):
    """x ~ GEBM prior, y ~ N(x₀, noise²): the first coordinate is observed with noise."""
    x = pyro.sample("x", gebm.distribution())
    pyro.sample("y", dist.Normal(x[..., 0], noise), obs=y)
    return x


def test_trace_has_latent_factor_and_deterministic_x():
    gebm = _random_gebm()
    y = torch.tensor(0.4, dtype=torch.float64)
    reparam_model = poutine.reparam(_model, config={"x": gp.GEBMReparam()})
    tr = poutine.trace(reparam_model).get_trace(gebm, y)
    z = tr.nodes["x_latent"]["value"]
    assert z.shape == (2,) and not tr.nodes["x_latent"]["is_observed"]
    with torch.no_grad():
        x = gebm.base(z)
        torch.testing.assert_close(tr.nodes["x"]["value"], x)
        expected_factor = -gebm.energy(x) - gebm.log_partition
    torch.testing.assert_close(tr.nodes["x_energy"]["fn"].log_factor, expected_factor)
    tr.compute_log_prob()
    assert float(tr.nodes["x"]["log_prob_sum"]) == 0.0  # a deterministic site: no density of its own


def test_reparameterised_joint_is_the_change_of_variables():
    # log p_reparam(z, y) = log q(G z) + log|det ∂G/∂z| + log p(y | G z): the same model in new coordinates.
    gebm = _random_gebm(1)
    y = torch.tensor(-0.3, dtype=torch.float64)
    reparam_model = poutine.reparam(_model, config={"x": gp.GEBMReparam()})
    for seed in range(3):
        torch.manual_seed(seed)
        tr = poutine.trace(reparam_model).get_trace(gebm, y)
        z = tr.nodes["x_latent"]["value"]
        with torch.no_grad():
            x, logdet = gebm.base.forward_and_log_det(z)
            original = poutine.trace(poutine.condition(_model, data={"x": x})).get_trace(gebm, y)
            torch.testing.assert_close(tr.log_prob_sum(), original.log_prob_sum() + logdet)


def test_plates_give_one_latent_per_member():
    gebm = _random_gebm(2)

    def model():
        with pyro.plate("items", 4):
            return pyro.sample("x", gebm.distribution())

    tr = poutine.trace(poutine.reparam(model, config={"x": gp.GEBMReparam()})).get_trace()
    assert tr.nodes["x_latent"]["value"].shape == (4, 2)
    assert tr.nodes["x"]["value"].shape == (4, 2)
    tr.compute_log_prob()
    assert tr.nodes["x_energy"]["log_prob"].shape == (4,)
    with torch.no_grad():
        x = gebm.base(tr.nodes["x_latent"]["value"])
        expected = dist.Normal(0.0, 1.0).log_prob(tr.nodes["x_latent"]["value"]).sum() - gebm.energy(x).sum()
    torch.testing.assert_close(tr.log_prob_sum(), expected - 4 * gebm.log_partition.detach())


def test_nuts_through_the_reparam_matches_importance_weighting():
    # A non-Gaussian GEBM prior (a randomised RealNVP base, a quadratic energy pulling towards (1.5, −1.5)),
    # y = 1.2 observed on x₀ with noise 0.5. Reference: self-normalised importance weighting of 400 000
    # prior latents z ~ N(0, I), weights exp(−E(G z)) N(y; G(z)₀, 0.5²) (weight ESS ≈ 15 000, error < 0.01).
    # The energy moves the posterior mean of x₁ by ≈ 1.0. NUTS: 2 chains × 200 draws, ESS ≈ 100-200,
    # posterior sds ≈ 0.4 and 0.57, so the tolerance 0.2 is about 4 Monte-Carlo standard errors.
    torch.manual_seed(3)
    base = gp.RealNVP(2, hidden_features=8, num_layers=2).double()
    _randomise(base, 0.3, seed=3)
    energy = gp.QuadraticEnergy(2, center=torch.tensor([1.5, -1.5]), factor=1.5 * torch.eye(2)).double()
    gebm = gp.GEBM(base, energy).double().eval()
    y = torch.tensor(1.2, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(400_000, 2, generator=g, dtype=torch.float64)
    with torch.no_grad():
        x = gebm.base(z)
        log_lik = dist.Normal(x[:, 0], 0.5).log_prob(y)
        w = torch.softmax(-gebm.energy(x) + log_lik, 0)
        w_base = torch.softmax(log_lik, 0)  # the same model without the energy
    iw_mean = (w[:, None] * x).sum(0)
    base_mean = (w_base[:, None] * x).sum(0)
    assert (iw_mean - base_mean).abs().max() > 0.8  # the energy matters for this posterior

    reparam_model = poutine.reparam(_model, config={"x": gp.GEBMReparam()})
    draws = []
    for chain in range(2):
        pyro.set_rng_seed(chain)
        mcmc = MCMC(NUTS(reparam_model), num_samples=200, warmup_steps=100, disable_progbar=True)
        mcmc.run(gebm, y)
        draws.append(mcmc.get_samples()["x_latent"])
    with torch.no_grad():
        x_nuts = gebm.base(torch.cat(draws))
    assert (x_nuts.mean(0) - iw_mean).abs().max() < 0.2, (x_nuts.mean(0), iw_mean)


def test_observed_site_is_an_error_naming_it():
    gebm = _random_gebm()

    def model(x_obs):
        pyro.sample("wine", gebm.distribution(), obs=x_obs)

    reparam_model = poutine.reparam(model, config={"wine": gp.GEBMReparam()})
    with pytest.raises(ValueError, match=r"pyro.sample\('wine'.*cannot reparameterise an observed site"):
        poutine.trace(reparam_model).get_trace(torch.zeros(2, dtype=torch.float64))


def test_other_distributions_are_a_type_error():
    def model():
        pyro.sample("x", dist.Normal(torch.zeros(2), 1.0).to_event(1))

    reparam_model = poutine.reparam(model, config={"x": gp.GEBMReparam()})
    with pytest.raises(TypeError, match=r"At pyro.sample\('x', ...\): GEBMReparam expects a GEBMDistribution"):
        poutine.trace(reparam_model).get_trace()


def test_initial_value_is_mapped_to_the_latent():
    # An initial value already set at the site (here by init_to_value inside the reparam) starts the
    # latent at G⁻¹(x), so that x itself keeps that value.
    from pyro.infer.autoguide.initialization import InitMessenger, init_to_value

    gebm = _random_gebm(4)
    x0 = torch.tensor([0.7, -1.1], dtype=torch.float64)
    model = poutine.reparam(InitMessenger(init_to_value(values={"x": x0}))(_model), config={"x": gp.GEBMReparam()})
    tr = poutine.trace(model).get_trace(gebm, torch.tensor(0.0, dtype=torch.float64))
    torch.testing.assert_close(tr.nodes["x"]["value"], x0)
    torch.testing.assert_close(tr.nodes["x_latent"]["value"], gebm.base.inverse(x0)[0])
    assert not tr.nodes["x_latent"]["is_observed"]
    assert math.isfinite(float(tr.log_prob_sum().detach()))
