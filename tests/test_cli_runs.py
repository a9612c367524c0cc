"""`gebm fit` / `gebm evaluate` as a user meets them (issue 21 items 2, 4, 12): a diverged fit recorded with the
setting to change, one standard error for Δ NLL, earlier evaluations kept, a finished run said once, units."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from common import uci_dir

from gebm_ppl.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, main

UCI = uci_dir()
ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not (UCI / "wine-quality" / "winequality-red.csv").is_file(),
                                reason=f"red-wine is not in {UCI}")

TINY = """
[realnvp]
hidden_features = 8
num_layers = 2

[energy]
hidden = [8]

[mle]
epochs = 2
batch_size = 256

[kale]
epochs = 1
noise_factor = 1
log_partition_samples = 500

[eval]
num_samples = 2000
"""
BOOM = ("--set", "mle.lr=1e30", "--set", "mle.grad_clip=1e30")  # diverges in its first steps


def run_cli(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    threads = torch.get_num_threads()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    torch.set_num_threads(threads)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("cli_runs")
    (tmp / "tiny.toml").write_text(TINY)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GEBM_DATA_DIR", str(UCI))
        mp.setenv("GEBM_CACHE_DIR", str(tmp / "cache"))
        yield tmp


@pytest.fixture(scope="module")
def fitted(workdir) -> Path:
    run_dir = workdir / "run"
    code, out, err = run_cli("fit", "red-wine", "--config", workdir / "tiny.toml", "--out", run_dir, "--no-progress")
    assert code == EXIT_OK, err
    (workdir / "fit_stdout.txt").write_text(out)
    return run_dir


def test_a_diverged_fit_is_recorded_and_says_which_setting_to_change(workdir):
    run_dir = workdir / "boom"
    fit = ("fit", "red-wine", "--config", workdir / "tiny.toml", "--out", run_dir, "--no-progress")
    code, _, err = run_cli(*fit, *BOOM)
    assert code == EXIT_FAILURE, err
    assert "gebm fit: failed: fit_mle diverged at step" in err
    assert "Lower mle.lr (it was 1e+30), e.g. --set mle.lr=1e+29" in err
    assert "checkpoint_path=" not in err  # no Python advice from the command line
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "failed"
    failure = info["failure"]
    assert failure["stage"] == "mle" and failure["setting"] == "mle.lr" and failure["value"] == 1e30
    assert failure["step"] >= 1 and failure["quantity"] and "Lower mle.lr" in failure["message"]
    # evaluate explains the failure instead of asking for the same command again
    code, _, err = run_cli("evaluate", run_dir)
    assert code == EXIT_USAGE
    assert "failed, so there is no model" in err and "Lower mle.lr" in err and "re-run the same" not in err
    # the same command again would diverge again: refused, naming the setting
    code, _, err = run_cli(*fit, *BOOM)
    assert code == EXIT_USAGE and "would fail the same way" in err and "Lower mle.lr" in err
    # with the setting changed, the failed run is replaced
    code, out, err = run_cli(*fit, "--set", "mle.lr=1e-3")
    assert code == EXIT_OK, err
    assert "replacing the failed run" in err
    assert json.loads((run_dir / "run.json").read_text())["status"] == "done"


def test_evaluate_gives_one_standard_error_for_delta_nll(fitted):
    for m in (2000, 1):
        code, out, err = run_cli("evaluate", fitted, "--num-samples", m, "--json")
        assert code == EXIT_OK, err
        res = json.loads(out)
        se = res["delta_nll_stderr"]
        se = math.inf if se is None else se  # JSON null: not finite (one base sample: se(Â) = inf)
        shown = re.search(r"± (\S+) nats", res["verdict"]).group(1)
        # the verdict's ± is the table's, se(Â) included
        assert float(shown) == pytest.approx(se, abs=1e-3) if math.isfinite(se) else shown == "inf"
        assert se > 0
        if m == 2000:
            assert se**2 > res["log_partition_stderr"] ** 2  # the spread over examples and se(Â)
        else:
            assert res["verdict"].startswith("no clear difference")


def test_an_evaluation_with_other_settings_does_not_overwrite_the_first(fitted):
    code, _, err = run_cli("evaluate", fitted, "--num-samples", 1500, "--seed", 3)
    assert code == EXIT_OK, err
    first = json.loads((fitted / "evaluation-test.json").read_text())
    code, out, err = run_cli("evaluate", fitted, "--num-samples", 1000, "--seed", 4)
    assert code == EXIT_OK, err
    kept = fitted / "evaluation-test-m1500-seed3.json"
    assert f"Kept the earlier evaluation with other settings as {kept}" in out
    assert json.loads(kept.read_text()) == first
    assert json.loads((fitted / "evaluation-test.json").read_text())["num_samples"] == 1000
    # the same settings again: the same figures, nothing to keep
    code, out, _ = run_cli("evaluate", fitted, "--num-samples", 1000, "--seed", 4)
    assert code == EXIT_OK and "Kept" not in out


def test_a_finished_run_is_said_to_be_complete_once_and_the_summary_has_units(fitted, workdir):
    out = (workdir / "fit_stdout.txt").read_text()
    assert "NLL in nats per example, in the model's whitened space" in out and "log|det W|" in out
    code, out, err = run_cli("fit", "red-wine", "--config", workdir / "tiny.toml", "--out", fitted, "--no-progress")
    assert code == EXIT_OK, err
    text = out + err
    assert text.count("already holds this finished run") == 1 and "nothing was fitted" in err
    assert "nothing to do" not in text and "Wrote" not in text


def test_fit_on_a_small_user_file_prints_clean_warnings_and_describes_the_data(workdir, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 3)) @ np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.3], [0.0, 0.0, 1.0]])
    csv = tmp_path / "wine.csv"
    csv.write_text("alcohol,acidity,sugar\n" + "\n".join(",".join(f"{v:.4f}" for v in row) for row in x) + "\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, "-m", "gebm_ppl", "fit", str(csv), "--config", str(workdir / "tiny.toml"),
                           "--out", str(tmp_path / "run"), "--set", "mle.epochs=1", "--no-progress"],
                          capture_output=True, text=True, env=env, timeout=300)  # as on a user's terminal
    code, err = proc.returncode, proc.stderr
    assert code == EXIT_OK, err
    assert re.search(r"gebm fit: warning: '[^']*wine.csv': only 120 rows split into", err), err
    assert "UserWarning" not in err and ".py:" not in err  # one clean line, no source path or code line
    assert "data: user data file wine.csv: 3 columns (alcohol, acidity, sugar), 98 / 10 / 12 rows" in err
    assert "UCIData(" not in err


def test_fit_run_raises_a_training_diverged_that_names_the_setting(workdir):
    import gebm_ppl as gp
    from gebm_ppl import runs

    config = runs.apply_overrides(runs.load_config(workdir / "tiny.toml"), ["mle.lr=1e30", "mle.grad_clip=1e30"])
    with pytest.raises(gp.TrainingDiverged, match=r"Lower mle\.lr") as caught:
        runs.fit_run(workdir / "py-boom", runs.load_data("red-wine"), config, progress=False)
    assert isinstance(caught.value, runs.RunFailed) and caught.value.record["setting"] == "mle.lr"
    assert isinstance(caught.value.__cause__, gp.TrainingDiverged) and caught.value.step >= 1
