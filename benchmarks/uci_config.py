"""Configurations of the UCI benchmark: models/uci/<dataset>.toml, the --full overrides and --set key=value."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path

__all__ = ["CONFIG_DIR", "EPOCH_KEYS", "apply_override", "load_config", "parse_override"]

CONFIG_DIR = Path(__file__).resolve().parents[1] / "models" / "uci"
# the sections whose "epochs" --epochs sets
EPOCH_KEYS = ("mle.epochs", "kale.epochs", "kale_joint.epochs", "maf.epochs", "nsf.epochs")
_SECTIONS = {"realnvp", "mle", "energy", "kale", "kale_joint", "maf", "nsf", "eval"}


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


def parse_override(text: str) -> tuple[str | None, str, object]:
    """``"[dataset:]section.key=value"`` → (dataset or None, dotted key, value parsed as a TOML value).

    A value that is not valid TOML (``--set energy.activation=elu``) is kept as a string.
    """
    if "=" not in text:
        raise ValueError(f"--set expects key=value (e.g. kale.epochs=20). Got {text!r}.")
    key, raw = text.split("=", 1)
    dataset = None
    if ":" in key:
        dataset, key = key.split(":", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ValueError(f"--set: bad key {key!r} in {text!r}.")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return dataset, key, value


def apply_override(config: dict, key: str, value: object) -> None:
    """Set the dotted ``key`` of ``config`` to ``value`` (creating tables as needed)."""
    parts = key.split(".")
    node = config
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"--set {key}: {part!r} is not a table.")
    node[parts[-1]] = value
