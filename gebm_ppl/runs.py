"""Run directories: fit a GEBM (MLE base, then KALE) into a folder that resumes, evaluate and sample it.

A run directory holds (every file written atomically):

* ``run.json``: what was run (data source, seed, configuration), its status and summary;
* ``data.h5``: the preprocessed train / validation / test splits the run used;
* ``mle.ckpt`` and ``kale.ckpt``: the training checkpoints of the two stages (resumable);
* ``gebm.pt``: the trained GEBM (:meth:`gebm_ppl.GEBM.load` reads it);
* ``history.json``: both stages' :class:`~gebm_ppl.training.TrainingHistory`;
* ``evaluation-<split>.json``: what :func:`evaluate_run` measured.

Re-running :func:`fit_run` on the same folder with the same data, seed and configuration continues
an interrupted run from its last checkpoint (the training loops resume exactly).
"""

from __future__ import annotations

import copy
import inspect
import json
import math
import os
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import __version__
from ._io import atomic_open
from .bases import RealNVP
from .energies import EnergyMLP
from .gebm import GEBM

__all__ = [
    "CONFIG_SECTIONS",
    "Run",
    "RunMismatch",
    "SampleFiles",
    "apply_overrides",
    "evaluate_run",
    "fit_run",
    "load_config",
    "load_data",
    "load_run",
    "read_samples",
    "sample_run",
    "validate_config",
    "write_json",
]

RUN_FORMAT = "gebm_ppl.run"
RUN_VERSION = 1
RUN_FILE, DATA_FILE, MLE_CKPT, KALE_CKPT, GEBM_FILE, HISTORY_FILE = (
    "run.json", "data.h5", "mle.ckpt", "kale.ckpt", "gebm.pt", "history.json",
)

# Keys that fit_run sets itself and a configuration may not.
_RESERVED = {"dim", "base", "gebm", "train", "val", "seed", "device", "progress", "callback", "checkpoint_path",
             "checkpoint_every", "resume"}


def _keywords(fn) -> list[str]:
    return [n for n, p in inspect.signature(fn).parameters.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n not in _RESERVED]


def _config_sections() -> dict[str, list[str]]:
    from .training import fit_kale, fit_mle

    return {
        "realnvp": _keywords(RealNVP.__init__)[1:],  # minus self
        "energy": _keywords(EnergyMLP.__init__)[1:],
        "mle": _keywords(fit_mle),
        "kale": _keywords(fit_kale),
    }


CONFIG_SECTIONS = ("realnvp", "energy", "mle", "kale")
"""Sections of a run configuration: ``realnvp`` (:class:`gebm_ppl.RealNVP` arguments, the base), ``energy``
(:class:`gebm_ppl.EnergyMLP`), ``mle`` (:func:`gebm_ppl.fit_mle`) and ``kale`` (:func:`gebm_ppl.fit_kale`)."""


class RunMismatch(ValueError):
    """The run directory holds a run with other data, seed or configuration."""


# ------------------------------------------------------------------------------------------ config
def validate_config(config: dict, source: str = "configuration") -> dict:
    """Check a run configuration and return a normalised deep copy with all four sections.

    The configuration maps each of :data:`CONFIG_SECTIONS` to keyword arguments of the matching
    constructor or training function; unknown sections and keys are errors (other top-level
    tables, such as a benchmark's own settings, are ignored when ``source`` is a TOML file: see
    :func:`load_config`).

    Raises:
        ValueError: an unknown key, or a key that the run sets itself (``seed``, ``device``, ...).
        TypeError: a section that is not a table.
    """
    allowed = _config_sections()
    out: dict[str, dict] = {}
    for section in CONFIG_SECTIONS:
        values = config.get(section, {})
        if not isinstance(values, dict):
            raise TypeError(f"{source}: [{section}] should be a table of options. Got {type(values).__name__}.")
        for key in values:
            if key in _RESERVED:
                raise ValueError(f"{source}: [{section}] sets {key!r}, which the run sets itself; remove it.")
            if key not in allowed[section]:
                raise ValueError(
                    f"{source}: unknown option {key!r} in [{section}]. Known options: {', '.join(allowed[section])}."
                )
        out[section] = copy.deepcopy(values)
    unknown = set(config) - set(CONFIG_SECTIONS)
    if unknown:
        raise ValueError(f"{source}: unknown sections {sorted(unknown)}; expected some of {list(CONFIG_SECTIONS)}.")
    return out


def load_config(path: str | os.PathLike | None) -> dict:
    """Read a TOML configuration (tomllib) and validate its ``realnvp``, ``energy``, ``mle`` and ``kale`` tables.

    These are the tables of the UCI benchmark's ``models/uci/<dataset>.toml`` that describe the
    base, the energy and the two training stages; other top-level keys and tables (the
    benchmark's seeds, ``[kale_joint]``, ``[maf]``, ``[nsf]``, ``[eval]``, ``[full]``) are left
    out. ``None`` gives the defaults of the library (all sections empty).

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
    return validate_config({k: v for k, v in raw.items() if k in CONFIG_SECTIONS}, source=repr(str(path)))


def _parse_value(text: str):
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare word: a string


def apply_overrides(config: dict, overrides: Sequence[str]) -> dict:
    """Apply ``section.key=value`` overrides (value in TOML syntax; a bare word is a string).

    Example:
        >>> apply_overrides(validate_config({}), ["kale.epochs=3", "energy.hidden=[32, 32]"])["kale"]
        {'epochs': 3}
    """
    config = copy.deepcopy(config)
    for item in overrides:
        name, sep, text = item.partition("=")
        section, dot, key = name.strip().partition(".")
        if not sep or not dot or not key:
            raise ValueError(f"override {item!r} should read SECTION.KEY=VALUE, e.g. kale.epochs=3.")
        config.setdefault(section, {})[key.strip()] = _parse_value(text.strip())
    return validate_config(config, source="override")


# ------------------------------------------------------------------------------------------ data
def load_data(
    source: str | os.PathLike,
    seed: int = 0,
    *,
    data_dir: str | os.PathLike | None = None,
    key: str | None = None,
    delimiter: str | None = None,
    columns: Sequence[str | int] | None = None,
    drop: Sequence[str | int] | None = None,
):
    """A benchmark dataset by name (:func:`gebm_ppl.data.load`) or a user file (:func:`gebm_ppl.userdata.load_file`).

    A name registered in :data:`gebm_ppl.data.DATASETS` is a dataset; anything else must be an
    existing CSV, NPY or HDF5 file.

    Raises:
        ValueError: neither a known dataset nor an existing file, or options that do not apply
            (file options for a dataset, ``data_dir`` for a file).
    """
    from . import data as gdata
    from .userdata import load_file

    text = os.fspath(source)
    name = text.strip().lower().replace("_", "-")
    file_options = {"key": key, "delimiter": delimiter, "columns": columns, "drop": drop}
    if name in gdata.DATASETS and not Path(text).is_file():
        used = [k for k, v in file_options.items() if v is not None]
        if used:
            raise ValueError(f"{', '.join(used)} apply to data files, not to the dataset {name!r}.")
        return gdata.load(name, data_dir=data_dir, seed=seed)
    if not Path(text).exists():
        raise ValueError(
            f"{text!r} is neither a known dataset ({', '.join(gdata.DATASETS)}) nor an existing data file."
        )
    if data_dir is not None:
        raise ValueError("'data_dir' applies to named datasets, not to a data file.")
    return load_file(text, seed=seed, **file_options)


def _data_identity(metadata: dict) -> dict:
    """What must agree for a run to be resumed on the same data."""
    return {
        "name": metadata.get("name"),
        "protocol": metadata.get("protocol"),
        "seed": metadata.get("seed"),
        "sources": sorted((s.get("path"), s.get("sha256"), s.get("key")) for s in metadata.get("sources", [])),
        "sizes": metadata.get("sizes"),
    }


# ------------------------------------------------------------------------------------------ files
def write_json(path: str | os.PathLike, obj: object) -> None:
    """``json.dump`` written atomically (non-finite floats become null)."""

    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        if isinstance(v, np.generic):
            return clean(v.item())
        return v

    with atomic_open(path, "w") as f:
        json.dump(clean(obj), f, indent=2)
        f.write("\n")


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"{str(path)!r} is not a readable run file: {e}") from e


def _write_data(path: Path, data) -> str:
    from .data import cache_key, write_cache

    key = cache_key(run_data=_data_identity(data.metadata))
    splits = {"train": data.train, "val": data.val, "test": data.test}
    write_cache(path, key, splits, data.metadata)
    return key


def _read_data(run_dir: Path, info: dict):
    from .data import UCIData, read_cache

    cached = read_cache(run_dir / DATA_FILE, info["data_key"])
    if cached is None:
        raise ValueError(f"{str(run_dir / DATA_FILE)!r} is missing or corrupt; re-run 'gebm fit' into a new folder.")
    splits, metadata = cached
    return UCIData(splits["train"], splits["val"], splits["test"], metadata)


# ------------------------------------------------------------------------------------------ fit
@dataclass
class Run:
    """A fitted run directory, as :func:`load_run` reads it.

    Attributes:
        path: the folder.
        gebm: the trained :class:`gebm_ppl.GEBM` (eval mode).
        data: the splits (:class:`gebm_ppl.data.UCIData`, in the model's whitened space).
        config: the run configuration.
        info: the contents of ``run.json``.
    """

    path: Path
    gebm: GEBM
    data: object
    config: dict
    info: dict


def _build(dim: int, config: dict, seed: int) -> GEBM:
    torch.manual_seed(seed)  # the initial weights are a function of the seed
    return GEBM(RealNVP(dim, **config["realnvp"]), EnergyMLP(dim, **config["energy"]))


def _summary(mle, kale) -> dict:
    def at_best(h, key):
        rows = [r for r in h.records if r.get("epoch") == h.best_epoch]
        return rows[-1].get(key) if rows else None

    return {
        "mle": {"epochs": len(mle.records), "best_val_nll": mle.best_value, "wall_time": mle.wall_time,
                "steps": mle.total_steps, "stop_reason": mle.stop_reason},
        "kale": {"epochs": len(kale.records), "best_val_nll": kale.best_value, "monitor": kale.monitor,
                 "best_epoch": kale.best_epoch, "wall_time": kale.wall_time, "steps": kale.total_steps,
                 "stop_reason": kale.stop_reason, "base_val_nll": at_best(kale, "base_val_nll")},
    }


def fit_run(
    run_dir: str | os.PathLike,
    data,
    config: dict | None = None,
    *,
    seed: int = 0,
    device: str | None = None,
    progress: bool | None = None,
    checkpoint_every: int | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] | None = None,
) -> Run:
    """Fit a GEBM into ``run_dir``: a RealNVP base by maximum likelihood, then the energy by KALE.

    The base is :class:`gebm_ppl.RealNVP` (``config["realnvp"]``), the energy
    :class:`gebm_ppl.EnergyMLP` (``config["energy"]``); :func:`gebm_ppl.fit_mle` (``config["mle"]``)
    trains the base with early stopping on the validation NLL, then :func:`gebm_ppl.fit_kale`
    (``config["kale"]``; set ``train_base = true`` there to train the base too) the energy and c.
    Both stages checkpoint into the folder; when it already holds an unfinished run with the same
    data, seed and configuration, the run continues from the last checkpoints.

    Args:
        run_dir: the run folder (created if needed).
        data: a :class:`gebm_ppl.data.UCIData` (from :func:`load_data`).
        config: the run configuration (:func:`load_config`); None for the defaults.
        seed: seed of the initial weights and of both training loops.
        device: ``"cpu"``, ``"cuda"``, ... (default: CPU).
        progress: tqdm bars (None: only on a terminal).
        checkpoint_every: checkpoint every this many optimizer steps (default: every epoch).
        overwrite: discard a run already in ``run_dir`` and start afresh.
        log: called with one-line progress messages.

    Returns:
        the fitted :class:`Run`.

    Raises:
        RunMismatch: ``run_dir`` holds a run with other data, seed or configuration (and not ``overwrite``).
        gebm_ppl.TrainingDiverged: a training loss became non-finite (the checkpoints stay).
    """
    from .training import fit_kale, fit_mle

    say = log or (lambda msg: None)
    config = validate_config(config or {})
    run_dir = Path(run_dir)
    identity = {"data": _data_identity(data.metadata), "seed": int(seed), "config": config}
    info_path = run_dir / RUN_FILE
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if info_path.exists() and not overwrite:
        old = _read_json(info_path)
        if old.get("format") != RUN_FORMAT:
            raise RunMismatch(f"{str(run_dir)!r} holds a {RUN_FILE} that is not a gebm_ppl run.")
        old_identity = json.loads(json.dumps(old.get("identity")))
        if old_identity != json.loads(json.dumps(identity)):
            diff = [k for k in identity if json.dumps(old_identity.get(k), sort_keys=True)
                    != json.dumps(identity[k], sort_keys=True)]
            raise RunMismatch(
                f"{str(run_dir)!r} holds a run with another {' and '.join(diff)}; "
                "choose a new output folder, or pass overwrite=True (gebm fit --overwrite) to start afresh."
            )
        if old.get("status") == "done" and (run_dir / GEBM_FILE).is_file():
            say(f"{run_dir} already holds this finished run; nothing to do.")
            return load_run(run_dir)
        say(f"continuing the unfinished run in {run_dir}")
        started = old.get("started", started)
    elif overwrite:
        stale = [run_dir / n for n in (RUN_FILE, MLE_CKPT, KALE_CKPT, GEBM_FILE, HISTORY_FILE)]
        for path in [*stale, *run_dir.glob("evaluation-*.json")]:
            path.unlink(missing_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    data_key = _write_data(run_dir / DATA_FILE, data)
    info = {
        "format": RUN_FORMAT,
        "version": RUN_VERSION,
        "gebm_ppl_version": __version__,
        "identity": identity,
        "data_key": data_key,
        "dataset": {k: data.metadata.get(k) for k in ("name", "protocol", "description", "dim", "sizes")},
        "status": "fitting",
        "started": started,
    }
    write_json(info_path, info)

    gebm = _build(data.dim, config, seed)
    if device is not None:
        gebm.to(device)
    common = dict(seed=int(seed), progress=progress, checkpoint_every=checkpoint_every)
    stages = {}
    for stage, path in (("mle", run_dir / MLE_CKPT), ("kale", run_dir / KALE_CKPT)):
        resume = path if path.is_file() else None
        if resume is not None:
            say(f"{stage}: resuming from {path}")
        else:
            say(f"{stage}: training")
        if stage == "mle":
            history = fit_mle(gebm.base, data.train, data.val, checkpoint_path=path, resume=resume,
                              **common, **config["mle"])
            gebm.base.eval()
        else:
            history = fit_kale(gebm, data.train, data.val, checkpoint_path=path, resume=resume,
                               **common, **config["kale"])
        stages[stage] = history
        say(f"{stage}: {history!r}")
    gebm.eval()
    histories = {k: h.to_dict() for k, h in stages.items()}
    write_json(run_dir / HISTORY_FILE, histories)
    gebm.save(run_dir / GEBM_FILE, run_dir=str(run_dir.resolve()), seed=int(seed))
    info.update(status="done", finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                summary=_summary(stages["mle"], stages["kale"]))
    write_json(info_path, info)
    return Run(run_dir, gebm.cpu(), data, config, info)


def load_run(run_dir: str | os.PathLike) -> Run:
    """Read a finished run directory (the trained GEBM, its data splits and ``run.json``).

    Raises:
        FileNotFoundError: ``run_dir`` is not a folder or holds no ``run.json``.
        ValueError: the run is unfinished or its files are unreadable.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"no run directory at {str(run_dir)!r}.")
    if not (run_dir / RUN_FILE).is_file():
        raise FileNotFoundError(f"{str(run_dir)!r} is not a run directory (no {RUN_FILE}); create one with 'gebm fit'.")
    info = _read_json(run_dir / RUN_FILE)
    if info.get("format") != RUN_FORMAT:
        raise ValueError(f"{str(run_dir / RUN_FILE)!r} is not a gebm_ppl run file.")
    if info.get("status") != "done" or not (run_dir / GEBM_FILE).is_file():
        raise ValueError(f"the run in {str(run_dir)!r} is unfinished; re-run the same 'gebm fit' command to finish it.")
    gebm = GEBM.load(run_dir / GEBM_FILE).eval()
    return Run(run_dir, gebm, _read_data(run_dir, info), info["identity"]["config"], info)


# ------------------------------------------------------------------------------------------ evaluate
SPLITS = ("train", "val", "test")


def evaluate_run(
    run_dir: str | os.PathLike | Run, split: str = "test", *, num_samples: int = 100_000, seed: int = 0
) -> dict:
    """Evaluate a fitted run on a split (:func:`gebm_ppl.evaluation.evaluate_gebm`) and save the figures.

    ``run_dir`` is a run folder or its :class:`Run`. Writes ``evaluation-<split>.json`` in the
    run directory and returns its contents: the
    :class:`~gebm_ppl.evaluation.GEBMEvaluation` fields plus ``split``, ``dataset`` and
    ``nll_units`` (the NLLs are in nats per example in the model's whitened space).
    """
    from .evaluation import evaluate_gebm

    if split not in SPLITS:
        raise ValueError(f"'split' should be one of {list(SPLITS)}. Got {split!r}.")
    run = run_dir if isinstance(run_dir, Run) else load_run(run_dir)
    x = getattr(run.data, split)
    ev = evaluate_gebm(run.gebm, x, num_samples=num_samples, seed=seed)
    out = {"split": split, "dataset": run.info.get("dataset", {}).get("name"),
           "nll_units": "nats per example, whitened space", "seed": int(seed), **ev.to_dict()}
    write_json(run.path / f"evaluation-{split}.json", out)
    return out


# ------------------------------------------------------------------------------------------ sample
@dataclass
class SampleFiles:
    """What :func:`sample_run` wrote and returned.

    Attributes:
        idata: the :class:`arviz.InferenceData` of :func:`gebm_ppl.sample_latent`.
        hdf5: path of the HDF5 file of samples.
        netcdf: path of the netCDF file of the InferenceData.
    """

    idata: object
    hdf5: Path
    netcdf: Path


def _unwhiten(x: np.ndarray, metadata: dict) -> np.ndarray | None:
    white = (metadata.get("preprocessing") or {}).get("whitening")
    if not white or "mean" not in white or "matrix" not in white:
        return None
    mean, matrix = np.asarray(white["mean"]), np.asarray(white["matrix"])
    return np.linalg.solve(matrix.T, x.reshape(-1, x.shape[-1]).T).T.reshape(x.shape) + mean


def _attr(v):
    if isinstance(v, bool | np.bool_):
        return int(v)
    if v is None:
        return ""
    return v


def sample_run(
    run_dir: str | os.PathLike | Run,
    out: str | os.PathLike | None = None,
    *,
    netcdf: str | os.PathLike | None = None,
    method: str = "nuts",
    backend: str = "pyro",
    num_samples: int = 1000,
    warmup_steps: int = 500,
    num_chains: int = 4,
    temperature: float = 1.0,
    seed: int = 0,
    progress: bool = False,
    **method_kwargs,
) -> SampleFiles:
    """Sample a fitted run's GEBM in latent space (:func:`gebm_ppl.sample_latent`) and write the draws.

    The HDF5 file (h5py) holds ``posterior/z`` ``[chain, draw, d]``, ``posterior/x``
    ``[chain, draw, D]`` (whitened space, where the model lives), ``x_original`` (the draws mapped
    back to the data's units through the inverse whitening, when the data were whitened) and every
    ``sample_stats`` variable; its attributes hold the sampler settings. The InferenceData is
    written to netCDF (``netcdf``, default: ``out`` with suffix ``.nc``), with the run directory
    in ``posterior.attrs["run_dir"]`` so that :func:`gebm_ppl.diagnostics` plots can find the
    held-out data.

    Args:
        run_dir: a fitted run directory (or its :class:`Run`).
        out: the HDF5 file (default ``run_dir/samples.h5``).
        netcdf: the netCDF file (default: ``out`` with suffix ``.nc``).
        method: ``"nuts"``, ``"hmc"``, ``"ula"``, ``"kinetic"``, ``"imh"`` or ``"sir"``.
        backend: ``"pyro"`` or ``"numpyro"``.
        num_samples: draws kept per chain.
        warmup_steps: discarded warm-up transitions per chain.
        num_chains: number of chains.
        temperature: energy temperature T (1 samples the model).
        seed: sampler seed.
        progress: show a progress bar.
        **method_kwargs: sampler settings (see :func:`gebm_ppl.sample_latent`).

    Returns:
        :class:`SampleFiles`.
    """
    import h5py

    from .sampling import sample_latent

    run = run_dir if isinstance(run_dir, Run) else load_run(run_dir)
    out = Path(out) if out is not None else run.path / "samples.h5"
    netcdf = Path(netcdf) if netcdf is not None else out.with_suffix(".nc")
    if out.resolve() == netcdf.resolve():
        raise ValueError(f"the HDF5 and netCDF outputs are the same file {str(out)!r}.")
    idata = sample_latent(run.gebm, method=method, backend=backend, num_samples=num_samples,
                          warmup_steps=warmup_steps, num_chains=num_chains, temperature=temperature, seed=seed,
                          progress=progress, **method_kwargs)
    attrs = dict(idata.posterior.attrs)
    attrs.update(run_dir=str(run.path.resolve()), dataset=run.info.get("dataset", {}).get("name") or "",
                 gebm_ppl_version=__version__)
    idata.posterior.attrs.update({k: _attr(v) for k, v in attrs.items()})
    with atomic_open(out, "w+b") as f, h5py.File(f, "w") as h5:
        for k, v in attrs.items():
            h5.attrs[k] = _attr(v)
        h5.attrs["method_kwargs"] = json.dumps(method_kwargs)
        for group in ("posterior", "sample_stats"):
            if hasattr(idata, group):
                for name, var in getattr(idata, group).data_vars.items():
                    h5.create_dataset(f"{group}/{name}", data=np.asarray(var.values))
        x_orig = _unwhiten(np.asarray(idata.posterior["x"].values, dtype=np.float64), run.data.metadata)
        if x_orig is not None:
            h5.create_dataset("x_original", data=x_orig)
            columns = (run.data.metadata.get("preprocessing") or {}).get("columns")
            if columns:
                h5["x_original"].attrs["columns"] = [str(c) for c in columns]
    _write_netcdf(idata, netcdf)
    return SampleFiles(idata, out, netcdf)


def _write_netcdf(idata, path: Path) -> None:
    """``idata.to_netcdf`` made atomic: write a scratch file beside ``path``, then rename it onto ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        idata.to_netcdf(str(scratch))
        os.replace(scratch, path)
    finally:
        scratch.unlink(missing_ok=True)


def read_samples(path: str | os.PathLike):
    """The InferenceData of a ``gebm sample`` output: its netCDF file, or the HDF5 file beside it.

    Raises:
        FileNotFoundError: no such file (or, for an HDF5 file, no netCDF file beside it).
        ValueError: the file is not a readable netCDF InferenceData.
    """
    import arviz as az

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no samples file at {str(path)!r}.")
    if path.suffix.lower() in (".h5", ".hdf5"):
        nc = path.with_suffix(".nc")
        if not nc.is_file():
            raise FileNotFoundError(f"{str(path)!r} has no netCDF InferenceData beside it ({str(nc)!r}).")
        path = nc
    try:
        idata = az.from_netcdf(str(path))
        idata.posterior  # noqa: B018  (an InferenceData must have a posterior)
    except Exception as e:  # netCDF/HDF5 readers raise many types on foreign files
        raise ValueError(f"{str(path)!r} is not a netCDF InferenceData written by 'gebm sample': {e}") from e
    return idata
