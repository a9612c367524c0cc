"""gp.toys.SphereToy: draws on the deformed sphere, the energy's reweighting against SIR, the comparison helpers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import gebm_ppl as gp
from gebm_ppl.data.toys import SphereToy, deformed_radius


def test_generator_maps_onto_the_deformed_sphere():
    toy = SphereToy(seed=0)
    z = torch.randn(2000, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x = toy.generator(z)
    assert x.shape == (2000, 3) and x.dtype == torch.float64
    r = x.norm(dim=-1)
    u = x / r.unsqueeze(-1)
    # the direction is the inverse stereographic projection of z, the radius the known deformation
    q = (z * z).sum(-1)
    torch.testing.assert_close(u[:, 2], (q - 1) / (q + 1), rtol=0, atol=1e-12)
    torch.testing.assert_close(u[:, :2], 2 * z / (q + 1).unsqueeze(-1), rtol=0, atol=1e-12)
    expected = 1 + 0.2 * (u[:, 0] ** 2 - u[:, 1] ** 2) + 0.15 * torch.sin(3 * u[:, 2] + 0.5)
    torch.testing.assert_close(r, expected, rtol=0, atol=1e-12)
    assert float(r.min()) > 0.6 and float(r.max()) < 1.4
    with pytest.raises(ValueError, match=r"\[\.\.\., 2\]"):
        toy.generator(torch.zeros(3, 3))


def test_samples_lie_on_the_surface_and_are_seeded():
    toy = SphereToy(seed=0)
    x = toy.sample(3000)
    assert x.shape == (3000, 3) and x.dtype == torch.float32
    assert float(toy.manifold_error(x).max()) < 1e-5
    torch.testing.assert_close(toy.radius(x), deformed_radius(x / x.norm(dim=-1, keepdim=True)), rtol=1e-5, atol=1e-6)
    # seeded: a new toy with the same seed repeats its stream; successive draws differ
    torch.testing.assert_close(SphereToy(seed=0).sample(3000), x, rtol=0, atol=0)
    assert not torch.equal(toy.sample(10), x[:10])
    assert not torch.equal(SphereToy(seed=1).sample(10), x[:10])
    g = torch.Generator().manual_seed(5)
    a = toy.sample(50, generator=g)
    torch.testing.assert_close(a, toy.sample(50, generator=torch.Generator().manual_seed(5)), rtol=0, atol=0)


def test_energy_closed_form():
    toy = SphereToy()
    mu = toy.energy.directions
    x = torch.tensor([[0.0, 0.0, 2.0], [0.3, -0.4, 0.1]])
    u = x / x.norm(dim=-1, keepdim=True)
    want = -torch.log(torch.exp(3.0 * (u @ mu.T - 1)).mean(-1))
    torch.testing.assert_close(toy.energy(x), want)
    e = toy.energy(toy.sample_base(5000))
    assert float(e.min()) >= 0 and float(e.max()) > 3  # exp(−E) ≤ 1: a valid rejection bound
    assert float(toy.energy(mu[0] * 1.3)) < float(toy.energy(-mu[0]))


def test_rejection_draws_match_sir_and_differ_from_the_generator():
    """E_q[f] for f = (x, E(x)) from the exact draws equals the self-normalised importance estimate
    Σ w f / Σ w with w = exp(−E) over generator draws, within 4 standard errors; the generator's own
    mean is many standard errors away (the reweighting is visible)."""
    toy = SphereToy(seed=2)
    n, m = 20000, 200000
    x = toy.sample(n).double()
    stat = lambda v: torch.cat([v, toy.energy(v).unsqueeze(-1)], -1)  # noqa: E731
    f = stat(x)
    exact_mean, exact_se = f.mean(0), f.std(0) / math.sqrt(n)
    base = toy.sample_base(m, generator=torch.Generator().manual_seed(3)).double()
    fb = stat(base)
    w = torch.exp(-toy.energy(base))
    w = w / w.sum()
    sir_mean = (w.unsqueeze(-1) * fb).sum(0)
    sir_se = torch.sqrt((w.unsqueeze(-1) ** 2 * (fb - sir_mean) ** 2).sum(0))  # delta method
    z = (exact_mean - sir_mean) / torch.sqrt(exact_se**2 + sir_se**2)
    assert float(z.abs().max()) < 4, z
    gen_z = (fb.mean(0) - exact_mean) / exact_se
    assert float(gen_z.abs().max()) > 20, gen_z
    # the acceptance rate of the rejection sampler is exp(A), A = log E[exp(−E(G z))]
    log_z, se = toy.log_partition(200000)
    assert log_z == pytest.approx(math.log(float(torch.exp(-toy.energy(base)).mean())), abs=5 * se + 1e-3)
    assert -2.5 < log_z < -1.0


def test_compare_separates_the_model_from_the_generator_and_off_surface_points():
    toy = SphereToy(seed=4)
    held_out = toy.sample(2000)
    same = toy.compare(toy.sample(2000), held_out)
    base = toy.compare(toy.sample_base(2000), held_out)
    off = toy.compare(1.1 * toy.sample(2000), held_out)
    assert set(same) == {"mmd", "radius_w1", "radius_ks", "manifold_error", "bandwidth", "n"}
    assert same["bandwidth"] == base["bandwidth"]  # set by the held-out draws only
    assert abs(same["mmd"]) < 2e-3 and base["mmd"] > 5 * 2e-3
    assert same["manifold_error"] < 1e-5 and base["manifold_error"] < 1e-5
    assert off["manifold_error"] == pytest.approx(0.1 * float(toy.radius(held_out).mean()), rel=0.05)
    assert off["radius_w1"] > 10 * same["radius_w1"] and off["radius_ks"] > 0.2
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        toy.compare(torch.zeros(5, 2), held_out)


def test_dataset_and_lazy_module():
    data = gp.toys.SphereToy(seed=0).dataset(n_train=300, n_val=50, n_test=100)
    assert isinstance(data, gp.data.UCIData) and data.metadata["name"] == "sphere-toy"
    assert [x.shape for x in (data.train, data.val, data.test)] == [(300, 3), (50, 3), (100, 3)]
    assert all(x.dtype == np.float32 for x in (data.train, data.val, data.test))
    assert not np.array_equal(data.train[:50], data.val)
    np.testing.assert_array_equal(SphereToy(seed=0).dataset(300, 50, 100).test, data.test)
    with pytest.raises(ValueError, match="'n'"):
        SphereToy().sample(0)
