"""Latent-space samplers of a GEBM (NUTS, HMC, ULA, kinetic, MALA, IMH, SIR, DOT) returning ArviZ InferenceData.

Every sampler targets the latent posterior ν(z) ∝ N(z; 0, I)·exp(−T·E(G_θ(z))), potential
U(z) = ½‖z‖² + T·E(G_θ(z)); for T = 1, x = G_θ(z) with z ∼ ν is distributed as the GEBM Q
(Arbel, Zhou & Gretton, 2021, https://arxiv.org/abs/2003.05033). Start with :func:`sample_latent`.

Methods are registered in :data:`SAMPLERS` (:mod:`.registry`; ``METHODS`` is the tuple of their names),
each with its typed options, defaults and backends (``"pyro"``: torch; ``"numpyro"``: JAX kernels run by
``numpyro.infer.MCMC``, see :mod:`gebm_ppl.numpyro.kernels`):

* ``"nuts"``, ``"hmc"``: Pyro's / NumPyro's NUTS and HMC on ``potential_fn`` = U, step-size and
  diagonal mass-matrix adaptation during the warmup.
* ``"ula"``: unadjusted Langevin z ← z − γ∇U + √(2γ) ξ (:mod:`.ula`).
* ``"kinetic"``: underdamped Langevin with friction κ (:mod:`.kinetic`).
* ``"mala"``: ULA's proposal with the Metropolis–Hastings correction, exact for every γ (:mod:`.mala`).
* ``"imh"``: independent Metropolis–Hastings with proposal N(0, I), MH-GAN style (:mod:`.imh`; gradient-free).
* ``"sir"``: sampling–importance–resampling, ``num_proposals`` draws from N(0, I) per kept draw
  (:mod:`.sir`; gradient-free, draws independent; torch only).
* ``"dot"``: discriminator optimal transport, an optimiser of ‖z − z₀‖ + V(z)/L from z₀ ∼ N(0, I)
  (:mod:`.dot`; not an exact sampler: it returns the push-forward of η by the minimiser map).

ULA, kinetic and MALA take a step-size schedule γ_t = γ₀ ρ^⌊t/k⌋ (``step_size_decay`` ρ, default 1,
``decay_every`` k, default 200; t counts every transition, warmup included). The torch kernels are
batched over chains, NumPyro style: a namedtuple state and ``init(z, potential, generator=...)`` /
``step(state, potential, generator, **params)`` functions, run by :func:`.driver.run_batched` with a
seeded ``torch.Generator``. :func:`sample_potential` runs any of them on any latent potential.

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
    both backends record the acceptance probability itself (Pyro: the value its progress bar averages
    as "acc. prob"; NumPyro: ``accept_prob``), so its mean is comparable with ``target_accept_prob``;
  - MALA, IMH: ``accepted`` (bool) and ``acceptance_rate`` (the acceptance probability);
  - ULA, kinetic, MALA: ``step_size`` (the scheduled step of the transition);
  - SIR: ``importance_ess`` (effective sample size of the proposals' weights);
  - DOT: ``transport_cost`` ‖z − z₀‖ and ``lipschitz`` (L).
* attrs (on the InferenceData and on both groups): ``method``, ``backend``, ``temperature``,
  ``num_grad_evals`` (gradient evaluations of U at one point, summed over chains, warmup and the
  starting points included; 0 for IMH and SIR), ``num_energy_evals`` (evaluations of U at one point,
  with or without gradient), ``sampling_time`` (seconds of wall time for the whole run), ``seed``,
  ``chain_method`` (how the chains ran: ``vectorized``, ``sequential`` or ``parallel``) and the run's
  scalar settings (e.g. ``step_size``).
"""


from __future__ import annotations

import contextlib
import importlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

from .._threads import torch_threads
from .._validation import check_positive_float
from .driver import (
    CountingPotential,
    LatentPotential,
    auto_backend,
    check_chain_method,
    check_count,
    check_init,
    data_space,
    progress_mode,
    run_attrs,
    run_torch,
    sampling_mode,
    spec_for,
)
from .registry import BACKENDS, SAMPLERS, SamplerSpec, get_sampler, numpyro_backend, register_sampler, sampler_names

# each built-in sampler module registers itself; this order is the order of METHODS
for _module in ("pyro_mcmc", "ula", "kinetic", "mala", "imh", "sir", "dot"):
    importlib.import_module(f"{__name__}.{_module}")

__all__ = [
    "BACKENDS",
    "METHODS",
    "SAMPLERS",
    "SamplerSpec",
    "get_sampler",
    "register_sampler",
    "sample_latent",
    "sample_potential",
]


def __getattr__(name: str) -> Any:
    if name == "METHODS":  # derived from the registry, so that samplers registered later appear
        return sampler_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@contextlib.contextmanager
def _numpyro_progress(progress: bool | None, method: str, num_chains: int, transitions: int) -> Iterator[bool]:
    """NumPyro's bar on a terminal (yields True); elsewhere a line before and after the compiled run, which
    cannot report from inside (yields False)."""
    mode = progress_mode(progress)
    if mode != "lines":
        yield mode == "bar"
        return
    from ..training._progress import _emit, format_duration

    t0 = time.perf_counter()
    _emit(f"sampling: {method} (numpyro), {num_chains} chain(s) x {transitions} transitions, compiled: "
          "no progress lines until it ends")
    yield False
    _emit(f"sampling: done in {format_duration(time.perf_counter() - t0)}")


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
    progress: bool | None = None,
    chain_method: str | None = None,
    **method_kwargs,
):
    """Sample the latent posterior ν(z) ∝ exp(−U(z)), U(z) = ½‖z‖² + T·E(G_θ(z)), and map the draws by G_θ.

    For T = 1, x = G_θ(z) with z ∼ ν is distributed as the GEBM Q. The layout of the result is given in
    the :mod:`gebm_ppl.sampling` docstring. The GEBM is put in eval mode with frozen parameters while
    sampling (spectral normalisation must not update) and restored afterwards.

    Args:
        gebm: a :class:`gebm_ppl.GEBM`.
        method: a registered method (``gebm_ppl.sampling.METHODS``): ``"nuts"``, ``"hmc"``, ``"ula"``,
            ``"kinetic"``, ``"mala"``, ``"imh"``, ``"sir"``, ``"dot"``, ...
        backend: ``"pyro"`` (torch, the default), ``"numpyro"`` (JAX, through
            :func:`gebm_ppl.numpyro.mcmc.sample_latent_numpyro`) or ``"auto"``; ``SAMPLERS[method].backends``
            lists those of a method (every method but SIR has both). The rule: Python calls default to
            ``"pyro"``, the model's own torch modules with no JAX needed and no compilation (what a Pyro
            user expects of a torch library); ``gebm sample`` uses ``"auto"``: NumPyro when the method has
            a NumPyro kernel and JAX and NumPyro import (JIT-compiled, several times faster on long chains
            of a saved model), else Pyro. The draws of the two backends agree in law, not bit for bit.
        num_samples: draws kept per chain.
        warmup_steps: transitions per chain discarded first (adaptation for NUTS/HMC; burn-in for the
            Langevin samplers and IMH; ignored by SIR and DOT, whose draws are independent).
        num_chains: C ≥ 1.
        temperature: T > 0.
        init: ``[C, d]`` finite starting points; None draws them from η = N(0, I) with ``seed``.
        seed: seed of every random draw of the run (an integer ≥ 0); the global RNG state is left as is.
        progress: None (default) or True: on a terminal a progress bar (Pyro's or NumPyro's for NUTS/HMC,
            tqdm's for the batched torch samplers), elsewhere (a log file, a pipe) a line every 10 s once a
            run lasts that long (NumPyro's compiled run: a line when it starts and one when it ends); the
            training loops' rule. False: nothing.
        chain_method: how the chains run; None is the backend's default. NumPyro: ``"vectorized"``
            (default: one compiled program batched over the chains), ``"parallel"`` (one JAX device per
            chain with ``pmap``; on CPU request host devices first, :func:`gebm_ppl.numpyro.set_host_devices`)
            or ``"sequential"``. Pyro NUTS/HMC: ``"sequential"`` (default, in this process) or
            ``"parallel"`` (Pyro's ``MCMC(num_chains=C)``, one process per chain, the same draws as
            sequential chains); the other Pyro samplers run the chains as one batch (``"vectorized"``).
            The layout of the result is the same for every chain method; ``attrs["chain_method"]`` records it.
        **method_kwargs: sampler settings, validated against ``SAMPLERS[method].options`` (their
            defaults in ``SAMPLERS[method].defaults``). NUTS/HMC: keyword arguments of Pyro's
            :class:`~pyro.infer.mcmc.NUTS`/:class:`~pyro.infer.mcmc.HMC` (``step_size``,
            ``target_accept_prob``, ``max_tree_depth``, ``trajectory_length``, ``full_mass``, ...; Pyro's HMC
            takes int(trajectory_length / step_size) leapfrog steps, without jitter, and its default
            trajectory 2π is a full period of a mass-adapted Gaussian: prefer NUTS or set it near 2);
            ULA: ``step_size`` (0.01), ``step_size_decay`` (1.0), ``decay_every`` (200), ``thin`` (1);
            kinetic: ``step_size`` (0.1), ``friction`` (1.0), the schedule, ``thin``; MALA: as ULA;
            IMH: ``thin`` (1); SIR: ``num_proposals`` (256); DOT: ``step_size`` (0.1), ``num_steps`` (50),
            ``lipschitz`` (None: estimated), ``lipschitz_samples`` (256).

    Returns:
        An ``arviz.InferenceData``.

    Raises:
        TypeError: ``gebm`` is not a GEBM, wrong argument types, unknown sampler settings.
        ValueError: unknown method or backend, a method the backend lacks, num_chains < 1, non-positive
            temperature, ``init`` of the wrong shape or not finite, a chain_method the method and backend
            lack, more parallel chains than devices (NumPyro) or than Pyro's process limit.
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
    if backend == "auto":
        backend = auto_backend(get_sampler(method).name)
    spec = spec_for(method, backend)
    num_samples = check_count(num_samples, "num_samples", 1)
    warmup_steps = check_count(warmup_steps, "warmup_steps", 0)
    num_chains = check_count(num_chains, "num_chains", 1)
    seed = check_count(seed, "seed", 0)
    temperature = check_positive_float(temperature, "temperature")
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(f"'progress' should be True, False or None. Got {progress!r}.")
    settings = spec.validate(method_kwargs, backend)
    chain_method = check_chain_method(spec, backend, chain_method)
    potential = LatentPotential(gebm, temperature)
    d = potential.latent_dim
    if init is not None:
        init = check_init(init, num_chains, d, potential.dtype, potential.device)

    if backend == "numpyro":
        runner = numpyro_backend("latent")
        with _numpyro_progress(progress, method, num_chains, warmup_steps + num_samples) as bar:
            return runner(
                gebm,
                method=method,
                num_samples=num_samples,
                warmup_steps=warmup_steps,
                num_chains=num_chains,
                temperature=temperature,
                init=init,
                seed=seed,
                progress=bar,
                chain_method=chain_method,
                **method_kwargs,
            )

    from ..inference_data import build_inference_data

    with sampling_mode(gebm), torch_threads(model=gebm):  # small nets: one thread unless chosen (_threads)
        z, stats, elapsed = run_torch(spec, potential, init, num_samples, warmup_steps, num_chains, seed,
                                       progress, settings, chain_method)
        x = data_space(gebm, z)
    attrs = run_attrs(spec, backend, settings, potential, elapsed, seed, temperature=temperature,
                      chain_method=chain_method)
    return build_inference_data(z, x, stats, attrs)


def sample_potential(
    potential_fn: Callable,
    init,
    method: str = "ula",
    backend: str = "pyro",
    num_samples: int = 1000,
    warmup_steps: int = 500,
    *,
    seed: int = 0,
    progress: bool | None = None,
    forward: Callable | None = None,
    chain_method: str | None = None,
    **method_kwargs,
):
    """Sample ν(z) ∝ exp(−U(z)) for any latent potential U = ``potential_fn`` with a registered sampler.

    The samplers' maths needs only U (and ∇U by autodiff): this runs them on any potential, not only a
    GEBM's. IMH, SIR and DOT treat V(z) = U(z) − ½‖z‖² as the energy term over the prior N(0, I).

    Args:
        potential_fn: U, ``[..., d] → [...]``: a differentiable torch function for ``backend="pyro"``, a
            JAX function for ``backend="numpyro"``.
        init: starting points ``[C, d]`` (they fix the number of chains C and d), a tensor or array.
        method: a registered method (as in :func:`sample_latent`).
        backend: ``"pyro"`` or ``"numpyro"``.
        num_samples: draws kept per chain.
        warmup_steps: transitions per chain discarded first.
        seed: seed of every random draw of the run.
        progress: as in :func:`sample_latent` (None: a bar on a terminal, periodic lines elsewhere).
        **method_kwargs: the method's settings (as in :func:`sample_latent`).
        forward: optional map z → x stored as the posterior ``x`` (default: x = z).
        chain_method: how the chains run (as in :func:`sample_latent`; Pyro's parallel chains fork or
            spawn processes, so ``potential_fn`` must be picklable where they are spawned).

    Returns:
        An ``arviz.InferenceData`` in the layout of :func:`sample_latent` (without ``temperature``).

    Example:
        >>> import torch
        >>> from gebm_ppl.sampling import sample_potential
        >>> idata = sample_potential(lambda z: 0.5 * (z * z).sum(-1), torch.zeros(2, 3), "mala",
        ...                          num_samples=10, warmup_steps=5, step_size=0.5)
        >>> idata.posterior["z"].shape
        (2, 10, 3)
    """
    if not callable(potential_fn):
        raise TypeError(f"'potential_fn' should be callable. Got {type(potential_fn).__name__}.")
    spec = spec_for(method, backend)
    num_samples = check_count(num_samples, "num_samples", 1)
    warmup_steps = check_count(warmup_steps, "warmup_steps", 0)
    seed = check_count(seed, "seed", 0)
    settings = spec.validate(method_kwargs, backend)
    chain_method = check_chain_method(spec, backend, chain_method)
    if backend == "numpyro":
        runner = numpyro_backend("potential")
        with _numpyro_progress(progress, method, len(init), warmup_steps + num_samples) as bar:
            return runner(potential_fn, init, method, num_samples, warmup_steps, seed=seed,
                          progress=bar, forward=forward, chain_method=chain_method,
                          **method_kwargs)
    from ..inference_data import build_inference_data

    if not isinstance(init, Tensor):
        init = torch.as_tensor(init, dtype=torch.get_default_dtype())
    if init.dim() != 2:
        raise ValueError(f"'init' should have shape [num_chains, d]. Got {tuple(init.shape)}.")
    init = check_init(init, init.shape[0], init.shape[1], init.dtype, init.device)
    potential = CountingPotential(potential_fn, init.shape[1], init.dtype, init.device)
    z, stats, elapsed = run_torch(spec, potential, init, num_samples, warmup_steps, init.shape[0], seed,
                                   progress, settings, chain_method)
    with torch.no_grad():
        x = z if forward is None else forward(z)
    attrs = run_attrs(spec, backend, settings, potential, elapsed, seed, chain_method=chain_method)
    return build_inference_data(z, x, stats, attrs)
