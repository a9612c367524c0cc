"""Sample a fitted run's GEBM (:func:`gebm_ppl.sample_latent`) into HDF5 + netCDF files, and read them back."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__, units
from .._io import atomic_open
from .files import Run, image_shape, load_run

__all__ = ["SampleFiles", "add_data_units", "default_backend", "read_samples", "sample_run", "whitened"]


def default_backend(method: str = "nuts") -> str:
    """The CLI's backend for ``method`` (:func:`gebm_ppl.sampling.driver.auto_backend`, ``backend="auto"``):
    ``"numpyro"`` when the method has a NumPyro implementation and JAX and NumPyro import, else ``"pyro"``."""
    from ..sampling.driver import auto_backend

    return auto_backend(method)


@dataclass
class SampleFiles:
    """What :func:`sample_run` wrote and returned.

    Attributes:
        idata: the :class:`arviz.InferenceData` of :func:`gebm_ppl.sample_latent`.
        hdf5: path of the HDF5 file of samples.
        netcdf: path of the netCDF file of the InferenceData.
    """

    idata: object
    hdf5: Path
    netcdf: Path


def whitened(metadata: dict) -> bool:
    """Whether the data were whitened by gebm_ppl (so :func:`gebm_ppl.units.to_original` maps back)."""
    try:
        units.whitening(metadata)
    except (ValueError, TypeError, KeyError):
        return False
    return True


def _attr(v):
    if isinstance(v, bool | np.bool_):
        return int(v)
    if v is None:
        return ""
    return v


def sample_run(
    run_dir: str | os.PathLike | Run,
    out: str | os.PathLike | None = None,
    *,
    netcdf: str | os.PathLike | None = None,
    method: str = "nuts",
    backend: str = "pyro",
    num_samples: int = 1000,
    warmup_steps: int = 500,
    num_chains: int = 4,
    temperature: float = 1.0,
    seed: int = 0,
    progress: bool | None = None,
    **method_kwargs,
) -> SampleFiles:
    """Sample a fitted run's GEBM in latent space (:func:`gebm_ppl.sample_latent`) and write the draws.

    The HDF5 file (h5py) holds ``posterior/z`` ``[chain, draw, d]``, ``posterior/x``
    ``[chain, draw, D]`` (whitened space, where the model lives), ``x_original`` (the draws mapped
    back to the data's units through the inverse whitening, when the data were whitened) and every
    ``sample_stats`` variable; its attributes hold the sampler settings. The InferenceData is
    written to netCDF (``netcdf``, default: ``out`` with suffix ``.nc``), with the run directory
    in ``posterior.attrs["run_dir"]`` so that :func:`gebm_ppl.diagnostics` plots can find the
    held-out data.

    When the data were whitened, the posterior also holds ``x_data`` ``[chain, draw, column]``: the
    draws in the data's own units, the ``column`` coordinate holding the data's column names (a
    CSV's header), as ``posterior/x_data`` in the HDF5 file too. Each posterior variable's ``space``
    attribute says in words what it holds (``x``: the whitened PCA coordinates, not data columns).
    Image data add ``image_shape`` ``"C,H,W"`` to the attributes.

    Args:
        run_dir: a fitted run directory (or its :class:`Run`).
        out: the HDF5 file (default ``run_dir/samples.h5``).
        netcdf: the netCDF file (default: ``out`` with suffix ``.nc``).
        method: a registered method (``gebm_ppl.sampling.METHODS``: ``"nuts"``, ``"hmc"``, ``"ula"``, ...).
        backend: ``"pyro"`` or ``"numpyro"``.
        num_samples: draws kept per chain.
        warmup_steps: discarded warm-up transitions per chain.
        num_chains: number of chains.
        temperature: energy temperature T (1 samples the model).
        seed: sampler seed.
        progress: as :func:`gebm_ppl.sample_latent` (None: a bar on a terminal, periodic lines elsewhere).
        **method_kwargs: sampler settings (see :func:`gebm_ppl.sample_latent`).

    Returns:
        :class:`SampleFiles`.
    """
    import h5py

    from ..sampling import sample_latent

    run = run_dir if isinstance(run_dir, Run) else load_run(run_dir)
    out = Path(out) if out is not None else run.path / "samples.h5"
    netcdf = Path(netcdf) if netcdf is not None else out.with_suffix(".nc")
    if out.resolve() == netcdf.resolve():
        raise ValueError(f"the HDF5 and netCDF outputs are the same file {str(out)!r}.")
    idata = sample_latent(run.gebm, method=method, backend=backend, num_samples=num_samples,
                          warmup_steps=warmup_steps, num_chains=num_chains, temperature=temperature, seed=seed,
                          progress=progress, **method_kwargs)
    attrs = dict(idata.posterior.attrs)
    attrs.update(run_dir=str(run.path.resolve()), dataset=run.info.get("dataset", {}).get("name") or "",
                 gebm_ppl_version=__version__)
    shape = image_shape(run.data)
    if shape:
        attrs["image_shape"] = ",".join(str(s) for s in shape)
    idata.posterior.attrs.update({k: _attr(v) for k, v in attrs.items()})
    add_data_units(idata, run.data.metadata)
    with atomic_open(out, "w+b") as f, h5py.File(f, "w") as h5:
        for k, v in attrs.items():
            h5.attrs[k] = _attr(v)
        h5.attrs["method_kwargs"] = json.dumps(method_kwargs)
        for group in ("posterior", "sample_stats"):
            if hasattr(idata, group):
                for name, var in getattr(idata, group).data_vars.items():
                    h5.create_dataset(f"{group}/{name}", data=np.asarray(var.values))
        if "x_data" in idata.posterior:
            h5["x_original"] = h5["posterior/x_data"]  # the same dataset under its older name (a hard link)
            h5["posterior/x_data"].attrs["columns"] = [str(c) for c in idata.posterior["column"].values]
    _write_netcdf(idata, netcdf)
    return SampleFiles(idata, out, netcdf)


def add_data_units(idata, metadata: dict) -> bool:
    """Add ``x_data`` (the draws in the data's units, by column name) to ``idata.posterior`` and label ``x``, ``z``.

    ``x_data = x_white @ matrix⁻¹ + mean`` (:func:`gebm_ppl.units.to_original`), with dims ``(chain,
    draw, column)`` and the data's column names as the ``column`` coordinate. Without a whitening in
    ``metadata`` the draws are already in the data's units: ``x`` is only labelled so. Returns whether
    ``x_data`` was added (in place).
    """
    import xarray as xr

    post = idata.posterior
    post["z"].attrs["space"] = "latent coordinate i (the sampler's space; x = G(z))"
    if not whitened(metadata):
        post["x"].attrs["space"] = "the data's coordinate i (the data were not whitened: x is in the data's units)"
        return False
    names = [str(c) for c in units.column_names(metadata)]
    if len(set(names)) != len(names):  # a coordinate needs unique labels
        names = [f"{c} ({j + 1})" for j, c in enumerate(names)]
    post["x"].attrs["space"] = ("whitened PCA coordinate i of the model, x_white = (x - mean) @ W: NOT data "
                                "column i (x_data holds the draws in the data's units)")
    values = units.to_original(post["x"].values, metadata)
    post["x_data"] = xr.DataArray(values, dims=("chain", "draw", "column"),
                                  coords={"chain": post["chain"], "draw": post["draw"], "column": names},
                                  attrs={"space": "the draws in the data's own units (inverse whitening), by column "
                                                  "name"})
    return True


def _write_netcdf(idata, path: Path) -> None:
    """``idata.to_netcdf`` made atomic: write a scratch file beside ``path``, then rename it onto ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        idata.to_netcdf(str(scratch))
        os.replace(scratch, path)
    finally:
        scratch.unlink(missing_ok=True)


def read_samples(path: str | os.PathLike):
    """The InferenceData of a ``gebm sample`` output: its netCDF file, or the HDF5 file beside it.

    Raises:
        FileNotFoundError: no such file (or, for an HDF5 file, no netCDF file beside it).
        ValueError: the file is not a readable netCDF InferenceData.
    """
    import arviz as az

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no samples file at {str(path)!r}.")
    if path.suffix.lower() in (".h5", ".hdf5"):
        nc = path.with_suffix(".nc")
        if not nc.is_file():
            raise FileNotFoundError(f"{str(path)!r} has no netCDF InferenceData beside it ({str(nc)!r}).")
        path = nc
    try:
        idata = az.from_netcdf(str(path))
        idata.posterior  # noqa: B018  (an InferenceData must have a posterior)
    except Exception as e:  # netCDF/HDF5 readers raise many types on foreign files
        raise ValueError(f"{str(path)!r} is not a netCDF InferenceData written by 'gebm sample': {e}") from e
    return idata
