"""fit_mle's Gaussian input-noise regulariser: off by default, seeded, resumable, and it smooths the fit."""

import pytest
import torch

import gebm_ppl as gp


def _fit(noise_std, epochs=3, **kw):
    torch.manual_seed(0)
    base = gp.RealNVP(2, hidden_features=8, num_layers=2)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(256, 2, generator=g)
    h = gp.fit_mle(base, x, x[:64], epochs=epochs, batch_size=64, noise_std=noise_std, progress=False,
                   patience=None, schedule=None, **kw)  # fmt: skip
    return base, h


def test_noise_changes_training_and_is_seeded():
    b0, _ = _fit(0.0)
    b1, _ = _fit(0.5)
    b2, _ = _fit(0.5)
    p0, p1, p2 = (torch.cat([p.flatten() for p in b.parameters()]) for b in (b0, b1, b2))
    assert not torch.allclose(p0, p1)
    assert torch.equal(p1, p2)


def test_noise_zero_is_the_default():
    b0, _ = _fit(0.0)
    torch.manual_seed(0)
    base = gp.RealNVP(2, hidden_features=8, num_layers=2)
    x = torch.randn(256, 2, generator=torch.Generator().manual_seed(1))
    gp.fit_mle(base, x, x[:64], epochs=3, batch_size=64, progress=False, patience=None, schedule=None)
    for a, b in zip(b0.parameters(), base.parameters(), strict=True):
        assert torch.equal(a, b)


def test_noise_resume_is_exact(tmp_path):
    full, _ = _fit(0.3, epochs=4)
    ck = tmp_path / "mle.pt"
    _fit(0.3, epochs=4, checkpoint_path=ck, max_steps=6)  # stops mid-epoch 2 (4 steps per epoch)
    torch.manual_seed(0)
    base = gp.RealNVP(2, hidden_features=8, num_layers=2)
    x = torch.randn(256, 2, generator=torch.Generator().manual_seed(1))
    gp.fit_mle(base, x, x[:64], epochs=4, batch_size=64, noise_std=0.3, progress=False, patience=None,
               schedule=None, resume=ck)  # fmt: skip
    for a, b in zip(full.parameters(), base.parameters(), strict=True):
        assert torch.equal(a, b)


def test_noise_widens_the_fit():
    """Training on x + σε fits the smoothed density: its variance grows by about σ² (tolerance 30 %)."""
    torch.manual_seed(0)
    x = torch.randn(2000, 2, generator=torch.Generator().manual_seed(2)) * 0.5
    base = gp.RealNVP(2, hidden_features=16, num_layers=2)
    gp.fit_mle(base, x, epochs=40, batch_size=200, lr=1e-2, noise_std=0.5, progress=False, patience=None)
    with torch.no_grad():
        s = base.sample(20_000)
    var = float(s.var(0).mean())
    assert var == pytest.approx(0.25 + 0.25, rel=0.3), var


@pytest.mark.parametrize("bad", [-0.1, float("nan")])
def test_noise_bad_value(bad):
    with pytest.raises(ValueError, match="noise_std"):
        _fit(bad)
