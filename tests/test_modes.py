"""eval_mode / train_mode: modes inside the block, every submodule's own flag restored after it."""

import pytest
import torch
from torch import nn

from gebm_ppl._modes import eval_mode, train_mode


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(2, 3), nn.Dropout(0.5), nn.Sequential(nn.BatchNorm1d(3), nn.Linear(3, 1)))


def test_eval_mode_sets_eval_and_restores_nested_flags():
    a, b = _net(), _net()
    a.train()
    a[2].eval()  # a frozen child inside a training parent
    b.eval()
    before = [m.training for m in (*a.modules(), *b.modules())]
    with eval_mode(a, b):
        assert not any(m.training for m in (*a.modules(), *b.modules()))
        x = torch.randn(4, 2)
        assert torch.equal(a(x), a(x))  # dropout off: deterministic
    assert [m.training for m in (*a.modules(), *b.modules())] == before
    assert a.training and not a[2].training and not a[2][0].training


def test_eval_mode_restores_on_exception_and_when_nested():
    net = _net().train()
    with pytest.raises(RuntimeError, match="boom"), eval_mode(net):
        raise RuntimeError("boom")
    assert all(m.training for m in net.modules())
    with eval_mode(net):
        with train_mode(net[1]):
            assert net[1].training and not net[0].training
        assert not net[1].training
    assert all(m.training for m in net.modules())


def test_shared_submodule_and_bad_argument():
    shared = nn.Linear(2, 2)
    a, b = nn.Sequential(shared), nn.Sequential(shared)
    with eval_mode(a, b):
        assert not shared.training
    assert shared.training
    with pytest.raises(TypeError, match="nn.Module"):
        with eval_mode(object()):
            pass
