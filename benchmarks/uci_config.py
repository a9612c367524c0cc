"""Configurations of the UCI benchmark: models/uci/<dataset>.toml, the --full overrides and --set key=value.

``--set`` values are parsed by :func:`gebm_ppl.runs.parse_override` (the parser of ``gebm fit --set``).
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path

from gebm_ppl.runs import parse_override, set_dotted, validate_config

__all__ = ["CONFIG_DIR", "EPOCH_KEYS", "PAPER_CONFIG_DIR", "apply_override", "apply_overrides", "load_config",
           "parse_override", "run_config"]

CONFIG_DIR = Path(__file__).resolve().parents[1] / "models" / "uci"
PAPER_CONFIG_DIR = CONFIG_DIR.parent / "uci-paper"  # --protocol kexpfam-paper reads these when present
# the sections whose "epochs" --epochs sets
EPOCH_KEYS = ("mle.epochs", "kale.epochs", "kale_joint.epochs", "maf.epochs", "nsf.epochs")
_SECTIONS = {"realnvp", "mle", "energy", "kale", "kale_joint", "maf", "nsf", "eval", "select"}

apply_override = set_dotted
"""Set the dotted key of a configuration (:func:`gebm_ppl.runs.set_dotted`)."""


def apply_overrides(config: dict, dataset: str, overrides) -> dict:
    """Apply the parsed ``--set [DATASET:]KEY=VALUE`` overrides (:func:`parse_override` triples) that concern
    ``dataset``: those without a dataset, and those naming it. Returns ``config``, changed in place."""
    for ds, key, value in overrides:
        if ds is None or ds == dataset:
            apply_override(config, key, value)
    return config


def _merge(into: dict, new: dict) -> dict:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = copy.deepcopy(v)
    return into


def load_config(dataset: str, full: bool = False, config_dir: str | Path | None = None) -> dict:
    """The configuration of ``dataset``: its TOML file, with its ``[full]`` table merged in when ``full``.

    Raises:
        FileNotFoundError: no ``<dataset>.toml`` in ``config_dir``.
        ValueError: an unknown top-level section.
    """
    folder = Path(config_dir) if config_dir is not None else CONFIG_DIR
    path = folder / f"{dataset}.toml"
    if not path.is_file():
        known = sorted(p.stem for p in folder.glob("*.toml"))
        raise FileNotFoundError(f"no benchmark configuration {str(path)!r} (configurations: {', '.join(known)}).")
    with open(path, "rb") as f:
        config = tomllib.load(f)
    full_table = config.pop("full", {})
    unknown = set(k for k, v in config.items() if isinstance(v, dict)) - _SECTIONS
    if unknown:
        raise ValueError(f"{str(path)!r}: unknown sections {sorted(unknown)}; expected some of {sorted(_SECTIONS)}.")
    if full:
        _merge(config, full_table)
    config["source"] = str(path)
    return config


def run_config(config: dict) -> dict:
    """The GEBM part of a benchmark configuration (``[realnvp]``, ``[energy]``, ``[mle]``, ``[kale]``) as a
    validated run configuration (:func:`gebm_ppl.runs.validate_config`), as ``gebm fit`` reads the same file."""
    return validate_config({k: config[k] for k in ("realnvp", "energy", "mle", "kale") if k in config},
                           source=repr(config.get("source", "benchmark configuration")))
