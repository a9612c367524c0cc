"""JAX twin (gp.to_jax): torch = JAX to 1e-5 relative, pytree behaviour, dtype policy, bad input."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from common import gaussian_case
from torch import nn

import gebm_ppl as gp
from gebm_ppl.jax import JaxGEBM

DIM = 4
SHAPES = [(DIM,), (7, DIM), (2, 3, DIM)]  # several batch shapes, each drawn fresh
# Tests compile many small programs: XLA's optimisation level 0 halves compile time; the maths is unchanged.
_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def _train_a_few_steps(gebm: gp.GEBM, steps: int = 5, seed: int = 0) -> None:
    """A few Adam steps of base MLE + KALE on skewed data: moves every weight off its initialisation.

    The GEBM stays in training mode, so spectral normalisation runs its power iteration meanwhile.
    """
    g = torch.Generator().manual_seed(seed)
    data = torch.randn(256, gebm.dim, generator=g) ** 2 - 1.0
    opt = torch.optim.Adam(gebm.parameters(), lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        x_base = gebm.base.sample(256, generator=g).detach()
        energy_loss = gp.kale_energy_loss(gebm.energy(data), gebm.energy(x_base), gebm.log_partition)
        (-gebm.base.log_prob(data).mean() + energy_loss).backward()
        opt.step()


def _model(scale="exp_tanh", spectral_norm=True, activation="leaky_relu", floor=None, trained=True, seed=0):
    torch.manual_seed(seed)
    base = gp.RealNVP(DIM, hidden_features=16, num_layers=3, num_hidden_layers=2, scale=scale)
    energy = gp.EnergyMLP(
        DIM, hidden=(16, 8), activation=activation, spectral_norm=spectral_norm, lipschitz=1.5, floor=floor
    )
    gebm = gp.GEBM(base, energy, log_partition=0.3)
    if trained:
        _train_a_few_steps(gebm, seed=seed)
        last = base.transform._transforms[0].transform_net.net[-1].weight
        assert last.abs().max() > 0  # the zero-initialised coupling outputs have moved
    return gebm


def _assert_rel(jax_value, torch_value, rtol=1e-5):
    """Elementwise |a − b| ≤ rtol·(|b| + max|b|): relative, entries near 0 judged on the array's scale."""
    b = torch_value.detach().double().numpy()
    a = np.asarray(jax_value, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    scale = np.abs(b).max()
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale)


@_jit
def _jax_outputs(jg: JaxGEBM, z, x, temperature):
    # one compiled program per model and shape (eager JAX would compile every primitive separately)
    value_and_grad = jax.vmap(jax.value_and_grad(lambda v: jg.latent_potential(v, temperature)))
    u, grad = value_and_grad(z.reshape(-1, z.shape[-1]))
    z_inv, logdet = jg.inverse(x)
    return {
        "forward": jg.forward(z),
        "inverse": z_inv,
        "logdet": logdet,
        "base_log_prob": jg.base_log_prob(x),
        "log_prob": jg.log_prob(x),
        "energy": jg.energy(x),
        "latent_potential": u.reshape(z.shape[:-1]),
        "grad": grad.reshape(z.shape),
    }


def _torch_outputs(gebm: gp.GEBM, z, x, temperature):
    zt = z.clone().requires_grad_(True)
    u = gebm.latent_potential(zt, temperature)
    (grad,) = torch.autograd.grad(u.sum(), zt)
    with torch.no_grad():
        z_inv, logdet = gebm.base.inverse(x)
        return {
            "forward": gebm.base(z),
            "inverse": z_inv,
            "logdet": logdet,
            "base_log_prob": gebm.base.log_prob(x),
            "log_prob": gebm.log_prob(x),
            "energy": gebm.energy(x),
            "latent_potential": u.detach(),
            "grad": grad,
        }


def _compare(gebm: gp.GEBM, seed: int = 1, temperature: float = 1.0, shapes=((3, 5, DIM),)) -> None:
    """forward, inverse, base log_prob, log_prob, energy, latent potential and its gradient: torch vs JAX."""
    jg = gp.to_jax(gebm)
    gebm.eval()
    g = torch.Generator().manual_seed(seed)
    for shape in shapes:
        z = torch.randn(shape, generator=g)
        x = 2.0 * torch.randn(shape, generator=g)
        got = _jax_outputs(jg, jnp.asarray(z.numpy()), jnp.asarray(x.numpy()), temperature)
        want = _torch_outputs(gebm, z, x, temperature)
        for name in want:
            _assert_rel(got[name], want[name])


@pytest.mark.parametrize("scale", ["exp_tanh", "sigmoid"])
@pytest.mark.parametrize("trained", [False, True])
def test_realnvp_gebm_matches_torch(scale, trained):
    _compare(_model(scale=scale, trained=trained), temperature=0.7, shapes=SHAPES if trained else SHAPES[-1:])


@pytest.mark.parametrize("spectral_norm", [True, "output", False])
def test_spectral_norm_is_folded_into_the_weights(spectral_norm):
    gebm = _model(spectral_norm=spectral_norm, trained=True, seed=2)
    _compare(gebm)
    jg = gp.to_jax(gebm)
    for linear, exported in zip(gebm.energy.net[::2], jg.params["energy"]["net"], strict=True):
        # the exported weight is the eval-mode weight W/σ̂(W) of a normalised layer, W itself otherwise
        np.testing.assert_array_equal(np.asarray(exported["weight"]), linear.weight.detach().numpy())
        if hasattr(linear, "parametrizations"):
            raw = linear.parametrizations.weight.original.detach().numpy()
            assert np.abs(raw - np.asarray(exported["weight"])).max() > 1e-3


@_jit
def _energy_and_grad(jg: JaxGEBM, x):
    return jax.vmap(jax.value_and_grad(jg.energy))(x)


@pytest.mark.parametrize("activation", ["leaky_relu", "relu", "elu", "softplus", "tanh", "silu"])
def test_every_activation_and_the_floor_match(activation):
    gebm = _model(activation=activation, floor=0.0, trained=True, seed=3)
    gebm.eval()
    x = 3.0 * torch.randn(64, DIM, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():  # floor at the median of the unfloored energy: half the points are bent by it
        gebm.energy.floor = float((gebm.energy.lipschitz * gebm.energy.net(x)).median())
    jg = gp.to_jax(gebm)
    xt = x.clone().requires_grad_(True)
    e = gebm.energy(xt)
    (grad,) = torch.autograd.grad(e.sum(), xt)
    got_e, got_grad = _energy_and_grad(jg, jnp.asarray(x.numpy()))
    _assert_rel(got_e, e)
    _assert_rel(got_grad, grad)


def test_affine_base_quadratic_energy_match_torch():
    case = gaussian_case(DIM, seed=4, dtype=torch.float32)
    _compare(case.gebm, temperature=2.0)
    jg = gp.to_jax(case.gebm)
    x = jax.random.normal(jax.random.PRNGKey(0), (5, DIM))
    exact = torch.distributions.MultivariateNormal(case.mean, case.cov).log_prob(torch.tensor(np.array(x)))
    np.testing.assert_allclose(np.asarray(jg.log_prob(x)), exact.numpy(), rtol=1e-4, atol=1e-4)


def test_export_leaves_the_module_untouched():
    gebm = _model(trained=True)
    gebm.train()
    u_before = gebm.energy.net[0].parametrizations.weight[0]._u.clone()
    jg = gp.to_jax(gebm)
    assert gebm.training
    torch.testing.assert_close(gebm.energy.net[0].parametrizations.weight[0]._u, u_before, rtol=0, atol=0)
    # a copy: training the torch module further does not change the twin
    before = np.asarray(jg.params["energy"]["net"][0]["weight"]).copy()
    with torch.no_grad():
        gebm.energy.net[0].bias.add_(1.0)
    np.testing.assert_array_equal(np.asarray(jg.params["energy"]["net"][0]["weight"]), before)


def test_twin_is_a_pytree_for_jit_grad_and_vmap():
    gebm = _model(trained=False)
    jg = gp.to_jax(gebm)
    z = jax.random.normal(jax.random.PRNGKey(1), (6, DIM))
    from gebm_ppl.jax import latent_potential  # the pure function of (spec, params, z)

    @_jit
    def run(g: JaxGEBM, v):
        # the twin passes through jit as an argument, vmap over points, grad over its weights
        x = g.sample(jax.random.PRNGKey(2), 6)
        grads = jax.grad(lambda h: h.log_prob(x).sum())(g)
        pure = latent_potential(g.spec, g.params, v)
        return g.latent_potential(v), jax.vmap(g.latent_potential)(v), pure, grads

    batched, per_point, pure, grads = run(jg, z)
    np.testing.assert_allclose(np.asarray(per_point), np.asarray(batched), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(pure), np.asarray(batched))
    with torch.no_grad():
        _assert_rel(batched, gebm.eval().latent_potential(torch.tensor(np.array(z))))
    # gradient with respect to the weights: a JaxGEBM of the same structure; d(log q)/dc = −1 per point
    assert isinstance(grads, JaxGEBM) and grads.spec == jg.spec
    assert float(grads.params["log_partition"]) == pytest.approx(-6.0)
    assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(jg)
    assert jg.dtype == jnp.float32 and jg.dim == DIM and "RealNVP" in repr(jg)


def test_dtype_follows_torch_where_jax_allows():
    case = gaussian_case(3, seed=0, dtype=torch.float64)
    if jax.config.jax_enable_x64:
        pytest.skip("this session runs JAX in 64-bit mode")
    # JAX's convention without x64: float64 becomes float32 silently; asking for float64 explicitly raises
    assert gp.to_jax(case.gebm).dtype == jnp.float32
    with pytest.raises(ValueError, match="jax_enable_x64"):
        gp.to_jax(case.gebm, dtype="float64")
    with pytest.raises(ValueError, match="'dtype'"):
        gp.to_jax(case.gebm, dtype="int32")
    with pytest.raises(TypeError, match="float16"):
        gp.to_jax(gp.GEBM(gp.AffineBase(2), gp.QuadraticEnergy(2)).half())


class _NoDensityBase(gp.Base):
    def __init__(self):
        super().__init__()
        self.dim = self.latent_dim = 2
        self.lin = nn.Linear(2, 2)

    def forward(self, z):
        return self.lin(z)


class _CustomEnergy(nn.Module):
    dim = 2

    def forward(self, x):
        return (x**4).sum(-1)


def test_unsupported_modules_are_named():
    with pytest.raises(TypeError, match="_NoDensityBase"):
        gp.to_jax(gp.GEBM(_NoDensityBase(), gp.EnergyMLP(2, hidden=(4,))))
    with pytest.raises(TypeError, match="_CustomEnergy"):
        gp.to_jax(gp.GEBM(gp.RealNVP(2, 4, 2), _CustomEnergy()))
    energy = gp.EnergyMLP(2, hidden=(4,))
    energy.net[1] = nn.GELU()
    with pytest.raises(TypeError, match="GELU"):
        gp.to_jax(gp.GEBM(gp.RealNVP(2, 4, 2), energy))
    base = gp.RealNVP(2, 4, 2)
    base.transform._transforms[1].transform_net.net[1] = nn.Sigmoid()
    with pytest.raises(TypeError, match="RealNVP layer 1 contains a Sigmoid"):
        gp.to_jax(gp.GEBM(base, gp.EnergyMLP(2, hidden=(4,))))
    with pytest.raises(TypeError, match="'gebm'"):
        gp.to_jax(gp.RealNVP(2, 4, 2))


def test_mismatched_dims():
    gebm = gp.GEBM(gp.RealNVP(3, 4, 2), gp.EnergyMLP(3, hidden=(4,)))
    gebm.energy = gp.EnergyMLP(2, hidden=(4,))  # swapped after construction
    with pytest.raises(ValueError, match="dimensions differ"):
        gp.to_jax(gebm)
    jg = gp.to_jax(gp.GEBM(gp.RealNVP(3, 4, 2), gp.EnergyMLP(3, hidden=(4,))))
    for fn in (jg.forward, jg.log_prob, jg.energy, jg.latent_potential, jg.inverse):
        with pytest.raises(ValueError, match=r"shape \[\.\.\., 3\]"):
            fn(jnp.zeros((5, 2)))


# ------------------------------------------------------------------ the registry
def _bases():
    return {
        gp.RealNVP: lambda: gp.RealNVP(4, hidden_features=8, num_layers=2),
        gp.AffineBase: lambda: gp.AffineBase(4),
        gp.NSF: lambda: gp.NSF(4, transforms=2, hidden_features=(8,), bins=4),
        gp.StudentTBase: lambda: gp.StudentTBase(gp.RealNVP(4, hidden_features=8, num_layers=2), df=2),
        gp.MAF: lambda: gp.MAF(4, transforms=2, hidden_features=(8,)),
        gp.MLPGenerator: lambda: gp.MLPGenerator(2, 16, hidden=(8,), output="identity"),
        gp.ConvGenerator: lambda: gp.ConvGenerator(2, (1, 4, 4), channels=(4, 4, 4)),
    }


def _energies():
    return {
        gp.EnergyMLP: lambda d: gp.EnergyMLP(d, hidden=(8,), floor=-3.0),
        gp.QuadraticEnergy: lambda d: gp.QuadraticEnergy(d),
        gp.ConvEnergy: lambda d: gp.ConvEnergy((1, 4, 4), channels=(4, 4)),
    }


_PAIRS = [(b, e) for b in _bases() for e in _energies() if e is not gp.ConvEnergy or _bases()[b]().dim == 16]


def test_every_registered_class_has_an_equivalence_test():
    from gebm_ppl.jax.convert import JAX_CONVERTERS, converter_for

    converter_for(gp.AffineBase(2))  # loads the converters defined in other modules
    builtin = {c for c in JAX_CONVERTERS if c.__module__.startswith("gebm_ppl")}
    assert builtin == set(_bases()) | set(_energies())


@pytest.mark.parametrize(("base_cls", "energy_cls"), _PAIRS, ids=[f"{b.__name__}-{e.__name__}" for b, e in _PAIRS])
def test_registered_twins_match_torch(base_cls, energy_cls):
    torch.manual_seed(0)
    base = _bases()[base_cls]()
    energy = _energies()[energy_cls](base.dim)
    _randomise_all(base, energy)
    gebm = gp.GEBM(base, energy).eval()
    jg = gp.to_jax(gebm)
    assert (jg.dim, jg.latent_dim, jg.has_density) == (base.dim, base.latent_dim, base.has_density)
    assert base_cls.__name__ in repr(jg) and f"latent_dim={base.latent_dim}" in repr(jg)
    g = torch.Generator().manual_seed(1)
    z, x = torch.randn(7, base.latent_dim, generator=g), torch.randn(7, base.dim, generator=g)
    tol = dict(rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        np.testing.assert_allclose(jg.forward(jnp.asarray(z.numpy())), base(z).numpy(), **tol)
        np.testing.assert_allclose(jg.energy(jnp.asarray(x.numpy())), energy(x).numpy(), **tol)
        np.testing.assert_allclose(
            jg.latent_potential(jnp.asarray(z.numpy())), gebm.latent_potential(z).numpy(), **tol
        )
        if base.has_density:
            zj, ldj = jg.inverse(jnp.asarray(x.numpy()))
            zt, ldt = base.inverse(x)
            np.testing.assert_allclose(zj, zt.numpy(), **tol)
            np.testing.assert_allclose(ldj, ldt.numpy(), **tol)
            np.testing.assert_allclose(jg.log_prob(jnp.asarray(x.numpy())), gebm.log_prob(x).numpy(), **tol)
        else:
            with pytest.raises(gp.DensityNotAvailable, match=base_cls.__name__):
                jg.log_prob(jnp.asarray(x.numpy()))


def _randomise_all(*modules):
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for m in modules:
            for name, p in m.named_parameters():
                if "raw_tril" not in name:
                    p.add_(0.3 * torch.randn(p.shape, generator=g))


def test_register_jax_adds_a_twin_and_unregistered_classes_are_named():
    from gebm_ppl.jax.convert import JAX_CONVERTERS

    class QuarticEnergy(nn.Module):
        """E(x) = a·Σ x⁴."""

        dim = 2

        def __init__(self):
            super().__init__()
            self.a = nn.Parameter(torch.tensor(0.7))

        def forward(self, x):
            return self.a * (x**4).sum(-1)

    class QuarticSpec(tuple):
        dim = 2

        def energy(self, params, x):
            return params["a"] * jnp.sum(x**4, -1)

    gebm = gp.GEBM(gp.AffineBase(2), QuarticEnergy())
    with pytest.raises(TypeError, match="QuarticEnergy.*register_jax"):
        gp.to_jax(gebm)
    gp.jax.register_jax(QuarticEnergy)(lambda e, dtype: (QuarticSpec(), {"a": jnp.asarray(e.a.item(), dtype)}))
    try:
        jg = gp.to_jax(gebm)
        x = torch.randn(3, 2)
        np.testing.assert_allclose(jg.energy(jnp.asarray(x.numpy())), gebm.energy(x).detach().numpy(), rtol=1e-6)
    finally:
        del JAX_CONVERTERS[QuarticEnergy]
    with pytest.raises(TypeError, match="nn.Module subclass"):
        gp.jax.register_jax(3)


def test_jax_sample_latent_is_a_deprecated_alias():
    jg = gp.to_jax(gp.GEBM(gp.MLPGenerator(2, 4, hidden=(8,)), gp.EnergyMLP(4, hidden=(8,))))
    key = jax.random.PRNGKey(0)
    assert jg.sample_prior(key, 3).shape == (3, 2) and jg.sample(key, 3).shape == (3, 4)
    with pytest.warns(DeprecationWarning, match="sample_prior"):
        np.testing.assert_array_equal(jg.sample_latent(key, 3), jg.sample_prior(key, 3))
