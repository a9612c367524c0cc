"""Chains across devices: NumPyro ``chain_method="parallel"`` (one JAX device per chain) gives the vectorized
chains' draws, Pyro's chains in processes give the sequential chains' draws, in one InferenceData layout; too
many parallel chains, and host devices asked for after JAX has started, are clear errors (library and CLI).

Parallel NumPyro chains need host devices set before JAX initialises, and Pyro's worker processes are best
forked from a process without JAX's threads, so those runs happen in fresh processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import gebm_ppl as gp
from gebm_ppl.cli import EXIT_OK, EXIT_USAGE, main
from gebm_ppl.sampling.pyro_mcmc import max_parallel_chains

ROOT = Path(__file__).resolve().parents[1]
TIMING = {"sampling_time", "compile_time", "created_at", "arviz_version", "creation_library_version"}

TINY = """
[realnvp]
hidden_features = 8
num_layers = 2

[energy]
hidden = [8]

[mle]
epochs = 1
batch_size = 100

[kale]
epochs = 1
log_partition_samples = 500
"""

# Both chain methods of one backend on the same GEBM and seed; prints the layouts and the largest differences.
_COMPARE = r"""
import json, sys
backend, method, first, second = sys.argv[1:5]
if backend == "numpyro":
    from gebm_ppl.numpyro import set_host_devices
    set_host_devices(2)  # before JAX initialises
else:  # Pyro keeps one CPU for the main process: on a 2-core machine it would refuse 2 worker processes
    import torch.multiprocessing
    torch.multiprocessing.cpu_count = lambda: 3
import numpy as np, torch
torch.set_num_threads(1)
import gebm_ppl as gp

torch.manual_seed(0)
gebm = gp.GEBM(gp.RealNVP(2, hidden_features=8, num_layers=2), gp.EnergyMLP(2, hidden=(8,)))
kwargs = {"step_size": 0.2} if method == "mala" else {}
runs = {m: gp.sample_latent(gebm, method, backend=backend, num_samples=40, warmup_steps=20, num_chains=2, seed=3,
                            chain_method=m, **kwargs) for m in (first, second)}
out = {"layout": {}, "diff": {}, "attrs": {}}
for m, idata in runs.items():
    out["layout"][m] = {g: {v: [list(idata[g][v].dims), list(idata[g][v].shape), str(idata[g][v].dtype)]
                            for v in idata[g].data_vars} for g in ("posterior", "sample_stats")}
    out["attrs"][m] = {k: v if isinstance(v, str) else float(v) for k, v in idata.attrs.items()}
for g in ("posterior", "sample_stats"):
    for v in runs[first][g].data_vars:
        a, b = (np.asarray(runs[m][g][v].values, dtype=np.float64) for m in (first, second))
        out["diff"][v] = float(np.abs(a - b).max())
if backend == "numpyro":
    import jax
    out["devices"] = jax.local_device_count()
    try:
        gp.sample_latent(gebm, method, backend=backend, num_samples=5, warmup_steps=5, num_chains=3,
                         chain_method="parallel", **kwargs)
    except ValueError as e:
        out["too_many"] = str(e)
    try:
        set_host_devices(4)
    except RuntimeError as e:
        out["too_late"] = str(e)
print(json.dumps(out))
"""


def _fresh_process(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1",
               MPLBACKEND="Agg")
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def _compare(backend: str, method: str, first: str, second: str) -> dict:
    out = _fresh_process("-c", _COMPARE, backend, method, first, second)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _same_layout_and_attrs(res: dict, first: str, second: str) -> None:
    # the same groups, variables, dims, shapes and dtypes; the same attrs but the chain method and timing
    assert res["layout"][first] == res["layout"][second]
    assert res["layout"][first]["posterior"]["z"] == [["chain", "draw", "z_dim"], [2, 40, 2], "float32"]
    a, b = ({k: v for k, v in res["attrs"][m].items() if k not in TIMING | {"chain_method"}} for m in (first, second))
    assert a == b and res["attrs"][first]["chain_method"] == first and res["attrs"][second]["chain_method"] == second


def test_numpyro_parallel_chains_on_two_host_devices_equal_the_vectorized_chains():
    res = _compare("numpyro", "mala", "vectorized", "parallel")
    assert res["devices"] == 2
    _same_layout_and_attrs(res, "vectorized", "parallel")  # num_grad_evals / num_energy_evals included
    # Same PRNG keys and maths, but vmap (one batched program) and pmap (one program per device) are compiled
    # differently, so float32 results may differ in the last bits (measured: 1.2e-7 in z): MALA does not amplify
    # them over 60 transitions, hence 1e-5. (NUTS does: a last-bit change can end a trajectory elsewhere, so
    # float32 NUTS chains are not comparable draw by draw; in float64 they agree to 1e-10, tests/test_numpyro.py.)
    assert max(res["diff"][v] for v in ("z", "x", "lp", "acceptance_rate")) < 1e-5, res["diff"]
    assert res["diff"]["accepted"] == 0 and res["diff"]["step_size"] == 0
    assert "3 chains need 3 devices and JAX has 2" in res["too_many"] and "set_host_devices(3)" in res["too_many"]
    assert "already initialised with 2 CPU device(s)" in res["too_late"] and "before importing jax" in res["too_late"]


def test_pyro_chains_in_processes_equal_the_sequential_chains():
    res = _compare("pyro", "nuts", "sequential", "parallel")
    _same_layout_and_attrs(res, "sequential", "parallel")  # gradient counts summed over the worker processes
    # each worker reseeds torch with its chain's seed and starts from its chain's point: bitwise the same draws
    assert all(d == 0 for d in res["diff"].values()), res["diff"]


def test_too_many_parallel_chains_and_chain_methods_a_sampler_lacks_are_clear_errors():
    import jax

    torch.manual_seed(0)
    gebm = gp.GEBM(gp.RealNVP(2, hidden_features=8, num_layers=2), gp.EnergyMLP(2, hidden=(8,)))
    chains = max_parallel_chains() + 1
    with pytest.raises(ValueError, match=f"at most cpu_count - 1 = {chains - 1} chain"):
        gp.sample_latent(gebm, "nuts", num_samples=5, warmup_steps=5, num_chains=chains, chain_method="parallel")
    chains = jax.local_device_count() + 1
    with pytest.raises(ValueError, match=f"{chains} chains need {chains} devices"):
        gp.sample_latent(gebm, "ula", backend="numpyro", num_samples=5, warmup_steps=5, num_chains=chains,
                         chain_method="parallel")
    with pytest.raises(ValueError, match=r"\['vectorized'\] for method 'ula' with backend 'pyro'"):
        gp.sample_latent(gebm, "ula", num_samples=5, warmup_steps=5, num_chains=2, chain_method="parallel")
    with pytest.raises(ValueError, match=r"\['sequential', 'parallel'\] for method 'nuts'"):
        gp.sample_latent(gebm, "nuts", num_samples=5, warmup_steps=5, num_chains=2, chain_method="vectorized")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A tiny run fitted on a 2-dimensional CSV file of 300 rows (one epoch of each stage)."""
    tmp = tmp_path_factory.mktemp("chains")
    x = np.random.default_rng(0).normal(size=(300, 2))
    np.savetxt(tmp / "two.csv", x, delimiter=",", header="u,v", comments="")
    (tmp / "tiny.toml").write_text(TINY)
    code = main(["fit", str(tmp / "two.csv"), "--config", str(tmp / "tiny.toml"), "--out", str(tmp / "run"),
                 "--no-progress"])
    assert code == EXIT_OK
    return tmp / "run"


def test_cli_parallel_chains_with_host_devices_set_before_jax_starts(run_dir, tmp_path):
    out = tmp_path / "draws.h5"
    _fresh_process("-m", "gebm_ppl", "sample", str(run_dir), "--backend", "numpyro", "--method", "ula", "--chains",
                   "2", "--chain-method", "parallel", "--host-devices", "2", "-n", "10", "--warmup", "5",
                   "--out", str(out), "--no-progress")
    import h5py

    with h5py.File(out, "r") as f:
        assert f.attrs["chain_method"] == "parallel" and f["posterior/z"].shape == (2, 10, 2)


def test_cli_chain_method_usage_errors(run_dir, monkeypatch, capsys):
    import jax

    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))  # restored afterwards
    devices = len(jax.devices("cpu"))  # JAX is initialised in this process from here on

    def usage_error(*flags: str) -> str:
        code = main(["sample", str(run_dir), "-n", "5", "--warmup", "5", *flags])
        err = capsys.readouterr().err
        assert code == EXIT_USAGE, err
        return err

    err = usage_error("--backend", "numpyro", "--host-devices", str(devices + 1))
    assert "--host-devices" in err and "before importing jax" in err
    err = usage_error("--backend", "numpyro", "--chain-method", "parallel", "--chains", str(devices + 1))
    assert f"need {devices + 1} devices" in err and "--host-devices" in err
    assert "applies to --backend numpyro" in usage_error("--backend", "pyro", "--host-devices", "2")
    err = usage_error("--backend", "pyro", "--method", "nuts", "--chain-method", "parallel",
                      "--chains", str(max_parallel_chains() + 1))
    assert "one process per chain" in err and "--chain-method sequential" in err
    assert "for method 'ula' with backend 'pyro'" in usage_error("--backend", "pyro", "--method", "ula",
                                                                 "--chain-method", "parallel")
