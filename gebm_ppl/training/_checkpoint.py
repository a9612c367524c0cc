"""The training-checkpoint format: what a resumable checkpoint holds, how it is written, read and checked.

A training checkpoint is a dictionary (``torch.save``, written atomically) holding the model's
``state_dict`` under ``"state_dict"``, a ``"digest"`` of its contents, and the loop's state under
``"training"`` (or ``extra["training"]`` inside a :meth:`gebm_ppl.GEBM.checkpoint`):
``{"format": TRAINING_FORMAT, "version": TRAINING_VERSION, "kind", "structure", "loop",
"optimizers", "schedulers", "rng", "best_state", "history"}``. ``structure`` holds the settings a
resumed run must share with the checkpoint (batch size, seed, data fingerprint, ...).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from .._io import atomic_torch_save
from ..gebm import checkpoint_digest, verify_digest

__all__ = [
    "TRAINING_FORMAT",
    "TRAINING_VERSION",
    "check_compatible",
    "cpu_state",
    "read_training_checkpoint",
    "same_value",
    "write_checkpoint",
]

TRAINING_FORMAT = "gebm_ppl.training"
TRAINING_VERSION = 1


def cpu_state(model: nn.Module) -> dict:
    """A detached CPU copy of ``model.state_dict()``."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def same_value(a: object, b: object) -> bool:
    """Equality of structure values, with floats compared to 1e-6 (relative or absolute)."""
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6)
    return a == b


def write_checkpoint(payload: dict, path: Path) -> None:
    """Add a digest (unless the payload carries one, as GEBM checkpoints do) and write ``payload`` atomically."""
    if "digest" not in payload:
        payload["digest"] = checkpoint_digest(payload)
    atomic_torch_save(payload, path)


def read_training_checkpoint(path: str | Path) -> tuple[dict, dict]:
    """Load ``path`` and return ``(checkpoint, training_state)``; the digest must match.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: unreadable, not a gebm_ppl training checkpoint, or altered since it was written.
    """
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
    return ckpt, training


def check_compatible(training: dict, kind: str, structure: dict, path: str | Path) -> None:
    """Refuse (ValueError) a checkpoint of another version, another kind of run or other structural settings."""
    path = str(path)
    if training.get("version") != TRAINING_VERSION:
        raise ValueError(
            f"'resume': {path!r} has training-checkpoint version {training.get('version')!r}; "
            f"expected {TRAINING_VERSION}."
        )
    if training["kind"] != kind:
        raise ValueError(f"'resume': {path!r} was written by a {training['kind']!r} run, not a {kind!r} run.")
    for key, value in structure.items():
        saved = training["structure"].get(key)
        if not same_value(saved, value):
            raise ValueError(
                f"'resume': the checkpoint was written with {key} = {saved!r}, but this call has {value!r}; "
                "an exact continuation needs the same value."
            )
