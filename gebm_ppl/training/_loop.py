"""The step/epoch loop shared by fit_mle and fit_kale: batches, evaluation, early stopping, checkpoints, resume."""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler, MultiStepLR, ReduceLROnPlateau

from .._io import atomic_torch_save
from .._validation import check_positive_float, check_positive_int
from ..gebm import checkpoint_digest, verify_digest
from .history import TrainingDiverged, TrainingHistory

__all__ = [
    "Loop",
    "NonFinite",
    "SCHEDULES",
    "as_data",
    "check_nonnegative_float",
    "check_nonnegative_int",
    "check_optional_positive_int",
    "make_scheduler",
    "stream_generator",
]

TRAINING_FORMAT = "gebm_ppl.training"
TRAINING_VERSION = 1

# Independent random streams: every draw is a pure function of (seed, stream, counter), so a resumed
# run redraws exactly what the uninterrupted run would have drawn, whatever happened in between.
STREAM_DATA, STREAM_STEP, STREAM_BASE, STREAM_EVAL = 1, 2, 3, 4

SCHEDULES = ("cosine", "plateau", "step", None)


class NonFinite(Exception):
    """Raised by a step or evaluation function; the loop turns it into :class:`TrainingDiverged`."""

    def __init__(self, quantity: str):
        super().__init__(quantity)
        self.quantity = quantity


# ------------------------------------------------------------------------------------------- arguments
def check_nonnegative_float(value: object, name: str) -> float:
    """A finite real number >= 0, as ``float``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"'{name}' should be a non-negative number. Got {value!r}.")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"'{name}' should be a finite number >= 0. Got {value}.")
    return float(value)


def check_nonnegative_int(value: object, name: str) -> int:
    """An integer >= 0, as ``int``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"'{name}' should be a non-negative integer. Got {value!r}.")
    if value < 0:
        raise ValueError(f"'{name}' should be an integer >= 0. Got {value}.")
    return int(value)


def check_optional_positive_int(value: object, name: str) -> int | None:
    """None, or an integer >= 1."""
    return None if value is None else check_positive_int(value, name)


def check_lr(value: object, name: str) -> float:
    """A learning rate: a finite number > 0."""
    return check_positive_float(value, name)


def as_data(
    x: object, name: str, dim: int | None, dtype: torch.dtype, device: torch.device, optional: bool = False
) -> Tensor | None:
    """Convert ``x`` (tensor or numpy array ``[N, D]``) to a finite tensor of the model's dtype and device.

    Raises:
        TypeError: not a tensor / array, or not real-valued.
        ValueError: not 2-D, no rows, wrong number of columns, or rows with NaN / inf.
    """
    if x is None:
        if optional:
            return None
        raise TypeError(f"'{name}' should be a torch.Tensor or numpy array of shape [N, D]. Got None.")
    if isinstance(x, np.ndarray):
        if x.dtype == np.bool_ or not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise TypeError(f"'{name}' should hold real numbers. Got a numpy array of dtype {x.dtype}.")
        x = torch.from_numpy(np.ascontiguousarray(x))
    elif not isinstance(x, Tensor):
        raise TypeError(f"'{name}' should be a torch.Tensor or numpy array of shape [N, D]. Got {type(x).__name__}.")
    if x.is_complex() or x.dtype == torch.bool:
        raise TypeError(f"'{name}' should hold real numbers. Got dtype {x.dtype}.")
    want = "D" if dim is None else str(dim)
    if x.dim() != 2:
        raise ValueError(f"'{name}' should have shape [N, {want}]. Got shape {tuple(x.shape)}.")
    if x.shape[0] == 0:
        raise ValueError(f"'{name}' is empty: expected at least one row of shape [N, {want}], got {tuple(x.shape)}.")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"'{name}' should have {dim} columns (the model's dimension). Got shape {tuple(x.shape)}.")
    x = x.detach().to(device=device, dtype=dtype)
    finite = torch.isfinite(x).all(1)
    if not bool(finite.all()):
        bad = (~finite).nonzero().flatten()
        raise ValueError(
            f"'{name}' has {len(bad)} row(s) with NaN or inf values (first: row {int(bad[0])}) "
            f"after conversion to {dtype}; drop or impute them first."
        )
    return x


def fingerprint(x: Tensor) -> list[float]:
    """Shape, sum and sum of squares (float64): enough to notice a different training set on resume."""
    xd = x.double()
    return [float(x.shape[0]), float(x.shape[1]), float(xd.sum()), float((xd * xd).sum())]


def stream_generator(seed: int, stream: int, counter: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh ``torch.Generator`` seeded from ``(seed, stream, counter)`` by numpy's SeedSequence."""
    words = np.random.SeedSequence([seed, stream, counter]).generate_state(2, dtype=np.uint32)
    g = torch.Generator(device=device)
    g.manual_seed((int(words[0]) << 31) ^ int(words[1]))  # < 2**63
    return g


def make_scheduler(optimizer: torch.optim.Optimizer, schedule: str | None, epochs: int, mode: str):
    """Per-epoch learning-rate schedule.

    ``"cosine"``: cosine decay to 0 over ``epochs``; ``"step"``: ×0.1 at 50 % and 75 % of ``epochs``
    (the paper's multi-step decay); ``"plateau"``: ×0.5 after 5 evaluations without improvement of
    the monitored value (the training loss when there is none); None: constant.
    """
    if schedule is None:
        return None
    if schedule == "cosine":
        return CosineAnnealingLR(optimizer, T_max=epochs)
    if schedule == "step":
        return MultiStepLR(optimizer, milestones=sorted({max(1, epochs // 2), max(1, 3 * epochs // 4)}), gamma=0.1)
    if schedule == "plateau":
        return ReduceLROnPlateau(optimizer, mode=mode, factor=0.5, patience=5)
    raise ValueError(f"'schedule' should be one of {list(SCHEDULES)}. Got {schedule!r}.")


# ------------------------------------------------------------------------------------------- RNG states
def get_rng_state() -> dict:
    """Global RNG states (torch CPU, CUDA when initialised, numpy, python) as checkpoint-safe values."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return {
        "torch": torch.get_rng_state(),
        "cuda": cuda,
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": random.getstate(),
    }


def set_rng_state(state: dict) -> None:
    """Inverse of :func:`get_rng_state`."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["name"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


def _cpu_state(model: nn.Module) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _close(a: object, b: object) -> bool:
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6)
    return a == b


# ------------------------------------------------------------------------------------------- the loop
class Loop:
    """Runs ``train_step`` over shuffled minibatches, evaluates, stops early, checkpoints and resumes.

    Steps are numbered from 0 in ``train_step(indices, step)``; records and errors count them from 1.
    ``structure`` holds the settings a resumed run must share with the checkpoint (batch size,
    seed, data fingerprint, ...) and ``payload(training_state)`` builds the checkpoint dictionary
    (which must keep the model's ``state_dict`` under ``"state_dict"``).
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
    ):
        if callback is not None and not callable(callback):
            raise TypeError(f"'callback' should be callable (record -> bool | None). Got {type(callback).__name__}.")
        if progress is not None and not isinstance(progress, bool):
            raise TypeError(f"'progress' should be None, True or False. Got {progress!r}.")
        self.kind = kind
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
        self.progress = progress
        self.callback = callback
        self.structure = structure
        self.payload = payload
        self.desc = desc
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
        payload = self.payload(self._training_state())
        if "digest" not in payload:  # GEBM checkpoints carry one already
            payload["digest"] = checkpoint_digest(payload)
        atomic_torch_save(payload, self.checkpoint_path)
        self.last_checkpoint = (str(self.checkpoint_path), self.step)
        self._dirty = False

    def load(self, path: str | Path) -> None:
        """Restore model, optimizers, schedulers, RNG states, loop position and history from ``path``."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"'resume': no checkpoint at {str(path)!r}.")
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # torn or foreign files raise several types
            raise ValueError(f"'resume': {str(path)!r} is not a readable checkpoint: {type(e).__name__}: {e}") from e
        training = None
        if isinstance(ckpt, dict):
            extra = ckpt.get("extra")
            training = ckpt.get("training") or (extra.get("training") if isinstance(extra, dict) else None)
        if not isinstance(training, dict) or training.get("format") != TRAINING_FORMAT:
            raise ValueError(f"'resume': {str(path)!r} is not a gebm_ppl training checkpoint.")
        verify_digest(ckpt, f"'resume': {str(path)!r}", required=True)  # restores exactly what was saved
        try:
            self._restore(ckpt, training, path)
        except (KeyError, TypeError, AttributeError, IndexError, RuntimeError) as e:
            raise ValueError(
                f"'resume': {str(path)!r} is a damaged training checkpoint ({type(e).__name__}: {e})."
            ) from e

    def _restore(self, ckpt: dict, training: dict, path: Path) -> None:
        if training.get("version") != TRAINING_VERSION:
            raise ValueError(
                f"'resume': {str(path)!r} has training-checkpoint version {training.get('version')!r}; "
                f"expected {TRAINING_VERSION}."
            )
        if training["kind"] != self.kind:
            raise ValueError(
                f"'resume': {str(path)!r} was written by a {training['kind']!r} run, not a {self.kind!r} run."
            )
        for key, value in self.structure.items():
            saved = training["structure"].get(key)
            if not _close(saved, value):
                raise ValueError(
                    f"'resume': the checkpoint was written with {key} = {saved!r}, but this call has {value!r}; "
                    "an exact continuation needs the same value."
                )
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
        try:
            metrics = evaluate() if evaluate is not None else {}
        except NonFinite as err:
            raise self.diverged(err.quantity, self.step, self.epoch + 1 if partial else self.epoch) from None
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
                self.best_state = _cpu_state(self.model)
                self.bad_evals = 0
            else:
                self.bad_evals += 1
        h.records.append(record)
        return record

    def _callback(self, record: dict) -> bool:
        return bool(self.callback(dict(record))) if self.callback is not None else False

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

    def _bar(self):
        show = sys.stderr.isatty() if self.progress is None else self.progress
        if not show:
            return None
        from tqdm import tqdm

        return tqdm(total=self.epochs, initial=self.epoch, desc=self.desc, unit="epoch", leave=False, file=sys.stderr)

    # ---------------------------------------------------------------- run
    def run(self, train_step: Callable[[Tensor, int], dict], evaluate: Callable[[], dict]) -> TrainingHistory:
        """Train until ``epochs``, patience, a callback or ``max_steps`` stops it; restore the best weights."""
        h = self.history
        self._t0 = time.perf_counter()
        S, B = self.steps_per_epoch, self.batch_size
        bar = self._bar()
        stop = self._initial_stop()
        try:
            while stop is None:
                perm = torch.randperm(self.n, generator=stream_generator(self.seed, STREAM_DATA, self.epoch))
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
                if bar is not None:
                    bar.update(1)
                    shown = {k: record[k] for k in ("train_loss", self.monitor) if k and record.get(k) is not None}
                    bar.set_postfix({k: f"{v:.4g}" for k, v in shown.items()})
                if self._callback(record):
                    stop = "callback"
                else:
                    stop = self._initial_stop()
                if self.checkpoint_path is not None and (self.checkpoint_every is None or stop is not None):
                    self.save()
        finally:
            if bar is not None:
                bar.close()
        if self.checkpoint_path is not None and self._dirty:
            self.save()
        h.stop_reason = stop
        h.stopped_early = stop != "epochs"
        self._sync_times()
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        return h
