"""The `gebm` command end to end on red-wine (tiny settings): fit → evaluate → sample → diagnose,
an interrupted fit that resumes, user files, and bad input (exit code 2 with a clear message)."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from common import one_thread, uci_dir

import gebm_ppl as gp
from gebm_ppl.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, build_parser, main

ROOT = Path(__file__).resolve().parents[1]
UCI = uci_dir()
HAVE_RED_WINE = (UCI / "wine-quality" / "winequality-red.csv").is_file()
needs_red_wine = pytest.mark.skipif(not HAVE_RED_WINE, reason=f"red-wine is not in {UCI}")

# Tiny but real settings: a 2-layer RealNVP and a small energy, a few epochs of each stage.
TINY = """
[realnvp]
hidden_features = 16
num_layers = 2

[energy]
hidden = [16, 16]

[mle]
epochs = 4
batch_size = 128

[kale]
epochs = 3
noise_factor = 2
log_partition_samples = 2000

[benchmark]  # tables other than the four are ignored
seeds = 3
"""


def run_cli(*argv: str) -> tuple[int, str, str]:
    """``main(argv)`` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def subprocess_env(tmp: Path) -> dict:
    env = dict(os.environ)
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]), GEBM_DATA_DIR=str(UCI),
               GEBM_CACHE_DIR=str(tmp / "cache"), OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    return env


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A folder with the tiny configuration, and the environment pointing the data lookup at it."""
    tmp = tmp_path_factory.mktemp("cli")
    (tmp / "tiny.toml").write_text(TINY)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GEBM_DATA_DIR", str(UCI))
        mp.setenv("GEBM_CACHE_DIR", str(tmp / "cache"))
        yield tmp


@pytest.fixture(scope="module")
def fitted(workdir) -> Path:
    """`gebm fit red-wine` with the tiny configuration (seed 1), uninterrupted."""
    if not HAVE_RED_WINE:
        pytest.skip(f"red-wine is not in {UCI}")
    run_dir = workdir / "run"
    with one_thread():
        code, out, err = run_cli("fit", "red-wine", "--config", workdir / "tiny.toml", "--out", run_dir,
                                 "--seed", 1, "--checkpoint-every", 2, "--no-progress")
    assert code == EXIT_OK, err
    assert "Fitted a GEBM on red-wine (11 dims)" in out and "GEBM (KALE) validation NLL" in out
    return run_dir


# ------------------------------------------------------------------------------------------ help
def test_help_explains_every_option(capsys):
    assert main(["--help"]) == EXIT_OK
    top = capsys.readouterr().out
    for command in ("fit", "evaluate", "sample", "diagnose"):
        assert command in top
    assert "Exit codes: 0 success, 1 runtime failure, 2 bad input" in top
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, p in sub.choices.items():
        assert main([name, "--help"]) == EXIT_OK
        text = capsys.readouterr().out
        for action in p._actions:
            assert action.help, f"gebm {name}: {action.dest} has no help"
            for flag in action.option_strings:
                assert flag in text, f"gebm {name} --help does not mention {flag}"
        # every option is in the user guide too
        guide = (ROOT / "docs" / "cli.md").read_text()
        for action in p._actions:
            long = [f for f in action.option_strings if f.startswith("--") and f not in ("--help", "--debug")]
            for flag in long:
                assert flag in guide, f"docs/cli.md does not mention gebm {name} {flag}"
    assert main(["--version"]) == EXIT_OK
    assert gp.__version__ in capsys.readouterr().out


# ------------------------------------------------------------------------------------------ end to end
@needs_red_wine
def test_fit_writes_a_complete_run_directory(fitted):
    names = {p.name for p in fitted.iterdir()}
    assert {"run.json", "data.h5", "mle.ckpt", "kale.ckpt", "gebm.pt", "history.json"} <= names
    assert not [n for n in names if n.endswith(".tmp")]  # atomic writes leave no scratch files
    info = json.loads((fitted / "run.json").read_text())
    assert info["status"] == "done" and info["identity"]["seed"] == 1
    assert info["identity"]["config"]["kale"]["noise_factor"] == 2
    history = json.loads((fitted / "history.json").read_text())
    assert len(history["mle"]["records"]) == 4 and len(history["kale"]["records"]) == 3
    gebm = gp.GEBM.load(fitted / "gebm.pt")
    assert gebm.dim == 11 and gebm.base.config["num_layers"] == 2
    # the stored splits are red-wine's kexpfam splits for seed 1
    data = gp.data.load("red-wine", seed=1)
    with h5py.File(fitted / "data.h5", "r") as f:
        np.testing.assert_array_equal(f["test"][()], data.test)
    # the same command again finds the finished run and leaves it alone
    before = (fitted / "gebm.pt").stat().st_mtime_ns
    code, _, err = run_cli("fit", "red-wine", "--config", fitted.parent / "tiny.toml", "--out", fitted,
                           "--seed", 1, "--checkpoint-every", 2)
    assert code == EXIT_OK and "already holds this finished run" in err
    assert (fitted / "gebm.pt").stat().st_mtime_ns == before


@needs_red_wine
def test_evaluate_reports_nll_with_standard_errors_and_the_kale_bound(fitted):
    code, out, err = run_cli("evaluate", fitted, "--num-samples", 5000, "--json")
    assert code == EXIT_OK, err
    res = json.loads(out)
    assert res == json.loads((fitted / "evaluation-test.json").read_text())
    assert res["split"] == "test" and res["num_examples"] == 159 and res["num_samples"] == 5000
    # an independent recomputation of the base NLL and of the GEBM's NLL on the test split
    gebm = gp.GEBM.load(fitted / "gebm.pt").eval()
    x = torch.as_tensor(gp.data.load("red-wine", seed=1).test)
    with torch.no_grad():
        log_g = gebm.base.log_prob(x).double()
        energy = gebm.energy(x).double()
    assert res["base_nll"] == pytest.approx(-float(log_g.mean()), rel=1e-6)
    assert res["nll"] == pytest.approx(-float((log_g - energy).mean()) + res["log_partition"], rel=1e-6)
    assert res["base_nll_stderr"] == pytest.approx(float(log_g.std() / 159**0.5), rel=1e-5)
    assert res["nll"] <= res["nll_bound"] + 1e-9  # the KALE bound holds for any c
    assert 0 < res["nll_stderr"] and 0 < res["log_partition_stderr"] < 0.1 and 0 < res["ess"] <= 5000
    # the table says the same
    code, out, _ = run_cli("evaluate", fitted, "--num-samples", 5000, "--split", "val")
    assert code == EXIT_OK
    assert "val split (144 examples)" in out
    for label in ("base (RealNVP) NLL", "GEBM NLL (importance sampling)", "KALE upper bound", "±"):
        assert label in out


@needs_red_wine
def test_sample_then_diagnose(fitted, tmp_path):
    import arviz as az

    out = tmp_path / "draws.h5"
    code, stdout, err = run_cli("sample", fitted, "-n", 20, "--warmup", 50, "--chains", 2, "--method", "nuts",
                                "--seed", 3, "--out", out)
    assert code == EXIT_OK, err
    assert f"Wrote {out}" in stdout and f"Wrote {out.with_suffix('.nc')}" in stdout
    with h5py.File(out, "r") as f:
        z, x = f["posterior/z"][()], f["posterior/x"][()]
        x_original = f["x_original"][()]
        assert z.shape == (2, 20, 11) and x.shape == (2, 20, 11) and x_original.shape == (2, 20, 11)
        for stat in ("diverging", "acceptance_rate", "step_size", "n_steps", "lp", "energy"):
            assert f[f"sample_stats/{stat}"].shape == (2, 20)
        # NumPyro is the default backend when JAX is importable (it is in the test environment)
        assert f.attrs["method"] == "nuts" and f.attrs["backend"] == "numpyro" and int(f.attrs["seed"]) == 3
        assert f.attrs["run_dir"] == str(fitted.resolve())
        assert list(f["x_original"].attrs["columns"])[-1] == "alcohol"
    # x = G(z), and x_original is x mapped back through the inverse whitening
    gebm = gp.GEBM.load(fitted / "gebm.pt").eval()
    with torch.no_grad():
        np.testing.assert_allclose(gebm.base(torch.as_tensor(z, dtype=torch.float32)).numpy(), x, rtol=1e-4, atol=1e-4)
    white = gp.data.load("red-wine", seed=1).metadata["preprocessing"]["whitening"]
    np.testing.assert_allclose((x_original - white["mean"]) @ np.array(white["matrix"]), x, atol=1e-4)
    # the netCDF InferenceData holds the same draws
    idata = az.from_netcdf(out.with_suffix(".nc"))
    np.testing.assert_array_equal(idata.posterior["x"].values, x)
    assert idata.posterior.attrs["run_dir"] == str(fitted.resolve())

    # diagnose: the summary table, E-BFMI and divergences, and PNG plots (the pair plot with held-out data)
    plots = tmp_path / "plots"
    code, stdout, err = run_cli("diagnose", out.with_suffix(".nc"), "--plots", plots, "--max-dims", 2)
    assert code == EXIT_OK, err
    for label in ("method: nuts", "max_r_hat", "min_e_bfmi", "divergences", "ess_bulk", "r_hat", "x[10]"):
        assert label in stdout
    assert {p.name for p in plots.iterdir()} == {"trace_x.png", "rank_x.png", "pair_x.png"}
    for png in plots.iterdir():
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    # the HDF5 file works too (its netCDF twin is found), and --json is machine-readable
    code, stdout, err = run_cli("diagnose", out, "--var", "z", "--json", "--plots", tmp_path / "zplots")
    assert code == EXIT_OK, err
    tables = json.loads(stdout)
    assert tables["run"]["num_chains"] == 2 and tables["run"]["num_draws"] == 20
    assert set(tables["summary"]) == {f"z[{i}]" for i in range(11)}
    assert {p.name for p in (tmp_path / "zplots").iterdir()} == {"trace_z.png", "rank_z.png"}


@needs_red_wine
def test_sample_writes_draws_in_data_units_and_diagnose_labels_them(fitted, tmp_path):
    """Issue 21 item 3: the .nc holds the draws in the data's units by column name (x_data), diagnose labels its
    tables by column and says that x[i] are whitened coordinates, and ends with a verdict line."""
    import arviz as az

    out = tmp_path / "ula.h5"
    code, stdout, err = run_cli("sample", fitted, "-n", 8, "--warmup", 5, "--chains", 2, "--method", "ula",
                                "--backend", "pyro", "--step-size", 0.01, "--out", out)
    assert code == EXIT_OK, err
    assert "x_data: the draws in the data's units, by column (fixed acidity, volatile acidity" in stdout
    idata = az.from_netcdf(out.with_suffix(".nc"))
    x_data = idata.posterior["x_data"]
    assert x_data.dims == ("chain", "draw", "column") and x_data["column"].values[-1] == "alcohol"
    with h5py.File(out, "r") as f:
        np.testing.assert_allclose(x_data.values, f["x_original"][()])
    code, stdout, err = run_cli("diagnose", out.with_suffix(".nc"))
    assert code == EXIT_OK, err
    assert "x_data[alcohol]" in stdout and "NOT data column i" in stdout
    assert stdout.splitlines()[-1].startswith("Verdict: WARNING")  # 8 draws: ESS far below 400


@needs_red_wine
def test_interrupted_fit_resumes_and_finishes_exactly(fitted, workdir):
    """SIGKILL `python -m gebm_ppl fit` after its first checkpoint, run the command again: the resumed run
    continues from the checkpoint and ends with the same weights as the uninterrupted run."""
    run_dir = workdir / "killed"
    cmd = [sys.executable, "-m", "gebm_ppl", "fit", "red-wine", "--config", str(workdir / "tiny.toml"),
           "--out", str(run_dir), "--seed", "1", "--checkpoint-every", "2", "--no-progress"]
    env = subprocess_env(workdir)
    log = workdir / "killed.log"
    with open(log, "w") as stderr:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            deadline = time.monotonic() + 120
            while not (run_dir / "mle.ckpt").exists():
                assert proc.poll() is None, f"the fit ended before its first checkpoint: {log.read_text()}"
                assert time.monotonic() < deadline, "no checkpoint within 120 s"
                time.sleep(0.005)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "fitting" and not (run_dir / "gebm.pt").exists()

    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == EXIT_OK, resumed.stderr
    assert "continuing the unfinished run" in resumed.stderr and "mle: resuming from" in resumed.stderr
    assert json.loads((run_dir / "run.json").read_text())["status"] == "done"
    mle = json.loads((run_dir / "history.json").read_text())["mle"]
    assert mle["settings"]["resumed_at_step"] >= 2 and len(mle["records"]) == 4
    a = torch.load(run_dir / "gebm.pt", weights_only=True)["state_dict"]
    b = torch.load(fitted / "gebm.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=lambda m, k=k: f"{k}: {m}")


@needs_red_wine
def test_fit_on_a_user_csv_file(workdir, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3)) @ np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.3], [0.0, 0.0, 0.2]])
    ids = np.arange(300)[:, None]
    np.savetxt(tmp_path / "mine.csv", np.hstack([ids, x]), delimiter=",", header="id,u,v,w", comments="")
    code, out, err = run_cli("fit", tmp_path / "mine.csv", "--drop", "id", "--config", workdir / "tiny.toml",
                             "--out", tmp_path / "run", "--set", "mle.epochs=2", "--set", "kale.epochs=1")
    assert code == EXIT_OK, err
    assert "Fitted a GEBM on mine (3 dims)" in out
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["identity"]["data"]["protocol"] == "user" and info["dataset"]["sizes"]["test"] == 30
    assert info["identity"]["config"]["mle"]["epochs"] == 2
    code, out, err = run_cli("evaluate", tmp_path / "run", "--num-samples", 1000, "--json")
    assert code == EXIT_OK, err
    assert json.loads(out)["num_examples"] == 30
    # the same folder with another configuration: refused, nothing overwritten
    code, _, err = run_cli("fit", tmp_path / "mine.csv", "--drop", "id", "--out", tmp_path / "run")
    assert code == EXIT_USAGE and "holds a run with another config" in err
    assert (tmp_path / "run" / "evaluation-test.json").is_file()
    # --overwrite starts afresh with the new settings (and drops the stale evaluation)
    code, _, err = run_cli("fit", tmp_path / "mine.csv", "--drop", "id", "--config", workdir / "tiny.toml",
                           "--out", tmp_path / "run", "--set", "mle.epochs=1", "--set", "kale.epochs=1", "--overwrite")
    assert code == EXIT_OK, err
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["status"] == "done" and info["identity"]["config"]["mle"]["epochs"] == 1
    assert not (tmp_path / "run" / "evaluation-test.json").exists()


# ------------------------------------------------------------------------------------------ bad input
def block_jax(monkeypatch):
    """Make `import jax` / `import numpyro` fail as if they were not installed."""
    for name in list(sys.modules):
        if name.split(".")[0] in ("jax", "jaxlib", "numpyro"):
            monkeypatch.delitem(sys.modules, name)
    for name in ("jax", "numpyro"):
        monkeypatch.setitem(sys.modules, name, None)


def test_usage_errors_exit_2_with_a_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GEBM_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "garbage.csv").write_bytes(b"a,b\n1,2\n3,\xff\xfe\n")
    (tmp_path / "table.parquet").write_text("1,2\n")
    (tmp_path / "bad.toml").write_text("[kale\nepochs = 3\n")
    (tmp_path / "unknown.toml").write_text("[kale]\nepoch = 3\n")
    (tmp_path / "notnc.nc").write_text("not a netCDF file")
    (tmp_path / "not-a-run").mkdir()
    cases = [
        (["fit", "no-such-dataset", "--out", tmp_path / "r"], "neither a known dataset (red-wine, white-wine"),
        (["fit", tmp_path / "garbage.csv", "--out", tmp_path / "r"], "could not read"),
        (["fit", tmp_path / "table.parquet", "--out", tmp_path / "r"], "cannot tell the format"),
        (["fit", "red-wine", "--config", tmp_path / "missing.toml", "--out", tmp_path / "r"],
         "no configuration file"),
        (["fit", "red-wine", "--config", tmp_path / "bad.toml", "--out", tmp_path / "r"], "is not valid TOML"),
        (["fit", "red-wine", "--config", tmp_path / "unknown.toml", "--out", tmp_path / "r"],
         "unknown option 'epoch' in [kale]. Known options: train_base, epochs"),
        (["fit", "red-wine", "--set", "kale.seed=3", "--out", tmp_path / "r"], "which the run sets itself"),
        (["fit", "red-wine", "--set", "epochs", "--out", tmp_path / "r"], "should read SECTION.KEY=VALUE"),
        (["fit", "red-wine", "--key", "x", "--out", tmp_path / "r"], "apply to data files, not to the dataset"),
        (["evaluate", tmp_path / "nowhere"], "no run directory"),
        (["evaluate", tmp_path / "not-a-run"], "is not a run directory (no run.json)"),
        (["sample", tmp_path / "not-a-run", "--backend", "numpyro", "--method", "sir"],
         "--backend numpyro supports --method nuts, hmc, ula, kinetic, mala, imh, dot, not 'sir'"),
        (["sample", tmp_path / "not-a-run", "--method", "nuts", "--friction", "2"], "--friction applies to"),
        (["sample", tmp_path / "not-a-run", "--method", "sir", "--step-size", "0.1"], "does not apply"),
        (["sample", tmp_path / "not-a-run", "--out", tmp_path / "s.csv"], "--out should be an HDF5 file"),
        (["sample", tmp_path / "not-a-run", "--option", "1x=2"], "should read KEY=VALUE"),
        (["diagnose", tmp_path / "missing.nc"], "no samples file"),
        (["diagnose", tmp_path / "notnc.nc"], "is not a netCDF InferenceData"),
    ]
    for argv, message in cases:
        code, _, err = run_cli(*argv)
        assert code == EXIT_USAGE, (argv, err)
        assert message in err, (argv, err)
        assert err.startswith(f"gebm {argv[0]}: error: ") and "Traceback" not in err
    # argparse's own usage errors: exit code 2 and its usage line
    for argv in (["fit", "red-wine"], ["sample", "x", "-n", "0"], ["sample", "x", "--method", "frobnicate"],
                 ["frobnicate"]):
        assert main(argv) == EXIT_USAGE
        assert "usage: gebm" in capsys.readouterr().err


def test_default_backend_is_numpyro_when_jax_imports(monkeypatch, capsys):
    from gebm_ppl.runs import default_backend

    assert default_backend("nuts") == "numpyro" and default_backend("sir") == "pyro"
    assert main(["sample", "--help"]) == EXIT_OK
    assert "default: numpyro when JAX and NumPyro are importable" in " ".join(capsys.readouterr().out.split())
    block_jax(monkeypatch)
    assert default_backend("nuts") == "pyro"


def test_numpyro_backend_without_jax_is_a_usage_error(tmp_path, monkeypatch):
    block_jax(monkeypatch)
    code, _, err = run_cli("sample", tmp_path, "--backend", "numpyro", "--method", "nuts")
    assert code == EXIT_USAGE
    assert "--backend numpyro needs JAX and NumPyro, which cannot be imported here" in err
    assert "pip install 'gebm_ppl[jax]'" in err


@needs_red_wine
def test_unfinished_runs_and_runtime_failures(fitted, workdir, tmp_path):
    # a run directory whose fit did not finish cannot be sampled: exit 2, and the message says what to do
    (tmp_path / "half").mkdir()
    info = json.loads((fitted / "run.json").read_text())
    (tmp_path / "half" / "run.json").write_text(json.dumps({**info, "status": "fitting"}))
    code, _, err = run_cli("sample", tmp_path / "half")
    assert code == EXIT_USAGE and "is unfinished; re-run the same 'gebm fit' command" in err
    # a sampler option that the method does not take
    code, _, err = run_cli("sample", fitted, "--method", "ula", "--option", "frobnicate=1", "--out", tmp_path / "s.h5")
    assert code == EXIT_USAGE and "--option: unknown keyword argument(s) ['frobnicate']" in err, err
    # a diverging fit is a runtime failure: exit 1, naming the step and the last good checkpoint
    code, _, err = run_cli("fit", "red-wine", "--config", workdir / "tiny.toml", "--out", tmp_path / "boom",
                           "--set", "mle.lr=1e30", "--set", "mle.grad_clip=1e30")
    assert code == EXIT_FAILURE, err
    assert "gebm fit: failed: fit_mle diverged at step" in err
    # issue 21 item 2: the failure is recorded (it was left at "fitting")
    assert json.loads((tmp_path / "boom" / "run.json").read_text())["status"] == "failed"


# ------------------------------------------------------------------------------------------ named classes
GENERATOR = """
[base]
class = "MLPGenerator"
latent_dim = 2
hidden = [16]
output = "identity"

[energy]
class = "EnergyMLP"
hidden = [16]

[adversarial]
steps = 6
batch_size = 32
energy_steps = 1
eval_every = 3
log_partition_samples = 500
"""


def test_config_names_classes_and_a_generator_base_is_trained_adversarially(tmp_path, monkeypatch):
    """[base] class = "MLPGenerator" (no density): fit by fit_adversarial, evaluate reports Â, ESS and KALE
    without NLLs, and sample works unchanged."""
    monkeypatch.setenv("GEBM_CACHE_DIR", str(tmp_path / "cache"))
    rng = np.random.default_rng(1)
    np.savetxt(tmp_path / "pts.csv", rng.normal(size=(400, 3)), delimiter=",", header="u,v,w", comments="")
    (tmp_path / "gen.toml").write_text(f'[data]\nname = "{tmp_path / "pts.csv"}"\n' + GENERATOR)
    with one_thread():
        code, out, err = run_cli("fit", "--config", tmp_path / "gen.toml", "--out", tmp_path / "run", "--no-progress")
        assert code == EXIT_OK, err
        assert "adversarial" in out and f"Wrote {tmp_path / 'run' / 'gebm.pt'}" in out
        assert (tmp_path / "run" / "adversarial.ckpt").is_file() and not (tmp_path / "run" / "mle.ckpt").exists()
        gebm = gp.GEBM.load(tmp_path / "run" / "gebm.pt")
        assert type(gebm.base).__name__ == "MLPGenerator" and gebm.base.latent_dim == 2
        code, out, err = run_cli("evaluate", tmp_path / "run", "--num-samples", 2000, "--json")
        assert code == EXIT_OK, err
        res = json.loads(out)
        assert res["has_density"] is False and res["nll"] is None and res["verdict"] is None
        assert 0 < res["ess"] <= 2000 and math.isfinite(res["kale"]) and res["log_partition_stderr"] > 0
        code, out, err = run_cli("evaluate", tmp_path / "run", "--num-samples", 2000)
        assert code == EXIT_OK and "has no density" in out and "KALE F(E, c)" in out, err
        code, out, err = run_cli("sample", tmp_path / "run", "-n", 10, "--warmup", 10, "--chains", 2,
                                 "--method", "ula", "--backend", "pyro", "--out", tmp_path / "s.h5")
        assert code == EXIT_OK, err
    with h5py.File(tmp_path / "s.h5", "r") as f:
        assert f["posterior/z"].shape == (2, 10, 2) and f["posterior/x"].shape == (2, 10, 3)
    # training tables that do not fit the base's kind, and an unregistered class: exit 2 before training
    for extra, message in (("[mle]\nepochs = 2\n", "has no density: it is trained by [adversarial]"),):
        (tmp_path / "bad.toml").write_text(GENERATOR + extra)
        code, _, err = run_cli("fit", tmp_path / "pts.csv", "--config", tmp_path / "bad.toml", "--out", tmp_path / "b")
        assert code == EXIT_USAGE and message in err, err
    code, _, err = run_cli("fit", tmp_path / "pts.csv", "--set", "base.class=NoSuchBase", "--out", tmp_path / "b")
    assert code == EXIT_USAGE and "class 'NoSuchBase' is not registered" in err, err
    assert not (tmp_path / "b").exists()


def test_evaluate_verdict_sign_convention_and_original_units(fitted):
    code, out, err = run_cli("evaluate", fitted, "--num-samples", 3000)
    assert code == EXIT_OK, err
    res = json.loads((fitted / "evaluation-test.json").read_text())
    assert res["delta_nll"] == pytest.approx(res["nll"] - res["base_nll"], abs=1e-9)  # GEBM − base: < 0 is better
    if abs(res["delta_nll"]) >= 2 * res["delta_nll_stderr"]:
        word = "better" if res["delta_nll"] < 0 else "worse"
        assert f"Verdict: the GEBM is {word} than its base by {abs(res['delta_nll']):.3f} ± " in out
    else:
        assert "Verdict: no clear difference between the GEBM and its base" in out
    assert "(paired over 159 rows" in out and "Delta NLL = GEBM - base" in out
    # NLL in the data's units: the density of x is that of x_white times |det W|
    white = gp.data.load("red-wine", seed=1).metadata["preprocessing"]["whitening"]
    log_det = float(np.linalg.slogdet(np.array(white["matrix"]))[1])
    orig = res["original_units"]
    assert orig["log_abs_det_whitening"] == pytest.approx(log_det, rel=1e-9)
    for key in ("base_nll", "nll", "nll_bound"):
        assert orig[key] == pytest.approx(res[key] - log_det, rel=1e-9)
    assert "In the data's own units" in out


def test_digits_config_fit_then_sample_reads_the_sample_table(tmp_path, monkeypatch):
    """`gebm fit digits --config models/images/digits.toml` (20 generator steps) then `gebm sample`: the run's
    [sample] table (ula, 1000 chains x 1 draw, step size 0.01) is the sampler, an explicit flag wins over it
    (--warmup 3 over 500, --chains 7 over 1000), and another --method drops its method-specific step size.
    Out-of-range training values exit 2 before training, with the training function's own message."""
    monkeypatch.setenv("GEBM_CACHE_DIR", str(tmp_path / "cache"))
    run = tmp_path / "digits"
    tiny = ["--set", "adversarial.steps=20", "--set", "adversarial.eval_every=10", "--set", "adversarial.burst_steps=2",
            "--set", "adversarial.energy_steps=1", "--set", "adversarial.log_partition_samples=200"]
    config = ROOT / "models" / "images" / "digits.toml"
    with one_thread():
        for bad, message in (("adversarial.burst_every=0", "'burst_every' should be a positive integer"),
                             ("adversarial.steps=-3", "'steps' should be a positive integer"),
                             ("adversarial.lr=-1.0", "'lr' should be a positive")):
            code, _, err = run_cli("fit", "digits", "--config", config, *tiny, "--set", bad, "--out", run,
                                   "--no-progress")
            assert code == EXIT_USAGE and message in err and "[adversarial]" in err, err
            assert not run.exists()
        code, out, err = run_cli("fit", "digits", "--config", config, *tiny, "--out", run, "--no-progress")
        assert code == EXIT_OK, err
        code, out, err = run_cli("sample", run, "--warmup", 3, "--backend", "pyro", "--out", tmp_path / "a.h5")
        assert code == EXIT_OK and "with ula (pyro)" in out, err
        with h5py.File(tmp_path / "a.h5", "r") as f:
            assert f["posterior/z"].shape == (1000, 1, 4) and f["posterior/x"].shape == (1000, 1, 64)
            assert f.attrs["method"] == "ula" and f.attrs["step_size"] == pytest.approx(0.01)
            assert int(f.attrs["num_energy_evals"]) < 1000 * 10  # 3 warm-up steps + 1 draw, not 500 + 1
        code, out, err = run_cli("sample", run, "--warmup", 3, "--chains", 7, "--step-size", 0.02, "--backend",
                                 "pyro", "--out", tmp_path / "b.h5")
        assert code == EXIT_OK, err
        with h5py.File(tmp_path / "b.h5", "r") as f:
            assert f["posterior/z"].shape == (7, 1, 4) and f.attrs["step_size"] == pytest.approx(0.02)
        code, out, err = run_cli("sample", run, "--method", "kinetic", "-n", 2, "--warmup", 2, "--chains", 3,
                                 "--backend", "pyro", "--out", tmp_path / "c.h5")
        assert code == EXIT_OK and "with kinetic (pyro)" in out, err
        with h5py.File(tmp_path / "c.h5", "r") as f:  # kinetic's own default step size 0.1, not [sample]'s 0.01
            assert f["posterior/z"].shape == (3, 2, 4) and f.attrs["step_size"] == pytest.approx(0.1)
