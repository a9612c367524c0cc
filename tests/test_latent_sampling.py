"""The latent sampling benchmark's functions on a tiny digits config: latent ULA on a GEBM improves the
generator's samples beyond the FD noise, and with E ≡ 0 it reproduces the generator."""

from __future__ import annotations

import importlib
import itertools
import sys
from pathlib import Path

import numpy as np
import pytest

import gebm_ppl as gp

ROOT = Path(__file__).resolve().parents[1]
N = 500  # images per FD


def _bench():
    # imported by name from benchmarks/ (as `python benchmarks/latent_sampling.py` sees it), so that the worker
    # processes of --workers can import it too
    if str(ROOT / "benchmarks") not in sys.path:
        sys.path.insert(0, str(ROOT / "benchmarks"))
    return importlib.import_module("latent_sampling")


@pytest.fixture(scope="module")
def setup():
    bench = _bench()
    # a deliberately short run (300 generator steps): the generator is still poor and the energy
    # has learned where it misses the data, the regime where latent sampling should help
    cfg = bench.load_config("digits", ["adversarial.steps=300", "adversarial.lr=1e-4", "adversarial.eval_every=300",
                                       f"benchmark.num_samples={N}", "benchmark.mcmc_steps=300"])
    data = gp.data.load("digits", seed=0)
    classifier = gp.metrics.load_classifier(data)
    gebm, info = bench.train(cfg, data, "kale", seed=0)
    gen_fd = [bench.score(bench.generator_samples(gebm, N, s), data, classifier)["fd"] for s in (1, 2, 3)]
    spread = max(abs(a - b) for a, b in itertools.combinations(gen_fd, 2))
    return bench, cfg, data, classifier, gebm, gen_fd, spread


def test_config_overrides_and_errors():
    bench = _bench()
    cfg = bench.load_config("digits", ["adversarial.steps=7", "sample.method=mala", "new.key=[1, 2]"])
    assert cfg["adversarial"]["steps"] == 7 and cfg["sample"]["method"] == "mala" and cfg["new"]["key"] == [1, 2]
    assert cfg["base"]["class"] == "MLPGenerator" and cfg["data"]["name"] == "digits"
    with pytest.raises(ValueError, match="key=value"):
        bench.load_config("digits", ["adversarial.steps"])
    with pytest.raises(FileNotFoundError, match="nope"):
        bench.load_config("nope")


def test_gebm_ula_beats_generator_beyond_draw_spread(setup):
    bench, cfg, data, classifier, gebm, gen_fd, spread = setup
    out = bench.run_sampler(gebm, "ula", cfg, N, seed=4)
    ula_fd = bench.score(out["x"], data, classifier)["fd"]
    # measured (seed 0): generator FDs 643.5 / 646.7 / 651.5 (spread 8.0), ULA 583.7: a margin of ≈ 60
    assert min(gen_fd) - ula_fd > spread, (gen_fd, ula_fd, spread)
    assert out["path"].shape == (N, cfg["benchmark"]["curve_points"], gebm.dim)
    assert out["num_grad_evals"] >= N * cfg["benchmark"]["mcmc_steps"]


def test_zero_energy_ula_reproduces_generator(setup):
    bench, cfg, data, classifier, gebm, gen_fd, spread = setup
    control = bench.run_sampler(bench.zero_energy(gebm), "ula", cfg, N, seed=5)
    fd = bench.score(control["x"], data, classifier)["fd"]
    # measured (seed 0): 646.9 against the generator draws' mean 647.2 (spread 8.0)
    assert abs(fd - float(np.mean(gen_fd))) <= spread, (fd, gen_fd, spread)


TINY = ["adversarial.steps=40", "adversarial.eval_every=40", "adversarial.burst_steps=10",
        "adversarial.log_partition_samples=500", "benchmark.num_samples=60", "benchmark.mcmc_steps=10",
        "benchmark.curve_points=2", "benchmark.validation.chains=60", "tune.epochs=1", "refine.epochs=1",
        "tune.log_partition_samples=500", "refine.log_partition_samples=500", "ebm.steps=10", "ebm.train.steps=5",
        "ebm.train.langevin_steps=3", "ebm.train.buffer_size=100", "benchmark.validation.ula=[{temperature=1.0, "
        "step_size=0.01}, {temperature=100.0, step_size=1e-4, step_size_decay=0.1, decay_every=5}]"]


def test_validation_choice_never_reads_test_images():
    import dataclasses

    bench = _bench()
    cfg = bench.load_config("digits", TINY)
    data = gp.data.load("digits", seed=0)
    classifier = gp.metrics.load_classifier(data)
    gebm, _ = bench.train(cfg, data, "kale", seed=0)
    blind = dataclasses.replace(data, test=np.full_like(data.test, np.nan))  # any read of test gives NaN FDs
    chosen = bench.choose_on_validation(gebm, "ula", cfg, blind, classifier, seed=0)
    again = bench.choose_on_validation(gebm, "ula", cfg, data, classifier, seed=0)
    assert chosen["settings"] == again["settings"] and chosen["steps"] == again["steps"]
    assert chosen["fd_val"] == again["fd_val"] and all(np.isfinite(fd) for _, _, fd in chosen["grid"])
    assert len(chosen["grid"]) == 2 * cfg["benchmark"]["curve_points"]  # 2 candidates x 2 recorded states
    assert chosen["fd_val"] == min(fd for _, _, fd in chosen["grid"])
    out = bench.run_sampler(gebm, "ula", cfg, 20, 0, settings=chosen["settings"], steps=chosen["steps"])
    assert out["x"].shape == (20, gebm.dim) and len(out["steps"]) == chosen["steps"] // 5
    with pytest.raises(ValueError, match="multiple of the recording interval"):
        bench.run_sampler(gebm, "ula", cfg, 20, 0, steps=7)


def test_benchmark_end_to_end_tiny(tmp_path):
    import json

    bench = _bench()
    args = ["--data", "digits", "--seeds", "2", "--no-toy", "--methods", "ula,imh,dot", "--out", str(tmp_path)]
    for item in TINY:
        args += ["--set", item]
    assert bench.main(args) == 0
    result = json.loads((tmp_path / "latent_sampling.json").read_text())
    rows = result["summary"]
    for name in ("generator", "gebm-ula-untuned", "gebm-ula", "gebm-ula-val", "gebm-imh-val", "gebm-dot-val",
                 "control-E0-ula", "gan", "gan-refined-ula", "gan-refined-ula-val", "ebm"):
        assert np.isfinite(rows[name]["fd"][0]), name
    assert {c["b"] for c in result["claims"]} >= {"generator", "gan", "ebm", "gebm-imh", "gebm-dot"}
    assert (tmp_path / "latent_sampling_grids.png").is_file() and (tmp_path / "latent_sampling_fd_steps.png").is_file()
