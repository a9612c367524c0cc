"""A new base and a new energy, each defined in one place (this file) and registered with one decorator, work end
to end: fit_kale, Pyro NUTS, to_jax + NumPyro NUTS, checkpoints, and the CLI by config name."""

from __future__ import annotations

import contextlib
import io
import json
import math
from typing import NamedTuple

import numpy as np
import pytest
import torch
from common import one_thread
from torch import nn

try:
    import jax.numpy as jnp
except ImportError:  # the JAX extra is optional: the NumPyro test skips
    jnp = None

import gebm_ppl as gp
from gebm_ppl import registry
from gebm_ppl.cli import EXIT_OK, main


# ------------------------------------------------------------------------------ the new base, with its JAX twin
class ScaleShiftSpec(NamedTuple):
    """JAX twin of :class:`ScaleShiftBase` (params: ``{"loc": [D], "log_scale": [D]}``)."""

    dim: int

    @property
    def latent_dim(self) -> int:
        return self.dim

    def forward_and_log_det(self, params, z):
        x = params["loc"] + jnp.exp(params["log_scale"]) * z
        return x, jnp.broadcast_to(jnp.sum(params["log_scale"]), z.shape[:-1])

    def forward(self, params, z):
        return self.forward_and_log_det(params, z)[0]

    def inverse(self, params, x):
        z = (x - params["loc"]) * jnp.exp(-params["log_scale"])
        return z, jnp.broadcast_to(-jnp.sum(params["log_scale"]), x.shape[:-1])


def convert_scale_shift(base: ScaleShiftBase, dtype: type) -> tuple[ScaleShiftSpec, dict]:
    arrays = {k: jnp.asarray(getattr(base, k).detach().numpy().astype(dtype)) for k in ("loc", "log_scale")}
    return ScaleShiftSpec(base.dim), arrays


@registry.register_base(jax=f"{__name__}:convert_scale_shift", docs="G(z) = μ + exp(s) ⊙ z (a test base)")
class ScaleShiftBase(gp.Base):
    """G(z) = μ + exp(s) ⊙ z: a diagonal Gaussian base with log g(x) = log N(G⁻¹(x)) − Σ s."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = self.latent_dim = dim
        self.loc = nn.Parameter(torch.zeros(dim))
        self.log_scale = nn.Parameter(torch.zeros(dim))

    @property
    def config(self) -> dict:
        return {"dim": self.dim}

    def forward(self, z):
        return self.loc + torch.exp(self.log_scale) * z

    def inverse(self, x):
        z = (x - self.loc) * torch.exp(-self.log_scale)
        return z, (-self.log_scale.sum()).expand(x.shape[:-1])


# ---------------------------------------------------------------------------- the new energy, with its JAX twin
class QuarticSpec(NamedTuple):
    """JAX twin of :class:`QuarticEnergy` (params: ``{"raw": []}``)."""

    dim: int

    def energy(self, params, x):
        return jnp.logaddexp(params["raw"], 0.0) * jnp.sum(x**4, -1)


def convert_quartic(energy: QuarticEnergy, dtype: type) -> tuple[QuarticSpec, dict]:
    return QuarticSpec(energy.dim), {"raw": jnp.asarray(energy.raw.detach().numpy().astype(dtype))}


@registry.register_energy(jax=f"{__name__}:convert_quartic")
class QuarticEnergy(gp.energies.Energy):
    """E(x) = softplus(a) · Σᵢ xᵢ⁴ (a test energy)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.raw = nn.Parameter(torch.tensor(-2.0))

    @property
    def config(self) -> dict:
        return {"dim": self.dim}

    def forward(self, x):
        return nn.functional.softplus(self.raw) * (x**4).sum(-1)


@pytest.fixture(scope="module", autouse=True)
def _unregister_at_the_end():
    yield
    registry.unregister("base", "ScaleShiftBase")
    registry.unregister("energy", "QuarticEnergy")


def _data(n: int = 256) -> np.ndarray:
    return np.random.default_rng(0).normal(0.5, 1.2, size=(n, 2)).astype(np.float32)


def test_the_registry_lists_them_with_their_twin_and_docs():
    assert registry.get("base", "ScaleShiftBase") is ScaleShiftBase
    assert gp.bases.BASES["ScaleShiftBase"] is ScaleShiftBase and "QuarticEnergy" in gp.energies.ENERGIES
    table = registry.components_table("base")
    assert "| `ScaleShiftBase` | G(z) = μ + exp(s) ⊙ z (a test base) | yes |" in table
    energies = registry.components_table("energy")
    assert "| `QuarticEnergy` | E(x) = softplus(a) · Σᵢ xᵢ⁴ (a test energy). | yes |" in energies
    assert registry.jax_twin(ScaleShiftBase) is convert_scale_shift


def test_fit_kale_checkpoint_and_pyro_nuts(tmp_path):
    torch.manual_seed(0)
    gebm = gp.GEBM(ScaleShiftBase(2), QuarticEnergy(2))
    with one_thread():
        history = gp.fit_kale(gebm, _data(), epochs=2, batch_size=64, noise_factor=2, warmup_energy_steps=0,
                              log_partition_samples=500, progress=False, patience=None)
        assert len(history.records) >= 1
        assert math.isfinite(float(gebm.log_partition.detach()))
        # a checkpoint names the classes; loading it resolves them through the registry
        gebm.save(tmp_path / "g.pt")
        loaded = gp.GEBM.load(tmp_path / "g.pt")
        assert type(loaded.base) is ScaleShiftBase and type(loaded.energy) is QuarticEnergy
        x = torch.randn(5, 2)
        torch.testing.assert_close(loaded.log_prob(x), gebm.log_prob(x))
        idata = gp.sample_latent(gebm, method="nuts", backend="pyro", num_samples=10, warmup_steps=10,
                                 num_chains=1, seed=0, progress=False)
        assert idata.posterior["z"].shape == (1, 10, 2)
        assert np.isfinite(idata.posterior["z"].values).all()


def test_to_jax_and_numpyro_nuts():
    pytest.importorskip("numpyro")
    torch.manual_seed(1)
    gebm = gp.GEBM(ScaleShiftBase(2), QuarticEnergy(2))
    with torch.no_grad():
        gebm.base.loc.add_(0.3)
        gebm.energy.raw.add_(1.0)
    x = torch.randn(5, 2)
    jg = gp.to_jax(gebm)
    assert jg.has_density and "base=ScaleShift" in repr(jg)
    xj = jnp.asarray(x.numpy())
    np.testing.assert_allclose(jg.log_prob(xj), gebm.log_prob(x).detach().numpy(), rtol=1e-5, atol=1e-5)
    idata = gp.sample_latent(gebm, method="nuts", backend="numpyro", num_samples=10, warmup_steps=10,
                             num_chains=1, seed=0, progress=False)
    assert idata.posterior["z"].shape == (1, 10, 2) and np.isfinite(idata.posterior["z"].values).all()


CONFIG = """
[base]
class = "ScaleShiftBase"

[energy]
class = "QuarticEnergy"

[mle]
epochs = 2
batch_size = 64

[kale]
epochs = 1
batch_size = 64
noise_factor = 2
warmup_energy_steps = 0
log_partition_samples = 500
"""


def _cli(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def test_the_cli_fits_and_evaluates_them_by_config_name(tmp_path, monkeypatch):
    monkeypatch.setenv("GEBM_CACHE_DIR", str(tmp_path / "cache"))
    np.savetxt(tmp_path / "pts.csv", _data(400), delimiter=",", header="u,v", comments="")
    (tmp_path / "run.toml").write_text(CONFIG)
    with one_thread():
        code, out, err = _cli("fit", tmp_path / "pts.csv", "--config", tmp_path / "run.toml", "--out",
                              tmp_path / "run", "--no-progress")
        assert code == EXIT_OK, err
        gebm = gp.GEBM.load(tmp_path / "run" / "gebm.pt")
        assert type(gebm.base) is ScaleShiftBase and type(gebm.energy) is QuarticEnergy
        code, out, err = _cli("evaluate", tmp_path / "run", "--num-samples", 500, "--json")
    assert code == EXIT_OK, err
    result = json.loads(out)
    assert math.isfinite(result["nll"]) and math.isfinite(result["kale"])
