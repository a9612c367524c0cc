"""Evaluate a fitted run on one split (:func:`gebm_ppl.evaluate_gebm`) and write ``evaluation-<split>.json``.

``evaluation-<split>.json`` holds the latest evaluation of the split. An earlier one made with other
settings (number M of base samples for Â, their seed) is not overwritten: it moves to
``evaluation-<split>-m<M>-seed<S>.json`` first (:func:`settings_file`), and the result names it
(``kept_previous``).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .. import units
from ..evaluation import evaluate_gebm, low_ess_warning
from .config import EVAL_DEFAULTS, evaluation_seed
from .files import Run, load_run, read_json, write_json

__all__ = ["SPLITS", "evaluate_run"]

SPLITS = ("train", "val", "test")
"""The data splits of a run (and of the CLI's ``--split``)."""


def evaluate_run(
    run_dir: str | os.PathLike | Run,
    split: str = "test",
    *,
    num_samples: int | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
) -> dict:
    """Evaluate a fitted run on a split (:func:`gebm_ppl.evaluation.evaluate_gebm`) and save the figures.

    ``num_samples`` (M base draws for Â) and ``batch_size`` (rows per forward pass) default to the run's
    ``[eval]`` table, else :data:`~gebm_ppl.runs.EVAL_DEFAULTS`; ``seed`` (of Â's base draws) to
    :func:`~gebm_ppl.runs.evaluation_seed` of the run's seed (10000 + seed), as the UCI benchmark does, so a
    run fitted with a benchmark configuration evaluates to the benchmark's numbers bit for bit.

    ``run_dir`` is a run folder or its :class:`~gebm_ppl.runs.Run`. Writes ``evaluation-<split>.json`` in
    the run directory and returns its contents: the :class:`~gebm_ppl.evaluation.GEBMEvaluation` fields
    (Δ NLL = GEBM − base: negative is better) plus ``split``, ``dataset``, ``nll_units`` (nats per
    example in the model's whitened space), ``original_units`` (``base_nll``, ``nll``, ``nll_bound`` in
    the data's own units, NLL − log|det W| for the whitening x_white = (x − mean) W; None when the data
    were not whitened), ``has_density``, ``verdict`` (one line, :func:`gebm_ppl.units.verdict` on the
    per-example differences, with the same ± as ``delta_nll_stderr``: the spread over examples and
    se(Â)), ``warning`` (None, or why Â is unreliable) and ``kept_previous`` (the file an earlier
    evaluation with other settings was moved to, or None). For a base without a density the NLL fields
    are None.
    """
    if split not in SPLITS:
        raise ValueError(f"'split' should be one of {list(SPLITS)}. Got {split!r}.")
    run = run_dir if isinstance(run_dir, Run) else load_run(run_dir)
    table = {**EVAL_DEFAULTS, **(run.config.get("eval") or {})}
    num_samples = int(table["num_samples"] if num_samples is None else num_samples)
    batch_size = int(table["batch_size"] if batch_size is None else batch_size)
    if seed is None:
        seed = evaluation_seed(run.info.get("identity", {}).get("seed", 0))
    x = getattr(run.data, split)
    ev = evaluate_gebm(run.gebm, x, num_samples=num_samples, batch_size=batch_size, seed=seed)
    out = {"split": split, "dataset": run.info.get("dataset", {}).get("name"),
           "nll_units": "nats per example, whitened space", "seed": int(seed), "batch_size": batch_size,
           "threads": torch.get_num_threads(), **ev.to_dict(),
           "has_density": ev.has_density, "verdict": None, "original_units": None, "warning": low_ess_warning(ev)}
    if ev.has_density:  # the verdict's ± is delta_nll_stderr: the spread over examples and se(Â)
        out["verdict"] = units.verdict(ev.nll_per_example - ev.base_nll_per_example,
                                       extra_stderr=ev.log_partition_stderr)
        try:  # NLL_original = NLL_whitened − log|det W| (the same shift for every NLL: Δ is unchanged)
            shift = units.log_abs_det(run.data.metadata)
        except ValueError:  # the data were not whitened: the NLLs are in the data's units already
            shift = None
        if shift is not None:
            out["original_units"] = {"log_abs_det_whitening": shift,
                                     **{k: out[k] - shift for k in ("base_nll", "nll", "nll_bound")}}
    path = run.path / f"evaluation-{split}.json"
    out["kept_previous"] = _keep_previous(path, out)
    write_json(path, out)
    return out


def _settings(result: dict) -> tuple:
    """What changes an evaluation's figures: the base samples of Â (how many, their seed)."""
    return result.get("num_samples"), result.get("seed")


def settings_file(path: Path, result: dict) -> Path:
    """``evaluation-<split>-m<M>-seed<S>.json`` beside ``path``: the file of an evaluation with those settings."""
    m, seed = _settings(result)
    return path.with_name(f"{path.stem}-m{m}-seed{seed}{path.suffix}")


def _keep_previous(path: Path, new: dict) -> str | None:
    """Before ``path`` is rewritten with ``new``: an evaluation there with other settings is moved to its
    :func:`settings_file` (returned), so that no evaluation is overwritten silently; None otherwise."""
    if not path.is_file():
        return None
    try:
        old = read_json(path)
    except ValueError:
        return None
    if _settings(old) == _settings(new):  # the same settings give the same figures
        return None
    kept = settings_file(path, old)
    os.replace(path, kept)
    return str(kept)
