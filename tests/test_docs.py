"""The user guide builds with `mkdocs build --strict`, its Python code blocks run, and every example in
examples/ runs (with GEBM_QUICK=1: tiny settings)."""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import json
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest
from common import uci_dir

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
UCI = uci_dir()
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
# a ```python block runs unless the line before it is this marker (signature sketches, fragments)
NOT_RUN = "<!-- not-run -->"
FENCE = re.compile(r"(?P<before>[^\n]*)\n```python\n(?P<code>.*?)\n```", re.S)


def env_for(tmp: Path) -> dict:
    env = dict(os.environ)
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]), GEBM_QUICK="1",
               GEBM_DATA_DIR=str(UCI), GEBM_CACHE_DIR=str(tmp / "cache"), MPLBACKEND="Agg", OMP_NUM_THREADS="1")
    return env


def python_blocks(page: Path) -> list[str]:
    """The runnable Python code blocks of a page, in order (snippet includes are tested as examples)."""
    blocks = []
    for m in FENCE.finditer("\n" + page.read_text(encoding="utf-8")):
        if m["before"].strip() != NOT_RUN and "--8<--" not in m["code"]:
            blocks.append(m["code"])
    return blocks


def test_docs_build_strict(tmp_path):
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
         "--site-dir", str(site)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for page in ("index.html", "quickstart/index.html", "concepts/index.html", "cli/index.html",
                 "pyro-prior/index.html", "samplers/index.html", "numpyro/index.html", "benchmarks/index.html",
                 "api/core/index.html", "api/training/index.html", "api/sampling/index.html"):
        assert (site / page).is_file(), page
    # the quickstart shows the code of the tested example (pymdownx.snippets), the API pages the docstrings
    quickstart = (site / "quickstart" / "index.html").read_text()
    assert "fit_kale" in quickstart and "sample_latent" in quickstart and "plot_pair" in quickstart
    api = (site / "api" / "core" / "index.html").read_text()
    for anchor in ("gebm_ppl.gebm.GEBM", "gebm_ppl.bases.RealNVP", "gebm_ppl.kale.estimate_log_partition",
                   "gebm_ppl.evaluation.evaluate_gebm"):
        assert f'id="{anchor}"' in api
    assert 'id="gebm_ppl.training.fit_kale"' in (site / "api" / "training" / "index.html").read_text()


PAGES = [p for p in sorted(DOCS.glob("*.md")) if python_blocks(p)]


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_docs_code_blocks_run(page, tmp_path, monkeypatch):
    """Each page's Python blocks, run in order in one namespace (in a scratch folder)."""
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    for i, code in enumerate(python_blocks(page)):
        try:
            exec(compile(code, f"{page.name}[block {i}]", "exec"), namespace)
        except Exception as e:
            raise AssertionError(f"{page.name}, Python block {i} failed: {type(e).__name__}: {e}\n{code}") from e


@pytest.mark.skipif(not (UCI / "wine-quality" / "winequality-red.csv").is_file(), reason=f"no red-wine in {UCI}")
@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs(example, tmp_path):
    """Every script in examples/ runs to the end with GEBM_QUICK=1, from a scratch working folder."""
    result = subprocess.run([sys.executable, str(example)], cwd=tmp_path, env=env_for(tmp_path),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{example.name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    if example.stem == "fit_sample_diagnose":
        out = tmp_path / "results" / "examples" / "fit_sample_diagnose"
        assert {p.name for p in out.iterdir()} == {"trace.png", "rank.png", "pair.png"}
        assert re.search(r"test NLL: base \d+\.\d+ ± \d+\.\d+, GEBM \d+\.\d+", result.stdout)
        assert "max_r_hat" in result.stdout and "(2, 25, 11)" in result.stdout


def _doctests(module: str) -> list[doctest.DocTest]:
    mod = importlib.import_module(module)
    tests = doctest.DocTestFinder(exclude_empty=True).find(mod, module)
    return [t for t in tests if t.examples and t.name.startswith(module)]


def _modules_with_examples() -> list[str]:
    """gebm_ppl's modules whose docstrings hold examples (those needing a missing optional dependency left out)."""
    import gebm_ppl

    out = []
    for name in ["gebm_ppl"] + [m.name for m in pkgutil.walk_packages(gebm_ppl.__path__, "gebm_ppl.")]:
        try:
            if not name.endswith("__main__") and _doctests(name):
                out.append(name)
        except ImportError:  # JAX / NumPyro not installed
            continue
    return out


@pytest.mark.parametrize("module", _modules_with_examples())
def test_api_reference_examples_run(module, tmp_path, monkeypatch):
    """The examples in the module's docstrings (what the API reference shows) run and print what they say."""
    monkeypatch.chdir(tmp_path)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    out: list[str] = []
    for test in _doctests(module):
        runner.run(test, out=out.append)
    assert runner.failures == 0, "".join(out)


def test_gen_results_fills_the_results_section(tmp_path):
    spec = importlib.util.spec_from_file_location("gen_results", DOCS / "gen_results.py")
    gen_results = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen_results)
    table = "## UCI density estimation: test NLL\n\n| dataset | RealNVP (MLE) |\n|---|---|\n| red-wine | 13.1 ± 0.4 |\n"
    run = {"command": "python benchmarks/uci_density.py --seeds 3", "versions": {"gebm_ppl": "0.1.0"},
           "machine": {"platform": "Linux", "cpus": 2}}
    (tmp_path / "uci_density.json").write_text(json.dumps({"run": run, "table": table}))
    (tmp_path / "uci_density.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    docs = tmp_path / "docs"
    assert gen_results.main(["--results", str(tmp_path / "uci_density.json"), "--docs", str(docs)]) == 0
    text = (docs / "uci_density.md").read_text()
    assert "| red-wine | 13.1 ± 0.4 |" in text and "`python benchmarks/uci_density.py --seeds 3`" in text
    assert "Linux, 2 CPUs" in text and "![UCI test NLL" in text
    assert (docs / "uci_density.png").read_bytes() == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "bad.json").write_text(json.dumps({"run": run}))
    assert gen_results.main(["--results", str(tmp_path / "bad.json"), "--docs", str(docs)]) == 2
