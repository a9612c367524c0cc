"""The user guide builds with `mkdocs build --strict` and loads nothing from another host (maths offline), its
Python code blocks run, and every example in examples/ runs (with GEBM_QUICK=1: tiny settings)."""

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
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

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


# what `mkdocs build` needs (the docs extra): without it the site tests are skipped, saying which is missing
DOCS_MODULES = {"mkdocs": "mkdocs", "mkdocstrings": "mkdocstrings",
                "mkdocstrings_handlers.python": "mkdocstrings-python", "pymdownx": "pymdown-extensions",
                "pygments": "pygments", "mathjax": "django-static-mathjax"}


def _missing_docs_packages() -> list[str]:
    missing = []
    for module, package in DOCS_MODULES.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # a dotted name whose parent is missing
            found = False
        if not found:
            missing.append(package)
    return missing


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The user guide built once with ``mkdocs build --strict`` into a scratch folder."""
    missing = _missing_docs_packages()
    if missing:
        pytest.skip(f"the docs extra is not installed (missing {', '.join(missing)}): pip install -e '.[docs]'")
    site = tmp_path_factory.mktemp("docs") / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
         "--site-dir", str(site)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return site


def test_docs_build_strict(site):
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


class _Assets(HTMLParser):
    """The URLs a page loads: ``<img src>``, ``<script src>`` and ``<link href>`` (stylesheets, icons; not the
    links that only name a page, such as ``rel="canonical"``)."""

    TAGS = {"img": "src", "script": "src", "link": "href"}
    NAMING_RELS = {"canonical", "alternate", "prev", "next", "author", "license"}

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "link" and set((attrs.get("rel") or "").lower().split()) & self.NAMING_RELS:
            return
        url = attrs.get(self.TAGS.get(tag, ""))
        if url:
            self.urls.append((tag, url))


def page_assets(page: Path) -> list[tuple[str, str]]:
    parser = _Assets()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser.urls


def resolve(site: Path, page: Path, url: str) -> Path | None:
    """The file in ``site`` that ``url`` on ``page`` names: relative to the page, or to the site root for
    ``/path`` (as in 404.html); None for a URL on another host."""
    parts = urlsplit(url)
    if parts.scheme or parts.netloc:
        return None
    path = unquote(parts.path)
    target = (site / path.lstrip("/") if path.startswith("/") else page.parent / path).resolve()
    return target / "index.html" if target.is_dir() else target


def test_docs_site_assets_resolve(site):
    """Every page's images, scripts and stylesheets resolve to files of the built site, none comes from another
    host (the docs work offline), and MathJax is served from the site: formulas render without a network."""
    pages = sorted(site.rglob("*.html"))
    assert len(pages) >= 17
    missing, external = [], []
    images = set()
    for page in pages:
        for tag, url in page_assets(page):
            if url.startswith("data:"):
                continue
            target = resolve(site, page, url)
            if target is None:
                external.append(f"{page.relative_to(site)}: <{tag}> {url}")
            elif not target.is_file() or site.resolve() not in target.parents:
                missing.append(f"{page.relative_to(site)}: <{tag}> {url}")
            elif tag == "img":
                images.add(target.relative_to(site.resolve()).as_posix())
    assert not missing, "assets missing from the built site:\n" + "\n".join(missing)
    assert not external, "assets loaded from another host (not offline):\n" + "\n".join(external)
    # the figures of the results pages are among them
    assert {"results/latent_sampling_grids.png", "results/uci_density.png"} <= images
    # maths: arithmatex's markup, typeset by the MathJax that the site itself serves (a real script, not a stub)
    concepts = site / "concepts" / "index.html"
    assert 'class="arithmatex"' in concepts.read_text(encoding="utf-8")
    scripts = [url for tag, url in page_assets(concepts) if tag == "script"]
    mathjax = [resolve(site, concepts, url) for url in scripts if url.endswith("mathjax/tex-svg-full.js")]
    assert len(mathjax) == 1 and mathjax[0].stat().st_size > 1_000_000, scripts
    assert (site / "javascripts" / "mathjax" / "LICENSE").is_file()
    assert ".highlight .k" in (site / "css" / "pygments.css").read_text()  # code colours without highlight.js


def test_docs_asset_check_catches_a_missing_file(tmp_path):
    """The asset check itself: a page naming an image that is not there is reported, a present one is not."""
    page = tmp_path / "page" / "index.html"
    page.parent.mkdir()
    (tmp_path / "here.png").write_bytes(b"\x89PNG")
    page.write_text('<img src="../here.png"><img src="../gone.png"><script src="https://cdn.example/x.js"></script>'
                    '<link rel="stylesheet" href="../css/"><script src="//cdn.example/y.js"></script>'
                    '<img src="/here.png"><link rel="canonical" href="https://example.org/page/">')
    urls = page_assets(page)
    assert [tag for tag, _ in urls] == ["img", "img", "script", "link", "script", "img"]
    targets = [resolve(tmp_path, page, url) for _, url in urls]
    assert targets[0].is_file() and not targets[1].is_file() and targets[2] is None and targets[4] is None
    assert targets[3] == (tmp_path / "css").resolve() and not targets[3].is_file()
    assert targets[5] == targets[0]

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
