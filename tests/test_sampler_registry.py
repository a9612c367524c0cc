"""The sampler registry: a sampler added by one module reaches METHODS, sample_latent, its option checks and the CLI."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap

import pytest
import torch

import gebm_ppl as gp
from gebm_ppl import sampling
from gebm_ppl.sampling.registry import SAMPLERS, Option, SamplerSpec, get_sampler, methods_help, register_sampler
from tests.common import assert_moments, gaussian_case

# A whole sampler in one module: random-walk Metropolis, batched over chains, registered on import.
PLUGIN = '''
"""Random-walk Metropolis: z' = z + s·ξ, accepted with probability min(1, exp(U(z) − U(z')))."""
from typing import NamedTuple

import torch

from gebm_ppl.sampling.driver import Kernel
from gebm_ppl.sampling.driver import batched_runner
from gebm_ppl.sampling.registry import Option, SamplerSpec, register_sampler


class RWMState(NamedTuple):
    z: torch.Tensor
    potential: torch.Tensor


def init(z, potential, **params):
    with torch.no_grad():
        return RWMState(z.detach(), potential(z))


def step(state, potential, generator, *, scale, **params):
    z = state.z + scale * torch.randn(state.z.shape, generator=generator, dtype=state.z.dtype)
    with torch.no_grad():
        u = potential(z)
    u_rand = torch.rand(u.shape, generator=generator, dtype=u.dtype)
    accept = torch.log(u_rand) < state.potential - u
    return RWMState(torch.where(accept[:, None], z, state.z), torch.where(accept, u, state.potential))


SPEC = register_sampler(SamplerSpec(
    name="rwm_test", summary="random-walk Metropolis (test plug-in)", gradient_based=False,
    options=(Option("scale", float, 0.8, "proposal standard deviation"),
             Option("thin", int, 1, "transitions per kept draw", minimum=1)),
    torch_runner=batched_runner(Kernel(init, step, lambda s: {"lp": -s.potential})),
))
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    (tmp_path / "rwm_test_plugin.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("rwm_test_plugin")
    yield module
    SAMPLERS.pop("rwm_test", None)
    sys.modules.pop("rwm_test_plugin", None)


def test_a_sampler_added_by_one_module_is_everywhere(plugin):
    assert "rwm_test" in sampling.METHODS and sampling.METHODS[-1] == "rwm_test"
    spec = get_sampler("rwm_test")
    assert spec.backends == ("pyro",) and not spec.gradient_based and spec.defaults == {"scale": 0.8, "thin": 1}
    # sample_latent runs it and its draws follow the closed form
    case = gaussian_case(2, seed=6)
    idata = gp.sample_latent(case.gebm, "rwm_test", num_samples=3000, warmup_steps=200, num_chains=8, seed=0)
    z = torch.as_tensor(idata.posterior["z"].values.copy()).reshape(-1, 2)
    assert_moments(z, case.latent_mean, case.latent_cov, mean_tol=0.12, cov_tol=0.12)
    assert idata.attrs["method"] == "rwm_test" and idata.attrs["scale"] == 0.8 and idata.attrs["num_grad_evals"] == 0
    # its typed options are validated
    with pytest.raises(TypeError, match=r"unknown keyword argument\(s\) \['step_size'\] for method 'rwm_test'"):
        gp.sample_latent(case.gebm, "rwm_test", step_size=0.1)
    with pytest.raises(ValueError, match="'scale' should be a number > 0"):
        gp.sample_latent(case.gebm, "rwm_test", scale=-1.0)
    with pytest.raises(TypeError, match="'thin' should be an integer >= 1"):
        gp.sample_latent(case.gebm, "rwm_test", thin=1.5)
    with pytest.raises(ValueError, match="not available with backend 'numpyro'"):
        gp.sample_latent(case.gebm, "rwm_test", "numpyro")
    # the CLI offers it, with its summary as help, without any edit of the CLI
    from gebm_ppl.cli import build_parser

    args = build_parser().parse_args(["sample", "some-run", "--method", "rwm_test"])
    assert args.method == "rwm_test"
    assert "rwm_test: random-walk Metropolis (test plug-in)" in methods_help()


def test_registry_errors_and_the_builtin_table():
    assert sampling.METHODS[:8] == ("nuts", "hmc", "ula", "kinetic", "mala", "imh", "sir", "dot")
    for name in sampling.METHODS:
        assert get_sampler(name).name == name and get_sampler(name).help_text()
    assert get_sampler("sir").backends == ("pyro",)
    for name in ("nuts", "hmc", "ula", "kinetic", "mala", "imh", "dot"):
        assert get_sampler(name).backends == ("pyro", "numpyro")
    assert not get_sampler("imh").gradient_based and get_sampler("dot").gradient_based
    with pytest.raises(ValueError, match="already registered"):
        register_sampler(SamplerSpec("ula", "again", True, torch_runner=lambda *a, **k: None))
    with pytest.raises(TypeError, match="'spec' should be a SamplerSpec"):
        register_sampler("ula")
    with pytest.raises(ValueError, match="lower-case identifier"):
        SamplerSpec("My Sampler", "x", True, torch_runner=lambda *a, **k: None)
    with pytest.raises(ValueError, match="torch_runner, a jax_kernel or both"):
        SamplerSpec("nothing", "x", True)
    with pytest.raises(ValueError, match="unknown method 'gibbs'"):
        get_sampler("gibbs")
    option = Option("rate", float, 0.5, "a rate", maximum=1.0)
    assert option.validate(1) == 1.0
    for bad, error in ((True, TypeError), ("0.5", TypeError), (float("nan"), ValueError), (0.0, ValueError),
                       (1.5, ValueError)):
        with pytest.raises(error, match="'rate'"):
            option.validate(bad)


def test_no_import_cycle_between_sampling_and_numpyro():
    # gebm_ppl.sampling must not import the NumPyro backend; the backend imports (and completes) on its own.
    code = (
        "import sys, gebm_ppl.sampling; assert 'gebm_ppl.numpyro' not in sys.modules; "
        "import gebm_ppl.inference_data; import gebm_ppl.numpyro, gebm_ppl.numpyro.kernels; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_the_docs_methods_table_is_the_registry():
    from pathlib import Path

    from gebm_ppl.sampling.registry import methods_table

    text = (Path(__file__).resolve().parents[1] / "docs" / "samplers.md").read_text()
    table = text.split("<!-- methods-table:start -->\n")[1].split("\n<!-- methods-table:end -->")[0]
    assert table == methods_table(), "regenerate the table in docs/samplers.md with methods_table()"
