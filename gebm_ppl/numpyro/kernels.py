"""Pure-JAX latent samplers as ``numpyro.infer.mcmc.MCMCKernel`` subclasses: ULA, kinetic Langevin, MALA, IMH, DOT.

Each kernel is built from a ``potential_fn`` (U: ``[d] → []`` for one chain; NumPyro's ``MCMC`` batches
chains with ``vmap`` or ``pmap``) and is a thin ``init``/``sample`` shell over pure functions of a
namedtuple state, NumPyro style. The maths is that of the torch kernels in :mod:`gebm_ppl.sampling`
(same update rules, same step-size schedule γ_t = γ₀ ρ^⌊t/k⌋ with t counting every transition), so both
backends agree in distribution (not draw for draw: their random streams differ). Every state carries
``i`` (transitions so far), ``rng_key`` and the counts ``num_grad_evals`` / ``num_energy_evals`` of the
chain; :attr:`extra_fields` lists the fields to collect and :meth:`sample_stats` maps them to the
``sample_stats`` layout of :mod:`gebm_ppl.sampling`.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from numpyro.infer import MCMC
    >>> from gebm_ppl.numpyro.kernels import MALA
    >>> mcmc = MCMC(MALA(lambda z: 0.5 * jnp.sum(z * z), step_size=0.5), num_warmup=50, num_samples=100,
    ...             progress_bar=False)
    >>> mcmc.run(jax.random.PRNGKey(0), init_params=jnp.zeros(2))
    >>> mcmc.get_samples().shape
    (100, 2)
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.infer.mcmc import MCMCKernel
from numpyro.util import is_prng_key

from ..sampling.registry import scheduled_step_size

__all__ = ["DOT", "IMH", "MALA", "ULA", "Kinetic", "LatentKernel"]

LangevinState = namedtuple(
    "LangevinState", ["i", "z", "v", "potential_energy", "grad", "step_size", "rng_key", "num_grad_evals",
                      "num_energy_evals"]
)
LangevinState.__doc__ = """State of one ULA / kinetic chain: transition count ``i``, position ``z`` [d], velocity
``v`` [d] (zero for ULA), U(z), ∇U(z), the step size of the last transition, the PRNG key and the counts."""

MHState = namedtuple(
    "MHState", ["i", "z", "potential_energy", "grad", "accept_prob", "accepted", "step_size", "rng_key",
                "num_grad_evals", "num_energy_evals"]
)
MHState.__doc__ = """State of one MALA / IMH chain: as :class:`LangevinState` (``grad`` zero for IMH) plus the
last proposal's acceptance probability and whether it was accepted."""

DOTState = namedtuple(
    "DOTState",
    ["i", "z", "z0", "transport_cost", "potential_energy", "lipschitz", "rng_key", "num_grad_evals",
     "num_energy_evals"],
)
DOTState.__doc__ = """State of one DOT chain: the transported point ``z``, its start ``z0``, ‖z − z0‖, U(z), the
Lipschitz
constant L of the chain, the PRNG key and the counts."""


class LatentKernel(MCMCKernel):
    """Common shell: ``sample_field = "z"``, the gradient of U, the collected fields and their names."""

    sample_field = "z"
    extra_fields: tuple[str, ...] = ("potential_energy",)

    def __init__(self, potential_fn: Callable[[jax.Array], jax.Array]):
        self.potential_fn = potential_fn
        self._value_and_grad = jax.value_and_grad(potential_fn)
        self._batched = False

    def init(self, rng_key, num_warmup, init_params, model_args, model_kwargs):
        """The initial state of one chain, or of a batch of chains (``chain_method="vectorized"``)."""
        z = jnp.asarray(init_params)
        self._batched = not is_prng_key(rng_key)
        if self._batched:
            return jax.vmap(self._init_one)(rng_key, z)
        return self._init_one(rng_key, z)

    def sample(self, state, model_args, model_kwargs):
        """One transition of the chain(s)."""
        return jax.vmap(self._sample_one)(state) if self._batched else self._sample_one(state)

    def sample_stats(self, fields: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The ``sample_stats`` of the run from the collected :attr:`extra_fields` ``[chain, draw]``."""
        return {"lp": -np.asarray(fields["potential_energy"])}


class _Langevin(LatentKernel):
    extra_fields = ("potential_energy", "step_size")

    def __init__(self, potential_fn, step_size: float, step_size_decay: float = 1.0, decay_every: int = 200):
        super().__init__(potential_fn)
        self.schedule = (float(step_size), float(step_size_decay), int(decay_every))

    def _init_one(self, rng_key, z):
        u, g = self._value_and_grad(z)
        one = jnp.ones((), jnp.int32)
        h = jnp.asarray(self.schedule[0], z.dtype)
        return LangevinState(jnp.zeros((), jnp.int32), z, jnp.zeros_like(z), u, g, h,
                             rng_key, one, one)

    def sample_stats(self, fields):
        return {**super().sample_stats(fields), "step_size": np.asarray(fields["step_size"], np.float64)}


class ULA(_Langevin):
    """Unadjusted Langevin: z ← z − γ_t∇U(z) + √(2γ_t) ξ (one gradient per transition).

    Args:
        potential_fn: U.
        step_size: γ₀.
        step_size_decay: ρ of the schedule γ_t = γ₀ ρ^⌊t/k⌋ (1: constant).
        decay_every: k, transitions between decays.
    """

    def _sample_one(self, state):
        key, sub = jax.random.split(state.rng_key)
        h = jnp.asarray(scheduled_step_size(*self.schedule, state.i), state.z.dtype)
        z = state.z - h * state.grad + jnp.sqrt(2.0 * h) * jax.random.normal(sub, state.z.shape, state.z.dtype)
        u, g = self._value_and_grad(z)
        return LangevinState(state.i + 1, z, state.v, u, g, h, key, state.num_grad_evals + 1,
                             state.num_energy_evals + 1)


class Kinetic(_Langevin):
    """Kinetic (underdamped) Langevin, the splitting of :func:`gebm_ppl.sampling.kinetic.step`:

    v ← e^{−κh}(v − (h/2)∇U) + √(1 − e^{−2κh}) ξ, v ← v − (h/2)∇U, z ← z + h v (one gradient per transition).

    Args:
        potential_fn: U.
        step_size: h₀.
        friction: κ.
        step_size_decay: ρ of the schedule γ_t = γ₀ ρ^⌊t/k⌋ (1: constant).
        decay_every: k, transitions between decays.
    """

    def __init__(self, potential_fn, step_size: float, friction: float, step_size_decay: float = 1.0,
                 decay_every: int = 200):
        super().__init__(potential_fn, step_size, step_size_decay, decay_every)
        self.friction = float(friction)

    def _sample_one(self, state):
        key, sub = jax.random.split(state.rng_key)
        h = jnp.asarray(scheduled_step_size(*self.schedule, state.i), state.z.dtype)
        noise = jax.random.normal(sub, state.z.shape, state.z.dtype)
        v = jnp.exp(-self.friction * h) * (state.v - 0.5 * h * state.grad)
        v = v + jnp.sqrt(-jnp.expm1(-2.0 * self.friction * h)) * noise
        v = v - 0.5 * h * state.grad
        z = state.z + h * v
        u, g = self._value_and_grad(z)
        return LangevinState(state.i + 1, z, v, u, g, h, key, state.num_grad_evals + 1, state.num_energy_evals + 1)


class _MH(LatentKernel):
    extra_fields = ("potential_energy", "accept_prob", "accepted")

    def sample_stats(self, fields):
        return {
            **super().sample_stats(fields),
            "acceptance_rate": np.asarray(fields["accept_prob"]),
            "accepted": np.asarray(fields["accepted"], bool),
        }

    def _accept(self, key, new_key, state, log_ratio, z_new, u_new, g_new, h, grads):
        log_ratio = jnp.where(jnp.isnan(log_ratio), -jnp.inf, log_ratio)
        accept_prob = jnp.exp(jnp.minimum(log_ratio, 0.0))
        accepted = jax.random.uniform(key, (), accept_prob.dtype) < accept_prob
        return MHState(
            state.i + 1,
            jnp.where(accepted, z_new, state.z),
            jnp.where(accepted, u_new, state.potential_energy),
            jnp.where(accepted, g_new, state.grad),
            accept_prob,
            accepted,
            h,
            new_key,
            state.num_grad_evals + grads,
            state.num_energy_evals + 1,
        )


class MALA(_MH):
    """Metropolis-adjusted Langevin: propose z' = z − γ_t∇U(z) + √(2γ_t) ξ, accept with probability
    min(1, e^{U(z) − U(z')} q(z | z') / q(z' | z)), log q(a | b) = −‖a − b + γ∇U(b)‖²/(4γ) (exact for every γ).

    Args:
        potential_fn: U.
        step_size: γ₀.
        step_size_decay: ρ of the schedule γ_t = γ₀ ρ^⌊t/k⌋ (1: constant).
        decay_every: k, transitions between decays.
    """

    extra_fields = _MH.extra_fields + ("step_size",)

    def __init__(self, potential_fn, step_size: float, step_size_decay: float = 1.0, decay_every: int = 200):
        super().__init__(potential_fn)
        self.schedule = (float(step_size), float(step_size_decay), int(decay_every))

    def _init_one(self, rng_key, z):
        u, g = self._value_and_grad(z)
        one = jnp.ones((), jnp.int32)
        return MHState(jnp.zeros((), jnp.int32), z, u, g, jnp.ones((), z.dtype), jnp.ones((), bool),
                       jnp.asarray(self.schedule[0], z.dtype), rng_key, one, one)

    def _sample_one(self, state):
        key, k_prop, k_acc = jax.random.split(state.rng_key, 3)
        h = jnp.asarray(scheduled_step_size(*self.schedule, state.i), state.z.dtype)
        z, g = state.z, state.grad
        z_new = z - h * g + jnp.sqrt(2.0 * h) * jax.random.normal(k_prop, z.shape, z.dtype)
        u_new, g_new = self._value_and_grad(z_new)

        def log_q(a, b, grad_b):
            diff = a - b + h * grad_b
            return -jnp.sum(diff * diff) / (4.0 * h)

        log_ratio = state.potential_energy - u_new + log_q(z, z_new, g_new) - log_q(z_new, z, g)
        return self._accept(k_acc, key, state, log_ratio, z_new, u_new, g_new, h, 1)

    def sample_stats(self, fields):
        return {**super().sample_stats(fields), "step_size": np.asarray(fields["step_size"], np.float64)}


class IMH(_MH):
    """Independent Metropolis–Hastings with proposal η = N(0, I): accept z' with probability
    min(1, w(z')/w(z)), log w(z) = ½‖z‖² − U(z) (= −T·E(G z) for a GEBM). Gradient-free.

    Args:
        potential_fn: U.
    """

    def _init_one(self, rng_key, z):
        u = self.potential_fn(z)
        zero = jnp.zeros((), jnp.int32)
        return MHState(zero, z, u, jnp.zeros_like(z), jnp.ones((), z.dtype), jnp.ones((), bool),
                       jnp.zeros((), z.dtype), rng_key, zero, jnp.ones((), jnp.int32))

    def _sample_one(self, state):
        key, k_prop, k_acc = jax.random.split(state.rng_key, 3)
        z_new = jax.random.normal(k_prop, state.z.shape, state.z.dtype)
        u_new = self.potential_fn(z_new)

        def log_w(z, u):
            return 0.5 * jnp.sum(z * z) - u

        log_ratio = log_w(z_new, u_new) - log_w(state.z, state.potential_energy)
        return self._accept(k_acc, key, state, log_ratio, z_new, u_new, state.grad, state.step_size, 0)


class DOT(LatentKernel):
    """Discriminator optimal transport (Tanaka 2019), the optimiser of :mod:`gebm_ppl.sampling.dot`.

    Each transition draws z₀ ∼ N(0, I) and runs ``num_steps`` proximal-gradient steps on
    ‖z − z₀‖ + V(z)/L, V(z) = U(z) − ½‖z‖²: y = z − (γ/L)∇V(z), z ← z₀ + max(0, 1 − γ/‖y − z₀‖)(y − z₀).
    L is ``lipschitz`` or max ‖∇V‖ over ``lipschitz_samples`` prior draws of the chain (drawn in ``init``).

    Args:
        potential_fn: U.
        step_size: γ.
        num_steps: proximal-gradient steps per draw.
        lipschitz: L, or None to estimate it.
        lipschitz_samples: prior draws per chain for the estimate of L.
    """

    extra_fields = ("potential_energy", "transport_cost", "lipschitz")

    def __init__(self, potential_fn, step_size: float, num_steps: int, lipschitz: float | None = None,
                 lipschitz_samples: int = 256):
        super().__init__(potential_fn)
        self.step_size, self.num_steps = float(step_size), int(num_steps)
        self.lipschitz, self.lipschitz_samples = lipschitz, int(lipschitz_samples)

    def _energy_grad(self, z):
        return self._value_and_grad(z)[1] - z

    def _init_one(self, rng_key, z):
        key, sub = jax.random.split(rng_key)
        if self.lipschitz is None:
            base = jax.random.normal(sub, (self.lipschitz_samples,) + z.shape, z.dtype)
            norms = jnp.linalg.norm(jax.vmap(self._energy_grad)(base), axis=-1)
            lip = jnp.maximum(jnp.max(norms), jnp.finfo(z.dtype).tiny)
            grads = self.lipschitz_samples
        else:
            lip, grads = jnp.asarray(self.lipschitz, z.dtype), 0
        u = self.potential_fn(z)
        return DOTState(jnp.zeros((), jnp.int32), z, z, jnp.zeros((), z.dtype), u, lip, key,
                        jnp.asarray(grads, jnp.int32),
                        jnp.asarray(grads + 1, jnp.int32))

    def _sample_one(self, state):
        key, sub = jax.random.split(state.rng_key)
        z0 = jax.random.normal(sub, state.z.shape, state.z.dtype)
        gamma = self.step_size
        tiny = jnp.finfo(state.z.dtype).tiny

        def body(_, z):
            y = z - (gamma / state.lipschitz) * self._energy_grad(z)
            r = y - z0
            shrink = jnp.maximum(1.0 - gamma / jnp.maximum(jnp.linalg.norm(r), tiny), 0.0)
            return z0 + shrink * r

        z = jax.lax.fori_loop(0, self.num_steps, body, z0)
        u = self.potential_fn(z)
        return DOTState(state.i + 1, z, z0, jnp.linalg.norm(z - z0), u, state.lipschitz, key,
                        state.num_grad_evals + self.num_steps,
                        state.num_energy_evals + self.num_steps + 1)

    def sample_stats(self, fields):
        return {
            **super().sample_stats(fields),
            "transport_cost": np.asarray(fields["transport_cost"]),
            "lipschitz": np.asarray(fields["lipschitz"]),
        }
