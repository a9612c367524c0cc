"""Image-training speed work: the step's maths is unchanged, old checkpoints load and resume, the fast options.

``tests/data/adversarial_before_conv.ckpt`` was written by the code before the speed work (commit 94f7cfa) with
``_tiny_conv_gebm`` and ``_run`` below (2 generator steps, KALE, checkpoint at each step): the state-dict keys of
the spectral-norm parametrisations, the configs without ``first_stride`` and the training state of that layout.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import gebm_ppl as gp
from gebm_ppl.training._loop import STREAM_STEP, stream_generator
from gebm_ppl.training._rng import prior_draw

BEFORE_CKPT = Path(__file__).parent / "data" / "adversarial_before_conv.ckpt"
RUN = dict(batch_size=16, energy_steps=2, burst_steps=3, burst_every=None, penalty=1.0, lr=1e-2, eval_every=1,
           log_partition_samples=32, progress=False, seed=0)  # fmt: skip


def _tiny_conv_gebm(first_stride: int = 1) -> gp.GEBM:
    torch.manual_seed(0)
    extra = {} if first_stride == 1 else {"first_stride": first_stride}
    return gp.GEBM(gp.ConvGenerator(4, (1, 8, 8), channels=(8, 4)), gp.ConvEnergy((1, 8, 8), (4, 8), **extra))


def _data() -> torch.Tensor:
    return torch.rand(64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_the_old_checkpoint_has_the_layout_the_networks_still_use():
    ck = torch.load(BEFORE_CKPT, weights_only=False)
    new = _tiny_conv_gebm()
    assert list(ck["state_dict"]) == list(new.state_dict())  # spectral norm: parametrizations.weight.original/_u/_v
    assert {k: tuple(v.shape) for k, v in ck["state_dict"].items()} == {
        k: tuple(v.shape) for k, v in new.state_dict().items()
    }
    assert ck["energy"]["config"] == new.energy.config and ck["base"]["config"] == new.base.config


def test_the_new_step_reproduces_the_old_step_and_resumes_its_checkpoint(tmp_path):
    """Two generator steps by the new code equal those the old code saved (weights, c, losses); resuming the old
    checkpoint with the new code equals the new code's uninterrupted run."""
    old = gp.GEBM.load(BEFORE_CKPT)
    ck = torch.load(BEFORE_CKPT, weights_only=False)
    old_records = ck["extra"]["training"]["history"]["records"]
    new = _tiny_conv_gebm()
    h = gp.fit_adversarial(new, _data(), steps=2, checkpoint_path=tmp_path / "new.ckpt", **RUN)
    for (name, a), b in zip(old.state_dict().items(), new.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)
    for rec_old, rec_new in zip(old_records, h.records, strict=True):
        for key in ("energy_loss", "base_loss", "kale_batch", "log_partition", "kale_train"):
            assert rec_new[key] == pytest.approx(rec_old[key], rel=1e-5, abs=1e-6), key
    resumed = _tiny_conv_gebm(first_stride=1)
    with torch.no_grad():
        for p in resumed.parameters():
            p.add_(1.0)  # all state must come from the old checkpoint
    h_res = gp.fit_adversarial(resumed, _data(), steps=3, resume=BEFORE_CKPT, **RUN)
    full = _tiny_conv_gebm()
    h_full = gp.fit_adversarial(full, _data(), steps=3, **RUN)
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)
    assert h_res.last["energy_loss"] == pytest.approx(h_full.last["energy_loss"], rel=1e-5)


def _reference(gebm: gp.GEBM, x_train: torch.Tensor, objective: str, energy_steps: int, penalty_every: int,
               lam: float, lr: float) -> tuple[float, float]:  # fmt: skip
    """One generator step written out by hand (plain torch, the step's random draws in their order).

    Energy step j: data minibatch x, base samples x_b = G(z), interpolates x̂ = t·x + (1 − t)·x_b;
    KALE: L = mean(E(x) + c) + mean(exp(−(E(x_b) + c))) + λ·mean‖∇ₓE(x̂)‖² (the penalty when j % k = 0);
    GAN: L = mean softplus(E(x)) + mean softplus(−E(x_b)) + the same penalty. Adam on (E, c).
    Generator: KALE Σ softmax(−E(G z))·E(G z) (weights held constant); GAN mean softplus(E(G z)). Adam on θ.
    """
    base, energy, c = gebm.base, gebm.energy, gebm.log_partition
    kale = objective == "kale"
    e_opt = torch.optim.Adam([{"params": list(energy.parameters())}, *([{"params": [c]}] if kale else [])],
                             lr=lr, betas=(0.5, 0.999))  # fmt: skip
    g_opt = torch.optim.Adam(base.parameters(), lr=lr, betas=(0.5, 0.999))
    g = stream_generator(0, STREAM_STEP, 0, c.device)
    n = 16
    gebm.train()
    for j in range(energy_steps):
        x = x_train[torch.randperm(x_train.shape[0], generator=g)[:n]]
        z = prior_draw(base, n, g)
        penalised = j % penalty_every == 0
        t = torch.rand(n, 1, dtype=x.dtype, generator=g) if penalised else None
        with torch.no_grad():
            xb = base(z)
        e = energy(torch.cat([x, xb]))
        ed, eb = e[:n], e[n:]
        if kale:
            loss = (ed + c).mean() + torch.exp(-(eb + c)).mean()
        else:
            loss = F.softplus(ed).mean() + F.softplus(-eb).mean()
        if penalised:
            x_hat = (t * x + (1 - t) * xb).requires_grad_(True)
            (grad,) = torch.autograd.grad(energy(x_hat).sum(), x_hat, create_graph=True)
            loss = loss + lam * (grad * grad).sum(-1).mean()
        e_opt.zero_grad()
        loss.backward()
        e_opt.step()
    energy_loss = float(loss.detach()) - (1.0 if kale else 0.0)  # the library reports −F + penalty for KALE
    z = prior_draw(base, n, g)
    for p in energy.parameters():
        p.requires_grad_(False)
    e = energy(base(z))
    g_loss = (torch.softmax(-e.detach(), 0) * e).sum() if kale else F.softplus(e).mean()
    g_opt.zero_grad()
    g_loss.backward()
    g_opt.step()
    for p in energy.parameters():
        p.requires_grad_(True)
    return energy_loss, float(g_loss.detach())


@pytest.mark.parametrize("objective", ["kale", "gan"])
@pytest.mark.parametrize(("first_stride", "penalty_every"), [(1, 1), (2, 1), (2, 2)])
def test_one_step_equals_the_formulas(objective, first_stride, penalty_every):
    """fit_adversarial's generator step (float64) against the losses written out by hand, with the fast options:
    the DCGAN first layer and the penalty at every other energy step. A flipped sign, a dropped term or a penalty at
    the wrong energy steps moves the weights."""
    kw = dict(steps=1, batch_size=16, energy_steps=3, burst_steps=0, burst_every=None, penalty=0.5, lr=1e-2,
              eval_every=1, log_partition_samples=16, init_log_partition=False, progress=False, seed=0)  # fmt: skip
    x = _data().double()
    lib = _tiny_conv_gebm(first_stride).double()
    h = gp.fit_adversarial(lib, x, objective=objective, penalty_every=penalty_every, **kw)
    ref = _tiny_conv_gebm(first_stride).double()
    energy_loss, base_loss = _reference(ref, x, objective, 3, penalty_every, 0.5, 1e-2)
    assert h.last["energy_loss"] == pytest.approx(energy_loss, rel=1e-9, abs=1e-12)
    assert h.last["base_loss"] == pytest.approx(base_loss, rel=1e-9, abs=1e-12)
    for (name, a), b in zip(ref.named_parameters(), lib.parameters(), strict=True):
        if name != "log_partition" or objective == "kale":  # the GAN sets c = Â at the evaluation
            torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12, msg=name)
    if penalty_every == 2:  # the option matters: the every-step run ends elsewhere
        other = _tiny_conv_gebm(first_stride).double()
        gp.fit_adversarial(other, x, objective=objective, penalty_every=1, **kw)
        assert not torch.allclose(other.energy.head.bias, lib.energy.head.bias, rtol=1e-6, atol=1e-9)


def test_penalty_every_is_checked_and_recorded():
    x = _data()
    with pytest.raises(ValueError, match="penalty_every"):
        gp.fit_adversarial(_tiny_conv_gebm(), x, steps=1, penalty_every=0, **{k: v for k, v in RUN.items()})
    h = gp.fit_adversarial(_tiny_conv_gebm(), x, steps=1, penalty_every=2, **RUN)
    assert h.settings["penalty_every"] == 2


def test_first_stride_builds_the_dcgan_energy():
    e = gp.ConvEnergy((1, 28, 28), channels=(16, 32, 64), first_stride=2)
    first = e.features[0]
    assert (first.kernel_size, first.stride, first.padding) == ((4, 4), (2, 2), (1, 1))
    assert e.head.in_features == 64 * 3 * 3  # 28 → 14 → 7 → 3
    assert e(torch.zeros(5, 784)).shape == (5,) and e.config["first_stride"] == 2
    assert "first_stride" not in gp.ConvEnergy((1, 28, 28), channels=(16, 32, 64)).config
    for bad in (0, 3, True, 2.0):
        with pytest.raises(ValueError, match="first_stride"):
            gp.ConvEnergy((1, 28, 28), first_stride=bad)
    with pytest.raises(ValueError, match="3 stride-2 convolutions"):
        gp.ConvEnergy((1, 4, 4), channels=(4, 4, 4), first_stride=2)


def test_first_stride_checkpoint_round_trip_and_jax_twin(tmp_path):
    gebm = _tiny_conv_gebm(first_stride=2).eval()
    gebm.save(tmp_path / "g.ckpt")
    back = gp.GEBM.load(tmp_path / "g.ckpt").eval()
    assert back.energy.features[0].stride == (2, 2)
    x = _data()[:7]
    with torch.no_grad():
        torch.testing.assert_close(back.energy(x), gebm.energy(x))
        jg = gp.to_jax(gebm)
        np.testing.assert_allclose(np.asarray(jg.energy(x.numpy())), gebm.energy(x).numpy(), rtol=1e-4, atol=1e-4)
