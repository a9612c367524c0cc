"""Sampling shows progress by default like the training loops (issue 21 item 9): a bar on a terminal, periodic
lines elsewhere, nothing with progress=False."""

import pytest
from common import gaussian_case

import gebm_ppl as gp
import gebm_ppl.training._progress as training_progress


@pytest.fixture
def every_transition(monkeypatch):
    monkeypatch.setattr(training_progress, "PROGRESS_INTERVAL", 0.0)  # a line at every chance


@pytest.mark.parametrize(("method", "total"), [("ula", 5), ("nuts", 2 * 5)])
def test_default_progress_off_a_terminal_writes_lines(every_transition, capsys, method, total):
    gebm = gaussian_case(2, seed=0).gebm
    gp.sample_latent(gebm, method, num_samples=3, warmup_steps=2, num_chains=2)
    err = capsys.readouterr().err  # captured: not a terminal
    assert f"sampling: transition 1/{total} | elapsed" in err and "ETA" in err
    assert f"sampling: done, {total} transitions in" in err
    gp.sample_latent(gebm, method, num_samples=3, warmup_steps=2, num_chains=2, progress=False)
    assert capsys.readouterr().err == ""


def test_a_short_run_writes_nothing_with_the_default_interval(capsys):
    gp.sample_latent(gaussian_case(2, seed=0).gebm, "ula", num_samples=3, warmup_steps=2, num_chains=2)
    assert "sampling:" not in capsys.readouterr().err
    with pytest.raises(TypeError, match="'progress' should be True, False or None"):
        gp.sample_latent(gaussian_case(2, seed=0).gebm, "ula", progress="yes")
