"""Reproducibility: the UCI benchmark gives the same numbers bit for bit in fresh processes (with and without a
data cache, with another PYTHONHASHSEED), and ``gebm fit`` + ``gebm evaluate`` with the benchmark's configuration
give exactly its ``realnvp`` and ``gebm-frozen`` test NLLs. Tiny networks on red-wine: ~25 s on 2 cores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from common import uci_dir

import gebm_ppl as gp
from gebm_ppl import runs
from gebm_ppl.cli import main

ROOT = Path(__file__).resolve().parents[1]
UCI = uci_dir()
HAS_WINE = (UCI / "wine-quality" / "winequality-red.csv").is_file()
pytestmark = pytest.mark.skipif(not HAS_WINE, reason=f"no UCI files in {UCI}")

# one configuration for both: models/uci/red-wine.toml with these overrides (tiny networks, short training)
SETS = ["realnvp.hidden_features=8", "realnvp.num_layers=2", "energy.hidden=[8, 8]", "mle.epochs=2",
        "kale.epochs=2", "kale.noise_factor=2", "eval.num_samples=2000"]  # fmt: skip
# the benchmark only: no validation grids, so its chosen flow and energy are the configuration's own; the RealNVP
# base and fresh base draws in KALE (no pool), as gebm fit trains
BENCH_ONLY = ["select.flow={}", "select.energy={}", "select.gebm_base=realnvp", "kale_base_pool=0"]
VOLATILE = ("time", "load_average", "steps_per_second", "command", "outputs", "table", "cache", "location")


def _bench(out: Path, cache: Path, hashseed: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "uci_density.py"), "--datasets", "red-wine", "--seeds", "1",
           "--methods", "realnvp,gebm-frozen", "--workers", "1", "--threads", "1", "--data-dir", str(UCI),
           "--out", str(out), "--no-progress", "--no-plot", "--quiet"]  # fmt: skip
    for item in [*SETS, *BENCH_ONLY]:
        cmd += ["--set", item]
    env = {**os.environ, "GEBM_CACHE_DIR": str(cache), "PYTHONHASHSEED": hashseed}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _numbers(node, path=""):
    """Every leaf of a JSON document by its path, less wall times, load averages and paths."""
    if isinstance(node, dict):
        return {k: v for key, child in node.items() for k, v in _numbers(child, f"{path}.{key}").items()}
    if isinstance(node, list):
        return {k: v for i, child in enumerate(node) for k, v in _numbers(child, f"{path}[{i}]").items()}
    return {} if any(s in path for s in VOLATILE) else {path: node}


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """The benchmark twice in fresh processes: first building the data cache from the CSV, then reading it."""
    tmp = tmp_path_factory.mktemp("repro")
    cache = tmp / "cache"
    first = _bench(tmp / "first", cache, "1")
    assert (cache / "splits" / "red-wine" / "seed0.h5").is_file()
    second = _bench(tmp / "second", cache, "2")
    return tmp, first, second


def test_benchmark_runs_are_bit_identical_with_and_without_a_data_cache(bench):
    tmp, first, second = bench
    docs = [json.loads((tmp / name / "uci_density.json").read_text()) for name in ("first", "second")]
    a, b = (_numbers(d) for d in docs)
    assert len(a) > 50 and a.keys() == b.keys()
    differ = {k: (a[k], b[k]) for k in a if a[k] != b[k]}
    assert not differ, differ
    rows = {r["method"]: r for r in docs[0]["results"]}
    assert rows["realnvp"]["status"] == rows["gebm-frozen"]["status"] == "ok"
    with h5py.File(tmp / "first" / "uci_density.h5") as f1, h5py.File(tmp / "second" / "uci_density.h5") as f2:
        for method in ("realnvp", "gebm-frozen"):
            key = f"red-wine/seed0/{method}/test_nll_per_example"
            np.testing.assert_array_equal(f1[key][()], f2[key][()])
    # (c) the benchmark says where it wrote its results
    for name, proc in (("first", first), ("second", second)):
        assert f"Wrote {tmp / name / 'uci_density.json'}" in proc.stderr


def test_data_cache_returns_the_splits_it_was_built_from(tmp_path):
    built = gp.data.load("red-wine", data_dir=UCI, seed=3, cache_dir=tmp_path)
    cached = gp.data.load("red-wine", data_dir=UCI, seed=3, cache_dir=tmp_path)
    assert not built.metadata["from_cache"] and cached.metadata["from_cache"]
    for split in ("train", "val", "test"):
        x, y = getattr(built, split), getattr(cached, split)
        assert x.dtype == y.dtype == np.float32 and x.tobytes() == y.tobytes()
    assert built.metadata["preprocessing"] == cached.metadata["preprocessing"]


def test_gebm_fit_and_evaluate_give_the_benchmark_numbers_exactly(bench, tmp_path, capsys):
    tmp, _, _ = bench
    rows = {r["method"]: r for r in json.loads((tmp / "first" / "uci_density.json").read_text())["results"]}
    run_dir = tmp_path / "run"
    threads = torch.get_num_threads()
    argv = ["fit", "red-wine", "--config", str(ROOT / "models" / "uci" / "red-wine.toml"), "--data-dir", str(UCI),
            "--out", str(run_dir), "--no-progress"]  # fmt: skip
    for item in SETS:
        argv += ["--set", item]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"Wrote {run_dir / 'run.json'}" in out  # (c)
    assert torch.get_num_threads() == threads  # --threads is set for the command and restored
    info = json.loads((run_dir / "run.json").read_text())
    assert info["threads"] == 1 and info["identity"]["config"]["eval"] == {"num_samples": 2000, "batch_size": 20000}
    assert main(["evaluate", str(run_dir), "--json"]) == 0
    captured = capsys.readouterr()
    res = json.loads(captured.out)
    assert f"Wrote {run_dir / 'evaluation-test.json'}" in captured.err  # (c)
    assert res["seed"] == runs.evaluation_seed(0) == 10_000 and res["num_samples"] == 2000
    # the same floats, not merely close ones
    assert res["base_nll"] == rows["realnvp"]["test_nll"]
    assert res["nll"] == rows["gebm-frozen"]["test_nll"]
    assert res["log_partition"] == rows["gebm-frozen"]["log_partition"]
    # another evaluation seed moves Â: the equality above is not vacuous
    assert main(["evaluate", str(run_dir), "--json", "--seed", "1"]) == 0
    other = json.loads(capsys.readouterr().out)
    assert other["log_partition"] != res["log_partition"] and other["base_nll"] == res["base_nll"]


def test_init_seeds_are_separate_and_stable():
    assert runs.init_seed(7, "base") == 7
    energy = [runs.init_seed(s, "energy") for s in range(50)]
    assert len(set(energy)) == 50 and all(0 <= e < 2**31 for e in energy)
    assert runs.init_seed(0, "energy") == runs.init_seed(0, "energy") != runs.init_seed(0, "maf")
    # the energy's initial weights do not depend on the base's architecture
    cfg = runs.validate_config({"energy": {"hidden": [4]}})
    wide = runs.validate_config({"base": {"hidden_features": 16}, "energy": {"hidden": [4]}})
    data = gp.data.UCIData(*(np.zeros((4, 3), np.float32) for _ in range(3)), metadata={"name": "x"})
    e1, e2 = runs.build_gebm(cfg, data, seed=5).energy, runs.build_gebm(wide, data, seed=5).energy
    for p, q in zip(e1.state_dict().values(), e2.state_dict().values(), strict=True):
        assert torch.equal(p, q)
