"""Train a GEBM from a configuration: the stages (MLE base then KALE energy, or adversarial) and :func:`fit_run`.

A base with a density (``has_density``) is fitted by maximum likelihood (:func:`gebm_ppl.fit_mle`,
``[mle]``), then the energy E and the log-partition c by KALE on it (:func:`gebm_ppl.fit_kale`,
``[kale]``); a base without one (a generator) is trained with the energy from scratch by
:func:`gebm_ppl.fit_adversarial` (``[adversarial]``). The stage functions below are the only
implementation of these steps: the run directories of :func:`fit_run` and the benchmarks call them.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch

from .. import __version__, distributed
from .._threads import torch_threads
from ..gebm import GEBM
from .config import build_base, build_energy, check_config, has_density, init_seed, validate_config
from .failure import RunFailed, failure_record
from .files import (
    CHECKPOINTS,
    GEBM_FILE,
    HISTORY_FILE,
    RUN_FILE,
    RUN_FORMAT,
    RUN_VERSION,
    Run,
    RunMismatch,
    data_identity,
    image_shape,
    load_run,
    read_json,
    write_data,
    write_json,
)

__all__ = ["build_gebm", "fit_run", "train_adversarial", "train_base_mle", "train_energy_kale"]


def build_gebm(config: dict, data, seed: int | None = None) -> GEBM:
    """The GEBM of ``config`` for ``data``: the base built after ``torch.manual_seed(init_seed(seed, "base"))``
    (= ``seed``), the energy after ``torch.manual_seed(init_seed(seed, "energy"))``; ``seed=None`` builds both
    from torch's current state."""
    shape = image_shape(data)
    base = build_base(config, data.dim, shape, seed=None if seed is None else init_seed(seed, "base"))
    energy = build_energy(config, data.dim, shape, seed=None if seed is None else init_seed(seed, "energy"))
    return GEBM(base, energy)


def train_base_mle(base, data, options: dict, *, seed: int = 0, **loop):
    """Stage 1 of a density base: :func:`gebm_ppl.fit_mle` on ``data.train`` with early stopping on ``data.val``.

    ``options`` are fit_mle's keywords (``[mle]``), ``loop`` the run's own (``device``, ``progress``,
    ``checkpoint_path``, ``checkpoint_every``, ``resume``). Returns the history; the base is left in eval mode.
    """
    from ..training import fit_mle

    history = fit_mle(base, data.train, data.val, seed=int(seed), **loop, **options)
    base.eval()
    return history


def train_energy_kale(gebm: GEBM, data, options: dict, *, seed: int = 0, **loop):
    """Stage 2: the energy and c of ``gebm`` by :func:`gebm_ppl.fit_kale` (``[kale]``; ``train_base`` there
    trains the base too). Returns the history."""
    from ..training import fit_kale

    return fit_kale(gebm, data.train, data.val, seed=int(seed), **loop, **options)


def train_adversarial(gebm: GEBM, data, options: dict, *, seed: int = 0, **loop):
    """The one stage of a base without a density: base and energy by :func:`gebm_ppl.fit_adversarial`."""
    from ..training import fit_adversarial

    return fit_adversarial(gebm, data.train, data.val, seed=int(seed), **loop, **options)


STAGES: dict[str, Callable] = {"mle": None, "kale": train_energy_kale, "adversarial": train_adversarial}


def _summary(stages: dict) -> dict:
    def at_best(h, key):
        rows = [r for r in h.records if r.get("epoch") == h.best_epoch]
        return rows[-1].get(key) if rows else None

    out = {}
    for name, h in stages.items():
        s = {"epochs": len(h.records), "best_val_nll": h.best_value, "monitor": h.monitor,
             "best_epoch": h.best_epoch, "wall_time": h.wall_time, "steps": h.total_steps,
             "stop_reason": h.stop_reason}
        if name == "kale":
            s["base_val_nll"] = at_best(h, "base_val_nll")
        out[name] = s
    return out


def _check_identity(run_dir: Path, identity: dict, say) -> dict | None:
    """The old run.json when ``run_dir`` holds this run; RunMismatch when it holds another one."""
    old = read_json(run_dir / RUN_FILE)
    if old.get("format") != RUN_FORMAT:
        raise RunMismatch(f"{str(run_dir)!r} holds a {RUN_FILE} that is not a gebm_ppl run.")
    old_identity = json.loads(json.dumps(old.get("identity")))
    old_config = old_identity.get("config") if isinstance(old_identity, dict) else None
    if isinstance(old_config, dict) and "eval" not in old_config:  # a run from before the [eval] table
        old_identity["config"] = {**old_config, "eval": {}}
    if old_identity != json.loads(json.dumps(identity)):
        diff = [k for k in identity if json.dumps(old_identity.get(k), sort_keys=True)
                != json.dumps(identity[k], sort_keys=True)]
        raise RunMismatch(
            f"{str(run_dir)!r} holds a run with another {' and '.join(diff)}; "
            "choose a new output folder, or pass overwrite=True (gebm fit --overwrite) to start afresh."
        )
    return old


def _replaces_failed(run_dir: Path, identity: dict, say) -> bool:
    """Whether ``run_dir`` holds a failed run with other settings, which a new fit replaces (True) rather than
    refusing as a mismatch: a diverged run holds nothing worth keeping, and the user changed what it said."""
    try:
        old = read_json(run_dir / RUN_FILE)
    except ValueError:
        return False
    if old.get("format") != RUN_FORMAT or old.get("status") != "failed":
        return False
    if json.dumps(old.get("identity"), sort_keys=True) == json.dumps(identity, sort_keys=True):
        return False
    say(f"replacing the failed run in {run_dir} (it diverged in its {(old.get('failure') or {}).get('stage')} "
        "stage) with this one")
    return True


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
    """Fit a GEBM into ``run_dir``: the base and energy of ``config``, trained by the stages of the base's kind.

    A base with a density (the default :class:`gebm_ppl.RealNVP`): :func:`gebm_ppl.fit_mle`
    (``config["mle"]``, early stopping on the validation NLL), then :func:`gebm_ppl.fit_kale`
    (``config["kale"]``); a base without one: :func:`gebm_ppl.fit_adversarial` (``config["adversarial"]``).
    The configuration's values are checked (:func:`~gebm_ppl.runs.check_config`) before anything is
    written. Every stage checkpoints into the folder; when it already holds an unfinished run with
    the same data, seed and configuration, the run continues from the last checkpoints.

    Args:
        run_dir: the run folder (created if needed).
        data: a :class:`gebm_ppl.data.UCIData` (from :func:`~gebm_ppl.runs.load_data`).
        config: the run configuration (:func:`~gebm_ppl.runs.load_config`); None for the defaults.
        seed: seed of the initial weights (:func:`build_gebm`: the base from ``seed``, the energy from
            :func:`~gebm_ppl.runs.init_seed` (seed, "energy")) and of every training loop. The numbers
            are bit-identical for the same seed, configuration, torch version, CPU kind and torch thread
            count (recorded in ``run.json``: one thread for a small network unless the caller chose a
            count, :mod:`gebm_ppl._threads`; ``gebm fit`` uses ``--threads``, default 1).
        device: ``"cpu"``, ``"cuda"``, ... (default: CPU).
        progress: tqdm bars (None: only on a terminal).
        checkpoint_every: checkpoint every this many optimizer steps (default: every epoch).
        overwrite: discard a run already in ``run_dir`` and start afresh.
        log: called with one-line progress messages.

    Returns:
        the fitted :class:`~gebm_ppl.runs.Run`.

    Raises:
        ValueError, TypeError: a bad configuration value (before training).
        RunMismatch: ``run_dir`` holds a run with other data, seed or configuration (and not ``overwrite``).
        RunFailed: a stage diverged (a :class:`gebm_ppl.TrainingDiverged`, with the loop's own as its
            ``__cause__``): ``run.json``
            then records ``"status": "failed"`` and a ``failure`` entry (stage, step, the setting to lower);
            the checkpoints stay. A later fit with other settings replaces the failed run; one with the
            same settings is refused (RunMismatch), as it would diverge again.

    The returned run has ``already_done = True`` when ``run_dir`` already held this run, complete.
    """
    from ..training import TrainingDiverged

    say = log or (lambda msg: None)
    distributed.init(device)  # under torchrun: the ranks train together; rank 0 alone writes the folder
    main = distributed.is_main()
    config = validate_config(config or {})
    check_config(config, data.dim, image_shape(data))
    run_dir = Path(run_dir)
    identity = {"data": data_identity(data.metadata), "seed": int(seed), "config": config}
    info_path = run_dir / RUN_FILE
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if info_path.exists() and not overwrite and _replaces_failed(run_dir, identity, say):
        overwrite = True
    if info_path.exists() and not overwrite:
        old = _check_identity(run_dir, identity, say)
        if old.get("status") == "done" and (run_dir / GEBM_FILE).is_file():
            say(f"{run_dir} already holds this finished run, complete: nothing was fitted (overwrite=True, "
                "gebm fit --overwrite, fits it again).")
            run = load_run(run_dir)
            run.already_done = True
            return run
        if old.get("status") == "failed":
            record = old.get("failure") or {}
            raise RunMismatch(f"{record.get('message') or 'this run failed.'} Fitting it again with the same "
                              "settings would fail the same way.")
        say(f"continuing the unfinished run in {run_dir}")
        started = old.get("started", started)
    if overwrite and main:
        stale = [run_dir / n for n in (RUN_FILE, GEBM_FILE, HISTORY_FILE, *CHECKPOINTS.values())]
        for path in [*stale, *run_dir.glob("evaluation-*.json")]:
            path.unlink(missing_ok=True)
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
    info = {
        "format": RUN_FORMAT,
        "version": RUN_VERSION,
        "gebm_ppl_version": __version__,
        "identity": identity,
        "data_key": write_data(run_dir / "data.h5", data) if main else None,
        "dataset": {k: data.metadata.get(k) for k in ("name", "protocol", "description", "dim", "sizes")},
        "status": "fitting",
        "started": started,
        "threads": torch.get_num_threads(),  # the numbers depend on it (reductions split over threads)
    }
    if main:
        write_json(info_path, info)
    distributed.barrier()  # every rank sees the folder (and its checkpoints) as rank 0 left it

    gebm = build_gebm(config, data, seed)
    if device is not None:
        gebm.to(device)
    common = dict(seed=int(seed), progress=progress, checkpoint_every=checkpoint_every)
    stages = {}
    with torch_threads(model=gebm) as threads:  # one thread for small nets unless chosen (gebm_ppl._threads)
        info["threads"] = threads  # what the loops use: the numbers depend on it
        for stage in ("mle", "kale") if has_density(config) else ("adversarial",):
            path = run_dir / CHECKPOINTS[stage]
            resume = path if path.is_file() else None
            say(f"{stage}: resuming from {path}" if resume is not None else f"{stage}: training")
            loop = dict(common, checkpoint_path=path, resume=resume)
            try:
                if stage == "mle":
                    history = train_base_mle(gebm.base, data, config["mle"], **loop)
                else:
                    history = STAGES[stage](gebm, data, config[stage], **loop)
            except TrainingDiverged as e:  # recorded; the message names the setting to change
                record = failure_record(stage, e, config)
                info.update(status="failed", failed=time.strftime("%Y-%m-%dT%H:%M:%S%z"), failure=record)
                if main:
                    write_json(info_path, info)
                raise RunFailed(record["message"], record, e) from e
            stages[stage] = history
            say(f"{stage}: {history!r}")
    gebm.eval()
    info.update(status="done", finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"), summary=_summary(stages))
    if main:
        write_json(run_dir / HISTORY_FILE, {k: h.to_dict() for k, h in stages.items()})
        gebm.save(run_dir / GEBM_FILE, run_dir=str(run_dir.resolve()), seed=int(seed))
        write_json(info_path, info)
    distributed.barrier()
    return Run(run_dir, gebm.cpu(), data, config, info, already_done=False)
