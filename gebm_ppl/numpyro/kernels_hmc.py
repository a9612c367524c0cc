"""NumPyro's own NUTS and HMC, counting the gradient evaluations of each chain, as registry kernel factories."""

from __future__ import annotations

import inspect
from collections import namedtuple

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.infer import HMC, NUTS
from numpyro.infer.hmc import HMCState

__all__ = ["CountingHMCState", "hmc_kernel", "nuts_kernel"]

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

        extra_fields = _FIELDS

        def sample_stats(self, stats: dict) -> dict:
            n_steps = np.asarray(stats["num_steps"]).astype(np.int64)
            out = {
                "diverging": np.asarray(stats["diverging"]).astype(bool),
                "acceptance_rate": np.asarray(stats["accept_prob"]),
                "step_size": np.asarray(stats["adapt_state.step_size"]),
                "n_steps": n_steps,
                "lp": -np.asarray(stats["potential_energy"]),
                "energy": np.asarray(stats["energy"]),
            }
            if kernel_class is NUTS:
                # tree doublings j as in the Pyro backend: j doublings give 2^(j−1) < n_steps + 1 ≤ 2^j
                out["tree_depth"] = np.ceil(np.log2(n_steps + 1)).astype(np.int64)
            return out

    Counting.__name__ = Counting.__qualname__ = f"Counting{kernel_class.__name__}"
    return Counting


_FIELDS = ("num_steps", "accept_prob", "adapt_state.step_size", "potential_energy", "energy")
_KERNELS = {"nuts": _counting(NUTS), "hmc": _counting(HMC)}


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


def nuts_kernel(potential_fn, **kwargs):
    """NumPyro NUTS on ``potential_fn`` (counting gradient evaluations); TypeError on unknown keywords."""
    return _kernel("nuts", potential_fn, kwargs)


def hmc_kernel(potential_fn, **kwargs):
    """NumPyro HMC on ``potential_fn`` (counting gradient evaluations); TypeError on unknown keywords."""
    return _kernel("hmc", potential_fn, kwargs)
