"""Run configurations: the TOML schema, ``--set`` overrides, and the base / energy classes they name.

A configuration has these tables (every one optional):

* ``[data]``: ``name``, the dataset (or data file) to fit when the command line gives none;
* ``[base]``: ``class`` (a name registered with :func:`gebm_ppl.register_base`, default ``"RealNVP"``)
  and its constructor keywords; ``dim`` (and ``image_shape``, for image data) come from the data.
  The older ``[realnvp]`` table is read as ``[base] class = "RealNVP"``;
* ``[energy]``: ``class`` (registered with :func:`gebm_ppl.register_energy`, default ``"EnergyMLP"``)
  and its keywords, ``dim`` / ``image_shape`` filled in the same way;
* ``[mle]``, ``[kale]``: keywords of :func:`gebm_ppl.fit_mle` and :func:`gebm_ppl.fit_kale`, the two
  stages of a base with a density;
* ``[adversarial]``: keywords of :func:`gebm_ppl.fit_adversarial`, the one stage of a base without a
  density (a generator);
* ``[sample]``: keywords of :func:`gebm_ppl.sample_latent` (recorded with the run);
* ``[eval]``: ``num_samples`` and ``batch_size`` of :func:`gebm_ppl.evaluate_gebm`, the defaults of
  ``gebm evaluate`` (:data:`EVAL_DEFAULTS` otherwise).

Seeds: a run with seed s builds its base after ``torch.manual_seed(s)`` and its energy after
``torch.manual_seed(init_seed(s, "energy"))`` (:func:`init_seed`), so each part's initial weights depend
on s alone; its evaluation draws Â's base samples with seed :func:`evaluation_seed` (s) = 10000 + s.
"""

from __future__ import annotations

import copy
import inspect
import os
import tomllib
import zlib
from collections.abc import Sequence
from pathlib import Path

import torch

from .. import registry

__all__ = [
    "CONFIG_SECTIONS",
    "EVAL_DEFAULTS",
    "apply_overrides",
    "build_base",
    "build_energy",
    "check_config",
    "evaluation_seed",
    "has_density",
    "init_seed",
    "load_config",
    "parse_override",
    "parse_value",
    "set_dotted",
    "validate_config",
]

CONFIG_SECTIONS = ("data", "base", "energy", "mle", "kale", "adversarial", "sample", "eval")
"""The tables of a run configuration (see the module docstring); ``realnvp`` is read as ``base``."""

EVAL_DEFAULTS = {"num_samples": 100_000, "batch_size": 10_000}
"""The ``[eval]`` options and their defaults: base samples M behind Â, and rows per forward pass."""
EVAL_SEED_OFFSET = 10_000

LATENT_DF_KEY = "latent_df"
"""``[base] latent_df = 1 | 2``: a Student-t latent (:class:`gebm_ppl.StudentTBase`) under the base (build_base)."""
TRAINING_SECTIONS = ("mle", "kale", "adversarial")
DEFAULT_BASE, DEFAULT_ENERGY = "RealNVP", "EnergyMLP"

# Keys that the run sets itself and a configuration may not.
_RESERVED = {"dim", "base", "gebm", "train", "val", "seed", "device", "progress", "callback", "checkpoint_path",
             "checkpoint_every", "resume"}
_FILLED = {"dim", "image_shape"}  # constructor arguments taken from the data when the table leaves them out




def _parameters(fn) -> dict[str, inspect.Parameter]:
    return {n: p for n, p in inspect.signature(fn).parameters.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n != "self"}


def _training_functions() -> dict:
    from ..training import fit_adversarial, fit_kale, fit_mle

    return {"mle": fit_mle, "kale": fit_kale, "adversarial": fit_adversarial}


def _resolve(section: str, values: dict, source: str):
    """The class that ``[section] class = name`` names, looked up in :mod:`gebm_ppl.registry` only."""
    kind = "base" if section == "base" else "energy"
    name = values.get("class", DEFAULT_BASE if section == "base" else DEFAULT_ENERGY)
    if not isinstance(name, str) or name not in registry.COMPONENTS[kind]:
        raise ValueError(f"{source}: [{section}] class {name!r} is not registered (known: "
                         f"{', '.join(registry.names(kind))}; add one with gebm_ppl.register_{kind}).")
    return registry.get(kind, name)


def has_density(config: dict) -> bool:
    """Whether the configured base class has a density (its ``has_density`` attribute, True if it has none)."""
    return bool(getattr(_resolve("base", config.get("base", {}), "configuration"), "has_density", True))


# ------------------------------------------------------------------------------------------ schema
def validate_config(config: dict, source: str = "configuration") -> dict:
    """Check a run configuration and return a normalised deep copy with every table of :data:`CONFIG_SECTIONS`.

    ``[base]`` and ``[energy]`` get their ``class``; a ``[realnvp]`` table becomes ``[base] class = "RealNVP"``.
    Keys are checked against the named class's constructor and the training functions' keywords
    (values are checked by :func:`check_config`).

    Raises:
        ValueError: an unknown section, class or key, a key that the run sets itself (``seed``,
            ``device``, ...), or training tables that do not fit the base (``[mle]``/``[kale]`` for a
            base without a density, ``[adversarial]`` for one with a density).
        TypeError: a section that is not a table.
    """
    config = dict(config)
    if "realnvp" in config:
        if "base" in config:
            raise ValueError(f"{source}: give the base in [base] or in [realnvp] (the older name), not both.")
        legacy = config.pop("realnvp")
        config["base"] = {"class": "RealNVP", **legacy} if isinstance(legacy, dict) else legacy
    unknown = set(config) - set(CONFIG_SECTIONS)
    if unknown:
        raise ValueError(f"{source}: unknown sections {sorted(unknown)}; expected some of {list(CONFIG_SECTIONS)}.")
    out: dict[str, dict] = {}
    for section in CONFIG_SECTIONS:
        values = config.get(section, {})
        if not isinstance(values, dict):
            raise TypeError(f"{source}: [{section}] should be a table of options. Got {type(values).__name__}.")
        values = copy.deepcopy(values)
        if section in ("base", "energy"):
            cls = _resolve(section, values, source)
            values["class"] = cls.__name__
            allowed = [n for n in _parameters(cls.__init__) if n != "dim"]
            allowed += [LATENT_DF_KEY] if section == "base" else []
        elif section in TRAINING_SECTIONS:
            allowed = [n for n in _parameters(_training_functions()[section]) if n not in _RESERVED]
        elif section == "data":
            allowed = ["name"]
        elif section == "eval":
            allowed = list(EVAL_DEFAULTS)
        else:  # sample: checked by sample_latent, which knows each method's options
            allowed = None
        for key in values:
            if key == "class" and section in ("base", "energy"):
                continue
            if key in _RESERVED:
                raise ValueError(f"{source}: [{section}] sets {key!r}, which the run sets itself; remove it.")
            if allowed is not None and key not in allowed:
                raise ValueError(
                    f"{source}: unknown option {key!r} in [{section}]. Known options: {', '.join(allowed)}."
                )
        out[section] = values
    density = bool(getattr(_resolve("base", out["base"], source), "has_density", True))
    wrong = ["adversarial"] if density else ["mle", "kale"]
    used = [s for s in wrong if out[s]]
    if used:
        kind = "has a density: it is trained by [mle] then [kale]" if density else \
            "has no density: it is trained by [adversarial]"
        raise ValueError(f"{source}: the base {out['base']['class']} {kind}, so {', '.join(f'[{s}]' for s in used)} "
                         "does not apply.")
    return out


def load_config(path: str | os.PathLike | None) -> dict:
    """Read a TOML configuration (tomllib) and validate its tables (:data:`CONFIG_SECTIONS`, or ``[realnvp]``).

    Other top-level keys and tables (a benchmark's seeds, ``[kale_joint]``, ``[maf]``, ``[nsf]``,
    ``[select]``, ``[full]``) are left out. ``None`` gives the defaults of the library.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: not valid TOML, or unknown options (see :func:`validate_config`).
    """
    if path is None:
        return validate_config({})
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no configuration file at {str(path)!r}.")
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{str(path)!r} is not valid TOML: {e}") from e
    wanted = {*CONFIG_SECTIONS, "realnvp"}
    return validate_config({k: v for k, v in raw.items() if k in wanted}, source=repr(str(path)))


# ------------------------------------------------------------------------------------------ overrides
def parse_value(text: str):
    """A TOML value (``3``, ``1e-3``, ``[8, 8]``, ``true``, ``"x"``); a bare word is a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_override(text: str) -> tuple[str | None, str, object]:
    """``"[dataset:]section.key=value"`` → (dataset or None, the dotted key, the value by :func:`parse_value`).

    The one parser of ``--set`` overrides, for ``gebm fit`` (through :func:`apply_overrides`) and the benchmarks.

    Raises:
        ValueError: no ``=``, or an empty part of the key.
    """
    name, sep, raw = text.partition("=")
    dataset = None
    if ":" in name:
        dataset, name = (s.strip() for s in name.split(":", 1))
    key = name.strip()
    if not sep or any(not part.strip() for part in key.split(".")):
        raise ValueError(f"override {text!r} should read SECTION.KEY=VALUE (key=value, the value in TOML syntax), "
                         "e.g. kale.epochs=3.")
    return dataset or None, ".".join(p.strip() for p in key.split(".")), parse_value(raw.strip())


def set_dotted(config: dict, key: str, value: object) -> None:
    """Set the dotted ``key`` of ``config`` to ``value``, creating tables as needed.

    Raises:
        ValueError: a part of the key that is a value, not a table.
    """
    parts = key.split(".")
    node = config
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"override {key}: {part!r} is not a table.")
    node[parts[-1]] = value


def apply_overrides(config: dict, overrides: Sequence[str]) -> dict:
    """Apply ``section.key=value`` overrides (value in TOML syntax; a bare word is a string) and validate.

    ``realnvp.KEY`` sets ``base.KEY`` (the older name of the table).

    Example:
        >>> apply_overrides(validate_config({}), ["kale.epochs=3", "energy.hidden=[32, 32]"])["kale"]
        {'epochs': 3}
    """
    config = copy.deepcopy(config)
    for item in overrides:
        dataset, key, value = parse_override(item)
        if dataset is not None:
            raise ValueError(f"override {item!r}: a DATASET: prefix applies to the benchmark, not to a run.")
        section, dot, rest = key.partition(".")
        if not dot:
            raise ValueError(f"override {item!r} should read SECTION.KEY=VALUE, e.g. kale.epochs=3.")
        if section == "realnvp":
            if config.get("base", {}).get("class", DEFAULT_BASE) != "RealNVP":
                raise ValueError(f"override {item!r}: the base is {config['base']['class']}, not RealNVP; "
                                 "set base.KEY instead.")
            key = f"base.{rest}"
        set_dotted(config, key, value)
    return validate_config(config, source="override")


# ------------------------------------------------------------------------------------------ seeds
def init_seed(seed: int, part: str) -> int:
    """The torch seed of the initial weights of ``part`` in a run with seed ``seed``.

    ``"base"``: ``seed`` itself; any other part (``"energy"``, a benchmark's reference flow):
    ``SeedSequence([seed, crc32(part)])``'s first 31-bit word, so that the parts' initial weights do not
    depend on each other's architecture or on what ran before. :func:`gebm_ppl.runs.fit_run` and the UCI
    benchmark both use it.
    """
    seed = int(seed)
    if part == "base":
        return seed
    import numpy as np

    word = np.random.SeedSequence([seed, zlib.crc32(part.encode())]).generate_state(1, dtype=np.uint32)[0]
    return int(word) >> 1


def evaluation_seed(seed: int) -> int:
    """The default seed of Â's base draws when evaluating a run with seed ``seed``: 10000 + ``seed``
    (``gebm evaluate`` and the UCI benchmark)."""
    return EVAL_SEED_OFFSET + int(seed)


# ------------------------------------------------------------------------------------------ build
def _filled(cls, values: dict, dim: int, image_shape: Sequence[int] | None) -> dict:
    kwargs = {k: v for k, v in values.items() if k != "class"}
    params = _parameters(cls.__init__)
    if "dim" in params:
        kwargs["dim"] = int(dim)
    if "image_shape" in params and "image_shape" not in kwargs and image_shape is not None:
        kwargs["image_shape"] = tuple(int(s) for s in image_shape)
    return kwargs


def build_base(config: dict, dim: int, image_shape: Sequence[int] | None = None, *, seed: int | None = None):
    """The base of ``config["base"]``: its class with its keywords, ``dim`` / ``image_shape`` from the data.

    ``latent_df`` (:data:`LATENT_DF_KEY`) in the table gives the base a Student-t latent: 1 or 2 wraps it in
    :class:`gebm_ppl.StudentTBase` (G = G_inner ∘ F_ν⁻¹∘Φ, same inner weights); absent or ``inf`` builds the
    Gaussian-latent base itself. ``seed`` seeds torch's global generator first (the initial weights); None
    uses its current state.

    Raises:
        ValueError: ``latent_df`` other than 1, 2 or inf, or on a base without a density.
    """
    values = dict(config["base"])
    df = values.pop(LATENT_DF_KEY, None)
    if df is not None and (isinstance(df, bool) or not isinstance(df, int | float)):
        raise ValueError(f"[base] {LATENT_DF_KEY} should be 1, 2 or inf (a Gaussian latent). Got {df!r}.")
    cls = _resolve("base", values, "configuration")
    if seed is not None:
        torch.manual_seed(int(seed))
    base = cls(**_filled(cls, values, dim, image_shape))
    if df is None or df == float("inf"):
        return base
    from ..bases.tails import StudentTBase, check_df

    try:
        check_df(df)
    except ValueError as e:
        raise ValueError(f"[base] {LATENT_DF_KEY}: {e}") from None
    if not getattr(base, "has_density", False):
        raise ValueError(f"[base] {LATENT_DF_KEY} = {df!r} needs a base with a density; {cls.__name__} has none.")
    return StudentTBase(base, df=df)


def build_energy(config: dict, dim: int, image_shape: Sequence[int] | None = None, *, seed: int | None = None):
    """The energy of ``config["energy"]``, as :func:`build_base` builds the base."""
    cls = _resolve("energy", config["energy"], "configuration")
    if seed is not None:
        torch.manual_seed(int(seed))
    return cls(**_filled(cls, config["energy"], dim, image_shape))


def _check_type(section: str, key: str, value: object, param: inspect.Parameter) -> None:
    default = param.default
    if default is inspect.Parameter.empty or default is None or value is None:
        return
    kinds = {bool: (bool,), int: (int,), float: (int, float), str: (str,), tuple: (list, tuple)}
    for kind, ok in kinds.items():
        if isinstance(default, kind):
            if not isinstance(value, ok) or (kind is not bool and isinstance(value, bool)):
                article = "an" if kind is int else "a"
                raise TypeError(f"[{section}] {key!r} should be {article} {kind.__name__}, like its default "
                                f"{default!r}. "
                                f"Got {value!r}.")
            return


def check_config(config: dict, dim: int, image_shape: Sequence[int] | None = None) -> None:
    """Check a configuration's values before any training: build the base and the energy (cheap), and check
    the training keywords' types against their defaults and the required ones (``[adversarial] steps``).

    The global torch RNG is left as it was.

    Raises:
        ValueError, TypeError: the message of the constructor or of the check, naming the option.
    """
    with torch.random.fork_rng(devices=[]):
        base = build_base(config, dim, image_shape)
        energy = build_energy(config, dim, image_shape)
    for key, value in config.get("eval", {}).items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"[eval] {key!r} should be a positive integer. Got {value!r}.")
    stages = ("mle", "kale") if has_density(config) else ("adversarial",)
    functions = _training_functions()
    for section in stages:
        params = _parameters(functions[section])
        for key, value in config[section].items():
            _check_type(section, key, value, params[key])
        missing = [n for n, p in params.items() if p.default is inspect.Parameter.empty and n not in _RESERVED
                   and n not in config[section]]
        if missing:
            raise ValueError(f"[{section}] needs {', '.join(repr(m) for m in missing)} "
                             f"(e.g. --set {section}.{missing[0]}=...).")
        _check_ranges(section, functions[section], params, config[section], base, energy, dim)


def _check_ranges(section: str, fn, params: dict, values: dict, base, energy, dim: int) -> None:
    """The training function's own range checks (``steps >= 1``, ``burst_every >= 1``, ...), without training.

    ``fn`` is called on a copy of the networks with every parameter frozen: it checks its keywords first and
    then stops with "no trainable parameters". Only an error that names one of ``values``' keys is reported.
    """
    from ..gebm import GEBM

    base, energy = copy.deepcopy(base), copy.deepcopy(energy)
    for p in [*base.parameters(), *energy.parameters()]:
        p.requires_grad_(False)
    model = base if section == "mle" else GEBM(base, energy)
    batch = values.get("batch_size", params["batch_size"].default if "batch_size" in params else 2)
    rows = batch if isinstance(batch, int) and not isinstance(batch, bool) and 2 <= batch <= 100_000 else 2
    train = torch.zeros(rows, dim)
    kwargs = dict(values)
    if "progress" in params:
        kwargs["progress"] = False
    with torch.random.fork_rng(devices=[]):
        try:
            fn(model, train, **kwargs)
        except (ValueError, TypeError) as e:
            named = [k for k in values if f"'{k}'" in str(e)]
            if named:
                raise type(e)(f"[{section}] {named[0]}: {e}") from None
