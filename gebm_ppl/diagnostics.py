"""MCMC diagnostics of latent-space runs: summary tables (R-hat, ESS, E-BFMI, divergences), a verdict, PNG plots.

Works on the :class:`arviz.InferenceData` of :func:`gebm_ppl.sample_latent` (layout in
:mod:`gebm_ppl.sampling`), plus ``x_data`` (the draws in the data's units, by column name) when
:func:`gebm_ppl.runs.sample_run` added it. Besides posterior variables, the tables take ``"lp"``
(= −U(z), the log density of the latent posterior up to a constant, from ``sample_stats``): for a
generator base (d ≪ D, e.g. images) the latent z and the potential are what to diagnose, not
hundreds of pixels. Plots are drawn on Agg canvases (no pyplot state, no display needed) and written
atomically.

Thresholds of :func:`verdict` (Vehtari et al., 2021, https://arxiv.org/abs/1903.08008, whose
rank-normalised split R-hat and ESS ArviZ computes): R-hat above :data:`R_HAT_MAX` = 1.01, bulk or
tail ESS below :data:`MIN_ESS` = 400 (100 per chain for 4 chains; the ``min_ess`` line of
:func:`arviz.plot_ess`), any divergence, E-BFMI below :data:`MIN_E_BFMI` = 0.3 (Betancourt, 2016),
and fewer than :data:`MIN_DRAWS` = 4 draws per chain (ArviZ's minimum for R-hat and ESS).

Length: the tables, the verdict and the plot kinds share the InferenceData handling and the atomic PNG
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
    "MIN_DRAWS",
    "MIN_ESS",
    "MIN_E_BFMI",
    "R_HAT_MAX",
    "chain_summary",
    "describe",
    "plot_image_grid",
    "plot_pair",
    "plot_rank",
    "plot_trace",
    "report",
    "run_summary",
    "summary",
    "verdict",
]

_HMC_METHODS = ("nuts", "hmc")

R_HAT_MAX = 1.01
"""Largest acceptable rank-normalised split R-hat (Vehtari et al., 2021)."""
MIN_ESS = 400
"""Smallest acceptable bulk and tail ESS: 100 per chain for 4 chains (Vehtari et al., 2021), ArviZ's
``plot_ess(min_ess=400)``."""
MIN_E_BFMI = 0.3
"""E-BFMI below this flags poor momentum resampling (Betancourt, 2016)."""
MIN_DRAWS = 4
"""Fewest draws per chain for which R-hat and ESS are defined (ArviZ's shape check)."""
_MAX_CHAIN_ROWS = 16  # report(): more chains than this are summarised by min / mean / max

_SPACES = {
    "x": "x[i]: the model's coordinate i (whitened PCA coordinates for whitened data: NOT data column i)",
    "x_data": "x_data[name]: the draws in the data's own units, by column name (inverse whitening)",
    "z": "z[i]: latent coordinate i (the sampler's space, x = G(z))",
    "lp": "lp: -U(z), the log density of the latent posterior up to a constant",
}


def describe(var_name: str, idata=None) -> str:
    """What a table row or plot of ``var_name`` shows, in words (the variable's ``space`` attribute if set)."""
    if idata is not None and var_name in idata.posterior and idata.posterior[var_name].attrs.get("space"):
        return f"{var_name}: {idata.posterior[var_name].attrs['space']}"
    return _SPACES.get(var_name, var_name)


def _check_idata(idata: Any) -> None:
    if not hasattr(idata, "posterior") or not hasattr(idata, "sample_stats"):
        raise TypeError(
            "'idata' should be an arviz.InferenceData with 'posterior' and 'sample_stats' groups "
            f"(from gebm_ppl.sample_latent). Got {type(idata).__name__}."
        )


def _var_names(idata, var_names: str | Sequence[str], lp: bool = False) -> list[str]:
    names = [var_names] if isinstance(var_names, str) else list(var_names)
    missing = [n for n in names if n not in idata.posterior and not (lp and n == "lp" and "lp" in idata.sample_stats)]
    if missing:
        extra = " and 'lp' (sample_stats)" if lp else ""
        raise ValueError(f"'var_names' {missing} not in the posterior (has {sorted(idata.posterior.data_vars)}"
                         f"{extra}).")
    return names


def _dataset(idata, names: Sequence[str]):
    """An xarray Dataset of the posterior variables ``names``, ``"lp"`` taken from ``sample_stats``."""
    import xarray as xr

    return xr.Dataset({n: idata.sample_stats["lp"] if n == "lp" and n not in idata.posterior else idata.posterior[n]
                       for n in names})


def summary(idata, var_names: str | Sequence[str] = ("x",)):
    """Per-dimension posterior summary: mean, sd, Monte-Carlo standard errors, bulk/tail ESS and R-hat.

    Rank-normalised split R-hat and ESS (Vehtari et al., 2021, https://arxiv.org/abs/1903.08008) via
    :func:`arviz.summary`.

    With fewer than :data:`MIN_DRAWS` draws per chain (e.g. the end points of many short chains)
    R-hat and ESS are undefined: the table then holds the mean and sd over all draws and NaN
    elsewhere, without asking ArviZ (which would warn about the shape).

    Args:
        idata: the InferenceData of a latent-space run.
        var_names: posterior variables, ``"x"`` (model space), ``"x_data"`` (data units, when
            present), ``"z"`` (latent space), and ``"lp"`` (−U(z), from ``sample_stats``).

    Returns:
        a ``pandas.DataFrame`` with one row per variable component (``x[0]``, ``x_data[alcohol]``,
        ``lp``, ...) and columns ``mean, sd, mcse_mean, mcse_sd, ess_bulk, ess_tail, r_hat``.
    """
    import arviz as az
    import pandas as pd

    _check_idata(idata)
    names = _var_names(idata, var_names, lp=True)
    data = _dataset(idata, names)
    columns = ["mean", "sd", "mcse_mean", "mcse_sd", "ess_bulk", "ess_tail", "r_hat"]
    if idata.posterior.sizes["draw"] < MIN_DRAWS:
        rows = {}
        for n in names:
            v = np.asarray(data[n], dtype=np.float64)
            v = v.reshape(v.shape[0] * v.shape[1], -1)
            labels = [n] if data[n].ndim == 2 else [f"{n}[{c}]" for c in data[n][data[n].dims[-1]].values]
            for j, label in enumerate(labels):
                rows[label] = [v[:, j].mean(), v[:, j].std(ddof=1) if v.shape[0] > 1 else np.nan, *[np.nan] * 5]
        return pd.DataFrame.from_dict(rows, orient="index", columns=columns)
    # A chain that never moved has zero within-chain variance: R-hat is then inf / NaN, which is the
    # diagnosis to report, not a floating-point error to raise.
    with np.errstate(divide="ignore", invalid="ignore"):
        table = az.summary(data, kind="all")
    return table[columns]


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


def verdict(run: dict[str, Any]) -> str:
    """A one-line verdict on a :func:`run_summary`: "OK: ..." or "WARNING: ..." naming every failed threshold.

    Fails: R-hat > :data:`R_HAT_MAX` (or NaN/inf: a chain that never moved), bulk or tail ESS below
    :data:`MIN_ESS`, any divergence, E-BFMI below :data:`MIN_E_BFMI`. With fewer than
    :data:`MIN_DRAWS` draws per chain R-hat and ESS are undefined: the verdict says so, since such
    draws (the end points of independent chains) carry no convergence evidence of their own.
    """
    draws = run["num_draws"]
    if draws < MIN_DRAWS:
        return (f"NOT ASSESSED: {draws} draw(s) per chain ({run['num_chains']} chains), and R-hat and ESS need at "
                f"least {MIN_DRAWS}; these are the end points of independent chains, whose convergence these draws "
                "cannot show: sample with -n 100 or more (or judge the draws by a sample-quality metric).")
    problems = []
    r_hat, bulk, tail = run["max_r_hat"], run["min_ess_bulk"], run["min_ess_tail"]
    if not math.isfinite(r_hat) or r_hat > R_HAT_MAX:
        problems.append(f"max_r_hat {r_hat:.3g} > {R_HAT_MAX} (chains disagree: not converged)")
    if not math.isfinite(bulk) or bulk < MIN_ESS:
        problems.append(f"min_ess_bulk {bulk:.3g} < {MIN_ESS}")
    if not math.isfinite(tail) or tail < MIN_ESS:
        problems.append(f"min_ess_tail {tail:.3g} < {MIN_ESS}")
    if run.get("divergences"):
        problems.append(f"{run['divergences']} divergent transitions (> 0)")
    e_bfmi = run.get("min_e_bfmi")
    if e_bfmi is not None and not e_bfmi >= MIN_E_BFMI:
        problems.append(f"min_e_bfmi {e_bfmi:.3g} < {MIN_E_BFMI}")
    if problems:
        return ("WARNING: do not trust these draws yet: " + "; ".join(problems)
                + ". Run longer (--warmup, -n), with more chains or a smaller step size (thresholds: Vehtari et "
                "al. 2021, as ArviZ).")
    return (f"OK: max_r_hat {r_hat:.3g} <= {R_HAT_MAX}, min ESS bulk {bulk:.0f} / tail {tail:.0f} >= {MIN_ESS}"
            + ("" if run.get("divergences") is None else ", no divergences")
            + ("" if e_bfmi is None else f", min_e_bfmi {e_bfmi:.2f} >= {MIN_E_BFMI}") + ".")


def report(idata, var_names: str | Sequence[str] = ("x",), verdict_line: bool = True) -> str:
    """A plain-text report: the run summary, the per-chain table, one per-dimension table per variable (each
    headed by what its rows are, e.g. whitened coordinates or data columns), and a last ``Verdict:`` line
    (:func:`verdict`; left out with ``verdict_line=False``, for a caller that prints it last itself)."""
    import pandas as pd

    names = _var_names(idata, var_names, lp=True)
    run = run_summary(idata, names)
    lines = [f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}" for k, v in run.items()]
    chains = chain_summary(idata)
    if len(chains) > _MAX_CHAIN_ROWS:  # e.g. 1000 short chains: their spread, not 1000 rows
        chains = chains.agg(["min", "mean", "max"])
        chains.index.name = f"over {run['num_chains']} chains"
    tables = []
    for name in names:
        tables += ["", f"# {describe(name, idata)}", summary(idata, name).to_string(float_format=lambda v: f"{v:.3g}")]
    with pd.option_context("display.width", 120, "display.max_columns", 20):
        return "\n".join(
            [
                *lines,
                "",
                chains.to_string(float_format=lambda v: f"{v:.3g}"),
                *tables,
                *(["", f"Verdict: {verdict(run)}"] if verdict_line else []),
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


def _coords(idata, var_name: str, dims: list[int]) -> dict:
    """ArviZ ``coords`` selecting the components ``dims`` (positions) of ``var_name``, whatever its dim's name."""
    dim = idata.posterior[var_name].dims[-1]
    values = idata.posterior[var_name][dim].values
    return {dim: [values[i] for i in dims]}


def _component_labels(idata, var_name: str, dims: list[int]) -> list[str]:
    dim = idata.posterior[var_name].dims[-1]
    values = idata.posterior[var_name][dim].values
    return [f"{var_name}[{values[i]}]" for i in dims]


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
    fig, axes = _figure(len(dims), 2, 10, 1.8 * len(dims) + 0.5)
    az.plot_trace(
        idata,
        var_names=[var_name],
        coords=_coords(idata, var_name, dims),
        compact=False,
        axes=axes,
        show=False,
    )
    for row, label in zip(axes, _component_labels(idata, var_name, dims), strict=True):
        row[0].set_title(f"{label}: density per chain", fontsize="medium")
        row[1].set_title(f"{label}: trace", fontsize="medium")
    fig.suptitle(describe(var_name, idata), fontsize="medium")
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
    fig, axes = _figure(rows, cols, 3.2 * cols, 2.6 * rows + 0.5)
    az.plot_rank(
        idata,
        var_names=[var_name],
        coords=_coords(idata, var_name, dims),
        ax=axes.ravel()[: len(dims)],
        show=False,
    )
    for ax, label in zip(axes.ravel(), _component_labels(idata, var_name, dims), strict=False):
        ax.set_title(f"{label}: ranks per chain", fontsize="medium")
    for ax in axes.ravel()[len(dims) :]:
        ax.set_visible(False)
    fig.suptitle(describe(var_name, idata), fontsize="medium")
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
    title: str | None = None,
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
        labels: names of all D components (e.g. column names); default ``x[i]`` (the model's coordinates).
        seed: seed of the subsets.
        dpi: resolution.
        title: text above the plot (default: what the components are, from :func:`describe`).

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
    space = idata.posterior["x"].attrs.get("space") or "the model's coordinates x[i]"
    fig.suptitle(title or f"draws (blue) against held-out data (grey); axes: {space}", fontsize="medium")
    return _save(fig, path, dpi)


def plot_image_grid(
    images,
    image_shape: Sequence[int],
    path: str | os.PathLike,
    ncols: int = 8,
    max_images: int = 64,
    gap: int = 2,
    value_range: tuple[float, float] = (-1.0, 1.0),
    title: str | None = None,
    scale: int | None = None,
) -> Path:
    """A grid of images, separated by ``gap`` white pixels, saved as PNG (e.g. draws of an image GEBM).

    Args:
        images: ``[N, C·H·W]`` or ``[N, C, H, W]`` (array or tensor); the first ``max_images`` are shown.
        image_shape: ``(C, H, W)``, C = 1 (grey) or 3 (RGB).
        path: output file.
        ncols: images per row.
        gap: white pixels between images (and around the grid).
        value_range: the pixel values shown black and white (clipped): (−1, 1) for tanh generators.
        title: text above the grid.
        scale: screen pixels per image pixel (nearest-neighbour: no blur); default: images about 64
            pixels wide (8 for 8×8 digits, 2 for 28×28 MNIST).

    Returns:
        the path written.
    """
    if hasattr(images, "detach"):
        images = images.detach().cpu().numpy()
    c, h, w = (int(v) for v in image_shape)
    images = np.asarray(images, dtype=np.float64)
    if c not in (1, 3) or images.ndim < 2 or images[0].size != c * h * w:
        raise ValueError(f"'images' should have shape [N, {c * h * w}] or [N, {c}, {h}, {w}] with C = 1 or 3 "
                         f"(image_shape {tuple(image_shape)}). Got {images.shape}.")
    scale = max(2, 64 // max(h, w)) if scale is None else scale
    if not (isinstance(gap, int) and gap >= 0 and ncols >= 1 and max_images >= 1 and scale >= 1):
        raise ValueError(f"'gap' (>= 0), 'ncols', 'max_images' and 'scale' (>= 1) should be integers; got "
                         f"{gap!r}, {ncols!r}, {max_images!r}, {scale!r}.")
    lo, hi = value_range
    images = np.clip((images[:max_images].reshape(-1, c, h, w) - lo) / (hi - lo), 0.0, 1.0)
    n = images.shape[0]
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    canvas = np.ones((nrows * (h + gap) + gap, ncols * (w + gap) + gap, 3))
    for k, img in enumerate(images):
        r, col = divmod(k, ncols)
        top, left = gap + r * (h + gap), gap + col * (w + gap)
        canvas[top : top + h, left : left + w] = np.repeat(img, 3 // c, axis=0).transpose(1, 2, 0)
    canvas = canvas.repeat(scale, axis=0).repeat(scale, axis=1)
    dpi = 100
    height = canvas.shape[0] / dpi + (0.4 if title else 0.0)
    fig, axes = _figure(1, 1, canvas.shape[1] / dpi, height)
    ax = axes[0, 0]
    ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize="medium")
    return _save(fig, path, dpi)
