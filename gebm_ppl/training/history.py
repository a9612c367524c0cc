"""What a training run returns (TrainingHistory) and how it fails (TrainingDiverged)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

__all__ = ["TrainingDiverged", "TrainingHistory"]


@dataclass
class TrainingHistory:
    """Per-epoch records and summary of a :func:`~gebm_ppl.fit_mle` or :func:`~gebm_ppl.fit_kale` run.

    Every record is a flat dict of plain Python values (JSON-ready). Keys common to both loops:
    ``epoch`` (1-based count of epochs run), ``step`` (optimizer steps so far), ``partial`` (the
    epoch was cut short by ``max_steps``), ``train_loss`` (mean minibatch loss over the epoch),
    ``lr``, ``epoch_time`` (seconds of training steps), ``eval_time`` and ``wall_time`` (seconds
    since the start, resumes included). ``fit_mle`` adds ``val_nll``; ``fit_kale`` adds the KALE
    values and the log-partition estimate (see its docstring). Values not evaluated in an epoch
    are ``None``.

    Attributes:
        kind: ``"mle"`` (fit_mle), ``"kale"`` (fit_kale) or ``"adversarial"`` (fit_adversarial).
        monitor: the record key early stopping watches (``"val_nll"``, ``"kale_val"``) or None.
        mode: ``"min"`` or ``"max"``: whether a smaller or a larger ``monitor`` is better.
        records: the per-epoch records.
        best_epoch: epoch of the best monitored value (its weights are restored), or None.
        best_value: the best monitored value, or None.
        total_steps: optimizer steps over the whole run (resumes included).
        wall_time: seconds, resumes included.
        train_time: seconds spent in training steps.
        eval_time: seconds spent evaluating.
        steps_per_second: ``total_steps / train_time``, the speed of the loop itself.
        stopped_early: True when patience, a callback or ``max_steps`` ended the run before ``epochs``.
        stop_reason: ``"epochs"``, ``"patience"``, ``"callback"`` or ``"max_steps"``.
        settings: the hyperparameters of the run.
    """

    kind: str
    monitor: str | None = None
    mode: str = "min"
    records: list[dict] = field(default_factory=list)
    best_epoch: int | None = None
    best_value: float | None = None
    total_steps: int = 0
    wall_time: float = 0.0
    train_time: float = 0.0
    eval_time: float = 0.0
    steps_per_second: float = 0.0
    stopped_early: bool = False
    stop_reason: str | None = None
    settings: dict = field(default_factory=dict)

    def series(self, key: str) -> list:
        """The values of ``key`` over the records (``None`` where it was not evaluated)."""
        return [r.get(key) for r in self.records]

    @property
    def last(self) -> dict:
        """The last record (an empty dict before the first epoch)."""
        return self.records[-1] if self.records else {}

    def to_dict(self) -> dict:
        """A deep copy made of plain Python values (``json.dumps`` accepts it)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainingHistory:
        """Inverse of :meth:`to_dict` (unknown keys are ignored)."""
        names = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        kwargs["records"] = [dict(r) for r in kwargs.get("records", [])]
        kwargs["settings"] = dict(kwargs.get("settings", {}))
        return cls(**kwargs)

    def __repr__(self) -> str:
        best = "None" if self.best_value is None else f"{self.best_value:.4f}"
        rate = self.steps_per_second if math.isfinite(self.steps_per_second) else float("nan")
        return (
            f"TrainingHistory(kind={self.kind!r}, epochs={len(self.records)}, steps={self.total_steps}, "
            f"best_epoch={self.best_epoch}, best_{self.monitor or 'value'}={best}, "
            f"wall_time={self.wall_time:.1f}s, steps_per_second={rate:.1f}, stop_reason={self.stop_reason!r})"
        )


class TrainingDiverged(RuntimeError):
    """A loss, a gradient, the log-partition c or a validation value became NaN or infinite.

    Attributes:
        step: the optimizer step (1-based) whose computation was not finite.
        epoch: the epoch (1-based) it belongs to.
        quantity: what was not finite (e.g. ``"KALE energy loss"``).
        checkpoint_path: the last good checkpoint written (or resumed from) by this run, or None.
        checkpoint_step: the step that checkpoint holds, or None.
        history: the :class:`TrainingHistory` up to the last full epoch.
    """

    def __init__(
        self,
        message: str,
        *,
        step: int,
        epoch: int,
        quantity: str,
        checkpoint_path: str | None = None,
        checkpoint_step: int | None = None,
        history: TrainingHistory | None = None,
    ):
        super().__init__(message)
        self.step = step
        self.epoch = epoch
        self.quantity = quantity
        self.checkpoint_path = checkpoint_path
        self.checkpoint_step = checkpoint_step
        self.history = history
