"""fit_mle(optimizer=...): Adam with L2 decay (the unchanged default) and AdamW's decoupled decay, in closed form."""

from __future__ import annotations

import pytest
import torch

import gebm_ppl as gp


def _base_and_data():
    torch.manual_seed(0)
    base = gp.AffineBase(2).double()
    with torch.no_grad():  # away from 0, where decay would do nothing
        for p in base.parameters():
            p.add_(torch.randn_like(p))
    x = torch.randn(40, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2 + 1
    return base, x


def _one_step(optimizer: str | None, lr: float, wd: float):
    base, x = _base_and_data()
    p0 = [p.detach().clone() for p in base.parameters()]
    loss = -base.log_prob(x).mean()
    grads = torch.autograd.grad(loss, list(base.parameters()))
    kw = {} if optimizer is None else {"optimizer": optimizer}
    h = gp.fit_mle(base, x, epochs=1, batch_size=len(x), lr=lr, weight_decay=wd, grad_clip=None, schedule=None,
                   progress=False, **kw)  # fmt: skip
    return p0, grads, [p.detach() for p in base.parameters()], h


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_first_step_is_adam_with_l2_or_decoupled_decay(optimizer):
    lr, wd = 0.05, 2.0
    p0, grads, p1, h = _one_step(optimizer, lr, wd)
    assert h.settings["optimizer"] == optimizer
    for a, g, b in zip(p0, grads, p1, strict=True):
        # Adam's first step moves every coordinate by lr·u/(|u| + ε) with u its gradient (m̂ = u, v̂ = u²)
        if optimizer == "adam":  # L2: u = g + λθ, inside Adam's normalisation
            u = g + wd * a
            expected = a - lr * u / (u.abs() + 1e-8)
        else:  # AdamW: θ(1 − lr·λ) first, then Adam's step on g alone
            expected = a * (1 - lr * wd) - lr * g / (g.abs() + 1e-8)
        torch.testing.assert_close(b, expected, atol=1e-10, rtol=0)


def test_default_is_adam_bit_for_bit():
    _, _, default, _ = _one_step(None, 0.05, 2.0)
    _, _, adam, _ = _one_step("adam", 0.05, 2.0)
    _, _, adamw, _ = _one_step("adamw", 0.05, 2.0)
    assert all(torch.equal(a, b) for a, b in zip(default, adam, strict=True))
    assert not all(torch.allclose(a, b) for a, b in zip(default, adamw, strict=True))


def test_unknown_optimizer_is_named():
    base, x = _base_and_data()
    with pytest.raises(ValueError, match="'optimizer' should be one of"):
        gp.fit_mle(base, x, epochs=1, optimizer="sgd", progress=False)
