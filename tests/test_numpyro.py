"""NumPyro backend: NUTS/HMC on the Gaussian GEBM, InferenceData layout, distribution, reparam, bad input."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
import torch
from common import assert_moments, gaussian_case
from numpyro import handlers
from numpyro.infer import MCMC, NUTS

import gebm_ppl as gp
from gebm_ppl.numpyro import GEBMDistribution, GEBMReparam, sample_latent_numpyro
from gebm_ppl.numpyro.mcmc import default_init

NUM_CHAINS, NUM_SAMPLES = 4, 1000


@pytest.fixture(scope="module")
def gaussian():
    return gaussian_case(3, seed=0)  # float64 torch; exported as float32 (JAX without x64)


@pytest.fixture(scope="module")
def nuts_run(gaussian):
    # through the public dispatcher, as users call it
    return gp.sample_latent(
        gaussian.gebm,
        "nuts",
        backend="numpyro",
        num_samples=NUM_SAMPLES,
        warmup_steps=300,
        num_chains=NUM_CHAINS,
        seed=0,
    )


def test_nuts_recovers_the_exact_moments(gaussian, nuts_run):
    # 4000 draws with bulk ESS > 1500 per coordinate: MC error of the means ≲ 0.03, of the covariances ≲ 0.05
    import arviz as az

    x = torch.tensor(nuts_run.posterior["x"].values.reshape(-1, 3))
    z = torch.tensor(nuts_run.posterior["z"].values.reshape(-1, 3))
    assert_moments(x, gaussian.mean, gaussian.cov, mean_tol=0.1, cov_tol=0.15)
    assert_moments(z, gaussian.latent_mean, gaussian.latent_cov, mean_tol=0.1, cov_tol=0.1)
    assert float(az.rhat(nuts_run, var_names=["x"])["x"].max()) < 1.05
    assert float(az.ess(nuts_run, var_names=["x"], method="bulk")["x"].min()) > 1500
    assert not nuts_run.sample_stats["diverging"].values.any()
    # lp is −U(z) at the draws, U(z) = ½‖z‖² + E(G(z))
    with torch.no_grad():
        u = gaussian.gebm.latent_potential(z.double()).numpy()
    np.testing.assert_allclose(nuts_run.sample_stats["lp"].values.reshape(-1), -u, rtol=1e-4, atol=1e-4)
    # x = G(z)
    with torch.no_grad():
        np.testing.assert_allclose(x.numpy(), gaussian.gebm.base(z.double()).numpy(), rtol=1e-4, atol=1e-4)


def test_attrs_and_gradient_count(nuts_run):
    attrs = nuts_run.attrs
    assert attrs["method"] == "nuts" and attrs["backend"] == "numpyro" and attrs["seed"] == 0
    assert attrs["temperature"] == 1.0 and attrs["chain_method"] == "vectorized"
    assert 0 <= attrs["compile_time"] <= attrs["sampling_time"]
    n_steps = nuts_run.sample_stats["n_steps"].values
    # one gradient per chain at the start, one per leapfrog step of the warmup and of the kept draws
    assert attrs["num_grad_evals"] > NUM_CHAINS + n_steps.sum()  # the warmup adds its own
    depth = nuts_run.sample_stats["tree_depth"].values
    assert ((2 ** (depth - 1) < n_steps + 1) & (n_steps + 1 <= 2**depth)).all()


def test_layout_matches_the_pyro_backend(gaussian, nuts_run):
    pyro_run = gp.sample_latent(
        gaussian.gebm, "nuts", backend="pyro", num_samples=5, warmup_steps=5, num_chains=2
    )
    assert set(nuts_run.groups()) == set(pyro_run.groups()) == {"posterior", "sample_stats"}
    for group in ("posterior", "sample_stats"):
        ours, theirs = nuts_run[group], pyro_run[group]
        assert set(ours.data_vars) == set(theirs.data_vars), group
        for name in theirs.data_vars:
            assert ours[name].dims == theirs[name].dims, (group, name)
            # booleans stay booleans; numbers may differ in kind (the Pyro builder stores counts as floats)
            kinds = ours[name].dtype.kind, theirs[name].dtype.kind
            assert kinds[0] == kinds[1] if "b" in kinds else set(kinds) <= set("iuf"), (group, name, kinds)
        assert set(theirs.attrs) - {"created_at", "arviz_version"} <= set(ours.attrs), group
    assert nuts_run.posterior["x"].shape == (NUM_CHAINS, NUM_SAMPLES, 3)
    assert set(pyro_run.attrs) - {"created_at", "arviz_version"} <= set(nuts_run.attrs)


def test_hmc_without_warmup_counts_every_gradient(gaussian):
    # trajectory 1.5 (0.5 × 3): well short of the latent half-periods π·σ ∈ (1.8, 3.1) where HMC resonates
    steps, chains, draws = 3, 2, 400
    idata = sample_latent_numpyro(
        gaussian.gebm,
        "hmc",
        num_samples=draws,
        warmup_steps=0,
        num_chains=chains,
        seed=1,
        step_size=0.5,
        num_steps=steps,
        init=np.zeros((chains, 3)),
    )
    assert "tree_depth" not in idata.sample_stats
    assert (idata.sample_stats["n_steps"].values == steps).all()
    assert idata.attrs["num_grad_evals"] == chains * (1 + draws * steps)
    assert idata.attrs["num_steps"] == steps and idata.attrs["step_size"] == 0.5
    x = torch.tensor(idata.posterior["x"].values.reshape(-1, 3))
    # 800 draws with ESS ≳ 700: MC error of the means ~ 0.05, of the covariances ~ 0.07
    assert_moments(x, gaussian.mean, gaussian.cov, mean_tol=0.15, cov_tol=0.2)


def test_default_init_is_the_pyro_backends():
    # the Pyro backend's starting points for a seed: torch.randn from the run's seeded generator
    generator, _ = gp.sampling.driver.chain_seeds(7, 2)
    start = torch.randn(2, 3, generator=generator, dtype=torch.float32).numpy()
    np.testing.assert_array_equal(np.asarray(default_init(7, 2, 3, jnp.float32)), start)


def test_bad_input(gaussian):
    gebm = gaussian.gebm
    with pytest.raises(ValueError, match=r"'init' should have shape \[num_chains, d\] = \[2, 3\]"):
        sample_latent_numpyro(gebm, num_chains=2, init=np.zeros((2, 4)))
    with pytest.raises(ValueError, match="NaN"):
        sample_latent_numpyro(gebm, num_chains=1, init=np.full((1, 3), np.nan))
    with pytest.raises(ValueError, match="method 'sir' is not available with backend 'numpyro'"):
        sample_latent_numpyro(gebm, method="sir")
    with pytest.raises(ValueError, match="unknown method 'gibbs'"):
        sample_latent_numpyro(gebm, method="gibbs")
    with pytest.raises(ValueError, match="'chain_method'"):
        sample_latent_numpyro(gebm, chain_method="sequential-ish")
    with pytest.raises(TypeError, match="max_depth"):
        sample_latent_numpyro(gebm, max_depth=3)
    with pytest.raises(ValueError, match="'temperature'"):
        sample_latent_numpyro(gebm, temperature=0.0)
    with pytest.raises(ValueError, match="'num_chains'"):
        sample_latent_numpyro(gebm, num_chains=0)
    with pytest.raises(ValueError, match="not available with backend 'numpyro'"):
        gp.sample_latent(gebm, "sir", backend="numpyro")
    with pytest.raises(TypeError, match="_Odd"):

        class _Odd(torch.nn.Module):
            dim = 3

            def forward(self, x):
                return x.sum(-1)

        sample_latent_numpyro(gp.GEBM(gp.AffineBase(3), _Odd()))


# ------------------------------------------------------------------ the NumPyro distribution


def test_distribution_log_prob_is_the_exact_density(gaussian):
    d = GEBMDistribution(gaussian.gebm)
    x = 2.0 * jax.random.normal(jax.random.PRNGKey(0), (20, 3))
    normal = torch.distributions.MultivariateNormal(gaussian.mean, gaussian.cov)
    exact = normal.log_prob(torch.tensor(np.array(x)))
    np.testing.assert_allclose(np.asarray(d.log_prob(x)), exact.numpy(), rtol=1e-4, atol=1e-4)
    d2 = GEBMDistribution(gp.to_jax(gaussian.gebm), log_partition=gaussian.log_partition + 1.0)
    np.testing.assert_allclose(np.asarray(d2.log_prob(x)), exact.numpy() - 1.0, rtol=1e-4, atol=1e-4)
    assert d.support is dist.constraints.real_vector and not d.has_rsample
    assert d.event_shape == (3,) and d.batch_shape == ()


def test_distribution_sir_samples_have_the_exact_moments(gaussian):
    # 4096 draws with 512 proposals each: MC error of the means ~ 0.02, of the covariances ~ 0.03
    d = GEBMDistribution(gaussian.gebm, num_proposals=512)
    x = d.sample(jax.random.PRNGKey(0), (4096,))
    assert x.shape == (4096, 3)
    assert_moments(torch.tensor(np.array(x)), gaussian.mean, gaussian.cov, mean_tol=0.08, cov_tol=0.12)


def test_distribution_shapes_pytree_and_model_use(gaussian):
    d = GEBMDistribution(gaussian.gebm, num_proposals=4, batch_shape=(2,))
    assert jax.eval_shape(lambda key: d.sample(key, (5,)), jax.random.PRNGKey(1)).shape == (5, 2, 3)
    x = jax.random.normal(jax.random.PRNGKey(1), (5, 2, 3))
    assert d.log_prob(x).shape == (5, 2)
    assert d.log_prob(jnp.zeros(3)).shape == (2,)
    assert d.expand((4, 2)).batch_shape == (4, 2)
    # a pytree: it passes through jit
    lp = jax.jit(lambda dd, v: dd.log_prob(v))(d, x)
    np.testing.assert_allclose(np.asarray(lp), np.asarray(d.log_prob(x)), rtol=1e-6)

    def model():
        with numpyro.plate("n", 10):
            return numpyro.sample("x", GEBMDistribution(gaussian.gebm, num_proposals=4))

    tr = handlers.trace(handlers.seed(model, 0)).get_trace()
    assert tr["x"]["value"].shape == (10, 3)
    assert tr["x"]["fn"].log_prob(tr["x"]["value"]).shape == (10,)
    with pytest.raises(ValueError, match=r"shape \[\.\.\., 3\]"):
        d.log_prob(jnp.zeros((5, 2)))
    with pytest.raises(ValueError, match="'num_proposals'"):
        GEBMDistribution(gaussian.gebm, num_proposals=0)
    with pytest.raises(ValueError, match="'log_partition'"):
        GEBMDistribution(gaussian.gebm, log_partition=jnp.ones(2))


# ------------------------------------------------------------------ the latent reparameterisation


def test_reparam_nuts_matches_the_exact_gaussian_posterior(gaussian):
    # prior x ~ Q = N(μ, Σ) (the GEBM), likelihood y | x ~ N(x, σ² I): the posterior is Gaussian with
    # precision Σ⁻¹ + I/σ² and mean Λ⁻¹(Σ⁻¹μ + y/σ²). NUTS runs on the latent site x_latent.
    sigma = 0.7
    y = np.array([1.0, -1.0, 0.5])
    prec = torch.linalg.inv(gaussian.cov) + torch.eye(3, dtype=torch.float64) / sigma**2
    cov = torch.linalg.inv(prec)
    mean = cov @ (torch.linalg.solve(gaussian.cov, gaussian.mean) + torch.tensor(y) / sigma**2)
    prior = GEBMDistribution(gaussian.gebm)

    def model(obs):
        x = numpyro.sample("x", prior)
        numpyro.sample("y", dist.Normal(x, sigma).to_event(1), obs=obs)

    reparam_model = handlers.reparam(model, config={"x": GEBMReparam()})
    mcmc = MCMC(NUTS(reparam_model), num_warmup=300, num_samples=3000, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(0), jnp.asarray(y))
    samples = mcmc.get_samples()
    assert set(samples) == {"x", "x_latent"}
    # 3000 draws, ESS ~ 2000: MC error of the means ~ 0.01
    assert_moments(torch.tensor(np.array(samples["x"])), mean, cov, mean_tol=0.06, cov_tol=0.06)
    # the model's density in z is η(z)·exp(−E(G(z)) − A) × likelihood: the sites of the Pyro GEBMReparam
    tr = handlers.trace(handlers.seed(reparam_model, 1)).get_trace(jnp.asarray(y))
    assert tr["x"]["type"] == "deterministic" and "x_energy" in tr
    z = tr["x_latent"]["value"]
    with torch.no_grad():
        zt = torch.tensor(np.array(z), dtype=torch.float64)
        want = -gaussian.gebm.latent_energy(zt) - gaussian.log_partition
    np.testing.assert_allclose(float(tr["x_energy"]["fn"].log_factor), float(want), rtol=1e-4, atol=1e-4)


def test_reparam_bad_sites(gaussian):
    prior = GEBMDistribution(gaussian.gebm)

    def observed():
        numpyro.sample("x", prior, obs=jnp.zeros(3))

    def not_a_gebm():
        numpyro.sample("x", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="observed"):
        handlers.seed(handlers.reparam(observed, config={"x": GEBMReparam()}), 0)()
    with pytest.raises(TypeError, match="Normal"):
        handlers.seed(handlers.reparam(not_a_gebm, config={"x": GEBMReparam()}), 0)()


# ------------------------------------------------------------------ a fresh process: host devices and x64

_FRESH_PROCESS = r"""
import numpyro
numpyro.set_host_device_count(2)  # before JAX initialises
import jax
jax.config.update("jax_enable_x64", True)
import json, sys
import numpy as np, torch
sys.path.insert(0, sys.argv[1])
from common import gaussian_case
import gebm_ppl as gp

case = gaussian_case(3, seed=0)
jg = gp.to_jax(case.gebm)
x = np.random.default_rng(0).normal(size=(5, 3))
err = float(np.abs(np.asarray(jg.log_prob(x)) - case.gebm.log_prob(torch.tensor(x)).detach().numpy()).max())
runs = {
    m: gp.sample_latent(case.gebm, "nuts", backend="numpyro", num_samples=30, warmup_steps=30, num_chains=2,
                        chain_method=m)
    for m in ("parallel", "vectorized")
}
z = {m: run.posterior["z"].values for m, run in runs.items()}
print(json.dumps({
    "devices": jax.local_device_count(), "dtype": str(jg.dtype), "log_prob_err": err,
    "z_dtype": str(z["parallel"].dtype), "max_diff": float(np.abs(z["parallel"] - z["vectorized"]).max()),
    "grads": [runs[m].attrs["num_grad_evals"] for m in ("parallel", "vectorized")],
}))
"""


def test_parallel_chains_and_float64_in_a_fresh_process():
    # parallel chains need host devices and float64 needs x64, both set before JAX starts: a new process
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.pathsep.join([os.path.dirname(here), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    out = subprocess.run(
        [sys.executable, "-c", _FRESH_PROCESS, here], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["devices"] == 2
    assert res["dtype"] == "float64" and res["z_dtype"] == "float64" and res["log_prob_err"] < 1e-12
    # one device per chain (pmap) gives exactly the draws of the vectorised chains: same keys, same maths
    assert res["max_diff"] < 1e-10 and res["grads"][0] == res["grads"][1]
