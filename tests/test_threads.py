"""Torch threads (issue 21 item 8): one thread for small networks in the training loops and samplers, unless the
user chose a count (an explicit block, $GEBM_NUM_THREADS, $OMP_NUM_THREADS, torch.set_num_threads)."""

import pytest
import torch
from common import gaussian_case

import gebm_ppl as gp
from gebm_ppl._threads import choose_threads, is_small, torch_threads, user_choice

DEFAULT = 4  # a pretend core count: torch starts its intra- and inter-op pools with one thread per core


@pytest.fixture
def fresh_torch(monkeypatch):
    """Torch as a user's script finds it: ``DEFAULT`` threads, no thread variables in the environment."""
    for name in ("GEBM_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(torch, "get_num_interop_threads", lambda: DEFAULT)
    old = torch.get_num_threads()
    torch.set_num_threads(DEFAULT)
    yield
    torch.set_num_threads(old)


def test_the_automatic_choice_and_what_counts_as_the_users(fresh_torch, monkeypatch):
    small, conv = torch.nn.Linear(11, 100), torch.nn.Conv2d(1, 8, 3)
    assert is_small(small) and not is_small(conv) and not is_small(None)
    assert not user_choice() and choose_threads(small) == 1 and choose_threads(conv) is None
    with torch_threads(3):  # an explicit count wins inside the block, nested automatic choices included
        assert user_choice() and choose_threads(small) is None
        with torch_threads(model=small) as n:
            assert n == 3
    assert torch.get_num_threads() == DEFAULT  # restored
    with torch_threads(0):  # "torch's count", explicitly
        assert choose_threads(small) is None
    torch.set_num_threads(2)  # a count the user set
    assert user_choice() and choose_threads(small) is None
    torch.set_num_threads(DEFAULT)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert choose_threads(small) is None
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setenv("GEBM_NUM_THREADS", "2")
    assert choose_threads(small) == 2 and choose_threads(conv) == 2
    monkeypatch.setenv("GEBM_NUM_THREADS", "many")
    with pytest.raises(ValueError, match=r"\$GEBM_NUM_THREADS should be a positive integer"):
        choose_threads(small)
    with pytest.raises(ValueError, match="'n' should be an integer >= 0"):
        with torch_threads(-1):
            pass


def test_training_loops_use_one_thread_for_a_small_network(fresh_torch):
    seen = []
    x = torch.randn(64, 2)
    gp.fit_mle(gp.RealNVP(2, hidden_features=8, num_layers=2), x, epochs=2, batch_size=32, progress=False,
               callback=lambda record: seen.append(torch.get_num_threads()))
    assert seen == [1, 1]
    assert torch.get_num_threads() == DEFAULT  # the user's setting is back after training
    with torch_threads(DEFAULT):  # asked for explicitly: honoured
        gp.fit_mle(gp.RealNVP(2, hidden_features=8, num_layers=2), x, epochs=1, batch_size=32, progress=False,
                   callback=lambda record: seen.append(torch.get_num_threads()))
    assert seen[-1] == DEFAULT


def test_torch_samplers_use_one_thread_for_a_small_network(fresh_torch):
    gebm = gaussian_case(2, seed=0).gebm
    seen = []
    handle = gebm.energy.register_forward_hook(lambda module, args, out: seen.append(torch.get_num_threads()))
    gp.sample_latent(gebm, "ula", num_samples=3, warmup_steps=2, num_chains=2)
    handle.remove()
    assert seen and set(seen) == {1}
    assert torch.get_num_threads() == DEFAULT
