"""Generator bases and image energies: shapes, flat images, missing densities, checkpoints, GEBM operations."""

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine

import gebm_ppl as gp

IMAGE_SHAPES = [(1, 8, 8), (1, 28, 28)]


def _mlp(image_shape=(1, 8, 8)):
    torch.manual_seed(0)
    c, h, w = image_shape
    return gp.MLPGenerator(3, c * h * w, hidden=(16,), image_shape=image_shape)


def _conv(image_shape=(1, 8, 8), batch_norm=False):
    torch.manual_seed(0)
    return gp.ConvGenerator(3, image_shape, channels=(8, 4, 4), batch_norm=batch_norm)


@pytest.mark.parametrize("image_shape", IMAGE_SHAPES)
@pytest.mark.parametrize("make", [_mlp, _conv, lambda s: _conv(s, batch_norm=True)], ids=["mlp", "conv", "conv-bn"])
def test_generators_map_latents_to_flat_images(make, image_shape):
    base = make(image_shape)
    dim = image_shape[0] * image_shape[1] * image_shape[2]
    assert (base.latent_dim, base.dim, base.has_density) == (3, dim, False)
    x = base(torch.randn(2, 5, 3))
    assert x.shape == (2, 5, dim)
    assert x.abs().max() < 1.0  # tanh output
    # a batch of latents and the same latents one at a time agree (eval mode: no batch statistics)
    base.eval()
    z = torch.randn(4, 3)
    with torch.no_grad():
        assert torch.allclose(base(z), torch.cat([base(z[i : i + 1]) for i in range(4)]), atol=1e-6)
    # gradients reach every parameter
    base.train()
    base(torch.randn(6, 3)).square().sum().backward()
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in base.parameters())
    # the config rebuilds the architecture
    assert type(base)(**base.config).config == base.config


def test_identity_output_is_unbounded_and_affine_without_hidden_layers():
    base = gp.MLPGenerator(2, 3, hidden=(), output="identity")
    w, b = base.net[0].weight, base.net[0].bias
    z = torch.randn(7, 2)
    assert torch.allclose(base(z), z @ w.T + b)


@pytest.mark.parametrize("make", [_mlp, _conv], ids=["mlp", "conv"])
def test_log_prob_raises_density_not_available_saying_what_to_use(make):
    base = make()
    gebm = gp.GEBM(base, gp.ConvEnergy((1, 8, 8), channels=(4, 8)))
    x = base.sample(3).detach()
    for call in (base.log_prob, base.inverse, gebm.log_prob, gebm.unnormalized_log_prob, gebm.distribution().log_prob):
        with pytest.raises(gp.DensityNotAvailable, match="no density") as err:
            call(x)
        message = str(err.value)
        assert type(base).__name__ in message
        for alternative in ("estimate_log_partition", "KALE", "sample_latent"):
            assert alternative in message


def test_what_needs_only_the_generator_works():
    torch.manual_seed(0)
    base = gp.MLPGenerator(2, 4, hidden=(8,), output="identity")
    gebm = gp.GEBM(base, gp.EnergyMLP(4, hidden=(8,)))
    est = gp.estimate_log_partition(gebm, num_samples=2000)
    assert est.num_samples == 2000 and est.ess > 100
    assert gebm.distribution(num_proposals=16).sample((5,)).shape == (5, 4)
    idata = gp.sample_latent(gebm, "ula", num_samples=10, warmup_steps=5, num_chains=2, step_size=0.01)
    assert idata.posterior["z"].shape == (2, 10, 2) and idata.posterior["x"].shape == (2, 10, 4)

    def model():
        x = pyro.sample("x", gebm.distribution())
        pyro.sample("y", pyro.distributions.Normal(x[..., 0], 0.5), obs=torch.tensor(0.3))

    trace = poutine.trace(poutine.reparam(model, config={"x": gp.GEBMReparam()})).get_trace()
    trace.compute_log_prob()
    assert trace.nodes["x_latent"]["value"].shape == (2,)
    assert torch.allclose(trace.nodes["x"]["value"], base(trace.nodes["x_latent"]["value"]))


@pytest.mark.parametrize("make", [_mlp, lambda: _conv(batch_norm=True)], ids=["mlp", "conv-bn"])
def test_checkpoint_round_trip(tmp_path, make):
    gebm = gp.GEBM(make(), gp.ConvEnergy((1, 8, 8), channels=(4, 8)), log_partition=0.3)
    gebm.train()
    with torch.no_grad():
        gebm.base(torch.randn(16, 3))  # move the BatchNorm running statistics
    gebm.save(tmp_path / "g.pt")
    loaded = gp.GEBM.load(tmp_path / "g.pt")
    gebm.eval()
    loaded.eval()
    z = torch.randn(5, 3)
    with torch.no_grad():
        assert torch.equal(loaded.latent_energy(z), gebm.latent_energy(z))


def test_generator_bad_arguments():
    with pytest.raises(ValueError, match=r"expected z of shape \[\.\.\., 3\]"):
        _mlp()(torch.randn(4, 2))
    with pytest.raises(ValueError, match="divisible by 4"):
        gp.ConvGenerator(2, (1, 10, 10), channels=(8, 4, 4))
    with pytest.raises(ValueError, match="64 pixels but dim = 60"):
        gp.MLPGenerator(2, 60, image_shape=(1, 8, 8))
    with pytest.raises(ValueError, match="output"):
        gp.MLPGenerator(2, 4, output="sigmoid")
    with pytest.raises(ValueError, match="image_shape"):
        gp.ConvGenerator(2, (8, 8))


@pytest.mark.parametrize("image_shape", IMAGE_SHAPES)
def test_conv_energy_shapes_floor_and_lipschitz(image_shape):
    torch.manual_seed(0)
    energy = gp.ConvEnergy(image_shape, channels=(4, 8), floor=-1.0)
    dim = energy.dim
    assert energy(torch.randn(2, 3, dim)).shape == (2, 3)
    with torch.no_grad():
        energy.head.parametrizations.weight.original.mul_(-100.0)
        energy.head.bias.fill_(-100.0)
    assert energy(torch.randn(50, dim)).min() >= -1.0
    assert gp.ConvEnergy(**energy.config).config == energy.config
    # every conv and linear layer is spectrally normalised
    layers = [m for m in energy.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    assert len(layers) == 3 and all(hasattr(m, "parametrizations") for m in layers)


def test_wrong_image_size_is_refused_naming_the_expected_shape():
    with pytest.raises(ValueError, match=r"expected \[\.\.\., 64\] = flattened \(1, 8, 8\).*Got shape \(5, 784\)"):
        gp.ConvEnergy((1, 8, 8))(torch.zeros(5, 784))
    with pytest.raises(ValueError, match=r"expected \[\.\.\., 784\] = flattened \(1, 28, 28\)"):
        gp.ConvEnergy((1, 28, 28))(torch.zeros(5, 1, 28, 28))  # unflattened images
    with pytest.raises(ValueError, match=r"EnergyMLP expected x of shape \[\.\.\., 64\]"):
        gp.EnergyMLP(64)(torch.zeros(3, 63))
    with pytest.raises(ValueError, match="base and energy dimensions differ"):
        gp.GEBM(_mlp((1, 28, 28)), gp.ConvEnergy((1, 8, 8)))


# ------------------------------------------------------------------------------------------- JAX twins
def _settled(module, *inputs):
    """Train-mode passes (BatchNorm statistics, spectral-norm power iterations), then eval mode."""
    module.train()
    with torch.no_grad():
        for x in inputs:
            module(x)
    return module.eval()


@pytest.mark.parametrize("image_shape", [(1, 8, 8), (1, 28, 28), (3, 8, 8)])
@pytest.mark.parametrize("batch_norm", [False, True])
def test_jax_twins_match_torch(image_shape, batch_norm):
    jnp = pytest.importorskip("jax.numpy")
    from gebm_ppl.jax.generators import convert_conv_energy, convert_conv_generator, convert_mlp_generator

    torch.manual_seed(0)
    dim = image_shape[0] * image_shape[1] * image_shape[2]
    z, x = torch.randn(7, 5), torch.randn(2, 3, dim)
    conv = _settled(gp.ConvGenerator(5, image_shape, channels=(8, 6, 4), batch_norm=batch_norm), *torch.randn(3, 32, 5))
    mlp = _settled(gp.MLPGenerator(5, dim, hidden=(16, 8), activation="leaky_relu"))
    energy = _settled(gp.ConvEnergy(image_shape, channels=(4, 8, 8), floor=-0.5), *torch.randn(3, 4, dim))
    with torch.no_grad():
        for module, convert in ((conv, convert_conv_generator), (mlp, convert_mlp_generator)):
            spec, params = convert(module)
            assert (spec.latent_dim, spec.dim) == (5, dim)
            out = np.array(spec.forward(params, jnp.asarray(z.numpy())))
            np.testing.assert_allclose(out, module(z).numpy(), atol=1e-5)
        spec, params = convert_conv_energy(energy)
        out = np.array(spec.energy(params, jnp.asarray(x.numpy())))
        assert out.shape == (2, 3)
        np.testing.assert_allclose(out, energy(x).numpy(), atol=1e-5)
        assert out.min() >= -0.5  # the floor
    with pytest.raises(ValueError, match=rf"expected \[\.\.\., {dim}\] = flattened"):
        spec.energy(params, jnp.zeros((2, dim + 1)))
    with pytest.raises(ValueError, match="eval mode"):
        convert_conv_generator(conv.train())


@pytest.mark.parametrize("make", [_mlp, lambda: _conv(batch_norm=True)], ids=["mlp", "conv-bn"])
def test_to_jax_exports_generator_gebms(make):
    jnp = pytest.importorskip("jax.numpy")
    gebm = gp.GEBM(make(), gp.ConvEnergy((1, 8, 8), channels=(4, 8)), log_partition=0.2)
    jg = gp.to_jax(gebm)
    assert (jg.dim, jg.latent_dim, jg.has_density) == (64, 3, False)
    z = torch.randn(5, 3)
    gebm.eval()
    with torch.no_grad():
        np.testing.assert_allclose(np.array(jg.latent_potential(jnp.asarray(z.numpy()))),
                                   gebm.latent_potential(z).numpy(), atol=1e-5)  # fmt: skip
    with pytest.raises(gp.DensityNotAvailable, match="no inverse"):
        jg.log_prob(jnp.zeros((2, 64)))
