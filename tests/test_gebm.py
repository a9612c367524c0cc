"""GEBM module: construction checks and atomic save / load."""

import os

import pytest
import torch

import gebm_ppl as gp


def _gebm(dim=3):
    torch.manual_seed(0)
    g = gp.GEBM(gp.RealNVP(dim, hidden_features=8, num_layers=2), gp.EnergyMLP(dim, hidden=(8, 8)), 0.7)
    with torch.no_grad():
        for p in g.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return g


def test_save_load_round_trip(tmp_path):
    g = _gebm()
    g.eval()
    path = tmp_path / "sub" / "model.pt"
    g.save(path, note="hello")
    assert sorted(os.listdir(path.parent)) == ["model.pt"]  # no temporary file left behind
    h = gp.GEBM.load(path)
    h.eval()
    x = torch.randn(6, 3)
    torch.testing.assert_close(h.log_prob(x), g.log_prob(x))
    assert h.base.config == g.base.config and h.energy.config == g.energy.config
    assert torch.load(path, weights_only=True)["extra"] == {"note": "hello"}


def test_save_keeps_float64(tmp_path):
    g = _gebm().double()
    g.save(tmp_path / "m.pt")
    assert gp.GEBM.load(tmp_path / "m.pt").log_partition.dtype == torch.float64


def test_load_rejects_other_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no GEBM checkpoint"):
        gp.GEBM.load(tmp_path / "missing.pt")
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a gebm_ppl GEBM checkpoint"):
        gp.GEBM.load(tmp_path / "text.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a gebm_ppl GEBM checkpoint"):
        gp.GEBM.load(tmp_path / "other.pt")
    ckpt = _gebm().checkpoint()
    ckpt["base"]["class"] = "Unknown"
    torch.save(ckpt, tmp_path / "unknown.pt")
    with pytest.raises(ValueError, match="'Unknown'"):
        gp.GEBM.load(tmp_path / "unknown.pt")
    data = (tmp_path / "good.pt")
    _gebm().save(data)
    (tmp_path / "torn.pt").write_bytes(data.read_bytes()[:200])
    with pytest.raises(ValueError, match="not a gebm_ppl GEBM checkpoint"):
        gp.GEBM.load(tmp_path / "torn.pt")


def test_construction_errors():
    with pytest.raises(ValueError, match="dimensions differ"):
        gp.GEBM(gp.RealNVP(3), gp.EnergyMLP(4))
    with pytest.raises(TypeError, match="'base'"):
        gp.GEBM(object(), gp.EnergyMLP(4))


def test_latent_potential_temperature():
    g = _gebm()
    g.eval()  # in training mode spectral norm runs a power-iteration step on every call
    z = torch.randn(5, 3)
    u1, u2 = g.latent_potential(z), g.latent_potential(z, temperature=2.0)
    torch.testing.assert_close(u2 - u1, g.latent_energy(z))


def test_load_refuses_a_config_larger_than_its_weights(tmp_path):
    # a checkpoint without its digest whose config was edited to a huge architecture: refused before building
    ckpt = _gebm().checkpoint()
    ckpt.pop("digest", None)
    ckpt["base"]["config"]["num_layers"] = 10**9
    torch.save(ckpt, tmp_path / "huge.pt")
    with pytest.raises(ValueError, match="more than the .* weights stored with it"):
        gp.GEBM.load(tmp_path / "huge.pt")
