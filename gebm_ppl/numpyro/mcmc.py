"""NumPyro NUTS/HMC on the latent potential U(z) = ½‖z‖² + T·E(G_θ(z)) of a GEBM, JIT-compiled.

Chains run ``chain_method="vectorized"`` (one compiled program, chains batched with ``vmap``) or
``"parallel"`` (one device per chain with ``pmap``). On CPU, parallel chains need as many host
devices, which must be requested before JAX initialises, i.e. before the first JAX computation::

    import numpyro
    numpyro.set_host_device_count(4)   # first thing in the program
    import gebm_ppl as gp

With fewer devices than chains NumPyro warns and draws the chains one after another.

Compilation: warmup and sampling run as one compiled loop with the GEBM's networks inlined (their
weights as constants). On CPU, compiling takes seconds to tens of seconds, often more than sampling
itself; ``attrs["compile_time"]`` reports it. JAX's persistent compilation cache skips most of it when
the same GEBM is sampled again in a later process::

    jax.config.update("jax_compilation_cache_dir", "/path/to/cache")
"""

from __future__ import annotations

import inspect
import math
import time
from collections import namedtuple
from contextlib import contextmanager

import jax
import jax.numpy as jnp
import numpy as np
import torch
from numpyro.infer import HMC, MCMC, NUTS
from numpyro.infer.hmc import HMCState

from ..sampling.driver import build_inference_data, chain_seeds
from .distribution import as_jax_gebm

__all__ = ["default_init", "sample_latent_numpyro"]

# HMCState plus the running count of gradient evaluations of the chain (warmup included).
CountingHMCState = namedtuple("CountingHMCState", HMCState._fields + ("num_grad_evals",))


def _counting(kernel_class: type) -> type:
    """A subclass of NumPyro's HMC or NUTS whose state also counts the chain's gradient evaluations.

    One at the start (``init`` evaluates U and ∇U at the initial point) and ``num_steps`` per
    transition (one per leapfrog step), so a single compiled run of warmup and sampling yields the
    exact count; MCMC collects every other field of the state as usual.
    """

    class Counting(kernel_class):
        def init(self, rng_key, num_warmup, init_params, model_args, model_kwargs):
            parent = super()

            # Compiled as one program: run eagerly, NumPyro's initialisation (a gradient and a step-size
            # search) would compile each of its hundreds of small operations on its own. Tracing it once is
            # safe: like vmap (which NumPyro applies to it), jit leaves its closures' static settings as is.
            @jax.jit
            def initial_state(rng_key, init_params):
                return parent.init(rng_key, num_warmup, init_params, model_args, model_kwargs)

            state = initial_state(rng_key, init_params)
            return CountingHMCState(*state, jnp.ones_like(state.num_steps))

        def sample(self, state, model_args, model_kwargs):
            new = super().sample(HMCState(*state[:-1]), model_args, model_kwargs)
            return CountingHMCState(*new, state.num_grad_evals + new.num_steps)

    Counting.__name__ = Counting.__qualname__ = f"Counting{kernel_class.__name__}"
    return Counting


_KERNELS = {"nuts": _counting(NUTS), "hmc": _counting(HMC)}
_CHAIN_METHODS = ("vectorized", "parallel")
_FIELDS = ("num_steps", "accept_prob", "adapt_state.step_size", "potential_energy", "energy")
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


def _kernel(method: str, potential, method_kwargs: dict):
    if method not in _KERNELS:
        raise ValueError(f"'method' should be one of {sorted(_KERNELS)} with NumPyro. Got {method!r}.")
    cls = _KERNELS[method]
    signature = inspect.signature(cls.__mro__[1])
    if method == "hmc" and "num_steps" in method_kwargs and "trajectory_length" not in method_kwargs:
        # as in Pyro's HMC: a given number of leapfrog steps defines the trajectory
        method_kwargs = {**method_kwargs, "trajectory_length": None}
    allowed = set(signature.parameters) - {"model", "potential_fn"}
    unknown = sorted(set(method_kwargs) - allowed)
    if unknown:
        raise TypeError(
            f"unknown keyword argument(s) {unknown} for NumPyro {method.upper()} "
            f"(allowed: {sorted(allowed)})."
        )
    return cls(potential_fn=potential, **method_kwargs)


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
    """Sample the latent posterior ν(z) ∝ exp(−U(z)), U(z) = ½‖z‖² + T·E(G_θ(z)), with NumPyro NUTS or HMC.

    If z ~ ν (T = 1) then x = G_θ(z) ~ Q exactly. The potential and its gradient run as JIT-compiled
    JAX (:func:`gebm_ppl.to_jax`), with no torch call while sampling. Usually reached through
    :func:`gebm_ppl.sample_latent` with ``backend="numpyro"``.

    Args:
        gebm: a torch :class:`gebm_ppl.GEBM` or a :class:`~gebm_ppl.jax.JaxGEBM`.
        method: ``"nuts"`` or ``"hmc"``.
        num_samples: draws kept per chain.
        warmup_steps: adaptation steps per chain (step size, diagonal mass matrix), discarded.
        num_chains: C.
        temperature: T > 0.
        init: ``[C, d]`` initial latent points (array or tensor); None draws them from η = N(0, I)
            with ``seed``, the same points as the Pyro backend.
        seed: seed of the JAX PRNG key.
        progress: show NumPyro's progress bar (slower: it calls back to the host every step).
        chain_method: ``"vectorized"`` (default) or ``"parallel"`` (see the module docstring).
        **method_kwargs: passed to :class:`numpyro.infer.NUTS` / :class:`numpyro.infer.HMC`
            (e.g. ``target_accept_prob``, ``max_tree_depth``, ``dense_mass``; for HMC ``num_steps``, which
            as in Pyro fixes the leapfrog steps per transition unless ``trajectory_length`` is also given).

    Returns:
        ``arviz.InferenceData`` in the layout of the Pyro backend: posterior ``z`` (chain, draw, z_dim)
        and ``x`` (chain, draw, x_dim); sample_stats ``diverging``, ``acceptance_rate``, ``step_size``,
        ``n_steps``, ``tree_depth`` (NUTS), ``lp`` (= −U(z)), ``energy`` (the Hamiltonian); attrs
        ``method``, ``backend``, ``temperature``, ``num_grad_evals``, ``sampling_time`` (wall time of the
        run, compilation included), ``seed``, plus ``compile_time`` (the part of ``sampling_time`` spent
        tracing and compiling), ``chain_method`` and the scalar ``method_kwargs``.
        ``num_grad_evals`` counts one gradient per chain at the start and one per leapfrog step, warmup
        included; the few evaluations of NumPyro's step-size search (at the start and at the end of each
        adaptation window) happen inside compiled code, are not observable and are not counted.

    Raises:
        ValueError: unknown method or chain_method, bad counts or temperature, ``init`` of the wrong shape.
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
    if chain_method not in _CHAIN_METHODS:
        raise ValueError(f"'chain_method' should be one of {_CHAIN_METHODS}. Got {chain_method!r}.")
    d = jg.latent_dim
    if init is None:
        init = default_init(seed, num_chains, d, jg.dtype)
    else:
        init = _check_init(init, num_chains, d, jg.dtype)
    key_run = jax.random.PRNGKey(seed)

    def potential(z: jax.Array) -> jax.Array:
        return jg.latent_potential(z, temperature)

    kernel = _kernel(method, potential, method_kwargs)
    mcmc = MCMC(
        kernel,
        num_warmup=warmup_steps,
        num_samples=num_samples,
        num_chains=num_chains,
        chain_method=chain_method,
        progress_bar=progress,
    )
    init_params = init if num_chains > 1 else init[0]
    t0 = time.perf_counter()
    with _compile_timer() as compile_time:  # warmup and sampling in one compiled loop
        mcmc.run(key_run, init_params=init_params, extra_fields=_FIELDS)
        z = np.asarray(mcmc.get_samples(group_by_chain=True))
        num_grad_evals = int(np.asarray(mcmc.last_state.num_grad_evals, dtype=np.int64).sum())
    sampling_time = time.perf_counter() - t0
    stats = {k: np.asarray(v) for k, v in mcmc.get_extra_fields(group_by_chain=True).items()}
    x = np.asarray(jax.jit(jg.forward)(jnp.asarray(z)))
    n_steps = stats["num_steps"].astype(np.int64)
    sample_stats = {
        "diverging": stats["diverging"].astype(bool),
        "acceptance_rate": stats["accept_prob"],
        "step_size": stats["adapt_state.step_size"],
        "n_steps": n_steps,
        "lp": -stats["potential_energy"],
        "energy": stats["energy"],
    }
    if method == "nuts":
        # tree doublings j as in the Pyro backend: j doublings give 2^(j−1) < n_steps + 1 ≤ 2^j
        sample_stats["tree_depth"] = np.ceil(np.log2(n_steps + 1)).astype(np.int64)
    attrs = {
        "method": method,
        "backend": "numpyro",
        "temperature": temperature,
        "num_grad_evals": num_grad_evals,
        "sampling_time": float(sampling_time),
        "compile_time": float(compile_time[0]),
        "seed": int(seed),
        "chain_method": chain_method,
        **{k: v for k, v in method_kwargs.items() if isinstance(v, bool | int | float | str)},
    }
    return build_inference_data(z, x, sample_stats, attrs)
