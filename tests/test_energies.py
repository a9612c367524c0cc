"""Energies: shapes, spectral normalisation's Lipschitz bound, the floor, the gradient penalty."""

import pytest
import torch

import gebm_ppl as gp


@pytest.mark.parametrize("spectral_norm", [True, "output", False])
def test_energy_mlp_shapes(spectral_norm):
    energy = gp.EnergyMLP(4, hidden=(8, 8), spectral_norm=spectral_norm)
    assert energy(torch.randn(5, 4)).shape == (5,)
    assert energy(torch.randn(2, 3, 4)).shape == (2, 3)
    assert gp.EnergyMLP(**energy.config).config == energy.config


def test_spectral_norm_bounds_the_gradient():
    torch.manual_seed(0)
    energy = gp.EnergyMLP(5, hidden=(32, 32), spectral_norm=True, lipschitz=2.0)
    with torch.no_grad():  # let the power iteration converge
        for _ in range(200):
            energy(torch.randn(8, 5))
    energy.eval()
    x = (3 * torch.randn(2000, 5)).requires_grad_(True)
    (grad,) = torch.autograd.grad(energy(x).sum(), x)
    assert grad.norm(dim=-1).max().item() <= 2.0 * 1.01


def test_floor_is_a_lower_bound():
    energy = gp.EnergyMLP(2, hidden=(8,), spectral_norm=False, floor=-1.0)
    with torch.no_grad():
        energy.net[-1].bias.fill_(-50.0)
    assert energy(torch.randn(100, 2)).min().item() >= -1.0


def test_gradient_penalty_of_a_linear_energy():
    # E(x) = aᵀx has ∇E = a everywhere, so the penalty is λ‖a‖² exactly.
    a = torch.tensor([1.0, -2.0, 0.5])

    class Linear(torch.nn.Module):
        def forward(self, x):
            return x @ a

    pen = gp.gradient_penalty(Linear(), torch.randn(10, 3), torch.randn(30, 3), weight=0.1)
    torch.testing.assert_close(pen, 0.1 * (a * a).sum())


def test_gradient_penalty_is_differentiable():
    energy = gp.EnergyMLP(3, hidden=(8,), spectral_norm=False)
    pen = gp.gradient_penalty(energy, torch.randn(10, 3), torch.randn(10, 3))
    pen.backward()
    # every weight matrix gets a gradient (the output bias does not enter ∇ₓE)
    for layer in (energy.net[0], energy.net[2]):
        assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0


def test_energy_bad_arguments():
    with pytest.raises(ValueError, match="'activation'"):
        gp.EnergyMLP(3, activation="swish2")
    with pytest.raises(ValueError, match="'spectral_norm'"):
        gp.EnergyMLP(3, spectral_norm="all")
    with pytest.raises(ValueError, match="center"):
        gp.QuadraticEnergy(3, center=torch.zeros(2))
    with pytest.raises(ValueError, match=r"EnergyMLP expected x of shape \[\.\.\., 3\]. Got shape \(5, 4\)"):
        gp.EnergyMLP(3)(torch.zeros(5, 4))
    with pytest.raises(ValueError, match="'activation'"):
        gp.ConvEnergy((1, 8, 8), activation="swish2")


def test_smooth_floor_is_shared_and_tends_to_the_identity_above_the_floor():
    from gebm_ppl.energies import smooth_floor

    e = torch.tensor([-1e3, -10.0, 0.0, 30.0])
    out = smooth_floor(e, -10.0)
    assert torch.allclose(out, torch.tensor([-10.0, -10.0 + 0.6931472, 4.5399e-05, 30.0]), atol=1e-5)
    assert smooth_floor(e, None) is e
    # the conv energy uses the same floor as the MLP energy
    energy = gp.ConvEnergy((1, 8, 8), channels=(4,), floor=-2.0, spectral_norm=False)
    x = torch.randn(3, 64)
    raw = energy.head(energy.features(x.reshape(-1, 1, 8, 8)).flatten(1)).squeeze(-1)
    assert torch.allclose(energy(x), smooth_floor(raw, -2.0))
