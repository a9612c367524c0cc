"""Latent-space samplers: closed-form Gaussian GEBM, exact discretised laws, mode switching, layout, bad input."""

import importlib.util
import math

import numpy as np
import pytest
import torch
from common import gaussian_case
from torch import nn

import gebm_ppl as gp
from gebm_ppl.sampling import imh, kinetic, sir, ula

HAS_NUMPYRO = importlib.util.find_spec("numpyro") is not None and importlib.util.find_spec("jax") is not None


def _draws(idata, name: str) -> torch.Tensor:
    v = np.array(idata.posterior[name].values)  # a writable copy
    return torch.as_tensor(v.reshape(-1, v.shape[-1]))


def _assert_gaussian_moments(idata, mean, cov, bias: float = 0.0, k: float = 5.0):
    """Mean and covariance of the draws of x within k Monte-Carlo standard errors (+ a bias allowance).

    The standard errors use ArviZ's bulk ESS per component (minimum over components for the covariance):
    se(mean_i) = sd_i/√ESS_i, se(cov_ij) = √((C_ii C_jj + C_ij²)/ESS). ``bias`` (a fraction of
    √(C_ii C_jj)) allows for the known O(step) bias of ULA, kinetic Langevin and SIR.
    """
    import arviz as az

    ess = torch.as_tensor(az.ess(idata, var_names=["x"])["x"].values, dtype=torch.float64)
    assert bool((ess > 150).all()), f"too few effective draws for the check: ESS = {ess}"
    x = _draws(idata, "x").to(torch.float64)
    sd = cov.diagonal().sqrt()
    scale = torch.outer(sd, sd)
    err_mean = (x.mean(0) - mean).abs()
    tol_mean = k * sd / ess.sqrt() + bias * sd
    assert bool((err_mean < tol_mean).all()), f"mean error {err_mean} >= {tol_mean}"
    err_cov = (torch.cov(x.T) - cov).abs()
    tol_cov = k * ((scale**2 + cov**2) / ess.min()).sqrt() + bias * scale
    assert bool((err_cov < tol_cov).all()), f"covariance error {err_cov} >= {tol_cov}"


# method, backend, settings: small runs sized for ESS of several hundred in 3-D (float64).
# Pyro's HMC has no trajectory jitter and takes int(T/ε) leapfrog steps: its default T = 2π is a full
# period of the mass-adapted Gaussian (draws barely move), and T near π makes them antithetic with a
# slowly mixing variance; T = 2.4 gives 1.7-2.4 time units after the truncation, well-mixing for every seed
# tried (1-6).
CASES = [
    ("nuts", "pyro", dict(num_chains=4, warmup_steps=100, num_samples=150)),
    ("hmc", "pyro", dict(num_chains=2, warmup_steps=200, num_samples=300, trajectory_length=2.4)),
    ("ula", "pyro", dict(num_chains=64, warmup_steps=600, num_samples=100, step_size=0.01, thin=20)),
    ("kinetic", "pyro", dict(num_chains=64, warmup_steps=100, num_samples=100, step_size=0.1, friction=1.0, thin=10)),
    ("imh", "pyro", dict(num_chains=8, warmup_steps=50, num_samples=300)),
    ("sir", "pyro", dict(num_chains=8, warmup_steps=0, num_samples=100, num_proposals=256)),
]
# discretisation bias allowance, as a fraction of the standard deviation (see the kernels' docstrings):
# ULA γ = 0.01: variance × 1/(1 − γλ/2), λ ≤ 4 here; kinetic h = 0.1: × 1/(1 − h²λ/4); SIR: O(1/K).
BIAS = {"ula": 0.03, "kinetic": 0.03, "sir": 0.03}


@pytest.mark.parametrize(("method", "backend", "settings"), CASES)
def test_every_sampler_recovers_the_gaussian_closed_form(method, backend, settings):
    case = gaussian_case(3, seed=0)
    idata = gp.sample_latent(case.gebm, method, backend, seed=1, **settings)
    assert idata.posterior["x"].shape == (settings["num_chains"], settings["num_samples"], 3)
    _assert_gaussian_moments(idata, case.mean, case.cov, bias=BIAS.get(method, 0.0))
    if method == "nuts":
        import arviz as az

        rhat = az.rhat(idata, var_names=["x"])["x"].values
        assert (rhat < 1.05).all(), rhat


def test_nuts_layout_stats_and_reproducibility():
    case = gaussian_case(2, seed=4)
    state = torch.get_rng_state()
    a = gp.sample_latent(case.gebm, "nuts", num_samples=30, warmup_steps=20, num_chains=2, seed=3)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is left alone
    b = gp.sample_latent(case.gebm, "nuts", num_samples=30, warmup_steps=20, num_chains=2, seed=3)
    np.testing.assert_array_equal(a.posterior["z"].values, b.posterior["z"].values)
    c = gp.sample_latent(case.gebm, "nuts", num_samples=30, warmup_steps=20, num_chains=2, seed=4)
    assert not np.array_equal(a.posterior["z"].values, c.posterior["z"].values)

    assert a.posterior["z"].dims == ("chain", "draw", "z_dim")
    assert a.posterior["x"].dims == ("chain", "draw", "x_dim")
    stats = a.sample_stats
    expected = {"diverging", "acceptance_rate", "step_size", "n_steps", "tree_depth", "lp", "energy"}
    assert expected <= set(stats.data_vars)
    for name in expected:
        assert stats[name].dims == ("chain", "draw"), name
    assert stats["diverging"].dtype == bool
    assert stats["n_steps"].dtype == np.int64 and stats["tree_depth"].dtype == np.int64
    acc = stats["acceptance_rate"].values
    assert ((acc >= 0) & (acc <= 1 + 1e-9)).all()
    n = stats["n_steps"].values
    depth = stats["tree_depth"].values
    assert (n >= 1).all() and ((2 ** (depth - 1) <= n) & (n <= 2**depth - 1)).all()
    # x = G(z) and lp = −U(z) at every draw
    z = torch.as_tensor(a.posterior["z"].values)
    with torch.no_grad():
        torch.testing.assert_close(torch.as_tensor(a.posterior["x"].values), case.gebm.base(z))
        torch.testing.assert_close(torch.as_tensor(stats["lp"].values), -case.gebm.latent_potential(z))
    # the Hamiltonian at the start of a transition is at least its potential part at the previous draw
    assert (stats["energy"].values[:, 1:] >= -stats["lp"].values[:, :-1] - 1e-9).all()
    attrs = a.attrs
    assert attrs["method"] == "nuts" and attrs["backend"] == "pyro" and attrs["seed"] == 3
    assert attrs["temperature"] == 1.0 and attrs["sampling_time"] > 0
    # gradient evaluations: the draws' leapfrog steps plus the warmup's, plus one per chain at the start
    assert attrs["num_grad_evals"] > n.sum() + 2 * 20


@pytest.mark.parametrize("method", ["ula", "kinetic", "imh", "sir"])
def test_batched_samplers_layout_and_costs(method):
    case = gaussian_case(2, seed=5)
    idata = gp.sample_latent(case.gebm, method, num_samples=7, warmup_steps=5, num_chains=3, seed=0)
    again = gp.sample_latent(case.gebm, method, num_samples=7, warmup_steps=5, num_chains=3, seed=0)
    np.testing.assert_array_equal(idata.posterior["z"].values, again.posterior["z"].values)
    stats = idata.sample_stats
    z = torch.as_tensor(idata.posterior["z"].values)
    with torch.no_grad():
        torch.testing.assert_close(torch.as_tensor(stats["lp"].values), -case.gebm.latent_potential(z))
        torch.testing.assert_close(torch.as_tensor(idata.posterior["x"].values), case.gebm.base(z))
    attrs = idata.attrs
    if method in ("ula", "kinetic"):
        assert attrs["num_grad_evals"] == 3 * (1 + 5 + 7)  # start + warmup + draws, per chain
    else:
        assert attrs["num_grad_evals"] == 0
    if method == "imh":
        assert stats["accepted"].dtype == bool and attrs["num_energy_evals"] == 3 * (1 + 5 + 7)
        acc = stats["acceptance_rate"].values
        assert ((acc >= 0) & (acc <= 1)).all()
    if method == "sir":
        assert attrs["num_energy_evals"] == 3 * (1 + 7 * 256)
        ess = stats["importance_ess"].values
        assert ((ess >= 1) & (ess <= 256 + 1e-9)).all()


def _harmonic(z):
    return 0.5 * (z * z).sum(-1)


def test_ula_stationary_law_is_the_known_discretised_gaussian():
    # For U = ½z², ULA is the AR(1) z' = (1 − γ)z + √(2γ)ξ with stationary variance 1/(1 − γ/2).
    # 20 000 chains × 200 post-burn-in draws: the sample variance has a relative error of ~0.3 %.
    gen = torch.Generator().manual_seed(0)
    gamma = 0.5
    state = ula.init(torch.zeros(20000, 1, dtype=torch.float64), _harmonic)
    draws = []
    for i in range(260):
        state = ula.step(state, _harmonic, gen, step_size=gamma)
        if i >= 60:
            draws.append(state.z)
    var = torch.stack(draws).var().item()
    assert abs(var - 1 / (1 - gamma / 2)) < 0.02, var


@pytest.mark.parametrize("h", [1.0, 1.5])
def test_kinetic_stationary_law_is_the_known_discretised_gaussian(h):
    # For U = ½z² (the target N(0, 1)) the scheme alternates an exact Ornstein–Uhlenbeck refresh with
    # velocity Verlet, which both keep exp(−p²/2 − (1 − h²/4) z²/2) invariant (Verlet's shadow energy).
    # So the recorded positions have stationary variance 1/(1 − h²/4): 4/3 at h = 1 and 16/7 at h = 1.5,
    # and so have the recorded (half-step) velocities v = p + (h/2) z. 20 000 chains, κ = 1.
    gen = torch.Generator().manual_seed(1)
    state = kinetic.init(torch.zeros(20000, 1, dtype=torch.float64), _harmonic)
    zs, vs = [], []
    for i in range(300):
        state = kinetic.step(state, _harmonic, gen, step_size=h, friction=1.0)
        if i >= 100:
            zs.append(state.z)
            vs.append(state.v)
    var_z = torch.stack(zs).var().item()
    var_v = torch.stack(vs).var().item()
    exact = 1 / (1 - h * h / 4)
    assert abs(var_v / exact - 1) < 0.02, (var_v, exact)
    assert abs(var_z / exact - 1) < 0.02, (var_z, exact)
    assert abs(torch.stack(zs).mean().item()) < 0.02


def test_kinetic_step_follows_the_design_scheme():
    # One step from (z, v) by hand: OU refresh around two half kicks with the gradient at z, then a full drift.
    gen_a, gen_b = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    z = torch.tensor([[0.3, -1.2]], dtype=torch.float64)
    state = kinetic.init(z, _harmonic)._replace(v=torch.tensor([[0.5, 0.1]], dtype=torch.float64))
    h, kappa = 0.2, 0.7
    new = kinetic.step(state, _harmonic, gen_a, step_size=h, friction=kappa)
    xi = torch.randn(1, 2, generator=gen_b, dtype=torch.float64)
    grad = z  # ∇½z² = z
    v = math.exp(-kappa * h) * (state.v - h / 2 * grad) + math.sqrt(1 - math.exp(-2 * kappa * h)) * xi
    v = v - h / 2 * grad
    torch.testing.assert_close(new.v, v)
    torch.testing.assert_close(new.z, z + h * v)
    torch.testing.assert_close(new.grad, new.z)
    torch.testing.assert_close(new.potential, _harmonic(new.z))


def test_imh_and_sir_are_exact_when_the_energy_is_zero():
    # With E ≡ 0 the target is the proposal: IMH accepts every proposal and SIR weights are uniform.
    gen = torch.Generator().manual_seed(0)
    state = imh.init(torch.zeros(5, 3, dtype=torch.float64), _harmonic)
    for _ in range(3):
        state = imh.step(state, _harmonic, gen)
        assert bool(state.accepted.all()) and torch.allclose(state.accept_prob, torch.ones(5, dtype=torch.float64))
    s = sir.step(sir.init(torch.zeros(5, 3, dtype=torch.float64), _harmonic), _harmonic, gen, num_proposals=64)
    torch.testing.assert_close(s.ess, torch.full((5,), 64.0, dtype=torch.float64))


def test_temperature_scales_the_energy():
    # U_T(z) = ½‖z‖² + T·E(G z) is Gaussian with precision I + T·LᵀPL and mean −(I + T·LᵀPL)⁻¹ T·LᵀPδ.
    case = gaussian_case(2, seed=6)
    gebm, temp = case.gebm, 3.0
    L = gebm.base.scale_tril.detach()
    P = gebm.energy.precision.detach()
    delta = (gebm.base.loc - gebm.energy.center).detach()
    prec = torch.eye(2, dtype=torch.float64) + temp * L.T @ P @ L
    cov = torch.linalg.inv(prec)
    mean = -cov @ (temp * L.T @ P @ delta)
    assert torch.linalg.eigvalsh(prec).max() < 11  # kinetic h = 0.1: variance bias h²λ/4 < 3 %
    idata = gp.sample_latent(
        gebm, "kinetic", num_samples=200, warmup_steps=200, num_chains=64, temperature=temp, seed=2,
        step_size=0.1, thin=5,
    )
    assert idata.attrs["temperature"] == temp
    z = _draws(idata, "z")
    # 12 800 draws, ESS ≈ 2800 for the slow direction: standard errors ≤ 0.018 (mean) and ≤ 0.024 (cov)
    # for sds ≤ 0.94; tolerances ≈ 4 standard errors, plus the 3 % bias for the covariance.
    assert (z.mean(0) - mean).abs().max() < 0.08, (z.mean(0), mean)
    assert (torch.cov(z.T) - cov).abs().max() < 0.12, (torch.cov(z.T), cov)


class _DoubleWell(nn.Module):
    """E(x) = b·(x₁²/m² − 1)² − ½x₁²: with the identity base, U(z) = b·(z₁²/m² − 1)² + ½‖z₂..‖².

    Two modes at z₁ = ±m separated by a broad barrier of height b (curvature 4b/m² at the top).
    """

    def __init__(self, dim: int, m: float, b: float):
        super().__init__()
        self.dim, self.m, self.b = dim, m, b

    def forward(self, x):
        x1 = x[..., 0]
        return self.b * (x1**2 / self.m**2 - 1) ** 2 - 0.5 * x1**2


def _mode_switches(z1: torch.Tensor, m: float) -> torch.Tensor:
    """Per-chain number of moves between the modes, with hysteresis: a switch needs z₁ beyond ±m/2."""
    side = torch.where(z1[:, 0] > 0, 1.0, -1.0)
    count = torch.zeros(z1.shape[0], dtype=torch.long)
    for t in range(1, z1.shape[1]):
        new = torch.where(z1[:, t] > m / 2, 1.0, torch.where(z1[:, t] < -m / 2, -1.0, side))
        count += new != side
        side = new
    return count


def test_kinetic_langevin_switches_modes_more_often_than_ula():
    # The paper's claim (kinetic chains visit several modes, overdamped ones stick): same step size 0.25,
    # same gradient evaluations (64 chains × 2000 steps), all chains started in the left mode.
    # Measured over seeds 0-4: ULA 1.7-2.1 switches per chain, kinetic (κ = 0.1) 3.9-4.3, ratio ≥ 1.86;
    # the test asks for 1.5 at seed 0.
    m = 8.0
    gebm = gp.GEBM(gp.AffineBase(2).double(), _DoubleWell(2, m=m, b=2.0))
    init = torch.zeros(64, 2, dtype=torch.float64)
    init[:, 0] = -m
    common = dict(num_samples=2000, warmup_steps=0, num_chains=64, init=init, seed=0, step_size=0.25)
    runs = {
        "ula": gp.sample_latent(gebm, "ula", **common),
        "kinetic": gp.sample_latent(gebm, "kinetic", friction=0.1, **common),
    }
    assert runs["ula"].attrs["num_grad_evals"] == runs["kinetic"].attrs["num_grad_evals"]
    switches = {k: _mode_switches(torch.as_tensor(v.posterior["z"].values[..., 0]), m) for k, v in runs.items()}
    mean = {k: v.double().mean().item() for k, v in switches.items()}
    assert mean["kinetic"] > 1.5 * mean["ula"], mean
    assert mean["ula"] > 0.5  # ULA does cross: the comparison is of rates, not of a stuck chain


def test_sampling_leaves_the_gebm_as_it_was():
    # Spectral normalisation must not run its power iteration during sampling (eval mode), and the
    # module's training flag and parameters' requires_grad are restored afterwards.
    torch.manual_seed(0)
    gebm = gp.GEBM(gp.RealNVP(2, hidden_features=8, num_layers=2), gp.EnergyMLP(2, hidden=(8,)))
    gebm.train()
    before = {k: v.clone() for k, v in gebm.state_dict().items()}
    gp.sample_latent(gebm, "ula", num_samples=5, warmup_steps=5, num_chains=2)
    gp.sample_latent(gebm, "nuts", num_samples=3, warmup_steps=3, num_chains=1)
    assert gebm.training
    assert all(p.requires_grad for p in gebm.parameters())
    after = gebm.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_init_is_used_as_the_starting_point():
    case = gaussian_case(2, seed=0)
    init = torch.tensor([[5.0, 5.0], [-5.0, 0.0]], dtype=torch.float64)
    # ULA's first draw is one small step from init
    idata = gp.sample_latent(case.gebm, "ula", num_samples=1, warmup_steps=0, num_chains=2, init=init, step_size=1e-4)
    torch.testing.assert_close(torch.as_tensor(idata.posterior["z"].values[:, 0]), init, atol=0.05, rtol=0)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(num_chains=0), ValueError, "num_chains"),
        (dict(num_chains=1.5), TypeError, "num_chains"),
        (dict(method="gibbs"), ValueError, "unknown method 'gibbs'"),
        (dict(backend="stan"), ValueError, "unknown backend 'stan'"),
        (dict(method="sir", backend="numpyro"), ValueError, "not available with backend 'numpyro'"),
        (dict(init=torch.tensor([[0.0, math.nan], [0.0, 0.0]])), ValueError, "'init' contains NaN or inf"),
        (dict(init=torch.tensor([[0.0, math.inf], [0.0, 0.0]])), ValueError, "'init' contains NaN or inf"),
        (dict(init=torch.zeros(3, 2)), ValueError, r"'init' should have shape \[num_chains, d\] = \[2, 2\]"),
        (dict(init="start"), TypeError, "'init' should be a tensor"),
        (dict(temperature=0.0), ValueError, "temperature"),
        (dict(num_samples=0), ValueError, "num_samples"),
        (dict(warmup_steps=-1), ValueError, "warmup_steps"),
        (dict(seed=-1), ValueError, "seed"),
        (dict(method="ula", friction=1.0), TypeError, r"unknown keyword argument\(s\) \['friction'\] for method 'ula'"),
        (dict(method="kinetic", step_size=-0.1), ValueError, "step_size"),
        (dict(method="nuts", num_steps=3), TypeError, r"argument\(s\) \['num_steps'\] for method 'nuts'"),
    ],
)
def test_bad_input_gives_clear_errors(kwargs, error, match):
    case = gaussian_case(2, seed=0)
    args = dict(method="nuts", num_samples=2, warmup_steps=1, num_chains=2)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        gp.sample_latent(case.gebm, **args)


def test_not_a_gebm_is_a_type_error():
    with pytest.raises(TypeError, match="'gebm' should be a gebm_ppl.GEBM"):
        gp.sample_latent(torch.nn.Linear(2, 2), "ula")


@pytest.mark.skipif(not HAS_NUMPYRO, reason="NumPyro not installed")
def test_numpyro_backend_gets_the_validated_arguments(monkeypatch):
    # The dispatcher validates, then hands everything to gebm_ppl.numpyro.mcmc.sample_latent_numpyro
    # (tested with its own closed forms in that backend's tests; here without paying for JIT compilation).
    import gebm_ppl.numpyro.mcmc as backend

    calls = []
    monkeypatch.setattr(backend, "sample_latent_numpyro", lambda gebm, **kw: calls.append((gebm, kw)) or "idata")
    case = gaussian_case(2, seed=0)
    init = np.zeros((3, 2))
    out = gp.sample_latent(
        case.gebm, "hmc", "numpyro", 11, 7, 3, temperature=2.0, init=init, seed=5, num_steps=4
    )
    assert out == "idata"
    gebm, kw = calls[0]
    assert gebm is case.gebm
    assert kw.pop("init").shape == (3, 2)
    assert kw == dict(
        method="hmc", num_samples=11, warmup_steps=7, num_chains=3, temperature=2.0, seed=5, progress=False,
        chain_method="vectorized", num_steps=4,
    )
    with pytest.raises(ValueError, match="'init' contains NaN"):
        gp.sample_latent(case.gebm, "nuts", "numpyro", num_chains=1, init=torch.tensor([[0.0, math.nan]]))
    assert len(calls) == 1


def test_numpyro_backend_without_jax_is_a_clear_import_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "gebm_ppl.numpyro.mcmc", None)  # makes the import fail
    case = gaussian_case(2, seed=0)
    with pytest.raises(ImportError, match="backend='numpyro' needs JAX and NumPyro"):
        gp.sample_latent(case.gebm, "nuts", "numpyro", num_chains=1)
