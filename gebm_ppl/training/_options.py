"""Options every training loop shares (``TrainingOptions``) and the learning-rate schedules (``make_scheduler``)."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, MultiStepLR, ReduceLROnPlateau

from ._checks import check_nonnegative_int, check_optional_positive_int, check_positive_int

__all__ = ["SCHEDULES", "TrainingOptions", "make_scheduler", "pick", "resolve"]

SCHEDULES = ("cosine", "plateau", "step", None)


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


def pick(cls: type, values: dict):
    """``cls(**values)`` restricted to the dataclass ``cls``'s fields (the other keys of ``values`` are ignored)."""
    return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})


def _same(a: object, b: object) -> bool:
    try:
        return a is b or (type(a) is type(b) and bool(a == b))
    except Exception:  # noqa: BLE001 - values without a plain truth value (arrays, tensors) differ
        return False


def resolve(cls: type, given: object, values: dict, func: Callable, name: str):
    """The ``cls`` options of one call of the training function ``func``: ``given`` when passed, else built.

    ``values`` are the call's arguments (its ``locals()``). Without ``given``, :func:`pick` builds and checks
    a ``cls`` from them; with ``given`` (a ``cls``, already checked), a keyword of ``cls`` that the call
    also changed from ``func``'s default is a TypeError, so that no setting is silently ignored.
    """
    if given is None:
        return pick(cls, values)
    if not isinstance(given, cls):
        raise TypeError(f"'{name}' should be a {cls.__name__}. Got {type(given).__name__}.")
    params = inspect.signature(func).parameters
    clash = sorted(
        f.name for f in fields(cls)
        if f.name in params and f.name in values and not _same(values[f.name], params[f.name].default)
    )  # fmt: skip
    if clash:
        raise TypeError(f"{', '.join(map(repr, clash))}: pass them in '{name}' or as keywords, not both.")
    return given


@dataclass
class TrainingOptions:
    """The loop options shared by :func:`~gebm_ppl.fit_mle`, :func:`~gebm_ppl.fit_kale` (and the adversarial loop).

    Checked on construction (each error names the keyword). Their meaning is the same in every
    loop; see :func:`~gebm_ppl.fit_mle` for each one. The defaults here are ``fit_kale``'s;
    ``fit_mle`` passes its own (200 epochs, batch size 256, evaluation batches of 8192).

    Attributes:
        epochs: maximum number of passes over the training set.
        batch_size: data points per optimizer step.
        patience: evaluations without improvement before stopping (None: never stop early).
        schedule: ``"cosine"``, ``"step"``, ``"plateau"`` or None.
        eval_every: evaluate every this many epochs (and after the last one).
        seed: seed of every random stream of the run.
        device: move the model there first (None: where its parameters are).
        progress: True, False or None (a bar on a terminal, periodic log lines elsewhere).
        callback: called with each epoch's record; returning True stops training.
        checkpoint_path: where checkpoints are written atomically (None: no checkpoints).
        checkpoint_every: checkpoint every this many steps instead of every epoch.
        resume: a checkpoint of an earlier run of the same loop to continue exactly.
        max_steps: stop after this many optimizer steps in total (resumes included).
        eval_batch_size: rows per forward pass when evaluating.
    """

    epochs: int = 100
    batch_size: int = 100
    patience: int | None = 20
    schedule: str | None = "cosine"
    eval_every: int = 1
    seed: int = 0
    device: str | torch.device | None = None
    progress: bool | None = None
    callback: Callable[[dict], bool | None] | None = None
    checkpoint_path: str | os.PathLike | None = None
    checkpoint_every: int | None = None
    resume: str | os.PathLike | None = None
    max_steps: int | None = None
    eval_batch_size: int = 10_000

    def __post_init__(self) -> None:
        self.epochs = check_positive_int(self.epochs, "epochs")
        self.batch_size = check_positive_int(self.batch_size, "batch_size")
        self.patience = check_optional_positive_int(self.patience, "patience")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"'schedule' should be one of {list(SCHEDULES)}. Got {self.schedule!r}.")
        self.eval_every = check_positive_int(self.eval_every, "eval_every")
        self.seed = check_nonnegative_int(self.seed, "seed")
        self.checkpoint_every = check_optional_positive_int(self.checkpoint_every, "checkpoint_every")
        self.max_steps = check_optional_positive_int(self.max_steps, "max_steps")
        self.eval_batch_size = check_positive_int(self.eval_batch_size, "eval_batch_size")
        if self.callback is not None and not callable(self.callback):
            raise TypeError(
                f"'callback' should be callable (record -> bool | None). Got {type(self.callback).__name__}."
            )
        if self.progress is not None and not isinstance(self.progress, bool):
            raise TypeError(f"'progress' should be None, True or False. Got {self.progress!r}.")

    @classmethod
    def pick(cls, values: dict):
        """The options named in ``values`` (e.g. a training function's ``locals()``); other keys are ignored."""
        return pick(cls, values)

    def loop_kwargs(self) -> dict:
        """The keywords of :class:`~gebm_ppl.training._loop.Loop` these options fill."""
        keys = ("batch_size", "epochs", "patience", "eval_every", "seed", "max_steps", "checkpoint_path",
                "checkpoint_every", "progress", "callback")  # fmt: skip
        return {k: getattr(self, k) for k in keys}

    def to_dict(self) -> dict:
        """The options as a dict (the callback included as is, not copied)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}
