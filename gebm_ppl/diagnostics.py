"""MCMC diagnostics of latent-space runs: summary tables (R-hat, ESS, E-BFMI, divergences) and PNG plots.

Works on the :class:`arviz.InferenceData` of :func:`gebm_ppl.sample_latent` (layout in
:mod:`gebm_ppl.sampling`). Plots are drawn on Agg canvases (no pyplot state, no display needed) and
written atomically.

Length: the summary table and the four plot kinds share the InferenceData handling and the atomic PNG
writer, so they stay in one module.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._io import atomic_open

__all__ = [
    "chain_summary",
    "plot_pair",
    "plot_rank",
    "plot_trace",
    "report",
    "run_summary",
    "summary",
]

_HMC_METHODS = ("nuts", "hmc")


def _check_idata(idata: Any) -> None:
    if not hasattr(idata, "posterior") or not hasattr(idata, "sample_stats"):
        raise TypeError(
            "'idata' should be an arviz.InferenceData with 'posterior' and 'sample_stats' groups "
            f"(from gebm_ppl.sample_latent). Got {type(idata).__name__}."
        )


def _var_names(idata, var_names: str | Sequence[str]) -> list[str]:
    names = [var_names] if isinstance(var_names, str) else list(var_names)
    missing = [n for n in names if n not in idata.posterior]
    if missing:
        raise ValueError(f"'var_names' {missing} not in the posterior (has {sorted(idata.posterior.data_vars)}).")
    return names


def summary(idata, var_names: str | Sequence[str] = ("x",)):
    """Per-dimension posterior summary: mean, sd, Monte-Carlo standard errors, bulk/tail ESS and R-hat.

    Rank-normalised split R-hat and ESS (Vehtari et al., 2021, https://arxiv.org/abs/1903.08008) via
    :func:`arviz.summary`.

    Args:
        idata: the InferenceData of a latent-space run.
        var_names: posterior variables, ``"x"`` (data space) and/or ``"z"`` (latent space).

    Returns:
        a ``pandas.DataFrame`` with one row per variable component (``x[0]``, ...) and columns
        ``mean, sd, mcse_mean, mcse_sd, ess_bulk, ess_tail, r_hat``.
    """
    import arviz as az

    _check_idata(idata)
    names = _var_names(idata, var_names)
    # A chain that never moved has zero within-chain variance: R-hat is then inf / NaN, which is the
    # diagnosis to report, not a floating-point error to raise.
    with np.errstate(divide="ignore", invalid="ignore"):
        table = az.summary(idata, var_names=names, kind="all")
    return table[["mean", "sd", "mcse_mean", "mcse_sd", "ess_bulk", "ess_tail", "r_hat"]]


def chain_summary(idata):
    """Per-chain sampler statistics: draws, mean ``lp``, divergences, E-BFMI, acceptance rate, steps.

    E-BFMI = Σ(Eₙ − Eₙ₋₁)² / Σ(Eₙ − Ē)² of the Hamiltonian ``energy`` (Betancourt, 2016,
    https://arxiv.org/abs/1604.00695); values below 0.3 flag poor momentum resampling. It exists only
    for NUTS/HMC; columns without a statistic for the method hold NaN.

    Returns:
        a ``pandas.DataFrame`` indexed by chain with columns ``draws, lp_mean, divergences, e_bfmi,
        acceptance_rate, mean_n_steps``.
    """
    import arviz as az
    import pandas as pd

    _check_idata(idata)
    stats = idata.sample_stats
    chains = idata.posterior.sizes["chain"]
    draws = idata.posterior.sizes["draw"]
    nan = np.full(chains, np.nan)

    def per_chain(name: str, reduce) -> np.ndarray:
        return reduce(np.asarray(stats[name]), axis=1) if name in stats else nan

    with np.errstate(divide="ignore", invalid="ignore"):  # a constant energy trace gives NaN, not an error
        e_bfmi = np.asarray(az.bfmi(idata)) if "energy" in stats else nan
    table = pd.DataFrame(
        {
            "draws": np.full(chains, draws),
            "lp_mean": per_chain("lp", np.mean),
            "divergences": per_chain("diverging", np.sum),
            "e_bfmi": e_bfmi,
            "acceptance_rate": per_chain("acceptance_rate", np.mean),
            "mean_n_steps": per_chain("n_steps", np.mean),
        },
        index=pd.Index(np.arange(chains), name="chain"),
    )
    return table


def run_summary(idata, var_names: str | Sequence[str] = ("x",)) -> dict[str, Any]:
    """Whole-run figures: method, sizes, cost, worst-case R-hat and ESS, ESS per second and per gradient.

    Returns:
        a dict with ``method, backend, temperature, num_chains, num_draws, num_grad_evals,
        sampling_time, min_ess_bulk, min_ess_tail, max_r_hat, ess_bulk_per_second,
        ess_bulk_per_grad_eval`` (None without gradients), ``divergences`` and ``min_e_bfmi``
        (None for methods without them).
    """
    _check_idata(idata)
    table = summary(idata, var_names)
    chains = chain_summary(idata)
    attrs = dict(idata.attrs) if getattr(idata, "attrs", None) else dict(idata.posterior.attrs)
    grads = int(attrs.get("num_grad_evals", 0))
    seconds = float(attrs.get("sampling_time", math.nan))
    min_bulk = float(table["ess_bulk"].min())
    method = attrs.get("method")
    return {
        "method": method,
        "backend": attrs.get("backend"),
        "temperature": attrs.get("temperature"),
        "num_chains": int(idata.posterior.sizes["chain"]),
        "num_draws": int(idata.posterior.sizes["draw"]),
        "num_grad_evals": grads,
        "sampling_time": seconds,
        "min_ess_bulk": min_bulk,
        "min_ess_tail": float(table["ess_tail"].min()),
        "max_r_hat": float(table["r_hat"].max()),
        "ess_bulk_per_second": min_bulk / seconds if seconds > 0 else math.nan,
        "ess_bulk_per_grad_eval": min_bulk / grads if grads > 0 else None,
        "divergences": int(chains["divergences"].sum()) if "diverging" in idata.sample_stats else None,
        "min_e_bfmi": float(chains["e_bfmi"].min()) if "energy" in idata.sample_stats else None,
    }


def report(idata, var_names: str | Sequence[str] = ("x",)) -> str:
    """A plain-text report: the run summary, the per-chain table and the per-dimension table."""
    import pandas as pd

    run = run_summary(idata, var_names)
    lines = [f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}" for k, v in run.items()]
    with pd.option_context("display.width", 120, "display.max_columns", 20):
        return "\n".join(
            [
                *lines,
                "",
                chain_summary(idata).to_string(float_format=lambda v: f"{v:.3g}"),
                "",
                summary(idata, var_names).to_string(float_format=lambda v: f"{v:.3g}"),
            ]
        )


def _figure(nrows: int, ncols: int, width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _save(fig, path: str | os.PathLike, dpi: int) -> Path:
    path = Path(path)
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=dpi)
    return path


def _dims(idata, var_name: str, dims: Sequence[int] | None, max_dims: int) -> list[int]:
    size = idata.posterior[var_name].shape[-1]
    if dims is None:
        return list(range(min(size, max_dims)))
    dims = [int(i) for i in dims]
    bad = [i for i in dims if not 0 <= i < size]
    if bad:
        raise ValueError(f"'dims' {bad} out of range for {var_name!r} with {size} components.")
    return dims


def plot_trace(
    idata,
    path: str | os.PathLike,
    var_name: str = "x",
    dims: Sequence[int] | None = None,
    max_dims: int = 8,
    dpi: int = 100,
) -> Path:
    """Trace plot (marginal densities per chain and traces) of ``var_name``'s components, saved as PNG.

    Args:
        idata: the InferenceData of a latent-space run.
        path: output file.
        var_name: ``"x"`` or ``"z"``.
        dims: components to show; None shows the first ``max_dims``.
        dpi: resolution.

    Returns:
        the path written.
    """
    import arviz as az

    _check_idata(idata)
    (var_name,) = _var_names(idata, var_name)
    dims = _dims(idata, var_name, dims, max_dims)
    fig, axes = _figure(len(dims), 2, 10, 1.8 * len(dims))
    az.plot_trace(
        idata,
        var_names=[var_name],
        coords={f"{var_name}_dim": dims},
        compact=False,
        axes=axes,
        show=False,
    )
    return _save(fig, path, dpi)


def plot_rank(
    idata,
    path: str | os.PathLike,
    var_name: str = "x",
    dims: Sequence[int] | None = None,
    max_dims: int = 8,
    dpi: int = 100,
) -> Path:
    """Rank plots (histograms of each chain's ranks among all draws; flat when chains agree), saved as PNG.

    Vehtari et al. (2021), https://arxiv.org/abs/1903.08008. Arguments as :func:`plot_trace`.
    """
    import arviz as az

    _check_idata(idata)
    (var_name,) = _var_names(idata, var_name)
    dims = _dims(idata, var_name, dims, max_dims)
    cols = min(4, len(dims))
    rows = -(-len(dims) // cols)
    fig, axes = _figure(rows, cols, 3.2 * cols, 2.6 * rows)
    az.plot_rank(
        idata,
        var_names=[var_name],
        coords={f"{var_name}_dim": dims},
        ax=axes.ravel()[: len(dims)],
        show=False,
    )
    for ax in axes.ravel()[len(dims) :]:
        ax.set_visible(False)
    return _save(fig, path, dpi)


def plot_pair(
    idata,
    held_out,
    path: str | os.PathLike,
    dims: Sequence[int] | None = None,
    max_dims: int = 5,
    max_points: int = 2000,
    labels: Sequence[str] | None = None,
    seed: int = 0,
    dpi: int = 100,
) -> Path:
    """Pair plot of posterior draws of x against held-out data, saved as PNG.

    Lower triangle: scatter plots of pairs of components (held-out data in grey, draws in colour);
    diagonal: overlaid histograms. If the sampler and the model are right, the draws should cover the
    held-out points.

    Args:
        idata: the InferenceData of a latent-space run (posterior ``x``).
        held_out: ``[N, D]`` held-out data (array or tensor), in the same space as x.
        path: output file.
        dims: components to show; None shows the first ``max_dims``.
        max_points: at most this many draws and this many held-out points are drawn (random subsets).
        labels: names of all D components (e.g. column names); default ``x[i]``.
        seed: seed of the subsets.
        dpi: resolution.

    Returns:
        the path written.
    """
    _check_idata(idata)
    _var_names(idata, "x")
    x = np.asarray(idata.posterior["x"]).reshape(-1, idata.posterior["x"].shape[-1])
    if hasattr(held_out, "detach"):
        held_out = held_out.detach().cpu().numpy()
    held_out = np.asarray(held_out, dtype=float)
    if held_out.ndim != 2 or held_out.shape[1] != x.shape[1]:
        raise ValueError(f"'held_out' should have shape [N, {x.shape[1]}]. Got {held_out.shape}.")
    dims = _dims(idata, "x", dims, max_dims)
    if labels is None:
        labels = [f"x[{i}]" for i in range(x.shape[1])]
    elif len(labels) != x.shape[1]:
        raise ValueError(f"'labels' should name all {x.shape[1]} components. Got {len(labels)}.")
    rng = np.random.default_rng(seed)
    if x.shape[0] > max_points:
        x = x[rng.choice(x.shape[0], max_points, replace=False)]
    if held_out.shape[0] > max_points:
        held_out = held_out[rng.choice(held_out.shape[0], max_points, replace=False)]
    k = len(dims)
    fig, axes = _figure(k, k, 2.2 * k + 1, 2.2 * k + 1)
    for r, i in enumerate(dims):
        for c, j in enumerate(dims):
            ax = axes[r, c]
            if c > r:
                ax.set_visible(False)
                continue
            if r == c:
                lo = min(x[:, i].min(), held_out[:, i].min())
                hi = max(x[:, i].max(), held_out[:, i].max())
                bins = np.linspace(lo, hi, 40)
                ax.hist(held_out[:, i], bins=bins, density=True, color="0.6", alpha=0.7, label="held-out")
                ax.hist(x[:, i], bins=bins, density=True, histtype="step", color="C0", label="draws")
                ax.set_yticks([])
            else:
                ax.scatter(held_out[:, j], held_out[:, i], s=3, color="0.6", alpha=0.5, linewidths=0)
                ax.scatter(x[:, j], x[:, i], s=3, color="C0", alpha=0.5, linewidths=0)
            if r == k - 1:
                ax.set_xlabel(labels[j])
            if c == 0 and r > 0:
                ax.set_ylabel(labels[i])
    axes[0, 0].legend(loc="upper right", fontsize="small")
    return _save(fig, path, dpi)
