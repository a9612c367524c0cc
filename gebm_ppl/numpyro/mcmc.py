"""NumPyro samplers on the latent potential U(z) = ½‖z‖² + T·E(G_θ(z)) of a GEBM (or any potential), JIT-compiled.

NUTS and HMC are NumPyro's own kernels; ULA, kinetic Langevin, MALA, IMH and DOT are the pure-JAX
``MCMCKernel`` subclasses of :mod:`gebm_ppl.numpyro.kernels`. All are looked up in the sampler registry
(:data:`gebm_ppl.sampling.SAMPLERS`) and run by ``numpyro.infer.MCMC``.

Chains run ``chain_method="vectorized"`` (one compiled program, chains batched with ``vmap``),
``"parallel"`` (one device per chain with ``pmap``) or ``"sequential"``. Parallel chains need as many
JAX devices as chains; on CPU those are host devices, which must be requested before JAX initialises,
i.e. before the first JAX computation (:func:`set_host_devices` wraps ``numpyro.set_host_device_count``)::

    from gebm_ppl.numpyro import set_host_devices
    set_host_devices(4)   # first thing in the program
    import gebm_ppl as gp

With fewer devices than chains, ``chain_method="parallel"`` raises ValueError (NumPyro itself would
silently draw the chains one after another).

Compilation: warmup and sampling run as one compiled loop with the GEBM's networks inlined (their
weights as constants). On CPU, compiling takes seconds to tens of seconds, often more than sampling
itself; ``attrs["compile_time"]`` reports it. JAX's persistent compilation cache skips most of it when
the same GEBM is sampled again in a later process::

    jax.config.update("jax_compilation_cache_dir", "/path/to/cache")

The module is over ~300 lines: the two entry points share the checks, the run and the device set-up.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import torch
from numpyro.infer import MCMC

from ..inference_data import build_inference_data
from ..sampling.driver import NUMPYRO_CHAIN_METHODS, chain_seeds
from ..sampling.registry import get_sampler
from .distribution import as_jax_gebm
from .kernels_hmc import hmc_kernel, nuts_kernel

__all__ = ["check_chain_devices", "default_init", "hmc_kernel", "nuts_kernel", "sample_latent_numpyro",
           "sample_potential_numpyro", "set_host_devices"]

_CHAIN_METHODS = NUMPYRO_CHAIN_METHODS
# JAX's monitoring events that cover tracing, lowering and XLA compilation of a jitted function.
_COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)


@contextmanager
def _compile_timer():
    """Time JAX's tracing and compilation in the block: yields a list that ends up holding the seconds."""
    spans: list[tuple[float, float]] = []
    total: list[float] = []

    def listener(event: str, start: float, end: float, **kwargs) -> None:
        if event in _COMPILE_EVENTS:
            spans.append((start, end))

    jax.monitoring.register_event_time_span_listener(listener)
    try:
        yield total
    finally:
        jax.monitoring.unregister_event_time_span_listener(listener)
        # union of the spans: nested events (a trace inside a trace) count once
        covered, reach = 0.0, -math.inf
        for start, end in sorted(spans):
            if end > reach:
                covered += end - max(start, reach)
                reach = end
        total.append(covered)


def _check_int(value: object, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"'{name}' should be an integer >= {low}. Got {value!r}.")
    if value < low:
        raise ValueError(f"'{name}' should be an integer >= {low}. Got {value}.")
    return int(value)


def set_host_devices(n: int) -> int:
    """Ask XLA for ``n`` CPU devices (``numpyro.set_host_device_count``), one per parallel chain on CPU.

    It sets ``XLA_FLAGS=--xla_force_host_platform_device_count=n``, which XLA reads only when JAX
    initialises (its first computation or device query), then initialises JAX and checks the count.

    Returns:
        The number of CPU devices JAX has (≥ ``n``).

    Raises:
        RuntimeError: JAX had already initialised with fewer CPU devices.
    """
    n = _check_int(n, "n", 1)
    numpyro.set_host_device_count(n)
    count = len(jax.devices("cpu"))
    if count < n:
        raise RuntimeError(
            f"JAX has already initialised with {count} CPU device(s), so {n} host devices cannot be set now: "
            f"set them before JAX's first computation (gebm_ppl.numpyro.set_host_devices({n}) or "
            f"numpyro.set_host_device_count({n}) first thing in the program), or set "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={n} before importing jax."
        )
    return count


def check_chain_devices(chain_method: object, num_chains: int) -> str:
    """The chain method, checked: one of ``_CHAIN_METHODS``, and parallel chains need one JAX device each.

    Raises:
        ValueError: an unknown chain method, or ``"parallel"`` with fewer JAX devices than ``num_chains``.
    """
    if chain_method not in _CHAIN_METHODS:
        raise ValueError(f"'chain_method' should be one of {_CHAIN_METHODS}. Got {chain_method!r}.")
    devices = jax.local_device_count()
    if chain_method == "parallel" and num_chains > devices:
        raise ValueError(
            f"chain_method='parallel' runs one chain per JAX device: {num_chains} chains need {num_chains} "
            f"devices and JAX has {devices} ({jax.default_backend()}). On CPU, request host devices before JAX "
            f"initialises: gebm_ppl.numpyro.set_host_devices({num_chains}) first thing in the program, "
            f"'gebm sample --host-devices {num_chains}', or XLA_FLAGS=--xla_force_host_platform_device_count="
            f"{num_chains} set before importing jax. Or use chain_method='vectorized'."
        )
    return chain_method


def _check_init(init, num_chains: int, dim: int, dtype) -> jax.Array:
    expected = f"[num_chains, d] = [{num_chains}, {dim}]"
    if isinstance(init, torch.Tensor):
        init = init.detach().cpu().double().numpy()
    try:
        init = np.asarray(init, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"'init' should be an array of shape {expected}. Got {type(init).__name__}.") from e
    if init.shape != (num_chains, dim):
        raise ValueError(f"'init' should have shape {expected}. Got {init.shape}.")
    if not np.isfinite(init).all():
        raise ValueError("'init' contains NaN or inf values.")
    return jnp.asarray(init, dtype=dtype)


def default_init(seed: int, num_chains: int, dim: int, dtype) -> jax.Array:
    """``[num_chains, dim]`` starting points from η = N(0, I): the Pyro backend's for the same ``seed``."""
    generator, _ = chain_seeds(seed, num_chains)
    torch_dtype = torch.float64 if jnp.dtype(dtype) == jnp.float64 else torch.float32
    z0 = torch.randn(num_chains, dim, generator=generator, dtype=torch_dtype)
    return jnp.asarray(z0.numpy(), dtype=dtype)


def _build(method: str, potential_fn, method_kwargs: dict):
    """The kernel of a registered method for ``potential_fn``, its thinning and whether warmup is run."""
    spec = get_sampler(method)
    settings = spec.validate(method_kwargs, "numpyro")
    thin = settings.pop("thin", 1) if spec.passthrough is None else 1
    return spec.kernel_factory()(potential_fn, **settings), thin, spec.burn_in, settings


def _run(kernel, init, num_samples, warmup_steps, num_chains, seed, progress, chain_method, thin):
    """Run ``numpyro.infer.MCMC``; returns z [C, N, d], sample_stats, counts, sampling and compile time."""
    check_chain_devices(chain_method, num_chains)
    mcmc = MCMC(
        kernel,
        num_warmup=warmup_steps,
        num_samples=num_samples * thin,
        thinning=thin,
        num_chains=num_chains,
        chain_method=chain_method,
        progress_bar=progress,
    )
    init_params = init if num_chains > 1 else init[0]
    t0 = time.perf_counter()
    with _compile_timer() as compile_time:  # warmup and sampling in one compiled loop
        mcmc.run(jax.random.PRNGKey(seed), init_params=init_params, extra_fields=tuple(kernel.extra_fields))
        z = np.asarray(mcmc.get_samples(group_by_chain=True))
        last = mcmc.last_state
        num_grad_evals = int(np.asarray(last.num_grad_evals, dtype=np.int64).sum())
        num_energy_evals = int(np.asarray(getattr(last, "num_energy_evals", last.num_grad_evals), np.int64).sum())
    sampling_time = time.perf_counter() - t0
    fields = {k: np.asarray(v) for k, v in mcmc.get_extra_fields(group_by_chain=True).items()}
    counts = {"num_grad_evals": num_grad_evals, "num_energy_evals": num_energy_evals}
    return z, kernel.sample_stats(fields), counts, sampling_time, float(compile_time[0])


def _plain(settings: dict) -> dict:
    return {k: v for k, v in settings.items() if isinstance(v, bool | int | float | str)}


def sample_potential_numpyro(
    potential_fn,
    init,
    method: str = "ula",
    num_samples: int = 1000,
    warmup_steps: int = 500,
    *,
    seed: int = 0,
    progress: bool = False,
    chain_method: str = "vectorized",
    forward=None,
    **method_kwargs,
):
    """Sample ν ∝ exp(−U) for a JAX potential ``potential_fn`` (U: ``[d] → []``) with a registered method.

    ``init`` ``[C, d]`` fixes the chains; ``forward`` (z → x, JAX) fills the posterior ``x`` (default x = z).
    Otherwise as :func:`sample_latent_numpyro`; reached through :func:`gebm_ppl.sampling.sample_potential`.
    """
    init = np.asarray(init.detach().cpu().numpy() if isinstance(init, torch.Tensor) else init)
    if init.ndim != 2:
        raise ValueError(f"'init' should have shape [num_chains, d]. Got {init.shape}.")
    dtype = jnp.float64 if init.dtype == np.float64 and jax.config.jax_enable_x64 else jnp.float32
    init = _check_init(init, init.shape[0], init.shape[1], dtype)
    check_chain_devices(chain_method, init.shape[0])
    kernel, thin, burn_in, settings = _build(method, potential_fn, method_kwargs)
    z, stats, counts, sampling_time, compile_time = _run(
        kernel, init, _check_int(num_samples, "num_samples", 1),
        _check_int(warmup_steps, "warmup_steps", 0) if burn_in else 0, init.shape[0], _check_int(seed, "seed", 0),
        progress, chain_method, thin,
    )
    x = z if forward is None else np.asarray(jax.jit(forward)(jnp.asarray(z)))
    attrs = {"method": method, "backend": "numpyro", **counts, "sampling_time": float(sampling_time),
             "compile_time": compile_time, "seed": int(seed), "chain_method": chain_method,
             **_plain({**settings, "thin": thin} if thin != 1 else settings)}
    return build_inference_data(z, x, stats, attrs)


def sample_latent_numpyro(
    gebm,
    method: str = "nuts",
    num_samples: int = 1000,
    warmup_steps: int = 500,
    num_chains: int = 4,
    *,
    temperature: float = 1.0,
    init=None,
    seed: int = 0,
    progress: bool = False,
    chain_method: str = "vectorized",
    **method_kwargs,
):
    """Sample the latent posterior ν(z) ∝ exp(−U(z)), U(z) = ½‖z‖² + T·E(G_θ(z)), with a NumPyro kernel.

    If z ~ ν (T = 1) then x = G_θ(z) ~ Q exactly. The potential and its gradient run as JIT-compiled
    JAX (:func:`gebm_ppl.to_jax`), with no torch call while sampling. Usually reached through
    :func:`gebm_ppl.sample_latent` with ``backend="numpyro"``.

    Args:
        gebm: a torch :class:`gebm_ppl.GEBM` or a :class:`~gebm_ppl.jax.JaxGEBM`.
        method: a registered method with a NumPyro kernel: ``"nuts"``, ``"hmc"``, ``"ula"``,
            ``"kinetic"``, ``"mala"``, ``"imh"``, ``"dot"``.
        num_samples: draws kept per chain.
        warmup_steps: transitions per chain discarded first (adaptation of step size and diagonal mass
            matrix for NUTS/HMC; ignored by DOT).
        num_chains: C.
        temperature: T > 0.
        init: ``[C, d]`` initial latent points (array or tensor); None draws them from η = N(0, I)
            with ``seed``, the same points as the Pyro backend.
        seed: seed of the JAX PRNG key.
        progress: show NumPyro's progress bar (slower: it calls back to the host every step).
        chain_method: ``"vectorized"`` (default), ``"parallel"`` (one JAX device per chain) or
            ``"sequential"`` (see the module docstring).
        **method_kwargs: NUTS/HMC: passed to :class:`numpyro.infer.NUTS` / :class:`numpyro.infer.HMC`
            (e.g. ``target_accept_prob``, ``max_tree_depth``, ``dense_mass``; for HMC ``num_steps``, which
            as in Pyro fixes the leapfrog steps per transition unless ``trajectory_length`` is also given);
            the other methods: their registry options, as with the Pyro backend.

    Returns:
        ``arviz.InferenceData`` in the layout of the Pyro backend: posterior ``z`` (chain, draw, z_dim)
        and ``x`` (chain, draw, x_dim); sample_stats as listed in :mod:`gebm_ppl.sampling` (NUTS/HMC:
        ``diverging``, ``acceptance_rate``, ``step_size``, ``n_steps``, ``tree_depth`` (NUTS), ``lp``
        (= −U(z)), ``energy`` (the Hamiltonian)); attrs
        ``method``, ``backend``, ``temperature``, ``num_grad_evals``, ``num_energy_evals``, ``sampling_time``
        (wall time of the
        run, compilation included), ``seed``, plus ``compile_time`` (the part of ``sampling_time`` spent
        tracing and compiling), ``chain_method`` and the scalar ``method_kwargs``.
        ``num_grad_evals`` counts one gradient per chain at the start and one per leapfrog step, warmup
        included; the few evaluations of NumPyro's step-size search (at the start and at the end of each
        adaptation window) happen inside compiled code, are not observable and are not counted.

    Raises:
        ValueError: unknown method or chain_method, bad counts or temperature, ``init`` of the wrong shape,
            parallel chains on fewer JAX devices than chains.
        TypeError: unknown keyword arguments for the kernel.
    """
    jg = as_jax_gebm(gebm)
    num_samples = _check_int(num_samples, "num_samples", 1)
    warmup_steps = _check_int(warmup_steps, "warmup_steps", 0)
    num_chains = _check_int(num_chains, "num_chains", 1)
    seed = _check_int(seed, "seed", 0)
    temperature = float(temperature)
    if not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"'temperature' should be a positive finite number. Got {temperature}.")
    check_chain_devices(chain_method, num_chains)
    get_sampler(method).validate(method_kwargs, "numpyro")  # unknown method, backend or keywords: fail before JIT
    d = jg.latent_dim
    if init is None:
        init = default_init(seed, num_chains, d, jg.dtype)
    else:
        init = _check_init(init, num_chains, d, jg.dtype)

    def potential(z: jax.Array) -> jax.Array:
        return jg.latent_potential(z, temperature)

    kernel, thin, burn_in, settings = _build(method, potential, method_kwargs)
    z, sample_stats, counts, sampling_time, compile_time = _run(
        kernel, init, num_samples, warmup_steps if burn_in else 0, num_chains, seed, progress, chain_method, thin
    )
    x = np.asarray(jax.jit(jg.forward)(jnp.asarray(z)))
    attrs = {
        "method": method,
        "backend": "numpyro",
        "temperature": temperature,
        **counts,
        "sampling_time": float(sampling_time),
        "compile_time": compile_time,
        "seed": int(seed),
        "chain_method": chain_method,
        **_plain(settings),
    }
    if thin != 1:
        attrs["thin"] = thin
    return build_inference_data(z, x, sample_stats, attrs)
