"""GEBMReparam: trace structure, exact change of variables, NUTS vs importance weighting, bad sites."""

import math

import numpy as np
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


# ------------------------------------------------------------------------------------------ k-event sites
def _gaussian_latent_log_density(case, z: torch.Tensor) -> torch.Tensor:
    """log ν(z) of the closed-form Gaussian GEBM: ν = N(μ_z, Σ_z), normalised because A is exact."""
    return dist.MultivariateNormal(case.latent_mean, case.latent_cov).log_prob(z)


def test_k_event_site_subtracts_k_log_partitions_pyro():
    # k = 4 independent GEBM draws as one event: the reparameterised site's log-density (latent normal +
    # factor) must be Σᵢ log ν(zᵢ), the exact latent density, which needs Σᵢ (−E(G zᵢ) − A) = ... − k·A.
    from common import gaussian_case

    case = gaussian_case(dim=3, seed=5)
    assert abs(case.log_partition) > 0.3  # a wrong multiple of A would show

    def model():
        pyro.sample("x", case.gebm.distribution().expand([4]).to_event(1))

    tr = poutine.trace(poutine.reparam(model, config={"x": gp.GEBMReparam()})).get_trace()
    z = tr.nodes["x_latent"]["value"]
    assert z.shape == (4, 3) and tr.nodes["x"]["value"].shape == (4, 3)
    tr.compute_log_prob()
    got = tr.nodes["x_latent"]["log_prob_sum"] + tr.nodes["x_energy"]["log_prob_sum"]
    expected = _gaussian_latent_log_density(case, z).sum()
    torch.testing.assert_close(got.detach(), expected, rtol=1e-10, atol=1e-10)


def test_k_event_site_subtracts_k_log_partitions_numpyro():
    pytest.importorskip("numpyro")
    import jax
    import jax.numpy as jnp
    import numpyro
    from common import gaussian_case
    from numpyro import handlers

    from gebm_ppl.numpyro import GEBMDistribution
    from gebm_ppl.numpyro import GEBMReparam as NumPyroGEBMReparam

    case = gaussian_case(dim=3, seed=5)
    prior = GEBMDistribution(case.gebm)

    def model():
        numpyro.sample("x", prior.expand([4]).to_event(1))

    reparam_model = handlers.reparam(model, config={"x": NumPyroGEBMReparam()})
    tr = handlers.trace(handlers.seed(reparam_model, 0)).get_trace()
    z = np.asarray(tr["x_latent"]["value"], dtype=np.float64)
    assert z.shape == (4, 3) and tr["x"]["type"] == "deterministic" and tr["x"]["value"].shape == (4, 3)
    got = sum(float(jnp.sum(tr[k]["fn"].log_prob(tr[k]["value"]))) for k in ("x_latent", "x_energy"))
    expected = float(_gaussian_latent_log_density(case, torch.as_tensor(z)).sum())
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-4)  # the JAX twin runs in float32
    np.testing.assert_allclose(np.asarray(tr["x"]["value"]), case.gebm.base(torch.as_tensor(z)).detach().numpy(),
                               rtol=1e-5, atol=1e-5)
    assert jax.numpy.ndim(tr["x_energy"]["fn"].log_prob(tr["x_energy"]["value"])) == 0


# ------------------------------------------------------------------------------------------ ArviZ
def _pyro_mcmc(case, y, chains=1, draws=15):
    def model(y):
        x = pyro.sample("x", case.gebm.distribution())
        pyro.sample("y", dist.Normal(x[..., :2], 0.3).to_event(1), obs=y)

    reparam_model = poutine.reparam(model, config={"x": gp.GEBMReparam()})
    pyro.set_rng_seed(0)
    mcmc = MCMC(NUTS(reparam_model), num_samples=draws, warmup_steps=draws, num_chains=chains, disable_progbar=True)
    mcmc.run(y)
    return mcmc


def test_arviz_posterior_holds_x_pyro():
    # The GEBM's weights require grad (as after training): the trace's x must still convert to numpy,
    # x must be in the posterior (x = G(x_latent) draw by draw), and observed data / log-likelihood
    # hold only y (not x nor the factor x_energy).
    import arviz as az
    from common import gaussian_case

    case = gaussian_case(dim=3, seed=6)
    assert all(p.requires_grad for p in case.gebm.parameters())
    y = torch.tensor([0.3, -0.2], dtype=torch.float64)
    mcmc = _pyro_mcmc(case, y, chains=1)
    plain = az.from_pyro(mcmc)  # crashed before: "Can't call numpy() on Tensor that requires grad"
    assert "x_latent" in plain.posterior
    idata = gp.from_pyro(mcmc)
    post = idata.posterior
    assert post["x"].shape == (1, 15, 3) and post["x_latent"].shape == (1, 15, 3)
    with torch.no_grad():
        expected = case.gebm.base(torch.as_tensor(post["x_latent"].values))
    np.testing.assert_allclose(post["x"].values, expected.numpy(), rtol=1e-10)
    assert list(idata.observed_data.data_vars) == ["y"]
    np.testing.assert_allclose(idata.observed_data["y"].values, y.numpy())
    assert list(idata.log_likelihood.data_vars) == ["y"]
    assert all(p.requires_grad for p in case.gebm.parameters())  # restored after the frozen computation


def test_arviz_posterior_holds_x_numpyro():
    pytest.importorskip("numpyro")
    import arviz as az
    import jax
    import numpyro
    from common import gaussian_case
    from numpyro.infer import MCMC as NumPyroMCMC
    from numpyro.infer import NUTS as NumPyroNUTS

    from gebm_ppl.numpyro import GEBMDistribution
    from gebm_ppl.numpyro import GEBMReparam as NumPyroGEBMReparam

    case = gaussian_case(dim=3, seed=6)
    prior = GEBMDistribution(case.gebm)

    def model(y):
        x = numpyro.sample("x", prior)
        numpyro.sample("y", numpyro.distributions.Normal(x[..., :2], 0.3).to_event(1), obs=y)

    reparam_model = numpyro.handlers.reparam(model, config={"x": NumPyroGEBMReparam()})
    mcmc = NumPyroMCMC(NumPyroNUTS(reparam_model), num_warmup=15, num_samples=15, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(0), jax.numpy.array([0.3, -0.2]))
    post = az.from_numpyro(mcmc).posterior
    assert post["x"].shape == (1, 15, 3) and post["x_latent"].shape == (1, 15, 3)
    with torch.no_grad():
        expected = case.gebm.base(torch.as_tensor(np.asarray(post["x_latent"].values, dtype=np.float64)))
    np.testing.assert_allclose(post["x"].values, expected.numpy(), rtol=1e-4, atol=1e-5)
