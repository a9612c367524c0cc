"""fit_adversarial: exact resume, divergence, arguments, and a digits-size smoke run of both objectives."""

import math

import pytest
import torch
from torch import nn

import gebm_ppl as gp


def _toy_gebm(seed: int = 0) -> gp.GEBM:
    torch.manual_seed(seed)
    return gp.GEBM(gp.MLPGenerator(2, 3, hidden=(16,), output="identity"), gp.EnergyMLP(3, hidden=(16,), floor=-10.0))


def _toy_data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(300, 3, generator=g) + 1.0


KW = dict(batch_size=32, energy_steps=2, burst_steps=5, burst_every=4, eval_every=3, log_partition_samples=500,
          lr=1e-3, progress=False)  # fmt: skip


@pytest.mark.parametrize("objective", ["kale", "gan"])
def test_resume_equals_the_uninterrupted_run(tmp_path, objective):
    x = _toy_data()
    full = _toy_gebm()
    h_full = gp.fit_adversarial(full, x[:250], x[250:], objective=objective, steps=10, **KW)

    first = _toy_gebm()
    ckpt = tmp_path / "run.pt"
    gp.fit_adversarial(first, x[:250], x[250:], objective=objective, steps=5, checkpoint_path=ckpt, **KW)
    resumed = _toy_gebm(seed=123)  # other initial weights: all state must come from the checkpoint
    h_res = gp.fit_adversarial(resumed, x[:250], x[250:], objective=objective, steps=10, resume=ckpt, **KW)

    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    keys = ("step", "kale_val", "log_partition", "energy_loss", "base_loss")
    full_records = [tuple(r.get(k) for k in keys) for r in h_full.records]
    assert [tuple(r.get(k) for k in keys) for r in h_res.records] == full_records
    assert h_res.total_steps == 10
    # the checkpoint is a GEBM checkpoint
    assert isinstance(gp.GEBM.load(ckpt).base, gp.MLPGenerator)


def test_resume_refuses_other_settings(tmp_path):
    x = _toy_data()
    ckpt = tmp_path / "run.pt"
    gp.fit_adversarial(_toy_gebm(), x, steps=3, checkpoint_path=ckpt, **KW)
    with pytest.raises(ValueError, match="energy_steps"):
        gp.fit_adversarial(_toy_gebm(), x, steps=6, resume=ckpt, **{**KW, "energy_steps": 3})
    with pytest.raises(ValueError, match="objective"):
        gp.fit_adversarial(_toy_gebm(), x, steps=6, resume=ckpt, objective="gan", **KW)


class _Poisoned(nn.Module):
    """A linear energy whose weight a callback can set to NaN."""

    def __init__(self):
        super().__init__()
        self.dim = 3
        self.weight = nn.Parameter(torch.full((3,), 0.1))

    def forward(self, x):
        return x @ self.weight


def test_divergence_raises_naming_the_step_and_the_checkpoint(tmp_path):
    torch.manual_seed(0)
    gebm = gp.GEBM(gp.MLPGenerator(2, 3, hidden=(8,), output="identity"), _Poisoned())

    def poison(record):
        with torch.no_grad():
            gebm.energy.weight.fill_(math.nan)

    ckpt = tmp_path / "run.pt"
    with pytest.raises(gp.TrainingDiverged, match="step 4") as err:
        gp.fit_adversarial(gebm, _toy_data(), steps=9, checkpoint_path=ckpt, checkpoint_every=1, callback=poison, **KW)
    assert err.value.checkpoint_step == 3 and err.value.checkpoint_path == str(ckpt)


def test_bad_arguments():
    x = _toy_data()
    with pytest.raises(ValueError, match="objective"):
        gp.fit_adversarial(_toy_gebm(), x, steps=2, objective="wgan")
    with pytest.raises(ValueError, match="steps"):
        gp.fit_adversarial(_toy_gebm(), x, steps=0)
    with pytest.raises(ValueError, match="3 columns"):
        gp.fit_adversarial(_toy_gebm(), torch.zeros(10, 4), steps=2)
    with pytest.raises(ValueError, match="batch_size"):
        gp.fit_adversarial(_toy_gebm(), x[:10], steps=2, batch_size=64)
    with pytest.raises(TypeError, match="betas"):
        gp.fit_adversarial(_toy_gebm(), x, steps=2, betas=0.5)


@pytest.mark.parametrize(
    "make",
    [
        lambda: gp.GEBM(gp.MLPGenerator(4, 64, hidden=(32,), image_shape=(1, 8, 8)), gp.EnergyMLP(64, hidden=(32,))),
        lambda: gp.GEBM(
            gp.ConvGenerator(4, (1, 8, 8), channels=(16, 8, 4), batch_norm=True), gp.ConvEnergy((1, 8, 8), (8, 16))
        ),
    ],
    ids=["mlp", "conv"],
)
@pytest.mark.parametrize("objective", ["kale", "gan"])
def test_digits_smoke(objective, make):
    data = gp.data.load("digits", seed=0)
    torch.manual_seed(0)
    gebm = make()
    h = gp.fit_adversarial(gebm, data.train, data.val, objective=objective, steps=4, batch_size=32, energy_steps=2,
                           burst_steps=3, eval_every=2, log_partition_samples=256, progress=False)  # fmt: skip
    assert [r["step"] for r in h.records] == [2, 4]
    for key in ("kale_train", "kale_val", "log_partition", "log_partition_estimate", "energy_loss", "base_loss"):
        assert math.isfinite(h.last[key]), key
    with torch.no_grad():
        x = gebm.base.sample(5)
    assert x.shape == (5, 64) and x.abs().max() <= 1.0
