"""Diagnostics: summary tables on draws with known properties, E-BFMI, divergences, ESS/s, PNG plots."""

import numpy as np
import pytest
import torch
from common import gaussian_case

import gebm_ppl as gp
from gebm_ppl import diagnostics
from gebm_ppl.inference_data import build_inference_data

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _idata(z, stats, **attrs):
    attrs = {"method": "nuts", "backend": "pyro", "temperature": 1.0, "num_grad_evals": 1000,
             "sampling_time": 2.0, "seed": 0, **attrs}
    return build_inference_data(z, 2 * z, stats, attrs)


def test_summary_of_independent_draws():
    # 4 chains × 1000 iid N(0, 1) draws in 2-D: ESS ≈ 4000 (within ±25 %), R-hat ≈ 1, mean within 4 se.
    rng = np.random.default_rng(0)
    z = rng.standard_normal((4, 1000, 2))
    table = diagnostics.summary(_idata(z, {"lp": -0.5 * (z**2).sum(-1)}), var_names=["z", "x"])
    assert list(table.index) == ["z[0]", "z[1]", "x[0]", "x[1]"]
    assert list(table.columns) == ["mean", "sd", "mcse_mean", "mcse_sd", "ess_bulk", "ess_tail", "r_hat"]
    assert (table["ess_bulk"].between(3000, 5000)).all()
    assert (table["r_hat"] < 1.01).all()
    assert (table.loc[["z[0]", "z[1]"], "mean"].abs() < 4 / np.sqrt(4000)).all()
    np.testing.assert_allclose(table.loc[["x[0]", "x[1]"], "sd"], 2, rtol=0.05)


def test_summary_flags_chains_that_disagree():
    rng = np.random.default_rng(1)
    z = rng.standard_normal((4, 500, 1))
    z[0] += 3.0  # one chain stuck in another mode: rank-normalised R-hat ≈ 1.5, far above the 1.01 alarm
    table = diagnostics.summary(_idata(z, {"lp": np.zeros((4, 500))}), var_names="z")
    assert table.loc["z[0]", "r_hat"] > 1.3
    run = diagnostics.run_summary(_idata(z, {"lp": np.zeros((4, 500))}), var_names="z")
    assert run["max_r_hat"] > 1.3


def test_chain_summary_e_bfmi_divergences_and_acceptance():
    # E-BFMI = Σ(ΔE)² / Σ(E − Ē)² per chain: ≈ 2 for independent energies, ≈ 0 for a random walk.
    rng = np.random.default_rng(2)
    n = 2000
    energy = np.stack([rng.standard_normal(n), np.cumsum(rng.standard_normal(n))])
    diverging = np.zeros((2, n), dtype=bool)
    diverging[1, [3, 50, 700]] = True
    stats = {
        "lp": np.zeros((2, n)),
        "energy": energy,
        "diverging": diverging,
        "acceptance_rate": np.full((2, n), 0.8),
        "n_steps": np.full((2, n), 7),
    }
    table = diagnostics.chain_summary(_idata(rng.standard_normal((2, n, 1)), stats))
    expected = (np.diff(energy, axis=1) ** 2).sum(1) / ((energy - energy.mean(1, keepdims=True)) ** 2).sum(1)
    np.testing.assert_allclose(table["e_bfmi"], expected, rtol=1e-10)
    assert abs(table.loc[0, "e_bfmi"] - 2) < 0.15 and table.loc[1, "e_bfmi"] < 0.05
    assert list(table["divergences"]) == [0, 3]
    np.testing.assert_allclose(table["acceptance_rate"], 0.8)
    np.testing.assert_allclose(table["mean_n_steps"], 7)
    run = diagnostics.run_summary(_idata(rng.standard_normal((2, n, 1)), stats), var_names="z")
    assert run["divergences"] == 3 and run["min_e_bfmi"] == pytest.approx(expected.min())


def test_run_summary_costs():
    rng = np.random.default_rng(3)
    z = rng.standard_normal((2, 500, 3))
    run = diagnostics.run_summary(_idata(z, {"lp": np.zeros((2, 500))}, method="ula", num_grad_evals=4000))
    table = diagnostics.summary(_idata(z, {"lp": np.zeros((2, 500))}))
    assert run["method"] == "ula" and run["num_chains"] == 2 and run["num_draws"] == 500
    assert run["min_ess_bulk"] == table["ess_bulk"].min()
    assert run["ess_bulk_per_second"] == pytest.approx(run["min_ess_bulk"] / 2.0)
    assert run["ess_bulk_per_grad_eval"] == pytest.approx(run["min_ess_bulk"] / 4000)
    assert run["divergences"] is None and run["min_e_bfmi"] is None  # no such statistics for ULA
    no_grads = diagnostics.run_summary(_idata(z, {"lp": np.zeros((2, 500))}, method="imh", num_grad_evals=0))
    assert no_grads["ess_bulk_per_grad_eval"] is None


def test_report_and_plots_of_a_real_run(tmp_path):
    case = gaussian_case(3, seed=0)
    idata = gp.sample_latent(case.gebm, "nuts", num_samples=60, warmup_steps=40, num_chains=2, seed=0)
    text = diagnostics.report(idata)
    for word in ("method: nuts", "min_ess_bulk", "e_bfmi", "divergences", "r_hat", "x[2]"):
        assert word in text
    held_out = torch.distributions.MultivariateNormal(case.mean, case.cov).sample((300,))
    paths = [
        diagnostics.plot_trace(idata, tmp_path / "trace.png"),
        diagnostics.plot_rank(idata, tmp_path / "rank.png", var_name="z", dims=[0, 2]),
        diagnostics.plot_pair(idata, held_out, tmp_path / "sub" / "pair.png", labels=["a", "b", "c"]),
    ]
    for path in paths:
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000, path
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["pair.png", "rank.png", "trace.png"]


def test_bad_input(tmp_path):
    rng = np.random.default_rng(4)
    idata = _idata(rng.standard_normal((2, 50, 3)), {"lp": np.zeros((2, 50))})
    with pytest.raises(TypeError, match="'idata' should be an arviz.InferenceData"):
        diagnostics.summary({"z": 1})
    with pytest.raises(ValueError, match=r"'var_names' \['w'\] not in the posterior"):
        diagnostics.summary(idata, var_names="w")
    with pytest.raises(ValueError, match=r"'held_out' should have shape \[N, 3\]"):
        diagnostics.plot_pair(idata, np.zeros((10, 2)), tmp_path / "p.png")
    with pytest.raises(ValueError, match=r"'dims' \[5\] out of range"):
        diagnostics.plot_trace(idata, tmp_path / "t.png", dims=[5])
    with pytest.raises(ValueError, match="'labels' should name all 3 components"):
        diagnostics.plot_pair(idata, np.zeros((10, 3)), tmp_path / "p.png", labels=["a"])
    assert not list(tmp_path.iterdir())
