"""MkDocs hook: every script and stylesheet of the site is served from the site itself, so the docs work offline.

- **Maths.** ``pymdownx.arithmatex`` (generic mode) leaves ``\\( … \\)`` and ``\\[ … \\]`` in
  ``<span class="arithmatex">``; MathJax typesets them in the browser. Instead of loading MathJax from a CDN
  (raw TeX offline and in CI), this hook copies MathJax 3's self-contained ``tex-svg-full.js`` (every TeX
  extension, SVG output: no font files to fetch) and its licence out of the ``django-static-mathjax`` package
  (MathJax's own distribution on PyPI) into ``javascripts/mathjax/``.
- **Code colours.** ``pymdownx.highlight`` marks code up with Pygments' classes; the theme's highlight.js
  (a CDN script) is turned off in ``mkdocs.yml`` and this hook writes Pygments' stylesheet for those classes
  as ``css/pygments.css``.

``mkdocs.yml`` lists both files (``extra_javascript``, ``extra_css``); ``tests/test_docs.py`` checks that every
script, stylesheet and image of the built site resolves to a file in it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

MATHJAX_DIR = "javascripts/mathjax"  # where MathJax goes in the built site
MATHJAX_FILES = {"tex-svg-full.js": "es5/tex-svg-full.js", "LICENSE": "LICENSE"}  # site name -> path in package
PYGMENTS_CSS = "css/pygments.css"
PYGMENTS_STYLE = "default"


def mathjax_root() -> Path:
    """The MathJax distribution inside the installed ``django-static-mathjax`` (import name ``mathjax``)."""
    spec = importlib.util.find_spec("mathjax")
    if spec is None or not spec.submodule_search_locations:
        raise PluginError("offline maths needs the 'django-static-mathjax' package (MathJax's JS from PyPI): "
                          "pip install -e '.[docs]'")
    root = Path(next(iter(spec.submodule_search_locations))) / "static" / "mathjax"
    missing = [p for p in MATHJAX_FILES.values() if not (root / p).is_file()]
    if missing:
        raise PluginError(f"the installed 'mathjax' package at {root.parent.parent} is not django-static-mathjax "
                          f"(expected {missing} under {root}); pip install -e '.[docs]'")
    return root


def pygments_css(style: str = PYGMENTS_STYLE) -> str:
    """Pygments' stylesheet for the ``.highlight`` blocks that ``pymdownx.highlight`` writes."""
    try:
        from pygments.formatters import HtmlFormatter
    except ImportError as e:
        raise PluginError("code colours need the 'pygments' package: pip install -e '.[docs]'") from e
    return f"/* Pygments style {style!r}, written by docs/hooks/offline_assets.py */\n" + \
        HtmlFormatter(style=style).get_style_defs(".highlight")


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add MathJax and the Pygments stylesheet to the site (``mkdocs build`` writes them, ``serve`` serves them)."""
    root = mathjax_root()
    for name, rel in MATHJAX_FILES.items():
        files.append(File.generated(config, f"{MATHJAX_DIR}/{name}", abs_src_path=str(root / rel)))
    files.append(File.generated(config, PYGMENTS_CSS, content=pygments_css()))
    return files
