"""Packaging for gebm_ppl: Generalized Energy Based Models for Pyro and NumPyro."""

from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="gebm_ppl",
    version="0.1.0",
    description="Generalized Energy Based Models (Arbel, Zhou & Gretton, ICLR 2021) for Pyro and NumPyro",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["gebm_ppl", "gebm_ppl.*"]),
    python_requires=">=3.11",
    install_requires=[
        "torch>=2.1,<3",
        "pyro-ppl>=1.9,<2",
        "nflows>=0.14,<0.15",
        "numpy>=1.24",
        "arviz>=0.17,<0.24",
        "h5py>=3.9",
        "tqdm>=4.60",
        "matplotlib>=3.7",
        "pandas>=2",
        "zuko>=1.1,<2",
        "scikit-learn>=1.3",
    ],
    extras_require={
        "jax": ["jax>=0.4.30", "jaxlib>=0.4.30", "numpyro>=0.15"],
        "test": ["pytest>=8", "hypothesis>=6.100", "ruff>=0.5"],
        # django-static-mathjax: MathJax 3's own files on PyPI, served from the site (docs/hooks/offline_assets.py;
        # MathJax 4 moves them, hence <4); pygments colours the code without the theme's CDN highlight.js
        "docs": ["mkdocs>=1.6", "mkdocstrings>=0.25", "mkdocstrings-python>=1.10", "pymdown-extensions>=10",
                 "pygments>=2.16", "django-static-mathjax>=3.2.2,<4"],
    },
    entry_points={"console_scripts": ["gebm=gebm_ppl.cli:main"]},
)
