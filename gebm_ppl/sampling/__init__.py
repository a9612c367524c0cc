"""Latent-space samplers of a GEBM (Pyro NUTS/HMC, ULA, kinetic Langevin, IMH, SIR) returning ArviZ InferenceData.

Every sampler targets the latent posterior ν(z) ∝ N(z; 0, I)·exp(−T·E(G_θ(z))), potential
U(z) = ½‖z‖² + T·E(G_θ(z)); for T = 1, x = G_θ(z) with z ∼ ν is distributed as the GEBM Q
(Arbel, Zhou & Gretton, 2021, https://arxiv.org/abs/2003.05033). Start with :func:`sample_latent`.

Methods (``backend="pyro"`` runs them all in torch; ``backend="numpyro"`` runs NUTS/HMC in JAX):

* ``"nuts"``, ``"hmc"``: ``pyro.infer.MCMC`` with NUTS/HMC on ``potential_fn`` = U, step-size and
  diagonal mass-matrix adaptation during the warmup; chains run one after another.
* ``"ula"``: unadjusted Langevin z ← z − γ∇U + √(2γ) ξ (:mod:`.ula`; ``step_size`` γ, ``thin``).
* ``"kinetic"``: underdamped Langevin with friction κ (:mod:`.kinetic`; ``step_size``, ``friction``, ``thin``).
* ``"imh"``: independent Metropolis–Hastings with proposal N(0, I) (:mod:`.imh`; gradient-free).
* ``"sir"``: sampling–importance–resampling, ``num_proposals`` draws from N(0, I) per kept draw
  (:mod:`.sir`; gradient-free, draws independent).

The Langevin, IMH and SIR kernels are batched over chains, NumPyro style: a namedtuple state and
``init(z, potential)`` / ``step(state, potential, generator, **params)`` functions, run by
:func:`.driver.run_batched` with a seeded ``torch.Generator``.

InferenceData layout (shared by both backends):

* ``posterior``: ``z`` dims (chain, draw, z_dim), the latent draws; ``x`` dims (chain, draw, x_dim),
  their images G_θ(z).
* ``sample_stats``, dims (chain, draw):

  - every method: ``lp`` = −U(z) (the unnormalised log density of ν at the draw);
  - NUTS/HMC: ``diverging`` (bool), ``acceptance_rate`` (mean Metropolis acceptance probability of the
    transition), ``step_size``, ``n_steps`` (leapfrog steps = gradient evaluations), ``energy`` (the
    Hamiltonian U + ½ rᵀM⁻¹r; Pyro records it at the start of the transition, after the momentum
    refresh, NumPyro at the selected point; both give ArviZ's E-BFMI), and for NUTS ``tree_depth``
    (the number of tree doublings, ⌈log₂(n_steps + 1)⌉);
  - IMH: ``accepted`` (bool) and ``acceptance_rate`` (the acceptance probability min(1, w'/w));
  - SIR: ``importance_ess`` (effective sample size of the proposals' weights).
* attrs (on the InferenceData and on both groups): ``method``, ``backend``, ``temperature``,
  ``num_grad_evals`` (gradient evaluations of U at one point, summed over chains, warmup and the
  starting points included; 0 for IMH and SIR), ``sampling_time`` (seconds of wall time for the whole
  run), ``seed``; the torch samplers add their settings (e.g. ``step_size``) and IMH/SIR
  ``num_energy_evals``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._validation import check_positive_float, check_positive_int
from . import imh, kinetic, sir, ula
from .driver import LatentPotential, build_inference_data, chain_seeds, data_space, run_batched, sampling_mode
from .pyro_mcmc import check_kernel_kwargs, run_pyro_mcmc

__all__ = ["BACKENDS", "METHODS", "sample_latent"]

METHODS = ("nuts", "hmc", "ula", "kinetic", "imh", "sir")
BACKENDS = ("pyro", "numpyro")
_NUMPYRO_METHODS = ("nuts", "hmc")
_BATCHED = {"ula": ula.KERNEL, "kinetic": kinetic.KERNEL, "imh": imh.KERNEL, "sir": sir.KERNEL}
# settings of the batched samplers, with their defaults
_SETTINGS = {
    "ula": {"step_size": 0.01, "thin": 1},
    "kinetic": {"step_size": 0.1, "friction": 1.0, "thin": 1},
    "imh": {"thin": 1},
    "sir": {"num_proposals": 256},
}


def _check_count(value: object, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"'{name}' should be an integer >= {low}. Got {value!r}.")
    if value < low:
        raise ValueError(f"'{name}' should be an integer >= {low}. Got {value}.")
    return int(value)


def _check_init(init: object, num_chains: int, dim: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    if not isinstance(init, Tensor):
        try:
            init = torch.as_tensor(init, dtype=dtype)
        except (TypeError, ValueError, RuntimeError) as e:
            shape = f"[num_chains, d] = [{num_chains}, {dim}]"
            raise TypeError(f"'init' should be a tensor of shape {shape}. Got {type(init).__name__}.") from e
    if tuple(init.shape) != (num_chains, dim):
        raise ValueError(
            f"'init' should have shape [num_chains, d] = [{num_chains}, {dim}]. Got {tuple(init.shape)}."
        )
    if not init.is_floating_point():
        init = init.to(dtype)
    if not bool(torch.isfinite(init).all()):
        bad = int((~torch.isfinite(init)).any(-1).sum())
        raise ValueError(f"'init' contains NaN or inf values (in {bad} of its {num_chains} chains).")
    return init.detach().to(dtype=dtype, device=device)


def _plain(value: object) -> bool:
    return isinstance(value, int | float | str)


def _settings(method: str, method_kwargs: dict) -> dict:
    defaults = _SETTINGS[method]
    unknown = sorted(set(method_kwargs) - set(defaults))
    if unknown:
        raise TypeError(f"unknown keyword argument(s) {unknown} for method {method!r} (allowed: {sorted(defaults)}).")
    settings = {**defaults, **method_kwargs}
    for name, value in settings.items():
        if name in ("thin", "num_proposals"):
            settings[name] = check_positive_int(value, name)
        else:
            settings[name] = check_positive_float(value, name)
    return settings


def sample_latent(
    gebm,
    method: str = "nuts",
    backend: str = "pyro",
    num_samples: int = 1000,
    warmup_steps: int = 500,
    num_chains: int = 4,
    *,
    temperature: float = 1.0,
    init: Tensor | None = None,
    seed: int = 0,
    progress: bool = False,
    **method_kwargs,
):
    """Sample the latent posterior ν(z) ∝ exp(−U(z)), U(z) = ½‖z‖² + T·E(G_θ(z)), and map the draws by G_θ.

    For T = 1, x = G_θ(z) with z ∼ ν is distributed as the GEBM Q. The layout of the result is given in
    the :mod:`gebm_ppl.sampling` docstring. The GEBM is put in eval mode with frozen parameters while
    sampling (spectral normalisation must not update) and restored afterwards.

    Args:
        gebm: a :class:`gebm_ppl.GEBM`.
        method: one of ``"nuts"``, ``"hmc"``, ``"ula"``, ``"kinetic"``, ``"imh"``, ``"sir"``.
        backend: ``"pyro"`` (torch; every method) or ``"numpyro"`` (JAX; NUTS and HMC, see
            :func:`gebm_ppl.numpyro.mcmc.sample_latent_numpyro`).
        num_samples: draws kept per chain.
        warmup_steps: transitions per chain discarded first (adaptation for NUTS/HMC; burn-in for the
            Langevin samplers and IMH; ignored by SIR, whose draws are independent).
        num_chains: C ≥ 1.
        temperature: T > 0.
        init: ``[C, d]`` finite starting points; None draws them from η = N(0, I) with ``seed``.
        seed: seed of every random draw of the run (an integer ≥ 0); the global RNG state is left as is.
        progress: show a progress bar.
        **method_kwargs: sampler settings. NUTS/HMC: keyword arguments of Pyro's
            :class:`~pyro.infer.mcmc.NUTS`/:class:`~pyro.infer.mcmc.HMC` (``step_size``,
            ``target_accept_prob``, ``max_tree_depth``, ``trajectory_length``, ``full_mass``, ...; Pyro's HMC
            takes int(trajectory_length / step_size) leapfrog steps, without jitter, and its default
            trajectory 2π is a full period of a mass-adapted Gaussian: prefer NUTS or set it near 2);
            ULA: ``step_size`` (0.01), ``thin`` (1); kinetic: ``step_size`` (0.1), ``friction`` (1.0),
            ``thin`` (1); IMH: ``thin`` (1); SIR: ``num_proposals`` (256).

    Returns:
        An ``arviz.InferenceData``.

    Raises:
        TypeError: ``gebm`` is not a GEBM, wrong argument types, unknown sampler settings.
        ValueError: unknown method or backend, num_chains < 1, non-positive temperature, ``init`` of
            the wrong shape or not finite.
        ImportError: ``backend="numpyro"`` without JAX/NumPyro installed.

    Example:
        >>> import gebm_ppl as gp
        >>> gebm = gp.GEBM(gp.RealNVP(2, hidden_features=8, num_layers=2), gp.EnergyMLP(2, hidden=(8,)))
        >>> idata = gp.sample_latent(gebm, "ula", num_samples=20, warmup_steps=10, num_chains=2)
        >>> idata.posterior["x"].shape
        (2, 20, 2)
    """
    if not hasattr(gebm, "latent_potential") or not hasattr(gebm, "base"):
        raise TypeError(f"'gebm' should be a gebm_ppl.GEBM. Got {type(gebm).__name__}.")
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"unknown method {method!r}: expected one of {list(METHODS)}.")
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: expected one of {list(BACKENDS)}.")
    if backend == "numpyro" and method not in _NUMPYRO_METHODS:
        raise ValueError(
            f"method {method!r} is not available with backend 'numpyro' (expected one of {list(_NUMPYRO_METHODS)}); "
            "use backend='pyro'."
        )
    num_samples = _check_count(num_samples, "num_samples", 1)
    warmup_steps = _check_count(warmup_steps, "warmup_steps", 0)
    num_chains = _check_count(num_chains, "num_chains", 1)
    seed = _check_count(seed, "seed", 0)
    temperature = check_positive_float(temperature, "temperature")
    if not isinstance(progress, bool):
        raise TypeError(f"'progress' should be a bool. Got {progress!r}.")
    potential = LatentPotential(gebm, temperature)
    d = potential.latent_dim
    if init is not None:
        init = _check_init(init, num_chains, d, potential.dtype, potential.device)

    if backend == "numpyro":
        try:
            from gebm_ppl.numpyro.mcmc import sample_latent_numpyro
        except ImportError as e:
            raise ImportError(
                "backend='numpyro' needs JAX and NumPyro (pip install jax numpyro); "
                f"importing them failed: {e}"
            ) from e
        return sample_latent_numpyro(
            gebm,
            method=method,
            num_samples=num_samples,
            warmup_steps=warmup_steps,
            num_chains=num_chains,
            temperature=temperature,
            init=init,
            seed=seed,
            progress=progress,
            **method_kwargs,
        )

    if method in ("nuts", "hmc"):
        check_kernel_kwargs(method, method_kwargs)
        settings = {}
    else:
        settings = _settings(method, method_kwargs)
    generator, seeds = chain_seeds(seed, num_chains, potential.device)
    if init is None:
        init = torch.randn(num_chains, d, generator=generator, dtype=potential.dtype, device=potential.device)
    with sampling_mode(gebm):
        if method in ("nuts", "hmc"):
            z, stats, elapsed = run_pyro_mcmc(
                potential, init, seeds, method, num_samples, warmup_steps, progress, **method_kwargs
            )
        else:
            params = {k: v for k, v in settings.items() if k != "thin"}
            z, stats, elapsed = run_batched(
                _BATCHED[method], potential, init, num_samples,
                0 if method == "sir" else warmup_steps,  # SIR draws are independent: nothing to burn in
                generator, settings.get("thin", 1), progress, **params,
            )
        x = data_space(gebm, z)
    attrs = {
        "method": method,
        "backend": backend,
        "temperature": temperature,
        "num_grad_evals": int(potential.num_grad_evals),
        "sampling_time": float(elapsed),
        "seed": seed,
        # plain settings only, bools as 0/1: netCDF attributes hold numbers and strings
        **{k: int(v) if isinstance(v, bool) else v for k, v in method_kwargs.items() if _plain(v)},
        **settings,
    }
    if method in ("imh", "sir"):
        attrs["num_energy_evals"] = int(potential.num_evals)
    return build_inference_data(z, x, stats, attrs)

