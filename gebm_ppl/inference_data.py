"""The ArviZ InferenceData of a latent-space sampling run, shared by the Pyro (torch) and NumPyro (JAX) backends.

Layout: ``posterior`` holds ``z`` (chain, draw, z_dim), the latent draws, and ``x`` (chain, draw, x_dim),
their images G_θ(z); ``sample_stats`` holds per-draw statistics (chain, draw); the run's attributes
(strings and numbers) are set on the InferenceData and on both groups. The statistics each sampler
records are listed in :mod:`gebm_ppl.sampling`. This module imports neither torch nor JAX.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["build_inference_data"]


def _numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor; dtypes kept: float32/64, int64 (step counts), bool (flags)
        return value.detach().cpu().numpy()
    return np.asarray(value)


def build_inference_data(
    z: Any,
    x: Any,
    sample_stats: Mapping[str, Any],
    attrs: Mapping[str, Any],
):
    """The :class:`arviz.InferenceData` of a latent-space run.

    Args:
        z: latent draws ``[chain, draw, d]`` (a torch tensor or an array).
        x: data-space draws G_θ(z) ``[chain, draw, D]``.
        sample_stats: per-draw statistics ``{name: [chain, draw]}``.
        attrs: run attributes (strings and numbers); set on the InferenceData and on both groups.

    Returns:
        An ``arviz.InferenceData`` (a ``DataTree`` with ArviZ ≥ 1).
    """
    import arviz as az

    posterior = {"z": _numpy(z), "x": _numpy(x)}
    stats = {name: _numpy(v) for name, v in sample_stats.items()}
    dims = {"z": ["z_dim"], "x": ["x_dim"]}
    attrs = dict(attrs)
    if int(az.__version__.split(".")[0]) >= 1:  # ArviZ 1.x: one dict of groups, returns a DataTree
        idata = az.from_dict({"posterior": posterior, "sample_stats": stats}, dims=dims)
        for node in (idata, idata["posterior"], idata["sample_stats"]):
            node.attrs.update(attrs)
        return idata
    with warnings.catch_warnings():
        # ArviZ guesses the layout from the shapes; ours is (chain, draw, ...) by construction.
        warnings.filterwarnings("ignore", message="More chains .* than draws", category=UserWarning)
        return az.from_dict(
            posterior=posterior,
            sample_stats=stats,
            dims=dims,
            attrs=dict(attrs),
            posterior_attrs=dict(attrs),
            sample_stats_attrs=dict(attrs),
        )
