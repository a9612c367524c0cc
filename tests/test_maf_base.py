"""The zuko MAF base, and GEBMs on zuko MAF / NSF bases: exact normalised density in closed form (torch and JAX)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import gebm_ppl as gp
from gebm_ppl import runs


def _perturbed_maf(dim=3, seed=0, **kw):
    torch.manual_seed(seed)
    base = gp.MAF(dim, transforms=2, hidden_features=(16,), **kw)
    with torch.no_grad():  # zuko starts near the identity: move away so the layers matter
        for p in base.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return base


@pytest.mark.parametrize("passes", [None, 2])
def test_maf_is_a_bijection_with_its_change_of_variables(passes):
    base = _perturbed_maf(passes=passes)
    assert base.has_density and (base.dim, base.latent_dim) == (3, 3)
    z = torch.randn(6, 3, generator=torch.Generator().manual_seed(1))
    x, logdet = base.forward_and_log_det(z)
    z_back, logdet_inv = base.inverse(x)
    torch.testing.assert_close(z_back, z, atol=1e-4, rtol=0)
    torch.testing.assert_close(logdet_inv, -logdet, atol=1e-4, rtol=0)
    jac = torch.autograd.functional.jacobian(lambda v: base.inverse(v[None])[0][0], x[0].detach())
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(z_back[0]).sum() + torch.linalg.slogdet(jac)[1]
    torch.testing.assert_close(base.log_prob(x[:1])[0], expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("passes", [None, 2])
def test_maf_jax_twin_matches_torch(passes):
    jnp = pytest.importorskip("jax.numpy")
    base = _perturbed_maf(passes=passes)
    gebm = gp.GEBM(base, gp.EnergyMLP(3, hidden=(8,))).eval()
    jg = gp.to_jax(gebm)
    assert "MAF" in repr(jg) and jg.latent_dim == 3
    g = torch.Generator().manual_seed(2)
    x, z = 2.0 * torch.randn(20, 3, generator=g), torch.randn(20, 3, generator=g)
    with torch.no_grad():
        np.testing.assert_allclose(jg.base_log_prob(jnp.asarray(x.numpy())), base.log_prob(x).numpy(), atol=2e-4)
        np.testing.assert_allclose(jg.forward(jnp.asarray(z.numpy())), base(z).numpy(), atol=2e-4)
        zj, ldj = jg.inverse(jnp.asarray(x.numpy()))
        zt, ldt = base.inverse(x)
        np.testing.assert_allclose(zj, zt.numpy(), atol=2e-4)
        np.testing.assert_allclose(ldj, ldt.numpy(), atol=2e-4)
        np.testing.assert_allclose(jg.latent_potential(jnp.asarray(z.numpy())), gebm.latent_potential(z).numpy(),
                                   rtol=1e-4, atol=2e-4)  # fmt: skip


def test_maf_from_a_config_table_and_checkpoint(tmp_path):
    base = runs.build_base({"base": {"class": "MAF", "transforms": 2, "hidden_features": [8], "passes": 2}}, 4,
                           seed=0)  # fmt: skip
    assert type(base) is gp.MAF and base.config == {"dim": 4, "transforms": 2, "hidden_features": [8], "passes": 2}
    gebm = gp.GEBM(base, gp.EnergyMLP(4, hidden=(8,)))
    gebm.save(tmp_path / "maf.pt")
    loaded = gp.GEBM.load(tmp_path / "maf.pt")
    assert type(loaded.base) is gp.MAF and loaded.base.config == base.config
    x = torch.randn(5, 4)
    torch.testing.assert_close(loaded.base.log_prob(x), base.log_prob(x))


@pytest.mark.parametrize("bad, match", [(dict(dim=1), "dim"), (dict(hidden_features=8), "hidden_features"),
                                        (dict(transforms=0), "transforms")])  # fmt: skip
def test_maf_rejects_bad_arguments(bad, match):
    with pytest.raises(ValueError, match=match):
        gp.MAF(**{"dim": 3, **bad})


# ---- a GEBM on a zuko flow, in closed form. With the last layer of every masked MLP zeroed, each
# layer is x ↦ e^{a} x + b with constants set by its bias, so the base is N(μ, diag σ²) and with the
# energy E(x) = ½ (x − c)ᵀ P (x − c) the GEBM is Gaussian:
#   log q(x) = log N(x; Λ⁻¹(Σ⁻¹μ + P c), Λ⁻¹), Λ = Σ⁻¹ + P,
#   A = −½ log det(I + ΣP) − ½ δᵀ P (I + ΣP)⁻¹ δ, δ = μ − c.
# Dropping log g, E or A shifts log q by O(1): each would fail.

def _affine_flow(kind: str, dim: int):
    """A MAF (zuko affine layers, bias = (b, ã) per feature) or an NSF (zero spline parameters: the identity)
    with zeroed output layers; returns the base and its Gaussian (μ, σ) in closed form."""
    from zuko.nn import MaskedLinear

    g = torch.Generator().manual_seed(3)
    base = gp.MAF(dim, transforms=2, hidden_features=(8,), passes=2) if kind == "maf" else \
        gp.NSF(dim, transforms=2, hidden_features=(8,), bins=4, passes=2)  # fmt: skip
    base = base.double()
    mu, sigma = torch.zeros(dim, dtype=torch.float64), torch.ones(dim, dtype=torch.float64)
    # T = layer_L ∘ … ∘ layer_1 maps data → noise; track x = (z − β) / α for z = α x + β
    alpha, beta = torch.ones(dim, dtype=torch.float64), torch.zeros(dim, dtype=torch.float64)
    with torch.no_grad():
        for t in base.transform.transforms:
            last = [m for m in t.hyper.children() if isinstance(m, MaskedLinear)][-1]
            last.weight.zero_()
            if kind == "maf":
                shift, raw = torch.randn(dim, generator=g, dtype=torch.float64), torch.randn(dim, generator=g,
                                                                                          dtype=torch.float64)
                last.bias.copy_(torch.stack([shift, raw], -1).reshape(-1))  # zuko: (shift, scale) per feature
                a = raw / (1 + (raw / math.log(1e-3)).abs())  # zuko's soft-clipped log-scale
                alpha, beta = torch.exp(a) * alpha, torch.exp(a) * beta + shift
            else:
                last.bias.zero_()  # equal bins, unit knot slopes: the identity spline
    sigma, mu = 1 / alpha, -beta / alpha
    return base, mu, sigma


@pytest.mark.parametrize("kind", ["maf", "nsf"])
def test_gebm_on_zuko_flow_has_the_exact_normalised_density(kind):
    dim = 3
    base, mu, sigma = _affine_flow(kind, dim)
    g = torch.Generator().manual_seed(4)
    c = torch.randn(dim, generator=g, dtype=torch.float64)
    w = torch.randn(dim, dim, generator=g, dtype=torch.float64) / dim**0.5
    energy = gp.QuadraticEnergy(dim, center=c, factor=w).double()
    gebm = gp.GEBM(base, energy).double().eval()
    # closed form
    cov = torch.diag(sigma**2)
    p = w @ w.T
    prec = torch.linalg.inv(cov) + p
    mean = torch.linalg.solve(prec, torch.linalg.solve(cov, mu) + p @ c)
    eye = torch.eye(dim, dtype=torch.float64)
    delta = mu - c
    a_exact = float(-0.5 * torch.logdet(eye + cov @ p) - 0.5 * delta @ p @ torch.linalg.solve(eye + cov @ p, delta))
    x = mean + torch.randn(50, dim, generator=g, dtype=torch.float64) * 1.5
    expected = torch.distributions.MultivariateNormal(mean, precision_matrix=prec).log_prob(x)
    with torch.no_grad():
        base_expected = torch.distributions.Normal(mu, sigma).log_prob(x).sum(-1)
        torch.testing.assert_close(base.log_prob(x), base_expected, atol=1e-9, rtol=0)  # the base is N(μ, σ²)
        torch.testing.assert_close(gebm.log_prob(x, log_partition=a_exact), expected, atol=1e-5, rtol=0)
        est = gp.estimate_log_partition(gebm, num_samples=200_000, generator=torch.Generator().manual_seed(0))
    assert abs(float(est.estimate) - a_exact) < 4 * float(est.stderr) + 1e-3 and float(est.stderr) < 0.01
    assert abs(a_exact) > 0.3  # A matters: a dropped A would fail the density check
    # the JAX twin: the same exact density, and its base the same Gaussian
    jnp = pytest.importorskip("jax.numpy")
    jg = gp.to_jax(gebm)  # float32 unless jax_enable_x64
    xj = jnp.asarray(x.numpy())
    np.testing.assert_allclose(np.asarray(jg.log_prob(xj, a_exact)), expected.numpy(), atol=1e-4)
    np.testing.assert_allclose(np.asarray(jg.base_log_prob(xj)), base_expected.numpy(), atol=1e-4)
