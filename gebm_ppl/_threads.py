"""Torch CPU threads for gebm_ppl's loops: one thread for small networks unless the user chose a count.

Torch starts with one intra-op thread per core. The networks of a GEBM on tabular data (a RealNVP of
width 100, an MLP energy) are too small for several threads to pay: each matrix product is split
into pieces shorter than the cost of waking the threads, and on a machine whose cores are busy (a
shared CI runner, several jobs) the threads wait for each other. Measured on a loaded 2-core machine
(issue 21): three MLE epochs on red-wine took 25.4 s with torch's default threads and 0.2 s with one;
``examples/pyro_prior_imputation.py --quick`` 142 s against 9 s. So the training loops and the torch
samplers run a small network (:func:`is_small`) on one thread, and leave torch's setting alone
otherwise or when the user chose a count.

A count is the user's choice (and is honoured) when any of these holds:

* an enclosing :func:`torch_threads` block was given an explicit ``n`` (``gebm --threads N`` uses one);
* the environment sets ``GEBM_NUM_THREADS`` (used as the count), ``OMP_NUM_THREADS`` or
  ``MKL_NUM_THREADS`` (torch already reads them);
* ``torch.set_num_threads`` was called with a count other than torch's default, which is the
  inter-op thread count (torch starts both at one per core; code rarely changes the inter-op one).

API (for the training loops, the samplers and other branches that pick threads, e.g. image training):
:func:`choose_threads` (the automatic choice), :func:`torch_threads` (a context manager that applies
it, or an explicit count, and restores torch's count after), :func:`model_threads` (a method decorator
for objects with a ``model``), :func:`user_choice` and :func:`is_small`.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

__all__ = [
    "ENV_VARIABLE",
    "SMALL_MODEL_PARAMETERS",
    "choose_threads",
    "is_small",
    "model_threads",
    "torch_threads",
    "user_choice",
]

ENV_VARIABLE = "GEBM_NUM_THREADS"
SMALL_MODEL_PARAMETERS = 1_000_000
"""A network without convolutions and with fewer parameters than this runs on one thread by default."""

_EXPLICIT: contextvars.ContextVar[bool] = contextvars.ContextVar("gebm_ppl_explicit_threads", default=False)


def _env_count() -> int | None:
    text = os.environ.get(ENV_VARIABLE, "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"${ENV_VARIABLE} should be a positive integer (torch threads). Got {text!r}.") from None
    if value < 1:
        raise ValueError(f"${ENV_VARIABLE} should be a positive integer (torch threads). Got {value}.")
    return value


def user_choice() -> bool:
    """Whether the user chose torch's thread count (see the module docstring for the rules)."""
    if _EXPLICIT.get() or _env_count() is not None:
        return True
    if any(os.environ.get(k, "").strip() for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")):
        return True
    return torch.get_num_threads() != torch.get_num_interop_threads()


def is_small(model: nn.Module | None) -> bool:
    """A module without convolutions and with fewer than :data:`SMALL_MODEL_PARAMETERS` parameters."""
    if model is None or not isinstance(model, nn.Module):
        return False
    if any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules()):
        return False
    return sum(p.numel() for p in model.parameters()) < SMALL_MODEL_PARAMETERS


def choose_threads(model: nn.Module | None = None) -> int | None:
    """The automatic count for work on ``model``: ``$GEBM_NUM_THREADS`` if set; None (leave torch's count)
    when the user chose one otherwise or the model is not small; else 1."""
    env = _env_count()
    if env is not None:
        return env
    if user_choice() or not is_small(model):
        return None
    return 1


@contextlib.contextmanager
def torch_threads(n: int | None = None, *, model: nn.Module | None = None) -> Iterator[int]:
    """Run the block with ``n`` torch threads (``n = 0``: torch's current count), or with the automatic
    :func:`choose_threads` (``model``) when ``n`` is None; restore torch's count after. An explicit ``n``
    (0 included) counts as the user's choice for automatic choices nested in the block. Yields the count
    in effect."""
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
        raise ValueError(f"'n' should be an integer >= 0 (torch threads; 0: torch's count). Got {n!r}.")
    old = torch.get_num_threads()
    count = choose_threads(model) if n is None else (n or None)
    token = _EXPLICIT.set(True) if n is not None else None
    if count is not None and count != old:
        torch.set_num_threads(count)
    try:
        yield torch.get_num_threads()
    finally:
        if token is not None:
            _EXPLICIT.reset(token)
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)


def model_threads(method: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a method of an object holding ``self.model``: the call runs under ``torch_threads(model=...)``."""

    @functools.wraps(method)
    def wrapped(self, *args, **kwargs):
        with torch_threads(model=getattr(self, "model", None)):
            return method(self, *args, **kwargs)

    return wrapped
