"""Run directories: fit a GEBM from a configuration into a folder that resumes, evaluate and sample it.

A run directory holds (every file written atomically):

* ``run.json``: what was run (data source, seed, configuration), its status and summary;
* ``data.h5``: the preprocessed train / validation / test splits the run used;
* ``mle.ckpt`` and ``kale.ckpt`` (a base with a density) or ``adversarial.ckpt`` (a generator base):
  the training checkpoints of the stages (resumable);
* ``gebm.pt``: the trained GEBM (:meth:`gebm_ppl.GEBM.load` reads it);
* ``history.json``: every stage's :class:`~gebm_ppl.training.TrainingHistory`;
* ``evaluation-<split>.json`` (and ``evaluation-<split>-<settings>.json`` for other settings): what
  :func:`evaluate_run` measured.

A stage that diverges marks the run ``"status": "failed"`` with a ``failure`` entry naming the setting
to change (:mod:`.failure`); :func:`load_run` then explains the failure.

Re-running :func:`fit_run` on the same folder with the same data, seed and configuration continues
an interrupted run from its last checkpoint (the training loops resume exactly).

Modules: :mod:`.config` (the TOML schema, ``--set`` overrides, building the base and energy),
:mod:`.files` (run files, data), :mod:`.pipeline` (the training stages and :func:`fit_run`),
:mod:`.evaluate` (:func:`evaluate_run`), :mod:`.samples` (:func:`sample_run`, :func:`read_samples`).
"""

from __future__ import annotations

from .config import (
    CONFIG_SECTIONS,
    EVAL_DEFAULTS,
    apply_overrides,
    build_base,
    build_energy,
    check_config,
    evaluation_seed,
    has_density,
    init_seed,
    load_config,
    parse_override,
    parse_value,
    set_dotted,
    validate_config,
)
from .evaluate import SPLITS, evaluate_run
from .failure import RunFailed
from .files import (
    CHECKPOINTS,
    DATA_FILE,
    GEBM_FILE,
    HISTORY_FILE,
    KALE_CKPT,
    MLE_CKPT,
    RUN_FILE,
    Run,
    RunMismatch,
    load_data,
    load_run,
    write_json,
)
from .pipeline import build_gebm, fit_run, train_adversarial, train_base_mle, train_energy_kale
from .samples import SampleFiles, default_backend, read_samples, sample_run

__all__ = [
    "CHECKPOINTS",
    "CONFIG_SECTIONS",
    "DATA_FILE",
    "EVAL_DEFAULTS",
    "GEBM_FILE",
    "HISTORY_FILE",
    "KALE_CKPT",
    "MLE_CKPT",
    "RUN_FILE",
    "SPLITS",
    "Run",
    "RunFailed",
    "RunMismatch",
    "SampleFiles",
    "apply_overrides",
    "build_base",
    "build_energy",
    "build_gebm",
    "check_config",
    "default_backend",
    "evaluate_run",
    "evaluation_seed",
    "fit_run",
    "has_density",
    "init_seed",
    "load_config",
    "load_data",
    "load_run",
    "parse_override",
    "parse_value",
    "read_samples",
    "sample_run",
    "set_dotted",
    "train_adversarial",
    "train_base_mle",
    "train_energy_kale",
    "validate_config",
    "write_json",
]
