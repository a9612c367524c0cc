"""Bad input across the public API: every entry point × input class gives a clear, named error.

One table of cases (entry point, input class, call → exception type and message) for the library,
then the command line (``gebm ...``: exit code 2 and a message naming the problem) and the benchmark
script. Every case fails before any expensive work, so the whole matrix runs in seconds.
"""

from __future__ import annotations

import functools
import gc
import importlib.util
import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from common import uci_dir

import gebm_ppl as gp
from gebm_ppl.cli import EXIT_USAGE
from gebm_ppl.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]
UCI = uci_dir()
RED_WINE = UCI / "wine-quality" / "winequality-red.csv"
HAS_JAX = importlib.util.find_spec("jax") is not None and importlib.util.find_spec("numpyro") is not None
needs_red_wine = pytest.mark.skipif(not RED_WINE.is_file(), reason=f"no UCI files in {UCI}")
needs_jax = pytest.mark.skipif(not HAS_JAX, reason="JAX / NumPyro not installed")

NAN, INF = math.nan, math.inf


# ------------------------------------------------------------------------------------------ fixtures
@functools.cache
def _gebm() -> gp.GEBM:
    torch.manual_seed(0)
    return gp.GEBM(gp.RealNVP(2, hidden_features=8, num_layers=2), gp.EnergyMLP(2, hidden=(8,)))


def gebm() -> gp.GEBM:
    g = _gebm()
    g.eval()
    return g


def x_ok(n: int = 4) -> torch.Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(n))


def with_nan(x: torch.Tensor, value: float = NAN) -> torch.Tensor:
    x = x.clone()
    x[1, 0] = value
    return x


class LinearEnergy(torch.nn.Module):
    """An energy outside gebm_ppl's registry (no JAX twin, no config)."""

    def __init__(self, dim: int = 2):
        super().__init__()
        self.dim = dim
        self.linear = torch.nn.Linear(dim, 1)

    def forward(self, x):
        return self.linear(x).squeeze(-1)


# ------------------------------------------------------------------------------------------ library matrix
# (entry point, input class, call, exception, message regex)
LIBRARY = [
    # GEBM constructor
    ("GEBM()", "wrong type", lambda: gp.GEBM(object(), gp.EnergyMLP(2)), TypeError, "'base' should be"),
    ("GEBM()", "wrong type", lambda: gp.GEBM(gebm().base, "E"), TypeError, "'energy' should be an nn.Module"),
    ("GEBM()", "wrong shape", lambda: gp.GEBM(gebm().base, gp.EnergyMLP(3)), ValueError, "dimensions differ"),
    ("GEBM()", "NaN/inf", lambda: gp.GEBM(gebm().base, gebm().energy, NAN), ValueError, "'log_partition'.*nan"),
    ("GEBM()", "NaN/inf", lambda: gp.GEBM(gebm().base, gebm().energy, -INF), ValueError, "'log_partition'.*inf"),
    ("GEBM()", "wrong type", lambda: gp.GEBM(gebm().base, gebm().energy, "0"), TypeError, "'log_partition'"),
    ("GEBM()", "wrong shape", lambda: gp.GEBM(gebm().base, gebm().energy, torch.zeros(2)), TypeError,
     r"'log_partition'.*shape \(2,\)"),
    # GEBM methods
    ("GEBM.log_prob", "wrong shape", lambda: gebm().log_prob(torch.randn(4, 3)), ValueError,
     r"'x' should have shape \[\.\.\., 2\]\. Got shape \(4, 3\)"),
    ("GEBM.log_prob", "wrong shape", lambda: gebm().log_prob(torch.tensor(1.0)), ValueError, r"Got shape \(\)"),
    ("GEBM.log_prob", "wrong dtype", lambda: gebm().log_prob(torch.ones(4, 2, dtype=torch.int64)), TypeError,
     "floating-point"),
    ("GEBM.log_prob", "wrong dtype", lambda: gebm().log_prob(x_ok().double()), TypeError,
     "dtype torch.float64 but the model's parameters are torch.float32"),
    ("GEBM.log_prob", "wrong type", lambda: gebm().log_prob([[0.0, 1.0]]), TypeError, "torch.Tensor.*Got list"),
    ("GEBM.log_prob", "NaN/inf", lambda: gebm().log_prob(with_nan(x_ok())), ValueError, "NaN or inf.*1 of its rows"),
    ("GEBM.log_prob", "NaN/inf", lambda: gebm().log_prob(with_nan(x_ok(), INF)), ValueError, "NaN or inf"),
    ("GEBM.log_prob", "NaN/inf", lambda: gebm().log_prob(x_ok(), log_partition=NAN), ValueError,
     "'log_partition'.*finite"),
    ("GEBM.log_prob", "wrong shape", lambda: gebm().log_prob(x_ok(), log_partition=torch.zeros(3)), ValueError,
     "'log_partition' should be a finite scalar"),
    ("GEBM.unnormalized_log_prob", "NaN/inf", lambda: gebm().unnormalized_log_prob(with_nan(x_ok())), ValueError,
     "'x' contains NaN"),
    ("GEBM.latent_energy", "wrong shape", lambda: gebm().latent_energy(torch.randn(4, 3)), ValueError,
     r"'z' should have shape \[\.\.\., 2\]"),
    ("GEBM.latent_potential", "wrong type", lambda: gebm().latent_potential([[0.0, 0.0]]), TypeError,
     "'z' should be a floating-point tensor.*Got list"),
    ("GEBM.latent_potential", "wrong dtype", lambda: gebm().latent_potential(torch.zeros(1, 2, dtype=torch.long)),
     TypeError, "'z'.*dtype torch.int64"),
    # GEBMDistribution
    ("GEBMDistribution()", "wrong type", lambda: gp.GEBMDistribution(gebm().base), TypeError,
     "'gebm' should be a gebm_ppl.GEBM"),
    ("GEBMDistribution()", "NaN/inf", lambda: gp.GEBMDistribution(gebm(), log_partition=NAN), ValueError,
     "'log_partition' should be a finite scalar"),
    ("GEBMDistribution()", "NaN/inf", lambda: gp.GEBMDistribution(gebm(), log_partition=INF), ValueError,
     "'log_partition' should be a finite scalar"),
    ("GEBMDistribution()", "wrong shape", lambda: gp.GEBMDistribution(gebm(), log_partition=[1.0, 2.0]),
     ValueError, "'log_partition' should be a finite scalar"),
    ("GEBMDistribution()", "wrong type", lambda: gp.GEBMDistribution(gebm(), log_partition="A"), TypeError,
     "'log_partition' should be a finite scalar. Got 'A'"),
    ("GEBMDistribution()", "zero/negative count", lambda: gp.GEBMDistribution(gebm(), num_proposals=0),
     ValueError, "'num_proposals' should be a positive integer"),
    ("GEBMDistribution()", "zero/negative count", lambda: gp.GEBMDistribution(gebm(), num_proposals=-3),
     ValueError, "'num_proposals'"),
    ("GEBMDistribution()", "wrong type", lambda: gp.GEBMDistribution(gebm(), num_proposals=2.5), TypeError,
     "'num_proposals'"),
    ("GEBMDistribution.log_prob", "wrong shape", lambda: gebm().distribution().log_prob(torch.randn(3, 5)),
     ValueError, r"'value' should have shape \[\.\.\., 2\]"),
    ("GEBMDistribution.log_prob", "NaN/inf", lambda: gebm().distribution().log_prob(with_nan(x_ok())), ValueError,
     "'value' contains NaN"),
    ("GEBMDistribution.log_prob", "wrong dtype", lambda: gebm().distribution().log_prob(x_ok().double()),
     TypeError, "dtype torch.float64"),
    # torch's own convention for a negative sample shape (as torch.distributions.Normal.sample((-1,)))
    ("GEBMDistribution.sample", "zero/negative count", lambda: gebm().distribution().sample((-1,)), RuntimeError,
     "negative dimension"),
    # log-partition estimate and KALE
    ("estimate_log_partition", "wrong type", lambda: gp.estimate_log_partition(None), TypeError,
     "'gebm' should be a gebm_ppl.GEBM"),
    ("estimate_log_partition", "zero/negative count", lambda: gp.estimate_log_partition(gebm(), num_samples=0),
     ValueError, "'num_samples' should be a positive integer. Got 0"),
    ("estimate_log_partition", "zero/negative count", lambda: gp.estimate_log_partition(gebm(), batch_size=-1),
     ValueError, "'batch_size'"),
    ("estimate_log_partition", "wrong type", lambda: gp.estimate_log_partition(gebm(), num_samples=True), TypeError,
     "'num_samples'"),
    ("estimate_log_partition", "zero/negative rate", lambda: gp.estimate_log_partition(gebm(), temperature=0.0),
     ValueError, "'temperature' should be a positive finite number"),
    ("estimate_log_partition", "zero/negative rate", lambda: gp.estimate_log_partition(gebm(), temperature=-1.0),
     ValueError, "'temperature'"),
    ("estimate_log_partition", "NaN/inf", lambda: gp.estimate_log_partition(gebm(), temperature=NAN), ValueError,
     "'temperature'.*nan"),
    ("kale_objective", "empty", lambda: gp.kale_objective(torch.randn(3), torch.empty(0), torch.tensor(0.0)),
     ValueError, "at least one data point and one base sample"),
    ("kale_objective", "empty", lambda: gp.kale_objective(torch.empty(0), torch.randn(3), torch.tensor(0.0)),
     ValueError, "at least one data point"),
    # building blocks
    ("RealNVP()", "zero/negative count", lambda: gp.RealNVP(0), ValueError, "'dim' should be a positive integer"),
    ("RealNVP()", "wrong shape", lambda: gp.RealNVP(1), ValueError, "RealNVP needs 'dim' >= 2"),
    ("RealNVP()", "zero/negative count", lambda: gp.RealNVP(2, num_hidden_layers=-1), ValueError,
     "'num_hidden_layers' should be an integer >= 0"),
    ("RealNVP()", "NaN/inf", lambda: gp.RealNVP(2, scale_bound=NAN), ValueError, "'scale_bound'"),
    ("RealNVP()", "zero/negative rate", lambda: gp.RealNVP(2, scale_bound=-3.0), ValueError, "'scale_bound'"),
    ("RealNVP()", "unknown name", lambda: gp.RealNVP(2, scale="softmax"), ValueError,
     "'scale' should be 'exp_tanh' or 'sigmoid'"),
    ("EnergyMLP()", "unknown name", lambda: gp.EnergyMLP(2, activation="gelu"), ValueError, "'activation'"),
    ("EnergyMLP()", "zero/negative count", lambda: gp.EnergyMLP(2, hidden=(8, 0)), ValueError, "'hidden'"),
    ("EnergyMLP()", "NaN/inf", lambda: gp.EnergyMLP(2, lipschitz=NAN), ValueError, "'lipschitz'"),
    ("EnergyMLP()", "zero/negative rate", lambda: gp.EnergyMLP(2, lipschitz=-1.0), ValueError, "'lipschitz'"),
    ("EnergyMLP()", "NaN/inf", lambda: gp.EnergyMLP(2, floor=NAN), ValueError, "'floor'"),
    ("AffineBase()", "NaN/inf", lambda: gp.AffineBase(2, loc=torch.tensor([NAN, 0.0])), ValueError, "finite"),
    ("AffineBase()", "wrong shape", lambda: gp.AffineBase(2, loc=torch.zeros(3)), ValueError, r"loc \[2\]"),
    ("QuadraticEnergy()", "NaN/inf", lambda: gp.QuadraticEnergy(2, factor=torch.full((2, 2), INF)), ValueError,
     "finite"),
    ("Base.sample", "zero/negative count", lambda: gebm().base.sample(0), ValueError, "'n' should be a positive"),
]

_X = torch.randn(30, 2, generator=torch.Generator().manual_seed(1))


def _mle(train=_X, val=None, **kw):
    return gp.fit_mle(gp.RealNVP(2, hidden_features=8, num_layers=2), train, val, progress=False, **kw)


def _kale(train=_X, val=None, g=None, **kw):
    g = g if g is not None else gp.GEBM(gp.RealNVP(2, hidden_features=8, num_layers=2), gp.EnergyMLP(2, hidden=(8,)))
    return gp.fit_kale(g, train, val, progress=False, **kw)


class _Generator(gp.Base):
    """A base without a density: G(z) = W z."""

    def __init__(self):
        super().__init__()
        self.dim = self.latent_dim = 2
        self.weight = torch.nn.Parameter(torch.eye(2))

    def forward(self, z):
        return z @ self.weight.T


TRAINING = [
    ("fit_mle", "wrong type", lambda: gp.fit_mle(gp.EnergyMLP(2), _X), TypeError, "'base' should be an nn.Module"),
    ("fit_mle", "wrong type", lambda: _mle([[0.0, 1.0]]), TypeError, "'train' should be a torch.Tensor"),
    ("fit_mle", "wrong dtype", lambda: _mle(np.array([["a", "b"]])), TypeError, "'train' should hold real numbers"),
    ("fit_mle", "wrong dtype", lambda: _mle(torch.ones(5, 2, dtype=torch.complex64)), TypeError, "real numbers"),
    ("fit_mle", "wrong shape", lambda: _mle(torch.randn(5, 3)), ValueError, "'train' should have 2 columns"),
    ("fit_mle", "wrong shape", lambda: _mle(torch.randn(5)), ValueError, r"shape \[N, 2\]"),
    ("fit_mle", "empty", lambda: _mle(torch.empty(0, 2)), ValueError, "'train' is empty"),
    ("fit_mle", "NaN/inf", lambda: _mle(with_nan(_X)), ValueError, r"1 row\(s\) with NaN or inf.*row 1"),
    ("fit_mle", "NaN/inf", lambda: _mle(_X, with_nan(_X, INF)), ValueError, "'val' has 1 row"),
    ("fit_mle", "zero/negative count", lambda: _mle(epochs=0), ValueError, "'epochs' should be a positive"),
    ("fit_mle", "zero/negative count", lambda: _mle(batch_size=-5), ValueError, "'batch_size'"),
    ("fit_mle", "zero/negative count", lambda: _mle(seed=-1), ValueError, "'seed' should be an integer >= 0"),
    ("fit_mle", "zero/negative count", lambda: _mle(checkpoint_every=0), ValueError, "'checkpoint_every'"),
    ("fit_mle", "zero/negative rate", lambda: _mle(lr=0.0), ValueError, "'lr' should be a positive"),
    ("fit_mle", "NaN/inf", lambda: _mle(lr=NAN), ValueError, "'lr'"),
    ("fit_mle", "zero/negative rate", lambda: _mle(weight_decay=-1e-3), ValueError, "'weight_decay'"),
    ("fit_mle", "unknown name", lambda: _mle(schedule="linear"), ValueError, "'schedule' should be one of"),
    ("fit_kale", "wrong type", lambda: gp.fit_kale(gebm().base, _X), TypeError, "'gebm' should be a gebm_ppl.GEBM"),
    ("fit_kale", "wrong shape", lambda: _kale(_X, torch.randn(5, 3)), ValueError, "'val' should have 2 columns"),
    ("fit_kale", "empty", lambda: _kale(torch.empty(0, 2)), ValueError, "'train' is empty"),
    ("fit_kale", "NaN/inf", lambda: _kale(with_nan(_X)), ValueError, "'train' has 1 row"),
    ("fit_kale", "zero/negative count", lambda: _kale(noise_factor=0), ValueError, "'noise_factor'"),
    ("fit_kale", "zero/negative count", lambda: _kale(log_partition_samples=0), ValueError, "'log_partition_samples'"),
    ("fit_kale", "zero/negative rate", lambda: _kale(energy_lr=-1.0), ValueError, "'energy_lr'"),
    ("fit_kale", "NaN/inf", lambda: _kale(base_lr=INF), ValueError, "'base_lr'"),
    ("fit_kale", "zero/negative rate", lambda: _kale(penalty=-0.1), ValueError, "'penalty'"),
    ("fit_kale", "zero/negative rate", lambda: _kale(grad_clip=0.0), ValueError, "'grad_clip'"),
    ("fit_kale", "wrong type", lambda: _kale(train_base="yes"), TypeError, "'train_base' should be True or False"),
    ("fit_kale", "unknown name", lambda: _kale(schedule="exp"), ValueError, "'schedule'"),
    ("fit_kale", "wrong type", lambda: _kale(callback=3), TypeError, "'callback' should be callable"),
    ("fit_mle", "wrong type", lambda: gp.fit_mle(_Generator(), _X, progress=False), gp.DensityNotAvailable,
     "_Generator is not invertible: it has no inverse or density"),
]


def _case_id(case) -> str:
    return f"{case[0]}-{case[1]}".replace(" ", "_")


@pytest.mark.parametrize(("entry", "kind", "call", "error", "match"), LIBRARY + TRAINING,
                         ids=[_case_id(c) for c in LIBRARY + TRAINING])
def test_library_bad_input(entry, kind, call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_numpy_scalars_and_zero_dim_tensors_are_valid_log_partitions():
    # the checks reject bad values, not reasonable spellings of good ones
    g = gebm()
    x = x_ok()
    expected = g.unnormalized_log_prob(x) - 0.5
    for a in (0.5, np.float64(0.5), np.float32(0.5), torch.tensor(0.5)):
        torch.testing.assert_close(g.log_prob(x, log_partition=a), expected)
        assert float(gp.GEBM(g.base, g.energy, a).log_partition.detach()) == 0.5
    assert g.log_prob(torch.empty(0, 2)).shape == (0,)  # empty in, empty out


# ------------------------------------------------------------------------------------------ checkpoints
def _saved(tmp_path: Path) -> Path:
    path = tmp_path / "model.pt"
    gebm().save(path)
    return path


def _flip_tensor_byte(path: Path) -> None:
    """Flip one byte inside a tensor's data record: torch.load itself does not notice."""
    import zipfile

    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
        offset = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    raw = bytearray(path.read_bytes())
    # the local header's extra field can differ from the central directory's: find the data by content
    with zipfile.ZipFile(path) as z:
        data = z.read(info.filename)
    offset = raw.find(data, offset - 64)
    assert offset > 0
    raw[offset + len(data) // 2] ^= 0x40
    path.write_bytes(bytes(raw))


def _nan_weights(path: Path) -> None:
    g = gp.GEBM.load(path)
    with torch.no_grad():
        g.log_partition.fill_(NAN)
    g.save(path)  # a consistent digest: only the NaN check can catch it


CHECKPOINT_FILES = [
    ("missing", lambda p: p.unlink(), FileNotFoundError, "no GEBM checkpoint"),
    ("truncated", lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), ValueError,
     "not a gebm_ppl GEBM checkpoint"),
    ("empty", lambda p: p.write_bytes(b""), ValueError, "not a gebm_ppl GEBM checkpoint"),
    ("wrong format", lambda p: p.write_text("format = 'gebm_ppl.GEBM'\n"), ValueError, "not a gebm_ppl GEBM"),
    ("wrong format", lambda p: torch.save({"state_dict": {}}, p), ValueError, "no format tag"),
    ("bad checksum", _flip_tensor_byte, ValueError, "does not match the SHA-256 digest"),
    ("NaN/inf", _nan_weights, ValueError, "NaN or inf weights"),
]


@pytest.mark.parametrize(("kind", "damage", "error", "match"), CHECKPOINT_FILES, ids=[c[0] for c in CHECKPOINT_FILES])
def test_gebm_load_bad_files(tmp_path, kind, damage, error, match):
    path = _saved(tmp_path)
    damage(path)
    with pytest.raises(error, match=match):
        gp.GEBM.load(path)


@pytest.mark.parametrize(("kind", "damage", "error", "match"), CHECKPOINT_FILES[:-1],
                         ids=[c[0] for c in CHECKPOINT_FILES[:-1]])
def test_resume_from_bad_files(tmp_path, kind, damage, error, match):
    path = tmp_path / "model.pt"
    _mle(epochs=1, batch_size=10, checkpoint_path=path)
    damage(path)
    with pytest.raises(error, match="'resume'"):
        _mle(epochs=2, batch_size=10, resume=path)


def test_resume_refuses_another_kind_of_run(tmp_path):
    path = tmp_path / "mle.pt"
    _mle(epochs=1, batch_size=10, checkpoint_path=path)
    with pytest.raises(ValueError, match="written by a 'mle' run, not a 'kale' run"):
        _kale(epochs=1, resume=path)
    with pytest.raises(ValueError, match="not a gebm_ppl GEBM checkpoint"):
        gp.GEBM.load(path)  # an MLE checkpoint holds a base, not a GEBM


# ------------------------------------------------------------------------------------------ samplers
SAMPLER_KW = dict(num_samples=3, warmup_steps=2, num_chains=2)
SAMPLER_BOTH = [  # (input class, kwargs, exception, message)
    ("unknown name", dict(method="frobnicate"), ValueError, "unknown method 'frobnicate': expected one of"),
    ("zero/negative count", dict(num_samples=0), ValueError, "'num_samples' should be an integer >= 1. Got 0"),
    ("zero/negative count", dict(num_chains=0), ValueError, "'num_chains' should be an integer >= 1"),
    ("zero/negative count", dict(warmup_steps=-1), ValueError, "'warmup_steps' should be an integer >= 0"),
    ("zero/negative count", dict(seed=-1), ValueError, "'seed' should be an integer >= 0"),
    ("wrong type", dict(num_samples=2.5), TypeError, "'num_samples'"),
    ("zero/negative rate", dict(temperature=0.0), ValueError, "'temperature' should be a positive finite"),
    ("zero/negative rate", dict(temperature=-1.0), ValueError, "'temperature'"),
    ("NaN/inf", dict(temperature=NAN), ValueError, "'temperature'"),
    ("NaN/inf", dict(temperature=INF), ValueError, "'temperature'"),
    ("wrong shape", dict(init=torch.zeros(3, 2)), ValueError, r"'init' should have shape \[num_chains, d\] = \[2, 2\]"),
    ("NaN/inf", dict(init=torch.full((2, 2), NAN)), ValueError, "'init' contains NaN or inf"),
    ("wrong type", dict(init="zeros"), TypeError, "'init' should be a tensor"),
    ("unknown name", dict(frobnicate=1), TypeError, "frobnicate"),
    ("wrong type", dict(gebm=None), TypeError, "'gebm' should be a gebm_ppl.GEBM"),
]
SAMPLER_PYRO = [
    ("unknown name", dict(backend="stan"), ValueError, "unknown backend 'stan'"),
    ("zero/negative rate", dict(method="ula", step_size=-0.1), ValueError, "'step_size' should be a number > 0"),
    ("NaN/inf", dict(method="kinetic", step_size=NAN), ValueError, "'step_size'"),
    ("zero/negative rate", dict(method="kinetic", friction=0.0), ValueError, "'friction'"),
    ("zero/negative count", dict(method="ula", thin=0), ValueError, "'thin' should be an integer >= 1"),
    ("zero/negative count", dict(method="sir", num_proposals=0), ValueError, "'num_proposals'"),
    ("unknown name", dict(method="imh", step_size=0.1), TypeError, r"unknown keyword argument\(s\) \['step_size'\]"),
    ("unknown name", dict(backend="numpyro", method="sir"), ValueError, "not available with backend 'numpyro'"),
]


def _sample(**kw):
    kw = {"gebm": gebm(), "method": "nuts", **SAMPLER_KW, **kw}
    return gp.sample_latent(kw.pop("gebm"), **kw)


@pytest.mark.parametrize("backend", ["pyro", pytest.param("numpyro", marks=needs_jax)])
@pytest.mark.parametrize(("kind", "kwargs", "error", "match"), SAMPLER_BOTH,
                         ids=[f"{c[0]}-{next(iter(c[1]))}".replace(" ", "_") for c in SAMPLER_BOTH])
def test_sample_latent_bad_input(backend, kind, kwargs, error, match):
    with pytest.raises(error, match=match):
        _sample(backend=backend, **kwargs)


@pytest.mark.parametrize(("kind", "kwargs", "error", "match"), SAMPLER_PYRO,
                         ids=[f"{c[0]}-{'-'.join(map(str, c[1].values()))}".replace(" ", "_") for c in SAMPLER_PYRO])
def test_sample_latent_bad_settings(kind, kwargs, error, match):
    with pytest.raises(error, match=match):
        _sample(**kwargs)


def test_diverging_langevin_chain_raises_instead_of_returning_nan():
    # kinetic Langevin with h = 50 on a unit Gaussian is unstable: the chain overflows to inf, then NaN
    g = gp.GEBM(gp.AffineBase(2), gp.QuadraticEnergy(2))
    with pytest.raises((ValueError, FloatingPointError, RuntimeError), match="(?i)finite|diverg"):
        gp.sample_latent(g, "kinetic", num_samples=50, warmup_steps=50, num_chains=2, step_size=50.0)


@needs_jax
@pytest.mark.parametrize(
    ("kind", "call", "error", "match"),
    [
        ("wrong type", lambda: gp.to_jax(None), TypeError, "'gebm' should be a gebm_ppl.GEBM"),
        ("wrong type", lambda: gp.to_jax(gebm().base), TypeError, "'gebm' should be a gebm_ppl.GEBM"),
        ("unknown name", lambda: gp.to_jax(gebm(), dtype="int8"), ValueError,
         "'dtype' should be None, 'float32' or 'float64'"),
        ("unknown name", lambda: gp.to_jax(gp.GEBM(gebm().base, LinearEnergy())), TypeError,
         "does not support the energy LinearEnergy"),
        ("wrong shape", lambda: gp.to_jax(gebm()).log_prob(np.zeros((2, 3), np.float32)), ValueError,
         r"'x' should have shape \[\.\.\., 2\]"),
    ],
    ids=["none", "base", "dtype", "module", "shape"],
)
def test_to_jax_bad_input(kind, call, error, match):
    with pytest.raises(error, match=match):
        call()


@needs_jax
def test_to_jax_float64_without_x64_is_refused():
    import jax

    if jax.config.jax_enable_x64:
        pytest.skip("JAX 64-bit mode is on in this process")
    with pytest.raises(ValueError, match="'dtype' float64 needs JAX's 64-bit mode"):
        gp.to_jax(gebm().double(), dtype="float64")


# ------------------------------------------------------------------------------------------ data
@pytest.fixture
def data_env(tmp_path, monkeypatch):
    """An empty cache and no data folder, mirror or network: only what a test puts there exists."""
    monkeypatch.delenv("GEBM_DATA_DIR", raising=False)
    monkeypatch.setenv("GEBM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("GEBM_DATA_MIRROR", "http://127.0.0.1:9")  # refused at once, never the internet
    return tmp_path


def _red_wine_copy(folder: Path, transform=lambda b: b) -> Path:
    (folder / "wine-quality").mkdir(parents=True, exist_ok=True)
    (folder / "wine-quality" / "winequality-red.csv").write_bytes(transform(RED_WINE.read_bytes()))
    return folder


def _power(folder: Path, content: bytes | np.ndarray) -> Path:
    """A MAF ``power/data.npy`` (no published hash: the reader itself must catch a wrong file)."""
    (folder / "power").mkdir()
    if isinstance(content, bytes):
        (folder / "power" / "data.npy").write_bytes(content)
    else:
        np.save(folder / "power" / "data.npy", content)
    return folder


def _edit_one_value(raw: bytes) -> bytes:
    return raw.replace(b"7.4", b"7.5", 1)  # same size, one value changed: only the hash can tell


DATA = [
    ("unknown name", lambda t: gp.data.load("no-such-set"), ValueError,
     "unknown dataset 'no-such-set'. Known datasets: red-wine, white-wine"),
    ("wrong type", lambda t: gp.data.load(None), TypeError, "'name' should be a dataset name"),
    ("zero/negative count", lambda t: gp.data.load("red-wine", seed=-1), ValueError,
     "'seed' should be a non-negative integer"),
    ("wrong type", lambda t: gp.data.load("red-wine", seed=0.5), ValueError, "'seed'"),
    ("missing file", lambda t: gp.data.load("red-wine", data_dir=t / "nowhere"), FileNotFoundError,
     "data_dir .*nowhere' does not exist"),
    ("missing file", lambda t: gp.data.load("red-wine", data_dir=t, download=False), gp.data.DataNotFoundError,
     r"not found \(download=False\)\. Looked in"),
    ("missing file", lambda t: gp.data.load("red-wine", data_dir=t), gp.data.DataNotFoundError,
     "the download from 'http://127.0.0.1:9/wine-quality/winequality-red.csv' failed"),
    ("truncated", lambda t: gp.data.load("red-wine", data_dir=_red_wine_copy(t, lambda b: b[: len(b) // 2])),
     gp.data.ChecksumMismatchError, r"SHA-256 mismatch .*winequality-red.csv.*expected 4a402cf0"),
    ("bad checksum", lambda t: gp.data.load("red-wine", data_dir=_red_wine_copy(t, _edit_one_value)),
     gp.data.ChecksumMismatchError, r"expected 4a402cf0.*got [0-9a-f]{64} \(84199 bytes\)"),
    ("wrong format", lambda t: gp.data.load("power", data_dir=_power(t, b"#!/bin/sh\nnot an npy file\n")),
     gp.data.SourceFormatError, r"could not read .*data\.npy' as a NumPy \.npy array"),
    ("wrong shape", lambda t: gp.data.load("power", data_dir=_power(t, np.zeros((10, 3)))), gp.data.SourceFormatError,
     "expected 8 columns"),
]


@needs_red_wine
@pytest.mark.parametrize(("kind", "call", "error", "match"), DATA, ids=[c[0].replace(" ", "_") for c in DATA])
def test_data_load_bad_input(data_env, kind, call, error, match):
    with pytest.raises(error, match=match):
        call(data_env)
    assert not (data_env / "cache" / "splits").exists()  # nothing half-built is cached


def _outcome(call) -> tuple[type | None, str, list]:
    """(exception type or None, message, ResourceWarnings such as unclosed files) of ``call()``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            call()
            kind, message = None, "no error"
        except Exception as e:  # any type: the checks are the caller's, after the leaks are collected
            kind, message = type(e), str(e)
        gc.collect()
    return kind, message, [w for w in caught if issubclass(w.category, ResourceWarning)]


def test_npy_file_with_zip_magic_is_a_source_format_error(data_env):
    # np.load raises zipfile.BadZipFile here, which read_npy once let through
    folder = _power(data_env, b"PK\x03\x04 a torn zip")
    kind, message, _ = _outcome(lambda: gp.data.load("power", data_dir=folder))
    assert kind is gp.data.SourceFormatError and "as a NumPy .npy array" in message, message


def test_npy_reader_closes_a_damaged_file(data_env):
    folder = _power(data_env, b"PK\x03\x04 a torn zip")
    _, _, leaks = _outcome(lambda: gp.data.load("power", data_dir=folder))
    assert not leaks, [str(w.message) for w in leaks]


def test_npz_archive_at_an_npy_path_is_a_source_format_error(data_env):
    (data_env / "power").mkdir()
    with open(data_env / "power" / "data.npy", "wb") as f:
        np.savez(f, power=np.zeros((10, 8)))
    kind, message, _ = _outcome(lambda: gp.data.load("power", data_dir=data_env))
    assert kind is gp.data.SourceFormatError, f"{kind}: {message}"


# ------------------------------------------------------------------------------------------ command line
@pytest.fixture
def cli_files(tmp_path, monkeypatch):
    monkeypatch.delenv("GEBM_DATA_DIR", raising=False)
    monkeypatch.setenv("GEBM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("GEBM_DATA_MIRROR", "http://127.0.0.1:9")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 2))  # enough rows for the per-split minimum of user data
    header = dict(delimiter=",", header="a,b", comments="")
    np.savetxt(tmp_path / "ok.csv", x, **header)
    bad = x.copy()
    bad[5, 1] = np.nan
    np.savetxt(tmp_path / "nan.csv", bad, **header)
    np.savetxt(tmp_path / "few.csv", x[:5], **header)
    np.savetxt(tmp_path / "one.csv", x[:, :1], delimiter=",", header="a", comments="")
    (tmp_path / "empty.csv").write_text("")
    np.save(tmp_path / "cube.npy", np.zeros((4, 4, 4)))
    (tmp_path / "junk.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 40)
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"format": "gebm_ppl.run", "status": "done"}))
    gebm().save(run / "gebm.pt")
    (run / "gebm.pt").write_bytes((run / "gebm.pt").read_bytes()[:300])  # torn
    (tmp_path / "badjson").mkdir()
    (tmp_path / "badjson" / "run.json").write_text("{not json")
    if RED_WINE.is_file():
        _red_wine_copy(tmp_path / "torn-data", lambda b: b[:1000])
    return tmp_path


CLI = [  # (input class, argv with {t} for the temporary folder, message)
    ("NaN/inf", ["fit", "{t}/nan.csv", "--out", "{t}/r"], "has 1 rows with missing, NaN or inf values"),
    ("empty", ["fit", "{t}/empty.csv", "--out", "{t}/r"], "the file is empty"),
    ("zero/negative count", ["fit", "{t}/few.csv", "--out", "{t}/r"],
     "5 rows split into 5 training, 0 validation and 0 test rows"),
    ("wrong shape", ["fit", "{t}/one.csv", "--out", "{t}/r"], "has 1 column(s) after selection"),
    ("wrong shape", ["fit", "{t}/cube.npy", "--out", "{t}/r"], "expected a 2-D real numeric array"),
    ("missing file", ["fit", "{t}/absent.csv", "--out", "{t}/r"], "is neither a known dataset"),
    ("unknown name", ["fit", "{t}/ok.csv", "--out", "{t}/r", "--columns", "c"], "column 'c' is not in"),
    ("unknown name", ["fit", "{t}/ok.csv", "--out", "{t}/r", "--set", "kale.epoch=3"], "unknown option 'epoch'"),
    ("missing file", ["fit", "red-wine", "--out", "{t}/r", "--data-dir", "{t}/nowhere"], "does not exist"),
    ("bad checksum", ["fit", "red-wine", "--out", "{t}/r", "--data-dir", "{t}/torn-data"], "SHA-256 mismatch"),
    ("zero/negative count", ["fit", "{t}/ok.csv", "--out", "{t}/r", "--seed", "-1"],
     "argument --seed: expected a non-negative integer, got -1"),
    ("zero/negative count", ["fit", "{t}/ok.csv", "--out", "{t}/r", "--checkpoint-every", "0"],
     "argument --checkpoint-every: expected a positive integer"),
    ("truncated", ["evaluate", "{t}/run"], "gebm.pt' is not a gebm_ppl GEBM checkpoint"),
    ("wrong format", ["evaluate", "{t}/badjson"], "run.json' is not a readable run file"),
    ("zero/negative count", ["evaluate", "{t}/run", "--num-samples", "0"], "argument --num-samples"),
    ("unknown name", ["evaluate", "{t}/run", "--split", "holdout"], "argument --split: invalid choice"),
    ("zero/negative count", ["sample", "{t}/run", "--chains", "0"], "argument --chains: expected a positive"),
    ("zero/negative count", ["sample", "{t}/run", "-n", "-5"], "argument -n/--num-samples"),
    ("NaN/inf", ["sample", "{t}/run", "--temperature", "nan"], "expected a positive finite number, got nan"),
    ("zero/negative rate", ["sample", "{t}/run", "--temperature", "-1"], "argument --temperature"),
    ("NaN/inf", ["sample", "{t}/run", "--step-size", "inf"], "argument --step-size"),
    ("unknown name", ["sample", "{t}/run", "--method", "frobnicate"], "argument --method: invalid choice: 'frob"),
    ("truncated", ["sample", "{t}/run", "--method", "ula"], "gebm.pt' is not a gebm_ppl GEBM checkpoint"),
    ("wrong format", ["diagnose", "{t}/cube.npy"], "is not a netCDF InferenceData"),
    ("wrong format", ["diagnose", "{t}/junk.h5"], "has no netCDF InferenceData beside it"),
    ("missing file", ["diagnose", "{t}/absent.nc"], "no samples file"),
    ("unknown name", ["frobnicate"], "invalid choice: 'frobnicate'"),
]


@pytest.mark.parametrize(("kind", "argv", "message"), CLI, ids=[f"{c[1][0]}-{c[0]}".replace(" ", "_") for c in CLI])
def test_cli_bad_input_exits_2_with_a_message(cli_files, capsys, kind, argv, message):
    if "red-wine" in argv and not RED_WINE.is_file():
        pytest.skip(f"no UCI files in {UCI}")
    code = cli_main([a.replace("{t}", str(cli_files)) for a in argv])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE, err
    assert message in err, err
    assert "Traceback" not in err
    assert not (cli_files / "r").exists()  # bad input creates no run directory


def test_cli_bad_configuration_value_is_a_usage_error(cli_files, capsys):
    """A bad value is found before training (the base and energy are built, training keywords checked)."""
    code = cli_main(["fit", str(cli_files / "ok.csv"), "--out", str(cli_files / "r"),
                     "--set", "realnvp.hidden_features=0"])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE and "'hidden_features' should be a positive integer" in err, err
    assert not (cli_files / "r").exists()  # nothing was written
    code = cli_main(["fit", str(cli_files / "ok.csv"), "--out", str(cli_files / "r"), "--set", "mle.epochs=\"x\""])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE and "[mle] 'epochs' should be an int" in err, err


def test_python_m_gebm_ppl_exit_code_and_message(cli_files):
    """The real entry point, ``python -m gebm_ppl``: exit status 2 and a one-line message on stderr."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "gebm_ppl", "fit", str(cli_files / "nan.csv"), "--out",
                           str(cli_files / "r")], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"gebm fit: error: {str(cli_files / 'nan.csv')!r} has 1 rows with missing, NaN or inf values "
        "(first data rows: [6]; data rows count from 1, the header not counted; in columns ['b']); "
        "remove or impute them first."
    )
    assert proc.stdout == "" and not (cli_files / "r").exists()


# ------------------------------------------------------------------------------------------ benchmark script
def _bench():
    path = ROOT / "benchmarks" / "uci_density.py"
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location("_reliability_uci_density", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BENCH = [
    ("unknown name", ["--datasets", "no-such-set"], SystemExit, "unknown datasets: no-such-set. Known: red-wine"),
    ("unknown name", ["--methods", "realnvp,glow"], SystemExit, "unknown methods: glow. Known: realnvp"),
    ("zero/negative count", ["--seeds", "0"], ValueError, "--seeds should be a count >= 1"),
    ("wrong format", ["--set", "kale.epochs"], ValueError, "should read SECTION.KEY=VALUE (key=value"),
    ("missing file", ["--config-dir", "{t}/nowhere"], FileNotFoundError, "no benchmark configuration"),
    ("wrong type", ["--epochs", "many"], SystemExit, None),  # argparse: exit status 2 and its usage line
    ("wrong type", ["--seeds", "three"], ValueError, "--seeds"),
]


@pytest.mark.parametrize(("kind", "argv", "error", "match"), BENCH,
                         ids=["datasets", "methods", "seeds0", "set", "config-dir", "epochs", "seeds-word"])
def test_benchmark_bad_arguments(tmp_path, capsys, kind, argv, error, match):
    bench = _bench()
    argv = [a.replace("{t}", str(tmp_path)) for a in argv] + ["--out", str(tmp_path / "out"), "--no-progress"]
    with pytest.raises(error) as info:
        bench.main(argv)
    if error is SystemExit and match is None:
        assert info.value.code == 2 and "usage: python benchmarks/uci_density.py" in capsys.readouterr().err
    else:
        assert match in str(info.value.code if error is SystemExit else info.value)
    assert not (tmp_path / "out").exists()


def test_benchmark_records_missing_data_as_failed_rows(data_env, capsys):
    """A dataset whose files cannot be found: every method row says why, no crash, no NaN in the outputs."""
    bench = _bench()
    out = data_env / "out"
    code = bench.main(["--datasets", "red-wine", "--methods", "realnvp,maf", "--seeds", "1", "--data-dir",
                       str(data_env), "--out", str(out), "--no-progress", "--no-plot"])
    assert code == 1  # every row failed
    table = capsys.readouterr().out
    assert "failed (data: DataNotFoundError" in table and "nan" not in table.lower()
    result = json.loads((out / "uci_density.json").read_text(), parse_constant=lambda c: pytest.fail(f"JSON has {c}"))
    rows = result["results"]
    assert [r["method"] for r in rows] == ["realnvp", "maf"]
    assert all(r["status"] == "failed" and "winequality-red.csv" in r["message"] for r in rows)


# ------------------------------------------------------------------------------------------ divergence
# fit_kale's own divergence error (step, quantity, last good checkpoint, a loadable checkpoint) is tested in
# tests/test_training.py::test_absurd_learning_rate_raises_and_keeps_the_last_good_checkpoint, and the CLI's
# exit status 1 for it in tests/test_cli.py::test_unfinished_runs_and_runtime_failures. The benchmark's smoke
# test (tests/test_uci_benchmark.py) records a method failing on bad input (energy_lr = -1); here a method
# that really diverges while training must become a failed row, not a crash and not a NaN.
@needs_red_wine
def test_benchmark_records_a_diverging_kale_run_as_failed(data_env, capsys):
    bench = _bench()
    out = data_env / "out"
    tiny = ["realnvp.hidden_features=8", "realnvp.num_layers=2", "energy.hidden=[32, 32]", "kale.noise_factor=2",
            "kale.log_partition_samples=500", "energy.spectral_norm=false", "kale.energy_lr=1e6",
            "kale.grad_clip=1e30", "select.flow={}", "select.energy.penalty=[0.1]",
            "select.gebm_base=realnvp"]  # fmt: skip
    argv = ["--datasets", "red-wine", "--methods", "realnvp,gebm-frozen", "--seeds", "1", "--epochs", "1",
            "--eval-samples", "2000", "--data-dir", str(UCI), "--out", str(out), "--no-progress",
            "--no-plot"]  # fmt: skip
    for item in tiny:
        argv += ["--set", item]
    assert bench.main(argv) == 0  # one method failed, the other did not: the run itself succeeds
    table = capsys.readouterr().out
    assert "failed (TrainingDiverged: fit_kale diverged at step" in table
    assert "nan" not in table.lower() and "inf |" not in table.lower()
    result = json.loads((out / "uci_density.json").read_text(), parse_constant=lambda c: pytest.fail(f"JSON has {c}"))
    rows = {r["method"]: r for r in result["results"]}
    assert rows["realnvp"]["status"] == "ok" and math.isfinite(rows["realnvp"]["test_nll"])
    failed = rows["gebm-frozen"]
    assert failed["status"] == "failed" and "test_nll" not in failed
    assert "diverged at step" in failed["message"] and "is not finite" in failed["message"]
