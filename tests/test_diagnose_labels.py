"""`gebm diagnose` and `gebm sample` in the user's terms: draws in data units by column name, labelled tables and
plots, a verdict line on every run, image runs diagnosed through z and the potential with an image grid."""

from __future__ import annotations

import contextlib
import io

import matplotlib.image
import numpy as np
import pytest

from gebm_ppl import diagnostics, units
from gebm_ppl.cli import EXIT_OK, main
from gebm_ppl.inference_data import build_inference_data
from gebm_ppl.runs.samples import add_data_units

COLUMNS = ["fixed acidity", "pH", "alcohol"]


def _idata(z, x=None, lp=None, **attrs):
    attrs = {"method": "ula", "backend": "pyro", "temperature": 1.0, "num_grad_evals": 100, "sampling_time": 1.0,
             "seed": 0, **attrs}
    lp = -0.5 * (z**2).sum(-1) if lp is None else lp
    return build_inference_data(z, 2 * z if x is None else x, {"lp": lp}, attrs)


def _metadata() -> dict:
    """A whitening x_white = (x − mean) @ matrix of 3 named columns, as the user-data pipeline records it."""
    matrix = np.array([[0.5, 0.1, 0.0], [0.0, 2.0, 0.3], [0.2, 0.0, 1.5]])
    return {"preprocessing": {"columns": COLUMNS, "whitening": {"mean": [7.0, 3.3, 10.0], "matrix": matrix.tolist()}}}


def _cli(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


# ------------------------------------------------------------------------------------------ data units (item 3)
def test_draws_in_data_units_by_column_name():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((2, 50, 3))
    idata = _idata(z)
    metadata = _metadata()
    assert add_data_units(idata, metadata)
    x_data = idata.posterior["x_data"]
    assert x_data.dims == ("chain", "draw", "column") and list(x_data["column"].values) == COLUMNS
    # x_data = x_white @ matrix⁻¹ + mean, so mapping back gives the model's draws
    np.testing.assert_allclose(units.to_whitened(x_data.values, metadata), 2 * z, atol=1e-10)
    assert "NOT data column" in idata.posterior["x"].attrs["space"]
    text = diagnostics.report(idata, ["x_data", "x"])
    assert "x_data[alcohol]" in text and "x_data[pH]" in text and "NOT data column i" in text
    table = diagnostics.summary(idata, "x_data")
    alcohol = x_data.values[..., 2].mean()
    np.testing.assert_allclose(table.loc["x_data[alcohol]", "mean"], alcohol, rtol=1e-3)  # ArviZ rounds
    unwhitened = _idata(z)
    assert not add_data_units(unwhitened, {"name": "raw"}) and "x_data" not in unwhitened.posterior
    assert "not whitened" in unwhitened.posterior["x"].attrs["space"]


def test_plots_of_data_units_name_the_columns(tmp_path):
    idata = _idata(np.random.default_rng(1).standard_normal((2, 40, 3)))
    add_data_units(idata, _metadata())
    for plot in (diagnostics.plot_trace, diagnostics.plot_rank):
        path = plot(idata, tmp_path / f"{plot.__name__}.png", var_name="x_data", dims=[2])
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert diagnostics.describe("x_data", idata).startswith("x_data: the draws in the data's own units")


# ------------------------------------------------------------------------------------------ verdict (item 6)
def test_verdict_warns_on_stuck_chains_and_passes_good_ones():
    rng = np.random.default_rng(2)
    stuck = np.cumsum(0.05 * rng.standard_normal((2, 30, 2)), axis=1) + np.array([[[-2.0]], [[2.0]]])
    run = diagnostics.run_summary(_idata(stuck), ["z"])
    assert run["max_r_hat"] > 2 and run["min_ess_bulk"] < 10
    text = diagnostics.verdict(run)
    assert text.startswith("WARNING") and f"> {diagnostics.R_HAT_MAX}" in text and "min_ess_bulk" in text
    assert diagnostics.report(_idata(stuck), ["z"]).splitlines()[-1] == f"Verdict: {text}"
    good = diagnostics.run_summary(_idata(rng.standard_normal((4, 1000, 2))), ["z", "lp"])
    assert diagnostics.verdict(good).startswith("OK: max_r_hat")
    divergent = dict(good, divergences=3, min_e_bfmi=0.1)
    text = diagnostics.verdict(divergent)
    assert "3 divergent transitions" in text and "min_e_bfmi 0.1 < 0.3" in text
    nan_r_hat = dict(good, max_r_hat=float("nan"))  # a chain that never moved
    assert diagnostics.verdict(nan_r_hat).startswith("WARNING")


def test_one_draw_per_chain_is_summarised_without_arviz_warnings():
    # 1000 chains × 1 draw (the image configs' ULA layout): mean and sd only, R-hat/ESS NaN, a clear verdict
    rng = np.random.default_rng(3)
    z = rng.standard_normal((1000, 1, 2))
    idata = _idata(z)
    table = diagnostics.summary(idata, ["z", "lp"])
    assert list(table.index) == ["z[0]", "z[1]", "lp"]
    np.testing.assert_allclose(table.loc["z[1]", "mean"], z[..., 1].mean())
    np.testing.assert_allclose(table.loc["lp", "sd"], (-0.5 * (z**2).sum(-1)).std(ddof=1))
    assert table["r_hat"].isna().all() and table["ess_bulk"].isna().all()
    text = diagnostics.report(idata, ["z", "lp"])
    assert text.splitlines()[-1].startswith("Verdict: NOT ASSESSED: 1 draw(s) per chain (1000 chains)")
    assert len(text.splitlines()) < 40  # the chain table is summarised (min / mean / max), not 1000 rows


def test_image_grid_has_gaps_between_images(tmp_path):
    images = np.full((3, 1, 4, 5), -1.0)  # three black 4×5 images
    path = diagnostics.plot_image_grid(images, (1, 4, 5), tmp_path / "grid.png", ncols=3, gap=2, scale=10)
    pixels = matplotlib.image.imread(path)[..., :3].mean(-1)
    dark_columns = (pixels < 0.5).any(0)
    runs = np.flatnonzero(np.diff(dark_columns.astype(int)) == 1)  # starts of dark runs
    assert runs.size == 3  # three images, separated by white columns
    with pytest.raises(ValueError, match=r"'images' should have shape \[N, 20\]"):
        diagnostics.plot_image_grid(np.zeros((3, 7)), (1, 4, 5), tmp_path / "bad.png")


def test_cli_diagnoses_an_image_run_through_z_and_the_potential(tmp_path):
    rng = np.random.default_rng(4)
    z = rng.standard_normal((64, 1, 2))
    x = np.tanh(rng.standard_normal((64, 1, 16)))
    idata = _idata(z, x=x)
    idata.posterior.attrs["image_shape"] = "1,4,4"
    nc = tmp_path / "samples.nc"
    idata.to_netcdf(str(nc))
    code, out, err = _cli("diagnose", nc, "--plots", tmp_path / "plots")
    assert code == EXIT_OK, err
    assert "z[1]" in out and "\nlp " in out and "x[15]" not in out  # z and the potential, not 16 pixel rows
    assert out.splitlines()[-1].startswith("Verdict: NOT ASSESSED")
    assert {p.name for p in (tmp_path / "plots").iterdir()} == {"grid_x.png"}
    assert "no trace or rank plots: 1 draw(s) per chain" in err


def test_cli_verdict_on_ula_draws_that_did_not_mix(tmp_path):
    rng = np.random.default_rng(5)
    stuck = np.cumsum(0.05 * rng.standard_normal((2, 30, 3)), axis=1) + np.array([[[-2.0]], [[2.0]]])
    idata = _idata(stuck)
    add_data_units(idata, _metadata())
    nc = tmp_path / "samples.nc"
    idata.to_netcdf(str(nc))
    code, out, err = _cli("diagnose", nc, "--plots", tmp_path / "plots", "--max-dims", 2)
    assert code == EXIT_OK, err
    assert "x_data[fixed acidity]" in out and "NOT data column i" in out
    assert out.splitlines()[-1].startswith("Verdict: WARNING: do not trust these draws yet: max_r_hat")
    assert {p.name for p in (tmp_path / "plots").iterdir()} == {"trace_x.png", "rank_x.png"}
