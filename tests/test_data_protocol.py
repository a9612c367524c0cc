"""gp.data.load(..., protocol="kexpfam-paper") on small files written in the exact UCI formats.

The paper protocol whitens with statistics of all rows (so train + val + test have zero mean and
identity covariance, the train part alone does not), dequantises the wines only, with the random
stream of the authors' code (numpy.random.RandomState(seed): row shuffle, one rand(N) per column,
column permutation); the default protocol is untouched; the protocol is in the metadata and the
cache key; and the docs page generator. Runtime: about 2 s.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy.stats import multivariate_normal

import gebm_ppl as gp
from gebm_ppl.data import kexpfam, registry
from gebm_ppl.data.preprocess import dequantisation_widths
from gebm_ppl.data.registry import SourceFile

RED = "wine-quality/winequality-red.csv"
PARK = "parkinsons-telemonitoring/parkinsons_updrs.data"
WINE_HEADER = [
    "fixed acidity", "volatile acidity", "citric acid", "residual sugar", "chlorides", "free sulfur dioxide",
    "total sulfur dioxide", "density", "pH", "sulphates", "alcohol", "quality",
]  # fmt: skip
PARK_HEADER = [
    "subject#", "age", "sex", "test_time", "motor_UPDRS", "total_UPDRS", "Jitter(%)", "Jitter(Abs)",
    "Jitter:RAP", "Jitter:PPQ5", "Jitter:DDP", "Shimmer", "Shimmer(dB)", "Shimmer:APQ3", "Shimmer:APQ5",
    "Shimmer:APQ11", "Shimmer:DDA", "NHR", "HNR", "RPDE", "DFA", "PPE",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.delenv("GEBM_DATA_DIR", raising=False)
    monkeypatch.delenv("GEBM_DATA_MIRROR", raising=False)
    monkeypatch.setenv("GEBM_CACHE_DIR", str(tmp_path / "user-cache"))


def _write_wine(root: Path, n: int = 400) -> np.ndarray:
    """winequality-red.csv: ';'-separated, 12 quoted header names, quantised values, LF, final newline."""
    rng = np.random.default_rng(1)
    latent = rng.standard_t(4, size=(n, 3))
    x = np.column_stack([latent @ rng.normal(size=3) + 0.3 * rng.normal(size=n) for _ in range(11)])
    scale = [1, 0.1, 0.1, 2, 0.01, 10, 30, 0.001, 0.1, 0.1, 1]
    shift = [7, 0.3, 0, 1, 0.05, 5, 20, 0.99, 3, 0.5, 9]
    digits = [1, 3, 2, 1, 3, 0, 0, 5, 2, 2, 1]  # quantised like the real columns
    x = np.column_stack([np.round(np.abs(x[:, j]) * scale[j] + shift[j], digits[j]) for j in range(11)])
    quality = rng.integers(3, 9, n)
    lines = [";".join(f'"{h}"' for h in WINE_HEADER)]
    lines += [";".join([*(f"{v:g}" for v in row), str(q)]) for row, q in zip(x, quality, strict=True)]
    (root / "wine-quality").mkdir(parents=True, exist_ok=True)
    (root / RED).write_text("\n".join(lines) + "\n")
    return np.loadtxt(root / RED, delimiter=";", skiprows=1)[:, :-1]


def _write_parkinsons(root: Path, n: int = 300) -> np.ndarray:
    """parkinsons_updrs.data: ',' header of 22 names, exponents like 3.38e-005, LF, no final newline.
    Columns from test_time on: 19, two of them near-copies (|corr| > 0.98) that the column rule drops."""
    rng = np.random.default_rng(2)
    x = rng.gamma(2.0, 1.0, size=(n, 19)) * np.logspace(-5, 1, 19)
    x[:, 5] = 3 * x[:, 4] * (1 + 1e-3 * rng.normal(size=n))  # a near-copy of column 4
    x[:, 12] = -2 * x[:, 11] + 1e-4 * x[:, 11].std() * rng.normal(size=n)  # anti-correlated copy of 11
    head = np.column_stack([rng.integers(1, 43, n), rng.integers(40, 80, n), rng.integers(0, 2, n)])
    lines = [",".join(PARK_HEADER)]
    for h, row in zip(head, x, strict=True):
        lines.append(",".join([*(str(int(v)) for v in h), *(f"{v:.6g}".replace("e-0", "e-00") for v in row)]))
    (root / "parkinsons-telemonitoring").mkdir(parents=True, exist_ok=True)
    (root / PARK).write_text("\n".join(lines))
    return np.loadtxt(root / PARK, delimiter=",", skiprows=1)[:, 3:]


def _all(splits) -> np.ndarray:
    return np.vstack([np.asarray(s, dtype=np.float64) for s in splits[:3]])


def _cov(x: np.ndarray) -> np.ndarray:
    c = x - x.mean(0)
    return c.T @ c / len(x)


@pytest.mark.parametrize("which", ["wine", "parkinsons"])
def test_paper_whitening_uses_all_rows(tmp_path, which):
    if which == "wine":
        _write_wine(tmp_path)
        out = kexpfam.build_wine_paper({RED: tmp_path / RED}, 3)
    else:
        _write_parkinsons(tmp_path)
        out = kexpfam.build_parkinsons_paper({PARK: tmp_path / PARK}, 3)
    x, train, w = _all(out), np.asarray(out[0]), out[3]["whitening"]
    d = x.shape[1]
    assert w["fitted_on"] == "all rows" and w["svd_rows"] == len(x)
    # all rows: zero mean, identity covariance (to float64 rounding; the columns span 6 decades)
    np.testing.assert_allclose(x.mean(0), 0, atol=1e-9)
    np.testing.assert_allclose(_cov(x), np.eye(d), atol=1e-8)
    assert np.abs(train.mean(0)).max() > 1e-3 and np.abs(_cov(train) - np.eye(d)).max() > 1e-2  # train alone: not
    n_test = int(0.1 * len(x))
    n_val = min(int(0.1 * (len(x) - n_test)), 1000)
    assert [len(s) for s in out[:3]] == [len(x) - n_test - n_val, n_val, n_test]
    assert w["log_abs_det"] == pytest.approx(np.linalg.slogdet(np.asarray(w["matrix"]))[1], abs=1e-12)


def test_paper_wine_noise_is_the_authors_stream(tmp_path):
    """Rows shuffled by RandomState(seed), then uniform(−w_j, w_j) noise from one rand(N) per column."""
    raw = _write_wine(tmp_path)
    seed = 5
    out = kexpfam.build_wine_paper({RED: tmp_path / RED}, seed)
    meta = {"preprocessing": out[3]}
    recovered = gp.units.to_original(_all(out), meta)  # the dequantised rows, in file column order
    rs = np.random.RandomState(seed)
    shuffled = raw[rs.permutation(len(raw))]
    widths = dequantisation_widths(raw)  # median gaps over all rows (shuffling does not change them)
    assert out[3]["dequantisation"]["widths"] == pytest.approx(widths.tolist(), abs=0)
    noise = np.column_stack([(rs.rand(len(raw)) * 2 - 1) * widths[j] for j in range(raw.shape[1])])
    np.testing.assert_allclose(recovered - shuffled, noise, atol=1e-8)
    assert (np.abs(recovered - shuffled) < widths).all() and (np.abs(recovered - shuffled).max(0) > 0.5 * widths).all()
    assert sorted(out[3]["column_permutation"]) == list(range(11))
    assert out[3]["column_permutation"] == rs.permutation(11).tolist()  # the next draw of the same stream


def test_paper_parkinsons_is_not_dequantised(tmp_path):
    raw = _write_parkinsons(tmp_path)
    out = kexpfam.build_parkinsons_paper({PARK: tmp_path / PARK}, 1)
    kept = [PARK_HEADER[3:].index(c) for c in out[3]["columns"]]
    # the authors' rule: |corr| in the first pass, signed afterwards, so the anti-correlated copy of column 11
    # stays (18 columns); the default protocol's rule drops both copies (17)
    assert kept == [i for i in range(19) if i != 4] and out[3]["dequantisation"]["noise"] == "none"
    assert len(kexpfam.build_parkinsons({PARK: tmp_path / PARK}, 1)[3]["columns"]) == 17
    recovered = gp.units.to_original(_all(out), {"preprocessing": out[3]})
    shuffled = raw[np.random.RandomState(1).permutation(len(raw))][:, kept]
    np.testing.assert_allclose(recovered, shuffled, rtol=1e-9, atol=1e-12 * np.abs(raw).max())


def test_original_units_shift_is_minus_log_det(tmp_path):
    """N(0, I) in whitened units is N(mean, (M Mᵀ)⁻¹) in original units: NLL_orig − NLL_white = −log|det M|."""
    _write_wine(tmp_path)
    out = kexpfam.build_wine_paper({RED: tmp_path / RED}, 0)
    meta = {"preprocessing": out[3]}
    test_white = np.asarray(out[2], dtype=np.float64)
    nll_white = -multivariate_normal(np.zeros(11), np.eye(11)).logpdf(test_white)
    mean, matrix = np.asarray(out[3]["whitening"]["mean"]), np.asarray(out[3]["whitening"]["matrix"])
    x = gp.units.to_original(test_white, meta)
    nll_orig = -multivariate_normal(mean, np.linalg.inv(matrix @ matrix.T)).logpdf(x)
    np.testing.assert_allclose(nll_orig - nll_white, -out[3]["whitening"]["log_abs_det"], atol=1e-8)
    np.testing.assert_allclose(gp.units.nll_to_original(nll_white, meta), nll_orig, atol=1e-8)


@pytest.fixture
def fake_red(monkeypatch, tmp_path):
    """The registry's red-wine pointed at a synthetic file (no published hash to check)."""
    _write_wine(tmp_path / "src")
    spec = registry.DATASETS["red-wine"]
    monkeypatch.setitem(registry.DATASETS, "red-wine", replace(spec, files=(SourceFile(RED, None),)))
    return tmp_path / "src"


def test_load_protocols_metadata_and_cache(fake_red, tmp_path):
    cache = tmp_path / "cache"
    default = gp.data.load("red-wine", fake_red, seed=2, cache_dir=cache)
    paper = gp.data.load("red-wine", fake_red, seed=2, cache_dir=cache, protocol="kexpfam-paper")
    assert default.metadata["protocol"] == "kexpfam" and paper.metadata["protocol"] == "kexpfam-paper"
    assert Path(default.metadata["cache"]).name == "seed2.h5"  # the default keeps its cache file
    assert Path(paper.metadata["cache"]).name == "seed2.kexpfam-paper.h5"
    keys = []
    for data in (default, paper):
        with h5py.File(data.metadata["cache"], "r") as f:
            keys.append(f.attrs["key"])
    assert keys[0] != keys[1]
    assert paper.metadata["preprocessing"]["whitening"]["fitted_on"] == "all rows"
    assert default.metadata["preprocessing"]["whitening"]["fitted_on"] == "train"
    # the default protocol is the unchanged kexpfam pipeline, bit for bit
    x, params = kexpfam._read_wine({RED: fake_red / RED})
    ref = kexpfam.kexpfam_pipeline(x, 2, params)
    for got, want in zip((default.train, default.val, default.test), ref[:3], strict=True):
        assert np.array_equal(got, want.astype(np.float32))
    ref_paper = kexpfam.build_wine_paper({RED: fake_red / RED}, 2)
    assert np.array_equal(paper.test, ref_paper[2].astype(np.float32))
    again = gp.data.load("red-wine", fake_red, seed=2, cache_dir=cache, protocol="kexpfam-paper")
    assert again.metadata["from_cache"] and np.array_equal(again.train, paper.train)
    assert again.metadata["preprocessing"]["whitening"]["matrix"] == paper.metadata["preprocessing"]["whitening"][
        "matrix"
    ]
    # the original-units conversion reads the paper metadata like the default's
    shift = gp.units.log_abs_det(paper)
    assert shift == pytest.approx(paper.metadata["preprocessing"]["whitening"]["log_abs_det"], abs=1e-9)


def test_unknown_or_unoffered_protocol_is_refused(fake_red, tmp_path):
    with pytest.raises(ValueError, match=r"unknown protocol 'paper'.*kexpfam, kexpfam-paper, maf, images"):
        gp.data.load("red-wine", fake_red, cache_dir=tmp_path, protocol="paper")
    with pytest.raises(ValueError, match=r"'power' has no protocol 'kexpfam-paper'; its protocols: maf"):
        gp.data.load("power", tmp_path, cache_dir=tmp_path, protocol="kexpfam-paper")
    assert gp.data.load("red-wine", fake_red, cache_dir=tmp_path, protocol="kexpfam").metadata["protocol"] == "kexpfam"


def test_paper_protocol_page_generator():
    """docs/gen_paper_protocol.py puts our numbers beside the published ones and refuses a run of another protocol."""
    import importlib.util

    path = Path(__file__).parents[1] / "docs" / "gen_paper_protocol.py"
    spec = importlib.util.spec_from_file_location("gen_paper", path)
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    row = {"dataset": "red-wine", "method": "realnvp", "label": "RealNVP (MLE)", "status": "ok", "test_nll": 12.5,
           "test_nll_se": 0.2, "test_nll_orig": 0.5, "test_nll_orig_se": 0.2, "se_over": "seeds"}
    result = {"dataset": "red-wine", "method": "realnvp", "seed": 0, "history": {"best_epoch": 7, "epochs": 9},
              "data": {"protocol": "kexpfam-paper"}}
    run = {"run": {"command": "python benchmarks/uci_density.py --protocol kexpfam-paper", "seeds": [0]},
           "summary": [row], "results": [result]}
    text = gen.render([run])
    assert "| ours, quick | RealNVP (MLE) | 12.50 ± 0.20 | 0.50 ± 0.20 |" in text and "7/9" in text
    assert "| Wenliang et al. (2019) | NVP | 12.14 ± 0.08 |" in text and "+0.36 nats" in text
    other = {**run, "results": [{**result, "data": {"protocol": "kexpfam"}}]}
    with pytest.raises(ValueError, match="kexpfam-paper"):
        gen.render([other])
