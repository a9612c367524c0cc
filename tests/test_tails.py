"""StudentTBase (gebm_ppl.bases.tails): G = G_inner ∘ F_ν⁻¹∘Φ, a Student-t latent (ν = 1, 2) under a density base.

Closed forms: h against scipy's Student-t quantile of Φ, its Jacobian against autograd, log g against the
product of t_ν densities when the inner base is affine, ∫ g = 1 by 2-D quadrature on ℝ² (substitution
x = tan θ), the histogram of samples against the CDF, Â = −c for a constant energy; then build_base's
``latent_df`` key, checkpoints and the JAX twin.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from common import one_thread
from nflows.transforms import CompositeTransform
from scipy import stats
from torch import nn

import gebm_ppl as gp
from gebm_ppl import runs
from gebm_ppl.bases import ExpTanhAffineCoupling, NflowsTransformBase
from gebm_ppl.bases.tails import gaussian_to_student_t, student_t_log_prob, student_t_to_gaussian

DFS = (1, 2)
F64 = torch.float64


def _affine(dim: int, loc, scale) -> gp.AffineBase:
    """AffineBase with loc m and diagonal scale s (float64): the inner base with a closed form."""
    base = gp.AffineBase(dim).double()
    with torch.no_grad():
        base.loc.copy_(torch.as_tensor(loc, dtype=F64))
        base.raw_tril.copy_(torch.diag(torch.log(torch.as_tensor(scale, dtype=F64))))
    return base


class _BoundedNet(nn.Module):
    """A coupling conditioner with bounded outputs: far from the origin each coupling tends to a fixed affine map,
    so the integrand of the quadrature has no features sharper than the grid there."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.a, self.b = nn.Linear(in_features, 8), nn.Linear(8, out_features)

    def forward(self, x, context=None):
        return 1.5 * torch.tanh(self.b(torch.tanh(self.a(x))))


def _bounded_coupling_flow(seed: int = 0) -> NflowsTransformBase:
    torch.manual_seed(seed)
    layers = [ExpTanhAffineCoupling((torch.arange(2) + k) % 2, _BoundedNet) for k in range(3)]
    return NflowsTransformBase(CompositeTransform(layers), 2).double()


def _randomised_realnvp(dim: int = 2, seed: int = 0, spread: float = 0.3) -> gp.RealNVP:
    torch.manual_seed(seed)
    base = gp.RealNVP(dim, hidden_features=8, num_layers=2).double()
    g = torch.Generator().manual_seed(seed + 5)
    with torch.no_grad():
        for p in base.parameters():  # off the identity initialisation
            p.add_(spread * torch.randn(p.shape, generator=g, dtype=F64))
    return base


def _quadrature(log_prob, n: int = 300) -> float:
    """∫_ℝ² exp(log_prob(x)) dx by the midpoint rule in θ ∈ (−π/2, π/2)², x = tan θ, dx = sec²θ dθ."""
    theta = (torch.arange(n, dtype=F64) + 0.5) / n * math.pi - math.pi / 2
    t1, t2 = torch.meshgrid(theta, theta, indexing="ij")
    x = torch.stack([torch.tan(t1), torch.tan(t2)], -1).reshape(-1, 2)
    weight = (torch.cos(t1) ** -2 * torch.cos(t2) ** -2).reshape(-1) * (math.pi / n) ** 2
    with torch.no_grad():
        return float((log_prob(x).exp() * weight).sum())


# ------------------------------------------------------------------ the elementwise bijection h = F_ν⁻¹∘Φ
@pytest.mark.parametrize("df", DFS)
def test_h_is_the_student_t_quantile_of_phi_and_its_jacobian(df):
    z = torch.tensor([-12.0, -8.0, -2.5, -1.0, -0.999, -0.2, -1e-7, 0.0, 1e-7, 0.3, 1.0, 1.001, 3.0, 9.0, 12.0],
                     dtype=F64)
    u, log_det = gaussian_to_student_t(z, df)
    zn = z.numpy()
    want = np.where(zn > 0, stats.t.isf(stats.norm.sf(zn), df), -stats.t.isf(stats.norm.cdf(zn), df))
    np.testing.assert_allclose(u.numpy(), want, rtol=1e-6)
    # log|h'| = log φ(z) − log t_ν(u), and log t_ν against scipy
    np.testing.assert_allclose(log_det.numpy(), stats.norm.logpdf(zn) - stats.t.logpdf(want, df), rtol=1e-9, atol=1e-9)
    # the inverse: the same numbers back, and its log-Jacobian is minus the forward one
    z_back, log_det_back = student_t_to_gaussian(u, df)
    np.testing.assert_allclose(z_back.numpy(), zn, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(log_det_back.numpy(), -log_det.numpy(), rtol=1e-9, atol=1e-9)
    # autograd derivatives = exp(log-Jacobian), both directions (a flipped sign would be off by a factor h'²)
    zg = torch.tensor([-4.0, -1.2, -0.5, 0.0, 0.4, 1.5, 6.0], dtype=F64, requires_grad=True)
    ug, ld = gaussian_to_student_t(zg, df)
    (grad,) = torch.autograd.grad(ug.sum(), zg)
    np.testing.assert_allclose(grad.numpy(), ld.detach().exp().numpy(), rtol=1e-7)
    ui = torch.tensor([-1e6, -3.0, -0.7, 0.0, 0.9, 1.2, 40.0], dtype=F64, requires_grad=True)
    zi, ldi = student_t_to_gaussian(ui, df)
    (grad,) = torch.autograd.grad(zi.sum(), ui)
    np.testing.assert_allclose(grad.numpy(), ldi.detach().exp().numpy(), rtol=1e-7)


@pytest.mark.parametrize("df", DFS)
def test_far_tails_stay_finite_and_exact(df):
    # float64: up to |u| = 1e300, past where S_ν(u) underflows (the Newton branch of Φ⁻¹)
    u = torch.tensor([1e20, 1e30, 1e100, 1e200, 1e300], dtype=F64)
    want = -math.log(math.pi) - 2 * torch.log(u) if df == 1 else -3 * torch.log(u)  # log t_ν for |u| ≫ 1
    np.testing.assert_allclose(student_t_log_prob(u, df).numpy(), want.numpy(), rtol=1e-12)
    z, log_det = student_t_to_gaussian(torch.cat([u, -u]), df)
    assert torch.isfinite(z).all() and torch.isfinite(log_det).all()
    np.testing.assert_allclose(z[:5].numpy(), -z[5:].numpy())
    assert (z[:5].diff() > 0).all()  # monotone
    # log S_ν(u) = log Φ(−z): z solves it even where S_ν(u) < 1e-308
    log_sf = -math.log(math.pi) - torch.log(u) if df == 1 else -math.log(2) - 2 * torch.log(u)  # S_ν(u)
    np.testing.assert_allclose(torch.special.log_ndtr(-z[:5]).numpy(), log_sf.numpy(), rtol=1e-9)
    # float32: a point the Gaussian-latent flow puts ~76,000 nats out keeps a finite log-density and gradients
    torch.manual_seed(0)
    inner = gp.RealNVP(3, hidden_features=8, num_layers=2)
    base = gp.StudentTBase(inner, df=df)
    x = torch.tensor([[390.0, -2.0, 0.5], [0.1, 0.2, -0.3]])
    assert float(-inner.log_prob(x[:1]).detach()) > 70_000
    lp = base.log_prob(x)
    u, log_det = inner.inverse(x)
    want = log_det.detach().double() + torch.from_numpy(stats.t.logpdf(u.detach().double().numpy(), df)).sum(-1)
    np.testing.assert_allclose(lp.detach().double().numpy(), want.numpy(), rtol=1e-5)
    assert -40 < float(lp[0].detach()) < 0
    lp.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in inner.parameters())


# ------------------------------------------------------------------ the density
@pytest.mark.parametrize("df", DFS)
def test_affine_inner_gives_the_student_t_product(df):
    loc, scale = [0.5, -1.0, 2.0], [2.0, 0.5, 1.5]
    base = gp.StudentTBase(_affine(3, loc, scale), df=df)
    x = torch.tensor([[0.0, 0.0, 0.0], [3.0, -40.0, 2.0], [-1e4, 5.0, 1e5]], dtype=F64)
    t = (x.numpy() - np.array(loc)) / np.array(scale)
    want = stats.t.logpdf(t, df).sum(-1) - np.log(scale).sum()  # log Π t_ν((x − m)/s)/s
    np.testing.assert_allclose(base.log_prob(x).detach().numpy(), want, rtol=1e-10)
    # the base contract's form log η(z) + log|det ∂G⁻¹/∂x| is the same number
    z, log_det = base.inverse(x)
    np.testing.assert_allclose(gp.Base.log_prob(base, x).detach().numpy(), want, rtol=1e-9)
    # forward and inverse agree, with opposite log-Jacobians
    x_back, log_det_fwd = base.forward_and_log_det(z)
    np.testing.assert_allclose(x_back.detach().numpy(), x.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(log_det_fwd.detach().numpy(), -log_det.detach().numpy(), rtol=1e-9)


@pytest.mark.parametrize("df", DFS)
def test_samples_match_the_cdf(df):
    base = gp.StudentTBase(_affine(1, [1.0], [2.0]), df=df)
    n = 40_000
    x = base.sample(n, generator=torch.Generator().manual_seed(3)).squeeze(-1).detach().numpy()
    edges = np.array([-np.inf, -40, -8, -3, -1, 0, 1, 2, 3, 5, 10, 40, np.inf])
    p = np.diff(stats.t.cdf((edges - 1.0) / 2.0, df))
    freq = np.histogram(x, edges)[0] / n
    assert np.all(np.abs(freq - p) < 4.5 * np.sqrt(p * (1 - p) / n)), (freq, p)
    # the density integrates to each bin's probability (log_prob and sampling describe one distribution)
    grid = torch.linspace(-1.0, 3.0, 4001, dtype=F64)[:, None]
    mass = float(torch.trapezoid(base.log_prob(grid).detach().exp(), grid.squeeze(-1)))
    assert mass == pytest.approx(p[4:8].sum(), rel=1e-6)


@pytest.mark.parametrize("df", DFS)
def test_integrates_to_one_by_quadrature(df):
    inner = _bounded_coupling_flow()
    base = gp.StudentTBase(inner, df=df)
    assert _quadrature(base.log_prob) == pytest.approx(1.0, abs=1e-3)
    # the check has teeth: without the inner Jacobian, or with a Gaussian latent's density at u, it is far from 1
    assert abs(_quadrature(lambda x: student_t_log_prob(inner.inverse(x)[0], df).sum(-1)) - 1) > 0.2
    assert abs(_quadrature(lambda x: student_t_log_prob(inner.inverse(x)[0], df).sum(-1) - inner.inverse(x)[1])
               - 1) > 0.2


def test_realnvp_inner_integrates_to_one():
    base = gp.StudentTBase(_randomised_realnvp(), df=2)
    assert _quadrature(base.log_prob, n=400) == pytest.approx(1.0, abs=2e-3)


def test_constant_energy_gives_minus_c():
    class Constant(gp.Energy):
        def __init__(self, dim: int, c: float):
            super().__init__()
            self.dim, self.c = dim, c

        def forward(self, x):
            return torch.full(x.shape[:-1], self.c, dtype=x.dtype)

    base = gp.StudentTBase(_randomised_realnvp(3, seed=1).float(), df=1)
    gebm = gp.GEBM(base, Constant(3, 2.5))
    with one_thread():
        est = gp.estimate_log_partition(gebm, num_samples=4000, batch_size=1000,
                                        generator=torch.Generator().manual_seed(0))
        x = base.sample(50, generator=torch.Generator().manual_seed(1)).detach()
        assert est.estimate == pytest.approx(-2.5, abs=1e-6) and est.ess == pytest.approx(4000)
        np.testing.assert_allclose(gebm.log_prob(x, log_partition=est.estimate).detach().numpy(),
                                   base.log_prob(x).detach().numpy(), rtol=1e-6, atol=1e-5)


# ------------------------------------------------------------------ configuration, checkpoints, errors
def _state(module) -> dict:
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_build_base_latent_df():
    config = runs.validate_config({"base": {"class": "RealNVP", "hidden_features": 8, "num_layers": 2}})
    plain = runs.build_base(config, 3, seed=7)
    assert type(plain) is gp.RealNVP
    assert type(runs.build_base(runs.apply_overrides(config, ["base.latent_df=inf"]), 3, seed=7)) is gp.RealNVP
    for df in (1, 2.0):
        wrapped = runs.build_base(runs.apply_overrides(config, [f"realnvp.latent_df={df}"]), 3, seed=7)
        assert type(wrapped) is gp.StudentTBase and wrapped.df == float(df)
        inner = _state(wrapped.inner)
        assert all(torch.equal(inner[k], v) for k, v in _state(plain).items())  # the same initial weights
    for bad in (3, 0.5, True, "two"):
        with pytest.raises(ValueError, match="latent_df"):
            runs.build_base({**config, "base": {**config["base"], "latent_df": bad}}, 3)
    with pytest.raises(ValueError, match="unknown option 'latent_dof'"):
        runs.validate_config({"base": {"latent_dof": 2}})
    gen = runs.validate_config({"base": {"class": "MLPGenerator", "latent_dim": 2, "latent_df": 2}})
    with pytest.raises(ValueError, match="density"):
        runs.build_base(gen, 4)
    # the class can also be named directly; dim comes from the data
    direct = runs.build_base(runs.validate_config({"base": {"class": "StudentTBase", "inner": "NSF", "df": 1,
                                                            "inner_config": {"transforms": 1, "bins": 4}}}), 3)
    assert type(direct.inner) is gp.NSF and direct.dim == 3 and direct.df == 1.0


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    base = gp.StudentTBase(gp.RealNVP(3, hidden_features=8, num_layers=2), df=1)
    gebm = gp.GEBM(base, gp.EnergyMLP(3, hidden=(8,)), log_partition=0.4)
    with torch.no_grad():
        for p in base.parameters():
            p.add_(0.1)
    gebm.save(tmp_path / "m.pt")
    back = gp.GEBM.load(tmp_path / "m.pt")
    assert type(back.base) is gp.StudentTBase and back.base.config == base.config
    assert back.base.config == {"inner": "RealNVP", "df": 1.0, "inner_config": base.inner.config}
    x = torch.randn(5, 3) * 30
    torch.testing.assert_close(back.log_prob(x), gebm.log_prob(x))
    assert gp.StudentTBase(**base.config).config == base.config


def test_bad_arguments_are_named():
    inner = gp.RealNVP(2, hidden_features=4, num_layers=1)
    for df in (3, 0, float("inf"), True, "2"):
        with pytest.raises(ValueError, match="'df'"):
            gp.StudentTBase(inner, df=df)
    with pytest.raises(ValueError, match="density"):
        gp.StudentTBase(gp.MLPGenerator(2, 4, hidden=(4,)), df=2)
    with pytest.raises(ValueError, match="already a StudentTBase"):
        gp.StudentTBase(gp.StudentTBase(inner, df=2), df=1)
    with pytest.raises(ValueError, match="inner_config"):
        gp.StudentTBase(inner, df=2, inner_config={"dim": 2})
    with pytest.raises(ValueError, match="'dim'"):
        gp.StudentTBase(inner, df=2, dim=3)


# ------------------------------------------------------------------ the JAX twin
@pytest.mark.parametrize("df", DFS)
def test_jax_twin_matches_torch_also_far_out(df):
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    base = gp.StudentTBase(_randomised_realnvp(3, seed=2).float(), df=df)
    gebm = gp.GEBM(base, gp.EnergyMLP(3, hidden=(8,))).eval()
    jg = gp.to_jax(gebm)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(6, 3, generator=g)
    x = torch.cat([torch.randn(6, 3, generator=g), torch.tensor([[300.0, -2.0, 1.0], [0.0, -1e4, 50.0]])])
    # one compiled program (eager JAX would compile every primitive on its own)
    outputs = jax.jit(lambda z, x: (jg.forward(z), jg.base_log_prob(x), *jg.inverse(x)),
                      compiler_options={"xla_backend_optimization_level": 0})
    xj, lpj, zj, ldj = outputs(jnp.asarray(z.numpy()), jnp.asarray(x.numpy()))
    with torch.no_grad():
        np.testing.assert_allclose(xj, base(z).numpy(), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(lpj, base.log_prob(x).numpy(), rtol=1e-4)
        zt, ldt = base.inverse(x)
    np.testing.assert_allclose(zj, zt.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ldj, ldt.numpy(), rtol=1e-4, atol=1e-4)


def test_to_jax_names_an_inner_base_without_twin():
    pytest.importorskip("jax")
    from torch.distributions import AffineTransform

    inner = gp.TransformBase(AffineTransform(torch.zeros(2), 2.0 * torch.ones(2)), dim=2)
    gebm = gp.GEBM(gp.StudentTBase(inner, df=2), gp.EnergyMLP(2, hidden=(4,)))
    with pytest.raises(TypeError, match="inner base of StudentTBase TransformBase"):
        gp.to_jax(gebm)


# ------------------------------------------------------------------ benchmarks/uci_outliers: the stated transform
def test_asinh_transform_jacobian_matches_finite_differences():
    """log|det ∂y_white/∂x_white| of benchmarks/uci_outliers.asinh_transformed, against central differences."""
    import importlib.util
    import sys
    from pathlib import Path

    from gebm_ppl.data.dataset import UCIData
    from gebm_ppl.data.preprocess import whiten_fit

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "uci_outliers.py"
    sys.path.insert(0, str(path.parent))
    try:
        spec = importlib.util.spec_from_file_location("_bench_uci_outliers", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    rng = np.random.default_rng(0)
    raw = np.column_stack([rng.normal(size=400), rng.lognormal(0.0, 1.2, 400), rng.gamma(0.3, 2.0, 400)])
    mean, matrix = whiten_fit(raw[:300])
    white = (raw - mean) @ matrix
    data = UCIData(white[:300], white[300:350], white[350:], metadata={
        "name": "toy", "preprocessing": {"columns": ["a", "b", "c"],
                                         "whitening": {"mean": mean.tolist(), "matrix": matrix.tolist()}}})
    new, columns, jac, to_new = module.asinh_transformed(data, skew=2.0)
    assert columns == ["b", "c"]
    np.testing.assert_allclose(to_new(data.test), new.test, rtol=1e-6, atol=1e-6)
    eps = 1e-6
    for i in range(5):
        x = data.test[i]
        cols = [(to_new((x + eps * e)[None])[0] - to_new((x - eps * e)[None])[0]) / (2 * eps) for e in np.eye(3)]
        assert np.linalg.slogdet(np.array(cols))[1] == pytest.approx(jac["test"][i], abs=1e-5)
