"""The step/epoch loop shared by the training functions: batches, evaluation, early stopping, checkpoints, resume.

The loop's helpers live beside it and are re-exported here (for code written against this module):
argument checks in ``_checks`` (``check_lr``, ``check_nonnegative_float``, ``check_nonnegative_int``,
``check_optional_positive_int``), data coercion in ``_data`` (``as_data``, ``fingerprint``), random
streams in ``_rng`` (``stream_generator``, ``STREAM_*``, ``get_rng_state``, ``set_rng_state``), the
checkpoint format in ``_checkpoint``, options and schedules in ``_options`` (``TrainingOptions``,
``SCHEDULES``, ``make_scheduler``) and progress reporting in ``_progress``. The module is longer
than the others because :class:`Loop` is one state machine (position, epoch sums, best weights,
checkpoint bookkeeping) whose methods all share that state; splitting it would pass the state around.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from .. import distributed
from .._threads import model_threads
from ._checkpoint import (
    TRAINING_FORMAT,
    TRAINING_VERSION,
    check_compatible,
    cpu_state,
    read_training_checkpoint,
    write_checkpoint,
)
from ._checks import check_lr, check_nonnegative_float, check_nonnegative_int, check_optional_positive_int
from ._data import as_data, fingerprint
from ._options import SCHEDULES, TrainingOptions, make_scheduler
from ._progress import Progress
from ._rng import STREAM_BASE, STREAM_DATA, STREAM_EVAL, STREAM_STEP, get_rng_state, set_rng_state, stream_generator
from .history import TrainingDiverged, TrainingHistory

__all__ = [
    "Loop",
    "data_order",
    "NonFinite",
    "SCHEDULES",
    "STREAM_BASE",
    "STREAM_DATA",
    "STREAM_EVAL",
    "STREAM_STEP",
    "TRAINING_FORMAT",
    "TRAINING_VERSION",
    "TrainingOptions",
    "as_data",
    "place_gebm_data",
    "check_lr",
    "check_nonnegative_float",
    "check_nonnegative_int",
    "check_optional_positive_int",
    "fingerprint",
    "get_rng_state",
    "make_scheduler",
    "set_rng_state",
    "stream_generator",
]


class NonFinite(Exception):
    """Raised by a step or evaluation function; the loop turns it into :class:`TrainingDiverged`."""

    def __init__(self, quantity: str):
        super().__init__(quantity)
        self.quantity = quantity


def data_order(x: object) -> Callable[[torch.Generator], Tensor] | None:
    """The data source's own epoch permutation ``x.permutation(generator)`` (e.g. a chunked HDF5 array), or None."""
    order = getattr(x, "permutation", None)
    return order if callable(order) else None


# ------------------------------------------------------------------------------------------- the loop
def place_gebm_data(gebm, train, val, device: str | torch.device | None) -> tuple[Tensor, Tensor | None]:
    """Move ``gebm`` to this rank's ``device`` (None: leave it) and check the splits in the GEBM's dtype and device.

    The common start of :func:`~gebm_ppl.training.kale_loop.run_kale` and
    :func:`~gebm_ppl.training.adversarial.run_adversarial`; returns ``(x_train, x_val or None)``.
    """
    if device is not None:
        gebm.to(distributed.rank_device(device))  # "cuda" under torchrun: this rank's GPU
    c = gebm.log_partition
    x_train = as_data(train, "train", gebm.dim, c.dtype, c.device)
    return x_train, as_data(val, "val", gebm.dim, c.dtype, c.device, optional=True)


class Loop:
    """Runs ``train_step`` over shuffled minibatches, evaluates, stops early, checkpoints and resumes.

    This constructor and :meth:`run` are the stable interface every training function builds on
    (``fit_mle``, ``fit_kale``, ``fit_adversarial``). All constructor arguments are keywords:

    * ``kind``: the run's name in checkpoints (a resume refuses another kind), e.g. ``"kale"``.
    * ``model``: the ``nn.Module`` whose ``state_dict`` is checkpointed, checked finite and whose
      best weights are restored at the end.
    * ``optimizers`` / ``schedulers``: dicts name → optimizer / scheduler (None entries are
      dropped); their states are checkpointed. Schedulers step once per epoch (``ReduceLROnPlateau``
      on the monitored value, else on ``train_loss``).
    * ``train_size``, ``batch_size``, ``epochs``: an epoch is ``ceil(train_size / batch_size)``
      steps over a permutation drawn from ``stream_generator(seed, STREAM_DATA, epoch)``.
    * ``patience``, ``eval_every``, ``monitor``, ``mode``: evaluate every ``eval_every`` epochs
      (and after the last); early stopping watches record key ``monitor`` (None: never), smaller
      better for ``mode="min"``, larger for ``"max"``.
    * ``seed``, ``max_steps``: the data-order seed; stop after ``max_steps`` steps in total, possibly
      mid-epoch (a ``partial`` record).
    * ``checkpoint_path``, ``checkpoint_every``: write atomically after every epoch (or every
      ``checkpoint_every`` steps) and at the end; None: no checkpoints.
    * ``progress``: True / False / None (see :class:`~gebm_ppl.training._progress.Progress`: a tqdm
      bar on a terminal, periodic log lines elsewhere); ``progress_interval``: seconds between two
      lines (default 10 s); ``progress_keys``: extra record keys shown.
    * ``callback``: called with a copy of each record; returning True stops training.
    * ``settings``: stored in ``history.settings``. ``structure``: the settings a resumed run must
      share with the checkpoint (batch size, seed, data fingerprint, ...).
    * ``payload(training_state) -> dict``: builds the checkpoint dictionary (which must keep the
      model's ``state_dict`` under ``"state_dict"``, and ``training_state`` under ``"training"`` or
      ``extra["training"]``).
    * ``desc``: the name used in progress lines and error messages.
    * ``order(generator) -> LongTensor``: the epoch's permutation of ``range(train_size)`` (default
      ``torch.randperm``); a data source that reads in chunks supplies a chunk-local one.

    Under torch.distributed (W ranks, :mod:`gebm_ppl.distributed`) every rank runs the same loop on the
    same global minibatches (``train_step`` takes its share and returns global metrics); evaluation
    values come from rank 0 (broadcast, with rank 0's weights, so that every rank takes the same
    early-stopping and scheduling decisions and holds the same c); the callback runs on every rank and
    stops them all when it stops one; only rank 0 writes checkpoints and progress, and the others wait
    for each write at a barrier. A checkpoint holds global state only, so a run resumes with any number
    of ranks.

    ``run(train_step, evaluate) -> TrainingHistory``: ``train_step(indices, step) -> dict`` takes
    one optimizer step on the rows ``indices`` (a LongTensor on the CPU) and returns metrics
    (averaged over the epoch, weighted by rows); ``evaluate() -> dict`` returns the evaluation
    values of a record. Either may raise :class:`NonFinite`, which becomes :class:`TrainingDiverged`.
    Steps are numbered from 0 in ``train_step(indices, step)``; records and errors count them from 1.
    ``load(path)`` restores a checkpoint before ``run`` (``resume``).
    """

    def __init__(
        self,
        *,
        kind: str,
        model: nn.Module,
        optimizers: dict[str, torch.optim.Optimizer],
        schedulers: dict[str, LRScheduler | ReduceLROnPlateau | None],
        train_size: int,
        batch_size: int,
        epochs: int,
        patience: int | None,
        eval_every: int,
        monitor: str | None,
        mode: str,
        seed: int,
        max_steps: int | None,
        checkpoint_path: str | Path | None,
        checkpoint_every: int | None,
        progress: bool | None,
        callback: Callable[[dict], object] | None,
        settings: dict,
        structure: dict,
        payload: Callable[[dict], dict],
        desc: str,
        progress_interval: float | None = None,
        progress_keys: tuple[str, ...] = (),
        order: Callable[[torch.Generator], Tensor] | None = None,
    ):
        if callback is not None and not callable(callback):
            raise TypeError(f"'callback' should be callable (record -> bool | None). Got {type(callback).__name__}.")
        if progress is not None and not isinstance(progress, bool):
            raise TypeError(f"'progress' should be None, True or False. Got {progress!r}.")
        if order is not None and not callable(order):
            raise TypeError(f"'order' should be callable (generator -> permutation). Got {type(order).__name__}.")
        self.kind = kind
        self.order = order
        self.main = distributed.is_main()
        self.model = model
        self.optimizers = optimizers
        self.schedulers = {k: v for k, v in schedulers.items() if v is not None}
        self.n = train_size
        self.batch_size = batch_size
        self.steps_per_epoch = math.ceil(train_size / batch_size)
        self.epochs = epochs
        self.patience = patience
        self.eval_every = eval_every
        self.monitor = monitor
        self.mode = mode
        self.seed = seed
        self.max_steps = max_steps
        self.checkpoint_path = None if checkpoint_path is None else Path(checkpoint_path)
        self.checkpoint_every = checkpoint_every
        self.progress = progress if self.main else False
        self.callback = callback
        self.structure = structure
        self.payload = payload
        self.desc = desc
        self.progress_interval = progress_interval
        self.progress_keys = tuple(progress_keys)
        self.history = TrainingHistory(kind=kind, monitor=monitor, mode=mode, settings=settings)
        self.step = 0  # optimizer steps done
        self.epoch = 0  # full epochs done
        self.batch = 0  # minibatches done in the current epoch
        self.sums: dict[str, float] = {}  # per-key sums of step metrics over the epoch (weighted by rows)
        self.counts: dict[str, int] = {}
        self.epoch_time = 0.0
        self.bad_evals = 0
        self.best_state: dict | None = None
        self.last_checkpoint: tuple[str, int] | None = None
        self._dirty = True
        self._wall_offset = 0.0
        self._t0 = time.perf_counter()

    @classmethod
    def from_options(cls, options: TrainingOptions, **what) -> Loop:
        """A Loop whose shared settings come from ``options`` (:meth:`TrainingOptions.loop_kwargs`: batch size,
        epochs, patience, ``eval_every``, seed, ``max_steps``, checkpoints, progress, callback) and the
        run-specific rest (``kind``, ``model``, ``optimizers``, ...) from the keywords ``what``."""
        if not isinstance(options, TrainingOptions):
            raise TypeError(f"'options' should be a TrainingOptions. Got {type(options).__name__}.")
        return cls(**options.loop_kwargs(), **what)

    # ---------------------------------------------------------------- checkpoints
    def _training_state(self) -> dict:
        return {
            "format": TRAINING_FORMAT,
            "version": TRAINING_VERSION,
            "kind": self.kind,
            "structure": self.structure,
            "loop": {
                "step": self.step,
                "epoch": self.epoch,
                "batch": self.batch,
                "sums": dict(self.sums),
                "counts": dict(self.counts),
                "epoch_time": self.epoch_time,
                "bad_evals": self.bad_evals,
            },
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "rng": get_rng_state(),
            "best_state": self.best_state,
            "history": self.history.to_dict(),
        }

    def save(self) -> None:
        """Write the checkpoint atomically; refuse (TrainingDiverged) if a weight is not finite."""
        for name, t in self.model.state_dict().items():
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise self.diverged(f"model weight {name!r}", self.step, max(1, self.epoch + (self.batch > 0)))
        self._sync_times()
        if self.main:  # the ranks hold the same state: rank 0 writes, the others wait until it has
            write_checkpoint(self.payload(self._training_state()), self.checkpoint_path)
        distributed.barrier()
        self.last_checkpoint = (str(self.checkpoint_path), self.step)
        self._dirty = False

    def load(self, path: str | Path) -> None:
        """Restore model, optimizers, schedulers, RNG states, loop position and history from ``path``."""
        path = Path(path)
        ckpt, training = read_training_checkpoint(path)
        try:
            check_compatible(training, self.kind, self.structure, path)
            self._restore(ckpt, training, path)
        except (KeyError, TypeError, AttributeError, IndexError, RuntimeError) as e:
            raise ValueError(
                f"'resume': {str(path)!r} is a damaged training checkpoint ({type(e).__name__}: {e})."
            ) from e

    def _restore(self, ckpt: dict, training: dict, path: Path) -> None:
        try:
            self.model.load_state_dict(ckpt["state_dict"])
        except RuntimeError as e:
            raise ValueError(f"'resume': the checkpoint's weights do not fit this model: {e}") from e
        for k, o in self.optimizers.items():
            o.load_state_dict(training["optimizers"][k])
        for k, s in self.schedulers.items():
            if k in training["schedulers"]:
                s.load_state_dict(training["schedulers"][k])
        set_rng_state(training["rng"])
        loop = training["loop"]
        self.step, self.epoch, self.batch = loop["step"], loop["epoch"], loop["batch"]
        self.sums, self.counts, self.epoch_time = dict(loop["sums"]), dict(loop["counts"]), loop["epoch_time"]
        self.bad_evals = loop["bad_evals"]
        self.best_state = training["best_state"]
        settings = self.history.settings
        self.history = TrainingHistory.from_dict(training["history"])
        self.history.settings = {**settings, "resumed_from": str(path), "resumed_at_step": self.step}
        self._wall_offset = self.history.wall_time
        self._t0 = time.perf_counter()
        self.last_checkpoint = (str(path), self.step)
        self._dirty = False

    # ---------------------------------------------------------------- errors
    def diverged(self, quantity: str, step: int, epoch: int) -> TrainingDiverged:
        """The error for a non-finite ``quantity`` at ``step`` of ``epoch`` (1-based); restores the best weights."""
        restored = ""
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
            restored = f" The model now holds the weights of its best epoch ({self.history.best_epoch})."
        if self.last_checkpoint is not None:
            where = f" Last good checkpoint: {self.last_checkpoint[0]!r} (step {self.last_checkpoint[1]})."
        else:
            where = " No checkpoint was written (pass checkpoint_path= to keep one)."
        msg = (
            f"{self.desc} diverged at step {step} (epoch {epoch}): the {quantity} is not finite."
            f"{where}{restored} Try a smaller learning rate, gradient clipping or a stronger regularisation."
        )
        self._sync_times()
        path, ckpt_step = self.last_checkpoint if self.last_checkpoint else (None, None)
        return TrainingDiverged(
            msg,
            step=step,
            epoch=epoch,
            quantity=quantity,
            checkpoint_path=path,
            checkpoint_step=ckpt_step,
            history=TrainingHistory.from_dict(self.history.to_dict()),
        )

    # ---------------------------------------------------------------- bookkeeping
    def _sync_times(self) -> None:
        h = self.history
        h.wall_time = self._wall_offset + time.perf_counter() - self._t0
        h.total_steps = self.step
        h.steps_per_second = self.step / h.train_time if h.train_time > 0 else 0.0

    def _lr(self) -> float:
        opt = next(iter(self.optimizers.values()))
        return float(opt.param_groups[0]["lr"])

    def _record(self, evaluate: Callable[[], dict] | None, partial: bool) -> dict:
        h = self.history
        t = time.perf_counter()
        failed, metrics = None, {}
        try:
            metrics = evaluate() if evaluate is not None else {}
        except NonFinite as err:
            failed = err.quantity
        if evaluate is not None and distributed.is_distributed():  # rank 0's values and weights everywhere
            failed, metrics = distributed.broadcast_object((failed, metrics))
            distributed.broadcast_state(self.model)
        if failed is not None:
            raise self.diverged(failed, self.step, self.epoch + 1 if partial else self.epoch) from None
        eval_time = time.perf_counter() - t
        h.eval_time += eval_time
        record = {
            "epoch": self.epoch + 1 if partial else self.epoch,
            "step": self.step,
            "partial": partial,
            **{k: v / self.counts[k] for k, v in self.sums.items()},
            **metrics,
            "lr": self._lr(),
            "epoch_time": self.epoch_time,
            "eval_time": eval_time,
        }
        self._sync_times()
        record["wall_time"] = h.wall_time
        value = record.get(self.monitor) if self.monitor else None
        if value is not None:
            if not math.isfinite(value):
                raise self.diverged(f"monitored value {self.monitor!r}", self.step, record["epoch"])
            best = h.best_value
            if best is None or (value < best if self.mode == "min" else value > best):
                h.best_value, h.best_epoch = float(value), record["epoch"]
                self.best_state = cpu_state(self.model)
                self.bad_evals = 0
            else:
                self.bad_evals += 1
        h.records.append(record)
        return record

    def _callback(self, record: dict) -> bool:
        if self.callback is None:
            return False
        return distributed.any_true(bool(self.callback(dict(record))))  # it runs on every rank; one stops all

    def _step_schedulers(self, record: dict) -> None:
        for s in self.schedulers.values():
            if not s.optimizer.state:
                # no optimizer step yet (e.g. the base with fewer steps per epoch than n_energy_steps):
                # nothing to schedule, and torch warns about a scheduler stepped before its optimizer
                continue
            if isinstance(s, ReduceLROnPlateau):
                value = record.get(self.monitor) if self.monitor else record.get("train_loss")
                if value is not None:
                    s.step(value)
            else:
                s.step()

    def _initial_stop(self) -> str | None:
        if self.epoch >= self.epochs:
            return "epochs"
        if self.max_steps is not None and self.step >= self.max_steps:
            return "max_steps"
        if self.patience is not None and self.monitor is not None and self.bad_evals >= self.patience:
            return "patience"
        return None

    def _progress(self) -> Progress:
        total = self.epochs
        if self.max_steps is not None:
            total = min(total, math.ceil(self.max_steps / self.steps_per_epoch))
        keys = ("train_loss", self.monitor, *self.progress_keys)
        return Progress(self.progress, self.desc, total, initial=self.epoch, keys=keys, interval=self.progress_interval)

    # ---------------------------------------------------------------- run
    @model_threads  # one torch thread for a small model unless the user chose a count (gebm_ppl._threads)
    def run(self, train_step: Callable[[Tensor, int], dict], evaluate: Callable[[], dict]) -> TrainingHistory:
        """Train until ``epochs``, patience, a callback or ``max_steps`` stops it; restore the best weights."""
        h = self.history
        self._t0 = time.perf_counter()
        S, B = self.steps_per_epoch, self.batch_size
        bar = self._progress()
        stop = self._initial_stop()
        try:
            while stop is None:
                g = stream_generator(self.seed, STREAM_DATA, self.epoch)
                perm = torch.randperm(self.n, generator=g) if self.order is None else self.order(g)
                while self.batch < S:
                    idx = perm[self.batch * B : (self.batch + 1) * B]
                    t = time.perf_counter()
                    try:
                        metrics = train_step(idx, self.step)
                    except NonFinite as err:
                        raise self.diverged(err.quantity, self.step + 1, self.epoch + 1) from None
                    dt = time.perf_counter() - t
                    self.epoch_time += dt
                    h.train_time += dt
                    for k, v in metrics.items():
                        self.sums[k] = self.sums.get(k, 0.0) + v * len(idx)
                        self.counts[k] = self.counts.get(k, 0) + len(idx)
                    self.step += 1
                    self.batch += 1
                    self._dirty = True
                    every = self.checkpoint_every
                    if self.checkpoint_path is not None and every and self.step % every == 0:
                        self.save()
                    if self.max_steps is not None and self.step >= self.max_steps:
                        break
                if self.batch < S:  # cut short by max_steps: checkpoint the mid-epoch state, then report it
                    if self.checkpoint_path is not None and self._dirty:
                        self.save()
                    record = self._record(evaluate, partial=True)
                    self._callback(record)
                    stop = "max_steps"
                    break
                self.epoch += 1
                self.batch = 0
                last = self.epoch >= self.epochs or (self.max_steps is not None and self.step >= self.max_steps)
                do_eval = last or self.epoch % self.eval_every == 0
                record = self._record(evaluate if do_eval else None, partial=False)
                self.sums, self.counts, self.epoch_time = {}, {}, 0.0
                self._step_schedulers(record)
                bar.update(record)
                if self._callback(record):
                    stop = "callback"
                else:
                    stop = self._initial_stop()
                if self.checkpoint_path is not None and (self.checkpoint_every is None or stop is not None):
                    self.save()
        except BaseException:
            bar.close()
            raise
        if self.checkpoint_path is not None and self._dirty:
            self.save()
        h.stop_reason = stop
        h.stopped_early = stop != "epochs"
        self._sync_times()
        bar.close(h)
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        return h
