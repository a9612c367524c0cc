"""The package layout: public names from ``gebm_ppl``, the old module paths (one release, with a DeprecationWarning),
the ``gebm`` entry point, and the one component registry behind configs, checkpoints and ``to_jax``."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import gebm_ppl as gp
from gebm_ppl import registry
from gebm_ppl._compat import MOVED

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("old", "new"), sorted(MOVED.items()))
def test_old_module_paths_warn_and_are_the_new_modules(old, new):
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=rf"{old} is deprecated.*import {new}"):
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)
    assert sys.modules[old] is module


def test_from_imports_of_old_paths_give_the_same_objects():
    sys.modules.pop("gebm_ppl.generators", None)
    sys.modules.pop("gebm_ppl.image_energies", None)
    with pytest.warns(DeprecationWarning):
        from gebm_ppl.generators import MLPGenerator
    with pytest.warns(DeprecationWarning):
        from gebm_ppl.image_energies import ConvEnergy
    assert MLPGenerator is gp.MLPGenerator and ConvEnergy is gp.ConvEnergy


def test_public_names_stay_importable_from_gebm_ppl():
    for name in gp.__all__:
        assert getattr(gp, name) is not None, name
    assert gp.GEBMReparam is importlib.import_module("gebm_ppl.pyro.reparam").GEBMReparam
    assert gp.toys is importlib.import_module("gebm_ppl.data.toys")  # attribute access: no warning
    assert issubclass(gp.EnergyMLP, gp.Energy) and issubclass(gp.ConvEnergy, gp.energies.Energy)
    with pytest.raises(TypeError, match="abstract"):
        gp.Energy()


def test_every_builtin_base_and_energy_is_registered_with_its_jax_twin():
    assert set(registry.names("base")) >= {"RealNVP", "AffineBase", "NSF", "MLPGenerator", "ConvGenerator"}
    assert set(registry.names("energy")) >= {"EnergyMLP", "QuadraticEnergy", "ConvEnergy"}
    for kind in ("base", "energy"):
        for name, comp in registry.COMPONENTS[kind].items():
            if comp.obj.__module__.startswith("gebm_ppl"):
                assert comp.jax is not None and registry.jax_twin(comp.obj) is not None, name
                assert comp.docs, name
    assert gp.bases.BASES["NSF"] is gp.NSF and gp.energies.ENERGIES["ConvEnergy"] is gp.ConvEnergy
    assert "| `NSF` |" in registry.components_table("base")
    assert "nuts" in registry.names("sampler")


def test_registry_errors_name_the_problem():
    with pytest.raises(ValueError, match="'kind' should be one of"):
        registry.register("flow", gp.RealNVP)
    with pytest.raises(TypeError, match="expected a class"):
        registry.register("base", object())
    with pytest.raises(TypeError, match="'module:attribute'"):
        registry.register_base(name="X", jax="no_colon")(type("X", (), {}))
    with pytest.raises(ValueError, match="unknown energy 'Nope'.*EnergyMLP"):
        registry.get("energy", "Nope")
    with pytest.raises(KeyError, match="no base named 'Nope'"):
        registry.unregister("base", "Nope")


def test_the_docs_line_is_the_first_docstring_line_unless_given():
    class Probe:
        """First line.

        More.
        """

        def summary(self):  # a method of that name is not a docs line
            return "no"

    try:
        registry.register_energy(Probe)
        assert registry.COMPONENTS["energy"]["Probe"].docs == "First line."
        registry.register_energy(name="Probe", docs="given")(Probe)
        assert registry.COMPONENTS["energy"]["Probe"].docs == "given" and registry.jax_twin(Probe) is None
    finally:
        registry.unregister("energy", "Probe")
    assert "Probe" not in gp.energies.ENERGIES


def test_the_gebm_console_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "gebm_ppl", "--version"], capture_output=True, text=True,
                         cwd=ROOT, timeout=120, check=False)
    assert out.returncode == 0 and gp.__version__ in out.stdout + out.stderr, out.stderr
    setup = (ROOT / "setup.py").read_text()
    assert '"gebm=gebm_ppl.cli:main"' in setup and callable(importlib.import_module("gebm_ppl.cli").main)


def test_the_docs_tables_are_the_registry():
    page = (ROOT / "docs" / "api" / "core.md").read_text(encoding="utf-8")
    for kind in ("base", "energy"):
        builtin = {n for n, c in registry.COMPONENTS[kind].items() if c.obj.__module__.startswith("gebm_ppl")}
        rows = [r for r in registry.components_table(kind).splitlines()
                if not r.startswith("| `") or r.split("`")[1] in builtin]
        assert "\n".join(rows) in page, f"regenerate the {kind} table in docs/api/core.md with components_table"
