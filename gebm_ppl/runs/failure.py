"""A training stage that diverged: what ``run.json`` records about it, and the message that says what to change.

When a stage of :func:`~gebm_ppl.runs.fit_run` raises :class:`gebm_ppl.TrainingDiverged`, the run is
marked ``"status": "failed"`` with a ``failure`` record (stage, step, epoch, the quantity that was not
finite, the last good checkpoint, and the configuration setting to change: the stage's learning rate,
with a value ten times smaller to try). :class:`RunFailed` carries that record; ``gebm fit`` prints its
message and exits 1, and :func:`~gebm_ppl.runs.load_run` (so ``gebm evaluate`` and ``gebm sample``)
explains the recorded failure instead of asking for the same command again.
"""

from __future__ import annotations

from ..training.history import TrainingDiverged

__all__ = ["LEARNING_RATES", "RunFailed", "failure_message", "failure_record"]

LEARNING_RATES = {"mle": "lr", "kale": "energy_lr", "adversarial": "lr"}
"""The setting of each stage whose lowering most often cures a divergence (its Adam learning rate)."""


class RunFailed(TrainingDiverged):
    """A stage of a run diverged; ``record`` is the ``failure`` entry written to ``run.json``.

    A :class:`gebm_ppl.TrainingDiverged` (code that catches that keeps working) whose message names the
    setting to change; the loop's own error is its ``__cause__``.
    """

    def __init__(self, message: str, record: dict, cause: TrainingDiverged | None = None):
        super().__init__(message, step=record.get("step"), epoch=record.get("epoch"), quantity=record.get("quantity"),
                         checkpoint_path=record.get("checkpoint"),
                         checkpoint_step=getattr(cause, "checkpoint_step", None),
                         history=getattr(cause, "history", None))
        self.record = record


def _current(stage: str, key: str, config: dict) -> float | None:
    """The value of ``[stage] key`` in ``config``, else the training function's default."""
    from .config import _parameters, _training_functions

    value = (config.get(stage) or {}).get(key)
    if value is None:
        param = _parameters(_training_functions()[stage]).get(key)
        value = None if param is None else param.default
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def failure_record(stage: str, error: BaseException, config: dict) -> dict:
    """The ``failure`` entry of ``run.json`` for ``error`` (a TrainingDiverged) raised by ``stage``.

    Keys: ``stage``, ``step``, ``epoch``, ``quantity`` (what was not finite), ``checkpoint`` (the last good
    checkpoint of the stage, or None), ``setting`` (``"<stage>.<key>"`` to change), ``value`` (its value in
    this run), ``suggestion`` (value / 10) and ``message`` (:func:`failure_message`).
    """
    key = LEARNING_RATES.get(stage, "lr")
    value = _current(stage, key, config)
    record = {
        "stage": stage,
        "step": getattr(error, "step", None),
        "epoch": getattr(error, "epoch", None),
        "quantity": getattr(error, "quantity", None),
        "checkpoint": getattr(error, "checkpoint_path", None),
        "setting": f"{stage}.{key}",
        "value": value,
        "suggestion": None if value is None else float(f"{value / 10:.3g}"),
    }
    record["message"] = failure_message(record)
    return record


def failure_message(record: dict) -> str:
    """One paragraph: where the stage diverged and which setting to lower (CLI and Python alike)."""
    stage, setting = record.get("stage"), record.get("setting")
    what = f"the {record['quantity']}" if record.get("quantity") else "a training value"
    where = f"at step {record.get('step')} (epoch {record.get('epoch')})"
    kept = (f" The last good checkpoint is {record['checkpoint']!r}." if record.get("checkpoint")
            else " It diverged before its first checkpoint.")
    if record.get("value") is not None:
        change = f"Lower {setting} (it was {record['value']:g}), e.g. --set {setting}={record['suggestion']:g}"
    else:
        change = f"Lower {setting}"
    return (f"fit_{stage} diverged {where}: {what} is not finite.{kept} {change}, or clip the gradients harder "
            f"({stage}.grad_clip), then fit again: a failed run is replaced by a run with other settings.")
