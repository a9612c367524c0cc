"""Run directory files: ``run.json``, the data splits (``data.h5``), JSON written atomically, and :class:`Run`."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._io import atomic_open
from ..gebm import GEBM

__all__ = ["Run", "RunMismatch", "data_identity", "load_data", "load_run", "read_json", "write_json"]

RUN_FORMAT = "gebm_ppl.run"
RUN_VERSION = 1
RUN_FILE, DATA_FILE, GEBM_FILE, HISTORY_FILE = "run.json", "data.h5", "gebm.pt", "history.json"
CHECKPOINTS = {"mle": "mle.ckpt", "kale": "kale.ckpt", "adversarial": "adversarial.ckpt"}
MLE_CKPT, KALE_CKPT = CHECKPOINTS["mle"], CHECKPOINTS["kale"]


class RunMismatch(ValueError):
    """The run directory holds a run with other data, seed or configuration."""


@dataclass
class Run:
    """A fitted run directory, as :func:`load_run` reads it.

    Attributes:
        path: the folder.
        gebm: the trained :class:`gebm_ppl.GEBM` (eval mode).
        data: the splits (:class:`gebm_ppl.data.UCIData`, in the model's whitened space).
        config: the run configuration.
        info: the contents of ``run.json``.
        already_done: :func:`~gebm_ppl.runs.fit_run` found this run complete and fitted nothing.
    """

    path: Path
    gebm: GEBM
    data: object
    config: dict
    info: dict
    already_done: bool = False


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
    """A dataset by name (:func:`gebm_ppl.data.load`: UCI sets, ``digits``, ``mnist``, ...) or a user file
    (:func:`gebm_ppl.data.userdata.load_file`).

    A name registered in :data:`gebm_ppl.data.DATASETS` is a dataset; anything else must be an
    existing CSV, NPY or HDF5 file.

    Raises:
        ValueError: neither a known dataset nor an existing file, or options that do not apply
            (file options for a dataset, ``data_dir`` for a file).
    """
    from .. import data as gdata
    from ..data.userdata import load_file

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


def data_identity(metadata: dict) -> dict:
    """What must agree for a run to be resumed on the same data."""
    return {
        "name": metadata.get("name"),
        "protocol": metadata.get("protocol"),
        "seed": metadata.get("seed"),
        "sources": sorted((s.get("path"), s.get("sha256"), s.get("key")) for s in metadata.get("sources", [])),
        "sizes": metadata.get("sizes"),
    }


def image_shape(data) -> tuple[int, ...] | None:
    """``(C, H, W)`` of image data (its attribute or its metadata), else None."""
    shape = getattr(data, "image_shape", None) or (getattr(data, "metadata", None) or {}).get("image_shape")
    return tuple(int(s) for s in shape) if shape else None


def write_data(path: Path, data) -> str:
    """Write the splits and metadata to ``path`` (HDF5); return the cache key that :func:`read_data` checks."""
    from ..data import cache_key, write_cache

    key = cache_key(run_data=data_identity(data.metadata))
    write_cache(path, key, {"train": data.train, "val": data.val, "test": data.test}, data.metadata)
    return key


def read_data(run_dir: Path, info: dict):
    """The splits of a run directory, as a :class:`gebm_ppl.data.UCIData`."""
    from ..data import UCIData, read_cache

    cached = read_cache(run_dir / DATA_FILE, info["data_key"])
    if cached is None:
        raise ValueError(f"{str(run_dir / DATA_FILE)!r} is missing or corrupt; re-run 'gebm fit' into a new folder.")
    splits, metadata = cached
    return UCIData(splits["train"], splits["val"], splits["test"], metadata)


# ------------------------------------------------------------------------------------------ json
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


def read_json(path: Path) -> dict:
    """A run file's JSON; ValueError naming the file if it is unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"{str(path)!r} is not a readable run file: {e}") from e


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
    info = read_json(run_dir / RUN_FILE)
    if info.get("format") != RUN_FORMAT:
        raise ValueError(f"{str(run_dir / RUN_FILE)!r} is not a gebm_ppl run file.")
    if info.get("status") == "failed":
        failure = info.get("failure") or {}
        raise ValueError(f"the run in {str(run_dir)!r} failed, so there is no model to use: "
                         f"{failure.get('message') or 'its training diverged.'}")
    if info.get("status") != "done" or not (run_dir / GEBM_FILE).is_file():
        raise ValueError(f"the run in {str(run_dir)!r} is unfinished; re-run the same 'gebm fit' command to finish it.")
    gebm = GEBM.load(run_dir / GEBM_FILE).eval()
    return Run(run_dir, gebm, read_data(run_dir, info), info["identity"]["config"], info)
