"""Bases: the base protocol, RealNVP invertibility and log-determinants, the affine base."""

import math

import pytest
import torch

import gebm_ppl as gp


def _randomise(module: torch.nn.Module, scale: float = 0.3, seed: int = 0) -> None:
    """Move every weight away from the identity initialisation of the couplings."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


@pytest.mark.parametrize("scale", ["exp_tanh", "sigmoid"])
def test_realnvp_round_trip_and_logdet(scale):
    torch.manual_seed(0)
    base = gp.RealNVP(4, hidden_features=16, num_layers=3, scale=scale).double()
    _randomise(base)
    z = torch.randn(6, 4, dtype=torch.float64)
    x, logdet_fwd = base.forward_and_log_det(z)
    z_back, logdet_inv = base.inverse(x)
    torch.testing.assert_close(z_back, z, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(logdet_inv, -logdet_fwd)
    # log|det ∂G⁻¹/∂x| against autograd's Jacobian, row by row
    for i in range(x.shape[0]):
        jac = torch.autograd.functional.jacobian(lambda v: base.inverse(v[None])[0][0], x[i])
        torch.testing.assert_close(logdet_inv[i], torch.linalg.slogdet(jac)[1])


def test_realnvp_log_prob_integrates_to_one_in_2d():
    torch.manual_seed(0)
    base = gp.RealNVP(2, hidden_features=16, num_layers=4).double()
    _randomise(base, 0.1)
    grid = torch.linspace(-9, 9, 601, dtype=torch.float64)
    xx, yy = torch.meshgrid(grid, grid, indexing="ij")
    pts = torch.stack([xx, yy], -1).reshape(-1, 2)
    with torch.no_grad():
        mass = base.log_prob(pts).exp().sum() * (grid[1] - grid[0]) ** 2
    assert abs(mass.item() - 1) < 0.01


def test_realnvp_shapes_and_gradients():
    base = gp.RealNVP(3, hidden_features=8, num_layers=2)
    _randomise(base)
    x = torch.randn(2, 5, 3)
    assert base.log_prob(x).shape == (2, 5)
    assert base(torch.randn(2, 5, 3)).shape == (2, 5, 3)
    assert base.sample(7).shape == (7, 3)
    assert base.sample_prior(4).shape == (4, 3)
    base.log_prob(x).sum().backward()
    for name, p in base.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert gp.RealNVP(**base.config).config == base.config


def test_affine_base_is_gaussian():
    torch.manual_seed(1)
    loc = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    tril = torch.tensor([[1.0, 0, 0], [0.3, 2.0, 0], [-0.5, 0.2, 0.7]], dtype=torch.float64)
    base = gp.AffineBase(3, loc, tril)
    x = torch.randn(10, 3, dtype=torch.float64)
    exact = torch.distributions.MultivariateNormal(loc, scale_tril=tril).log_prob(x)
    torch.testing.assert_close(base.log_prob(x), exact)
    z = torch.randn(4, 3, dtype=torch.float64)
    torch.testing.assert_close(base.inverse(base(z))[0], z)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: gp.RealNVP(1), "dim' >= 2"),
        (lambda: gp.RealNVP(0), "positive integer"),
        (lambda: gp.RealNVP(3, scale="softplus"), "'scale'"),
        (lambda: gp.AffineBase(2, torch.zeros(3)), r"loc \[2\]"),
        (lambda: gp.AffineBase(2, None, -torch.eye(2)), "positive diagonal"),
    ],
)
def test_base_bad_arguments(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_base_bad_input():
    base = gp.RealNVP(3, hidden_features=8, num_layers=2)
    with pytest.raises(ValueError, match=r"shape \[\.\.\., 3\]"):
        base.log_prob(torch.randn(4, 2))
    with pytest.raises(ValueError, match="NaN or inf"):
        base.log_prob(torch.tensor([[0.0, math.nan, 1.0]]))
    with pytest.raises(ValueError, match="positive integer"):
        base.sample(0)


# ------------------------------------------------------------------ the abstract contract
def test_incomplete_bases_cannot_be_built():
    class NoForward(gp.Base):
        def __init__(self):
            super().__init__()
            self.dim = self.latent_dim = 2

    with pytest.raises(TypeError, match="abstract"):
        NoForward()

    class NoDims(gp.Base):
        def forward(self, z):
            return z

    with pytest.raises(TypeError, match="'dim' to a positive integer"):
        NoDims()


def test_has_density_follows_the_inverse_unless_set():
    class Generator(gp.Base):
        def __init__(self):
            super().__init__()
            self.dim, self.latent_dim = 3, 1

        def forward(self, z):
            return z.repeat(1, 3)

    class Flow(Generator):
        def inverse(self, x):
            return x[..., :1], torch.zeros(x.shape[:-1])

    assert not Generator.has_density and Flow.has_density
    assert gp.RealNVP.has_density and gp.AffineBase.has_density and not gp.MLPGenerator.has_density
    with pytest.raises(gp.DensityNotAvailable, match="Generator is not invertible") as err:
        Generator().log_prob(torch.zeros(2, 3))
    assert isinstance(err.value, NotImplementedError) and isinstance(err.value, TypeError)
    g = Generator()  # d != D: the prior draw has the latent dimension
    assert g.sample_prior(5).shape == (5, 1) and g.sample(5).shape == (5, 3)
    assert gp.GEBM(g, gp.EnergyMLP(3, hidden=(4,))).latent_dim == 1


def test_sample_latent_is_a_deprecated_alias_of_sample_prior():
    base = gp.AffineBase(2)
    with pytest.warns(DeprecationWarning, match="sample_prior"):
        old = base.sample_latent(4, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(old, base.sample_prior(4, generator=torch.Generator().manual_seed(3)))


# ------------------------------------------------------------------ TransformBase
def test_parameter_free_transform_base_is_the_gaussian_it_defines():
    from torch.distributions import AffineTransform

    loc, scale = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 3.0])
    base = gp.TransformBase(AffineTransform(loc, scale), dim=2)
    assert list(base.parameters()) == [] and base.has_density and base.latent_dim == 2
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(0))
    expected = torch.distributions.Normal(loc, scale).log_prob(x).sum(-1)  # G(z) = loc + scale·z
    torch.testing.assert_close(base.log_prob(x), expected)
    z = base.sample_prior(4)
    assert z.dtype == torch.float32 and base.double().sample_prior(4).dtype == torch.float64
    torch.testing.assert_close(base.float()(z), loc + scale * z)
    gebm = gp.GEBM(base, gp.QuadraticEnergy(2))  # a GEBM over a parameter-free base
    assert gebm.log_prob(x).shape == (6,)
    with pytest.raises(TypeError, match="'config'"):
        base.config  # noqa: B018
    with pytest.raises(TypeError, match="torch.distributions.Transform"):
        gp.TransformBase(torch.nn.Linear(2, 2), dim=2)


def test_transform_base_wraps_a_zuko_flow_in_the_generator_direction():
    zuko = pytest.importorskip("zuko")
    torch.manual_seed(0)
    flow = zuko.flows.MAF(2, transforms=2, hidden_features=(8,))
    base = gp.TransformBase(flow, dim=2)
    x = torch.randn(5, 2)
    torch.testing.assert_close(base.log_prob(x), flow().log_prob(x))  # same density as zuko's flow
    z, _ = base.inverse(x)
    torch.testing.assert_close(base(z), x, atol=1e-5, rtol=0)  # G = T⁻¹ with T: x → z
    assert {n for n, _ in base.named_parameters()} == {"transform." + n for n, _ in flow.transform.named_parameters()}
    built = gp.TransformBase(flow.transform(), dim=2, direction="normalize")  # a built zuko transform: x → z
    torch.testing.assert_close(built.log_prob(x), base.log_prob(x))
    with pytest.raises(ValueError, match="'direction'"):
        gp.TransformBase(flow, dim=2, direction="up")


def test_realnvp_keeps_its_state_dict_keys():
    keys = list(gp.RealNVP(2, hidden_features=4, num_layers=1, num_hidden_layers=1).state_dict())
    assert keys == [  # the keys of checkpoints written before RealNVP was built on TransformBase
        "transform._transforms.0.identity_features",
        "transform._transforms.0.transform_features",
        "transform._transforms.0.transform_net.net.0.weight",
        "transform._transforms.0.transform_net.net.0.bias",
        "transform._transforms.0.transform_net.net.2.weight",
        "transform._transforms.0.transform_net.net.2.bias",
    ]
