"""The zuko NSF base end to end: density by change of variables, JAX twin, fit_mle, fit_kale, Pyro and NumPyro NUTS."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gebm_ppl as gp


def _perturbed_nsf(dim=3, seed=0, **kw):
    torch.manual_seed(seed)
    base = gp.NSF(dim, transforms=2, hidden_features=(16,), bins=4, **kw)
    with torch.no_grad():  # zuko starts near the identity: move away so the splines matter
        for p in base.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return base


def _data(n=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 2, generator=g)
    return torch.stack([z[:, 0], 0.5 * z[:, 0] ** 2 + 0.5 * z[:, 1] - 0.5], -1)


@pytest.mark.parametrize("passes", [None, 2])
def test_nsf_is_a_bijection_with_its_change_of_variables(passes):
    base = _perturbed_nsf(passes=passes)
    assert base.has_density and (base.dim, base.latent_dim) == (3, 3)
    z = torch.randn(6, 3, generator=torch.Generator().manual_seed(1))
    x, logdet = base.forward_and_log_det(z)
    z_back, logdet_inv = base.inverse(x)
    torch.testing.assert_close(z_back, z, atol=1e-4, rtol=0)
    torch.testing.assert_close(logdet_inv, -logdet, atol=1e-4, rtol=0)
    # log g(x) = log N(G⁻¹(x)) + log|det ∂G⁻¹/∂x|, against autograd's Jacobian of G⁻¹
    jac = torch.autograd.functional.jacobian(lambda v: base.inverse(v[None])[0][0], x[0].detach())
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(z_back[0]).sum() + torch.linalg.slogdet(jac)[1]
    torch.testing.assert_close(base.log_prob(x[:1])[0], expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("passes", [None, 2])
def test_nsf_jax_twin_matches_torch(passes):
    jnp = pytest.importorskip("jax.numpy")
    base = _perturbed_nsf(passes=passes)
    gebm = gp.GEBM(base, gp.EnergyMLP(3, hidden=(8,))).eval()
    jg = gp.to_jax(gebm)
    assert "NSF" in repr(jg) and jg.latent_dim == 3
    g = torch.Generator().manual_seed(2)
    x, z = 2.0 * torch.randn(20, 3, generator=g), torch.randn(20, 3, generator=g)  # some x outside [-5, 5]
    x[0] = torch.tensor([6.0, -7.0, 0.5])
    with torch.no_grad():
        np.testing.assert_allclose(jg.base_log_prob(jnp.asarray(x.numpy())), base.log_prob(x).numpy(), atol=2e-4)
        np.testing.assert_allclose(jg.forward(jnp.asarray(z.numpy())), base(z).numpy(), atol=2e-4)
        zj, ldj = jg.inverse(jnp.asarray(x.numpy()))
        zt, ldt = base.inverse(x)
        np.testing.assert_allclose(zj, zt.numpy(), atol=2e-4)
        np.testing.assert_allclose(ldj, ldt.numpy(), atol=2e-4)
        np.testing.assert_allclose(
            jg.latent_potential(jnp.asarray(z.numpy())), gebm.latent_potential(z).numpy(), rtol=1e-4, atol=2e-4
        )


def test_nsf_checkpoint_round_trip(tmp_path):
    gebm = gp.GEBM(_perturbed_nsf(), gp.EnergyMLP(3, hidden=(8,)))
    gebm.save(tmp_path / "nsf.pt")
    loaded = gp.GEBM.load(tmp_path / "nsf.pt")
    assert type(loaded.base) is gp.NSF and loaded.base.config == gebm.base.config
    x = torch.randn(5, 3)
    torch.testing.assert_close(loaded.base.log_prob(x), gebm.base.log_prob(x))


def test_nsf_end_to_end_mle_kale_and_both_nuts():
    pytest.importorskip("numpyro")
    x = _data()
    train, val = x[:240], x[240:]
    torch.manual_seed(0)
    base = gp.NSF(2, transforms=2, hidden_features=(16,), bins=4)
    with torch.no_grad():
        before = -float(base.log_prob(val).mean())
    history = gp.fit_mle(base, train, val, epochs=15, batch_size=60, lr=1e-2, progress=False)
    after = history.best_value
    assert after < before - 0.2  # the validation NLL drops
    gebm = gp.GEBM(base, gp.EnergyMLP(2, hidden=(16,), spectral_norm="output"))
    kale = gp.fit_kale(gebm, train, val, epochs=2, batch_size=60, noise_factor=2, n_energy_steps=2,
                       warmup_energy_steps=2, log_partition_samples=500, progress=False)  # fmt: skip
    assert np.isfinite(kale.best_value) and np.isfinite(gebm.log_partition.item())
    gebm.eval()
    kw = dict(method="nuts", num_samples=10, warmup_steps=10, num_chains=1, seed=0)
    for backend in ("pyro", "numpyro"):
        idata = gp.sample_latent(gebm, backend=backend, **kw)
        z = np.array(idata.posterior["z"].values)  # a writable copy
        assert z.shape == (1, 10, 2) and np.isfinite(z).all()
        xs = np.asarray(idata.posterior["x"].values)
        with torch.no_grad():  # the recorded x are G(z) of the torch base
            np.testing.assert_allclose(xs[0], gebm.base(torch.as_tensor(z[0])).numpy(), atol=1e-3)
