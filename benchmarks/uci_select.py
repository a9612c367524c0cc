"""Hyperparameter selection of the UCI benchmark on the validation split only: a coordinate search.

The search space is a few axes, each a list of values whose first entry is the configuration's own
(unregularised) setting. Starting from that point, the axes are visited in order; along each, every
other value is tried with the remaining coordinates held at the best point so far, and the point
moves to the value with the lowest validation NLL (a strict improvement; ties keep the earlier point).
With axes of sizes k₁, …, k_m this costs 1 + Σ(k_i − 1) fits instead of Π k_i. Test figures of the
trials may be recorded for the report, but :func:`pick` never reads them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence

from uci_stats import finite

__all__ = ["Trial", "axes_from_config", "coordinate_search", "pick", "point_label"]

Trial = dict
"""One fitted grid point: ``{"point": {key: value}, "val_nll": float, **anything the fit returned}``."""


def axes_from_config(table: Mapping | None, keys: Sequence[str]) -> list[tuple[str, list]]:
    """The axes ``[(key, values)]`` of ``table`` (a ``[select]`` sub-table) in the order of ``keys``.

    A key absent from the table is not searched. Values must be a non-empty list.

    Raises:
        ValueError: a value that is not a non-empty list, or a key that is not one of ``keys``.
    """
    table = dict(table or {})
    unknown = sorted(set(table) - set(keys))
    if unknown:
        raise ValueError(f"unknown selection axes {unknown}; expected some of {list(keys)}.")
    axes = []
    for key in keys:
        if key not in table:
            continue
        values = table[key]
        if not isinstance(values, list) or not values:
            raise ValueError(f"selection axis {key!r} should be a non-empty list of values. Got {values!r}.")
        axes.append((key, list(values)))
    return axes


def _key(point: Mapping) -> str:
    return json.dumps(point, sort_keys=True)


def point_label(point: Mapping, short: Mapping[str, str] | None = None) -> str:
    """``"σ=0.1, wd=0, width=100"``: a point for tables (``short`` maps keys to display names)."""
    short = short or {}
    return ", ".join(f"{short.get(k, k)}={v}" for k, v in point.items())


def pick(trials: Sequence[Mapping]) -> int:
    """Index of the trial with the lowest finite ``val_nll`` (the first on ties); ValueError if none is finite."""
    best, best_value = None, math.inf
    for i, t in enumerate(trials):
        v = t.get("val_nll")
        if finite(v) and v < best_value:
            best, best_value = i, float(v)
    if best is None:
        raise ValueError("no trial has a finite validation NLL: every grid point failed.")
    return best


def coordinate_search(
    axes: Sequence[tuple[str, Sequence]], fit: Callable[[dict], Trial]
) -> tuple[int, list[Trial]]:
    """Coordinate search of :data:`axes` by validation NLL; returns ``(index of the chosen trial, trials)``.

    ``fit(point)`` trains one point and returns a dict with ``val_nll`` (math.inf or NaN for a failed
    fit: such a point is never chosen). Trial 0 is the starting point (every axis at its first value).
    Each point is fitted at most once.
    """
    current = {k: values[0] for k, values in axes}
    trials: list[Trial] = []
    index: dict[str, int] = {}

    def run(point: dict) -> int:
        k = _key(point)
        if k not in index:
            trial = dict(fit(dict(point)))
            trial["point"] = dict(point)
            index[k] = len(trials)
            trials.append(trial)
        return index[k]

    best = run(current)
    for key, values in axes:
        for v in values[1:]:
            i = run({**current, key: v})
            if finite(trials[i].get("val_nll")) and (not finite(trials[best].get("val_nll"))
                                                       or trials[i]["val_nll"] < trials[best]["val_nll"]):
                best = i
        current = dict(trials[best]["point"])
    return best, trials
