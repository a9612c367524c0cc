"""benchmarks/uci_density.py: smoke runs (tiny models, 1 epoch) in 1 and 2 worker processes, configs, selection,
summaries over seeds, units and dominant points."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from common import uci_dir

ROOT = Path(__file__).resolve().parents[1]
UCI = uci_dir()
HAS_WINE = (UCI / "wine-quality" / "winequality-red.csv").is_file()


def _module(name: str):
    path = ROOT / "benchmarks" / f"{name}.py"
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TINY_MODELS = [
    "--set", "realnvp.hidden_features=8", "--set", "realnvp.num_layers=2",
    "--set", "energy.hidden=[8, 8]", "--set", "maf.hidden_features=[8]", "--set", "maf.transforms=2",
    "--set", "nsf.hidden_features=[8]", "--set", "nsf.transforms=1", "--set", "nsf.bins=4",
    "--set", "kale.noise_factor=2", "--set", "kale_joint.noise_factor=2",
    "--set", "kale.log_partition_samples=500", "--set", "kale_joint.log_partition_samples=500",
    "--set", "mle.noise_std=0.0", "--set", "maf.noise_std=0.0", "--set", "nsf.noise_std=0.0",
    "--set", "mle.weight_decay=0.0", "--set", "maf.weight_decay=0.0", "--set", "nsf.weight_decay=0.0",
    "--set", "select.flow.noise_std=[0.0, 0.2]", "--set", "select.flow.weight_decay=[0.0]",
    "--set", "select.flow.hidden_features=[8]",
]  # fmt: skip
TINY = [
    *TINY_MODELS, "--set", "select.energy.penalty=[0.1, 1.0]",
    "--set", "kale_joint.energy_lr=-1",  # makes gebm-joint fail: the run must record it and go on
    # the eight methods and the RealNVP base of this test (the per-family GEBMs and the best base: below)
    "--set", "select.gebm_base=realnvp",
    "--methods", "realnvp,realnvp-reg,maf,maf-reg,nsf,nsf-reg,gebm-frozen,gebm-joint",
]  # fmt: skip


def _run(bench, tmp_path, name, workers, capfd):
    argv = ["--datasets", "red-wine", "--seeds", "2", "--epochs", "1", "--eval-samples", "2000", "--threads", "1",
            "--workers", str(workers), "--data-dir", str(UCI), "--out", str(tmp_path / name), "--no-progress",
            *TINY]  # fmt: skip
    assert bench.main(argv) == 0
    captured = capfd.readouterr()
    return captured.out, captured.err


@pytest.mark.skipif(not HAS_WINE, reason=f"no UCI files in {UCI}")
def test_smoke_runs_in_one_and_two_workers_agree_bit_for_bit(tmp_path, capfd, monkeypatch):
    """~25 s on 2 cores: 2 seeds × (3 flows × 2 grid points + 2 energies + joint), twice."""
    monkeypatch.setenv("GEBM_CACHE_DIR", str(tmp_path / "cache"))
    bench = _module("uci_density")
    table, err = _run(bench, tmp_path, "two", 2, capfd)
    for text in ("| RealNVP (MLE) |", "RealNVP (MLE, val-selected reg.)", "MAF (MLE, val-selected reg.)",
                 "NSF (MLE)", "GEBM: KALE energy on the chosen flow (frozen)", "### Whitened units",
                 "### Original units", "standard error over seeds", "Seeds [0, 1]", "failed (ValueError",
                 "best validation-chosen flow", "10 % trimmed mean", "Validation choices"):  # fmt: skip
        assert text in table, text
    assert "nan" not in table.lower()
    assert "red-wine seed 1 gebm-frozen: started" in err  # progress lines off a terminal
    assert f"Wrote {tmp_path / 'two' / 'uci_density.json'}" in err.splitlines()[-3]

    def no_nan(token):
        raise AssertionError(f"JSON holds {token}")

    result = json.loads((tmp_path / "two" / "uci_density.json").read_text(), parse_constant=no_nan)
    rows = {(r["method"], r["seed"]): r for r in result["results"]}
    assert {m for m, _ in rows} == {"realnvp", "realnvp-reg", "maf", "maf-reg", "nsf", "nsf-reg", "gebm-frozen",
                                    "gebm-joint"}  # fmt: skip
    assert rows[("gebm-joint", 0)]["status"] == "failed" and "energy_lr" in rows[("gebm-joint", 0)]["message"]
    for (m, seed), r in rows.items():
        if m == "gebm-joint":
            continue
        assert r["status"] == "ok" and math.isfinite(r["test_nll"]) and r["cpu_time"] > 0, (m, seed)
        if m.endswith("-reg") or m == "gebm-frozen":  # the choice is the validation-best trial
            vals = [t["val_nll"] for t in r["trials"]]
            assert r["chosen_trial"] == int(np.argmin(vals)) and len(vals) == 2
    for seed in (0, 1):
        assert rows[("realnvp-reg", seed)]["trials"][0]["test_nll"] == rows[("realnvp", seed)]["test_nll"]
        assert rows[("gebm-frozen", seed)]["base_method"] == "realnvp-reg"
    # both units: they differ by exactly log|det W| (per seed, and the means over seeds)
    summary = {s["method"]: s for s in result["summary"]}
    dets = [rows[("realnvp", s)]["log_abs_det"] for s in (0, 1)]
    assert dets[0] != dets[1] and all(d > 1 for d in dets)
    for s in summary.values():
        if s["status"] == "ok":
            assert s["test_nll"] - s["test_nll_orig"] == pytest.approx(np.mean(dets), abs=1e-12)
            assert s["se_over"] == "seeds" and s["n_test_pooled"] == 2 * 159
    frozen = summary["gebm-frozen"]
    assert {"best-flow", "base", "realnvp", "maf-reg", "nsf-reg"} <= set(frozen["paired"])

    with h5py.File(tmp_path / "two" / "uci_density.h5", "r") as h5:
        per = {(m, s): h5[f"red-wine/seed{s}/{m}/test_nll_per_example"][()] for m, s in rows if m != "gebm-joint"}
        assert "test_nll_per_example" not in h5["red-wine/seed0/gebm-joint"]
    for (m, s), v in per.items():
        assert v.shape == (159,)
        np.testing.assert_allclose(v.mean(), rows[(m, s)]["test_nll"], rtol=1e-12)
    # the pooled paired difference is the mean of the per-example differences of both seeds
    d = np.concatenate([per[("gebm-frozen", s)] - per[("realnvp", s)] for s in (0, 1)])
    np.testing.assert_allclose(frozen["paired"]["realnvp"]["mean"], d.mean(), rtol=1e-9)

    # the same run in one process: the same numbers, bit for bit
    _run(bench, tmp_path, "one", 1, capfd)
    with h5py.File(tmp_path / "one" / "uci_density.h5", "r") as h5:
        for (m, s), v in per.items():
            np.testing.assert_array_equal(h5[f"red-wine/seed{s}/{m}/test_nll_per_example"][()], v)
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["uci_density.h5", "uci_density.json",
                                                                    "uci_density.png"]  # fmt: skip


def test_config_files_and_overrides():
    config = _module("uci_config")
    job = _module("uci_job")
    for path in sorted((ROOT / "models" / "uci").glob("*.toml")):
        cfg = config.load_config(path.stem)
        assert {"realnvp", "mle", "energy", "kale", "kale_joint", "maf", "nsf", "eval", "select"} <= set(cfg)
        assert cfg["eval"]["num_samples"] >= 100_000
        job.check_select(cfg)
        full = config.load_config(path.stem, full=True)
        job.check_select(full)
        assert full["seeds"] == 5 and full["kale"]["epochs"] >= cfg["kale"]["epochs"]
        assert len(full["select"]["flow"]["noise_std"]) >= len(cfg["select"]["flow"]["noise_std"])
    for name in ("red-wine", "white-wine", "parkinsons"):
        assert config.load_config(name)["seeds"] >= 3
    assert config.parse_override("kale.epochs=20") == (None, "kale.epochs", 20)
    assert config.parse_override("red-wine:energy.hidden=[8, 8]") == ("red-wine", "energy.hidden", [8, 8])
    assert config.parse_override("energy.activation=elu") == (None, "energy.activation", "elu")
    with pytest.raises(ValueError, match="key=value"):
        config.parse_override("kale.epochs")
    with pytest.raises(FileNotFoundError, match="red-wine"):
        config.load_config("no-such-dataset")
    cfg = config.load_config("red-wine")
    cfg["select"]["flow"]["noise_std"] = [0.1, 0.0]
    with pytest.raises(ValueError, match="start at the configuration's own value"):
        job.check_select(cfg)


@pytest.mark.skipif(not HAS_WINE, reason=f"no UCI files in {UCI}")
def test_gebm_on_the_best_base_and_on_every_family(tmp_path, monkeypatch, capfd):
    """~15 s: one seed; gebm-frozen on the flow of lowest validation NLL, a GEBM on each family's flow."""
    monkeypatch.setenv("GEBM_CACHE_DIR", str(tmp_path / "cache"))
    bench = _module("uci_density")
    argv = ["--datasets", "red-wine", "--seeds", "1", "--epochs", "1", "--eval-samples", "2000", "--workers", "1",
            "--data-dir", str(UCI), "--out", str(tmp_path), "--no-progress", "--no-plot", *TINY_MODELS,
            "--methods", "realnvp-reg,maf-reg,nsf-reg,gebm-frozen,gebm-realnvp,gebm-maf,gebm-nsf"]  # fmt: skip
    assert bench.main(argv) == 0
    table = capfd.readouterr().out
    assert "base sampling (CPU s / 10⁴)" in table and "GEBM on the chosen MAF (frozen)" in table
    rows = {r["method"]: r for r in json.loads((tmp_path / "uci_density.json").read_text())["results"]}
    flows = ("realnvp-reg", "maf-reg", "nsf-reg")
    assert all(rows[m]["status"] == "ok" and rows[m]["sample_time_1e4"] > 0 for m in flows)
    best = min(flows, key=lambda m: rows[m]["val_nll"])  # by validation NLL, whatever the test NLLs say
    assert rows["gebm-frozen"]["base_method"] == best == rows["gebm-frozen"]["best_flow"]
    assert rows["gebm-frozen"]["base_pool"] == 100_000  # frozen-base KALE on a pool of base draws (the config)
    with h5py.File(tmp_path / "uci_density.h5", "r") as h5:
        per = {m: h5[f"red-wine/seed0/{m}/test_nll_per_example"][()] for m in rows}
    for m, kind in (("gebm-realnvp", "realnvp"), ("gebm-maf", "maf"), ("gebm-nsf", "nsf")):
        r = rows[m]
        assert r["status"] == "ok" and r["base_method"] == f"{kind}-reg", m
        if f"{kind}-reg" == best:  # the same model as gebm-frozen: reused, not refitted
            assert r["same_as"] == "gebm-frozen" and r["cpu_time"] == 0.0
            np.testing.assert_array_equal(per[m], per["gebm-frozen"])
        else:
            assert "same_as" not in r and r["cpu_time"] > 0 and not np.array_equal(per[m], per["gebm-frozen"])


def test_gebm_base_is_chosen_by_validation_never_by_test():
    job = _module("uci_job")
    # validation picks the MAF, test would pick the NSF
    rows = {"realnvp-reg": {"val_nll": 12.0, "test_nll": 12.5}, "maf-reg": {"val_nll": 11.0, "test_nll": 12.9},
            "nsf-reg": {"val_nll": 11.2, "test_nll": 10.0}, "nsf": {"val_nll": 10.0, "test_nll": 9.0}}
    nll = dict.fromkeys(rows, np.zeros(3))
    assert job.choose_base("best", rows, nll) == "maf-reg"
    assert min(("realnvp-reg", "maf-reg", "nsf-reg"), key=lambda m: rows[m]["test_nll"]) == "nsf-reg"
    assert job.choose_base("nsf", rows, nll) == "nsf-reg"  # a family: its validation-chosen flow
    del nll["nsf-reg"]
    assert job.choose_base("nsf", rows, nll) == "nsf" and job.choose_base("best", rows, nll) == "maf-reg"
    assert job.choose_base("realnvp", {}, {}) is None


def test_flow_tables_build_any_registered_base():
    methods = _module("uci_methods")
    cfg = {"maf": {"class": "MAF", "transforms": 2, "hidden_features": [8], "epochs": 3, "optimizer": "adamw",
                   "noise_std": 0.1}, "nsf": {"hidden_features": 8, "num_layers": 1, "lr": 1e-3}}  # fmt: skip
    table, options = methods.flow_tables("maf", cfg)
    assert table == {"class": "MAF", "transforms": 2, "hidden_features": [8]}
    assert options == {"epochs": 3, "optimizer": "adamw", "noise_std": 0.1}
    table, options = methods.flow_tables("nsf", cfg)  # no class: the nflows flow of older configurations
    assert table == {"class": "NflowsNSF", "hidden_features": 8, "num_layers": 1} and options == {"lr": 1e-3}
    # a width on a zuko flow's list of widths sets every layer
    assert methods.with_point(cfg, {"hidden_features": 16}, "maf")["maf"]["hidden_features"] == [16]
    assert methods.with_point(cfg, {"hidden_features": 16}, "nsf")["nsf"]["hidden_features"] == 16
    # the Student-t latent (gp.StudentTBase via runs.build_base) is an architecture key of every family
    cfg["realnvp"], cfg["mle"] = {"hidden_features": 8}, {"epochs": 3}
    point = methods.with_point(cfg, {"latent_df": 2.0, "noise_std": 0.2}, "realnvp")
    assert point["realnvp"] == {"hidden_features": 8, "latent_df": 2.0}
    assert point["mle"] == {"epochs": 3, "noise_std": 0.2}
    assert methods.with_point(cfg, {"latent_df": 1.0}, "maf")["maf"]["latent_df"] == 1.0


def test_pooled_base_draws_from_its_pool_and_keeps_the_density():
    import torch

    pool_module = _module("uci_pool")
    import gebm_ppl as gp

    torch.manual_seed(0)
    base = gp.MAF(3, transforms=1, hidden_features=(8,)).eval()
    pooled = pool_module.PooledBase(base, 200, seed=1)
    again = pool_module.PooledBase(base, 200, seed=1)
    assert torch.equal(pooled.pool, again.pool) and pooled.pool.shape == (200, 3)  # seeded
    with torch.no_grad():  # the pool holds draws of G: its rows are G(z) for the seed's latents
        z = torch.randn(200, 3, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(pooled.pool, base(z))
    x = pooled(torch.randn(20_000, 3, generator=torch.Generator().manual_seed(2)))
    rows = (x[:, None, :] == pooled.pool[None]).all(-1)
    assert bool(rows.any(1).all())  # every draw is a pool entry
    counts = rows.sum(0).double()  # about uniform over the entries: 100 each, Poisson spread 10
    assert counts.min() > 50 and counts.max() < 150 and abs(float(counts.mean()) - 100) < 1e-9
    xt = torch.randn(5, 3)
    torch.testing.assert_close(pooled.log_prob(xt), base.log_prob(xt))  # the density is the base's
    with pytest.raises(ValueError, match="num_samples"):
        pool_module.PooledBase(base, 0, seed=1)


def test_selection_uses_validation_only():
    select = _module("uci_select")
    # val and test disagree: the test-best point (σ = 0.2) is not the validation-best (σ = 0.1)
    val = {0.0: 12.0, 0.1: 11.5, 0.2: 11.7}
    test = {0.0: 12.5, 0.1: 12.4, 0.2: 11.0}
    calls = []

    def fit(point):
        calls.append(point)
        return {"val_nll": val[point["noise_std"]] + (0.1 if point["width"] == 50 else 0.0),
                "test_nll": test[point["noise_std"]]}

    chosen, trials = select.coordinate_search([("noise_std", [0.0, 0.1, 0.2]), ("width", [100, 50])], fit)
    assert trials[chosen]["point"] == {"noise_std": 0.1, "width": 100}
    assert min(trials, key=lambda t: t["test_nll"])["point"]["noise_std"] == 0.2  # test would pick another
    assert trials[0]["point"] == {"noise_std": 0.0, "width": 100} and len(calls) == 4  # 1 + 2 + 1 fits
    assert select.pick([{"val_nll": float("nan")}, {"val_nll": 3.0}, {"val_nll": 3.0}]) == 1
    with pytest.raises(ValueError, match="every grid point failed"):
        select.pick([{"val_nll": math.inf}])
    # a failed start point is left for the first finite one
    chosen, trials = select.coordinate_search([("a", [0, 1])], lambda p: {"val_nll": math.inf if p["a"] == 0 else 5})
    assert trials[chosen]["point"] == {"a": 1}
    with pytest.raises(ValueError, match="non-empty list"):
        select.axes_from_config({"noise_std": 0.1}, ("noise_std",))


def test_summary_over_seeds_pooled_pairs_units_and_dominant_points():
    report = _module("uci_report")
    rng = np.random.default_rng(0)
    rows, per = [], {}
    for seed in range(3):
        base = rng.normal(12.0, 0.3, size=50)
        base[7] += 200.0 if seed == 1 else 0.0  # one dominating test point (seed 1, row 7)
        gebm = base - 0.3 + rng.normal(0, 0.1, size=50)
        for method, nll, extra in (("realnvp-reg", base, {}), ("gebm-frozen", gebm, {"log_partition_stderr": 0.01})):
            per[(method, seed)] = nll
            rows.append({"dataset": "d", "seed": seed, "method": method, "status": "ok", "message": None,
                         "wall_time": 1.0, "cpu_time": 0.5, "test_nll": float(nll.mean()),
                         "test_nll_se": float(nll.std(ddof=1) / math.sqrt(50)), "val_nll": 1.0,
                         "history": {"epochs": 3}, "per_example_test_nll": nll, "log_abs_det": 10.0 + seed,
                         "best_flow": "realnvp-reg", "base_method": "realnvp-reg", "nll_bound": 1.0, "base_nll": 1.0,
                         "log_partition": 0.0, "c": 0.0, "ess": 100.0, "num_samples": 1000, **extra})  # fmt: skip
    summary = {s["method"]: s for s in report.summarise(rows, ["d"], ["realnvp-reg", "gebm-frozen"])}
    flow = summary["realnvp-reg"]
    means = [per[("realnvp-reg", s)].mean() for s in range(3)]
    assert flow["se_over"] == "seeds" and flow["test_nll"] == pytest.approx(np.mean(means))
    assert flow["test_nll_se"] == pytest.approx(np.std(means, ddof=1) / math.sqrt(3))
    assert flow["test_nll"] - flow["test_nll_orig"] == pytest.approx(11.0)  # mean log|det W| over seeds
    pooled = np.concatenate([per[("realnvp-reg", s)] for s in range(3)])
    assert flow["test_nll_median"] == pytest.approx(np.median(pooled))
    assert flow["test_nll_trimmed"] == pytest.approx(np.sort(pooled)[15:135].mean())
    p = summary["gebm-frozen"]["paired"]["best-flow"]
    d = np.concatenate([per[("gebm-frozen", s)] - per[("realnvp-reg", s)] for s in range(3)])
    assert p["mean"] == pytest.approx(d.mean()) and p["n"] == 150
    assert p["se"] == pytest.approx(math.sqrt(d.var(ddof=1) / 150 + 3 * (1 / 3) ** 2 * 0.01**2))
    assert summary["gebm-frozen"]["paired"]["base"] == p and "best-flow" not in flow["paired"]
    points = report.outliers(rows, ["d"])["d"]
    assert [(q["seed"], q["index"]) for q in points] == [(1, 7)]
    assert points[0]["nll"]["realnvp-reg"] == pytest.approx(per[("realnvp-reg", 1)][7])
    text = report.format_table(list(summary.values()), {"datasets": ["d"], "seeds": [0, 1, 2], "wall_time": 60.0,
                                                         "device": "cpu", "threads": 1, "configs": {}}, {"d": points})
    assert "d, seed 1, test row 7" in text and "| d | gebm-frozen | realnvp-reg ×3 |" in text
    failed = report.summarise([{**rows[0], "status": "failed", "message": "RuntimeError: boom"}], ["d"],
                              ["realnvp-reg"])[0]  # fmt: skip
    assert failed["status"] == "failed" and report._cell(failed).startswith("failed (RuntimeError: boom")
