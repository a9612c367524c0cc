"""benchmarks/uci_density.py: a smoke run (one dataset, one seed, tiny epochs) and its outputs; configs; summaries."""

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


def _module(name: str):
    path = ROOT / "benchmarks" / f"{name}.py"
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TINY = [
    "--set", "realnvp.hidden_features=8", "--set", "realnvp.num_layers=2",
    "--set", "energy.hidden=[8, 8]", "--set", "maf.hidden_features=8", "--set", "maf.num_layers=2",
    "--set", "nsf.hidden_features=8", "--set", "nsf.num_layers=1",
    "--set", "kale.noise_factor=2", "--set", "kale_joint.noise_factor=2",
    "--set", "kale.log_partition_samples=500", "--set", "kale_joint.log_partition_samples=500",
    "--set", "kale_joint.energy_lr=-1",  # makes gebm-joint fail: the run must record it and go on
]  # fmt: skip


@pytest.mark.skipif(not (UCI / "wine-quality" / "winequality-red.csv").is_file(), reason=f"no UCI files in {UCI}")
def test_smoke_run_writes_table_json_h5_png(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GEBM_CACHE_DIR", str(tmp_path / "cache"))
    bench = _module("uci_density")
    argv = ["--datasets", "red-wine", "--seeds", "1", "--epochs", "1", "--eval-samples", "3000", "--threads", "1",
            "--data-dir", str(UCI), "--out", str(tmp_path / "out"), "--no-progress", *TINY]  # fmt: skip
    assert bench.main(argv) == 0
    table = capsys.readouterr().out
    for text in ("| red-wine | 11 | 159 |", "RealNVP (MLE)", "GEBM: KALE energy, frozen base", "MAF (MLE)",
                 "NSF (MLE)", "standard error over test examples", "Seeds [0]", "failed (ValueError"):  # fmt: skip
        assert text in table
    assert "nan" not in table.lower()

    def no_nan(token):
        raise AssertionError(f"JSON holds {token}")

    result = json.loads((tmp_path / "out" / "uci_density.json").read_text(), parse_constant=no_nan)
    rows = {r["method"]: r for r in result["results"]}
    assert set(rows) == {"realnvp", "gebm-frozen", "gebm-joint", "maf", "nsf"}
    assert rows["gebm-joint"]["status"] == "failed" and "energy_lr" in rows["gebm-joint"]["message"]
    assert "test_nll" not in rows["gebm-joint"]
    for m in ("realnvp", "gebm-frozen", "maf", "nsf"):
        assert rows[m]["status"] == "ok" and math.isfinite(rows[m]["test_nll"]) and rows[m]["wall_time"] > 0
    frozen = rows["gebm-frozen"]
    assert frozen["num_samples"] == 3000 and frozen["nll_bound"] >= frozen["test_nll"] - 1e-9
    assert set(frozen["paired"]) == {"realnvp", "maf", "nsf"}
    assert result["run"]["seeds"] == [0] and result["run"]["configs"]["red-wine"]["kale"]["epochs"] == 1

    with h5py.File(tmp_path / "out" / "uci_density.h5", "r") as h5:
        for m in ("realnvp", "gebm-frozen", "maf", "nsf"):
            g = h5[f"red-wine/seed0/{m}"]
            per_example = g["test_nll_per_example"][()]
            assert per_example.shape == (159,) and g.attrs["status"] == "ok"
            np.testing.assert_allclose(per_example.mean(), rows[m]["test_nll"], rtol=1e-12)
        # the paired difference is the mean of per-example differences
        run = h5["red-wine/seed0"]
        d = run["gebm-frozen/test_nll_per_example"][()] - run["realnvp/test_nll_per_example"][()]
        np.testing.assert_allclose(d.mean(), frozen["paired"]["realnvp"]["mean"], rtol=1e-9)
        assert h5["red-wine/seed0/gebm-joint"].attrs["status"] == "failed"
        assert "test_nll_per_example" not in h5["red-wine/seed0/gebm-joint"]
    assert (tmp_path / "out" / "uci_density.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["uci_density.h5", "uci_density.json",
                                                                    "uci_density.png"]  # fmt: skip


def test_config_files_and_overrides():
    config = _module("uci_config")
    for path in sorted((ROOT / "models" / "uci").glob("*.toml")):
        cfg = config.load_config(path.stem)
        assert {"realnvp", "mle", "energy", "kale", "kale_joint", "maf", "nsf", "eval"} <= set(cfg)
        assert cfg["eval"]["num_samples"] >= 100_000
        full = config.load_config(path.stem, full=True)
        assert full["seeds"] == 5 and full["kale"]["epochs"] >= cfg["kale"]["epochs"]
    assert config.parse_override("kale.epochs=20") == (None, "kale.epochs", 20)
    assert config.parse_override("red-wine:energy.hidden=[8, 8]") == ("red-wine", "energy.hidden", [8, 8])
    assert config.parse_override("energy.activation=elu") == (None, "energy.activation", "elu")
    with pytest.raises(ValueError, match="key=value"):
        config.parse_override("kale.epochs")
    with pytest.raises(FileNotFoundError, match="red-wine"):
        config.load_config("no-such-dataset")


def test_summary_over_seeds_and_examples():
    report = _module("uci_report")

    def row(seed, nll, se, status="ok"):
        r = {"dataset": "d", "seed": seed, "method": "realnvp", "status": status, "message": None, "wall_time": 1.0}
        if status == "ok":
            r.update(test_nll=nll, test_nll_se=se, val_nll=nll, history={"epochs": 3}, paired={})
        else:
            r["message"] = "RuntimeError: boom"
        return r

    one = report.summarise([row(0, 10.0, 0.3)], ["d"], ["realnvp"])[0]
    assert (one["test_nll"], one["test_nll_se"], one["se_over"]) == (10.0, 0.3, "test examples")
    three = report.summarise([row(0, 10.0, 0.3), row(1, 11.0, 0.3), row(2, 12.0, 0.3)], ["d"], ["realnvp"])[0]
    assert three["se_over"] == "seeds" and three["test_nll"] == 11.0
    assert math.isclose(three["test_nll_se"], 1.0 / math.sqrt(3))
    failed = report.summarise([row(0, 0, 0, "failed")], ["d"], ["realnvp"])[0]
    assert failed["status"] == "failed" and failed["failures"][0]["message"] == "RuntimeError: boom"
    assert report._cell(failed).startswith("failed (RuntimeError: boom")
