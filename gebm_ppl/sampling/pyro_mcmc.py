"""NUTS and HMC in latent space through Pyro's MCMC with a ``potential_fn``, one chain after another.

Per-draw statistics come from Pyro's public interfaces only: ``MCMC(hook_fn=...)`` is called after
every transition with the kernel and the new point; the kernel's ``diagnostics()`` (divergences, the
acceptance count) and ``step_size``; the potential function (ours: it counts gradient evaluations and
caches U at the points it is evaluated at); and an effect handler (a
:class:`pyro.poutine.messenger.Messenger`, entered around the kernel's public ``sample``) that observes
the momentum draw ``r_t=…`` of each transition, from which the Hamiltonian at its start
is U(z) + ½‖r‖² (Pyro draws r ∼ N(0, I) and scales it by the mass matrix, so K = ½‖r‖² in those units).
"""

from __future__ import annotations

import inspect
import math
import time
from typing import Any

import torch
from pyro.infer.mcmc import HMC, MCMC, NUTS
from pyro.poutine.messenger import Messenger
from torch import Tensor

from .driver import CountingPotential
from .registry import SamplerSpec, register_sampler

__all__ = ["SPECS", "check_kernel_kwargs", "run_pyro_mcmc"]

_KERNELS = {"nuts": NUTS, "hmc": HMC}


def _observed(kernel_class: type) -> type:
    """Pyro's NUTS/HMC whose public ``sample`` runs under a :class:`_MomentumRecorder` (``MCMC.run`` blocks
    handlers installed outside it, so the handler is entered per transition)."""

    class Observed(kernel_class):
        def __init__(self, *args, momentum: Messenger, **kwargs):
            super().__init__(*args, **kwargs)
            self.momentum = momentum

        def sample(self, params):
            with self.momentum:
                return super().sample(params)

    Observed.__name__ = Observed.__qualname__ = f"Observed{kernel_class.__name__}"
    return Observed


_OBSERVED = {name: _observed(cls) for name, cls in _KERNELS.items()}


class _MomentumRecorder(Messenger):
    """Observes the momentum draws ``r_t=…`` of Pyro's HMC/NUTS (sample sites in the kernel's ``sample``)."""

    def __init__(self) -> None:
        super().__init__()
        self.kinetic = math.nan

    def _pyro_post_sample(self, msg: dict) -> None:
        if str(msg["name"]).startswith("r_t="):
            value = msg["value"]
            self.kinetic = 0.5 * float((value * value).sum())


class _Recorder:
    """The ``hook_fn`` of one chain: reads the kernel's public diagnostics after every transition."""

    def __init__(self, potential: CountingPotential, cache: dict, warmup_steps: int):
        self.potential = potential
        self.cache = cache
        self.warmup_steps = warmup_steps
        self.momentum = _MomentumRecorder()
        self.records: list[dict[str, Any]] = []
        self.last_lp = math.nan
        self.last_key = b""
        self.last_evals = potential.num_grad_evals
        self.accepted = 0
        self.divergences = 0

    def start(self, z: Tensor) -> None:
        self.last_lp = self._lp(z)
        self.last_evals = self.potential.num_grad_evals

    def _lp(self, z: Tensor) -> float:
        key = z.detach().cpu().numpy().tobytes()
        if key in self.cache:
            lp = -self.cache[key]
        elif key == self.last_key:  # a rejected transition stays at the previous draw
            lp = self.last_lp
        else:
            with torch.no_grad():  # a point the potential function did not see: evaluate it
                lp = -float(self.potential(z))
        self.last_key = key
        return lp

    def __call__(self, kernel, params: dict, stage: str, i: int) -> None:
        lp_start = self.last_lp
        self.last_lp = lp = self._lp(params["z"])
        self.cache.clear()
        evals, self.last_evals = self.potential.num_grad_evals - self.last_evals, self.potential.num_grad_evals
        if not stage.startswith("Sample"):
            return
        diag = kernel.diagnostics()
        accepted = round(diag["acceptance rate"] * (i + 1))
        divergences = len(diag["divergences"])
        self.records.append(
            {
                "diverging": divergences > self.divergences,
                "accepted": accepted > self.accepted,
                "step_size": float(kernel.step_size),
                "n_steps": evals,
                "lp": lp,
                "energy": -lp_start + self.momentum.kinetic,
            }
        )
        self.accepted, self.divergences = accepted, divergences


def check_kernel_kwargs(method: str, kwargs: dict) -> None:
    """Raise TypeError for keyword arguments that Pyro's NUTS/HMC kernel does not take (or that we set)."""
    cls = _KERNELS[method]
    allowed = set(inspect.signature(cls).parameters) - {"model", "potential_fn"}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise TypeError(
            f"unknown keyword argument(s) {unknown} for method {method!r} (Pyro {cls.__name__}; "
            f"allowed: {sorted(allowed)})."
        )


def run_pyro_mcmc(
    potential: CountingPotential,
    init: Tensor,
    chain_seeds: list[int],
    method: str,
    num_samples: int,
    warmup_steps: int,
    progress: bool = False,
    **kernel_kwargs,
) -> tuple[Tensor, dict[str, Tensor], float]:
    """Run ``pyro.infer.MCMC`` with NUTS or HMC on U, one chain after another, each in its own RNG scope.

    Chains run sequentially in this process (Pyro's parallel chains need picklable models and one
    process per chain); each chain forks the global torch RNG and seeds it with its own seed, so the
    caller's RNG state is left untouched.

    Args:
        potential: the latent potential U.
        init: starting points ``[C, d]``.
        chain_seeds: one seed per chain.
        method: ``"nuts"`` or ``"hmc"``.
        num_samples: draws per chain after the warmup.
        warmup_steps: adaptation steps per chain (step size and diagonal mass matrix by default).
        progress: show Pyro's progress bar.
        **kernel_kwargs: passed to :class:`pyro.infer.mcmc.NUTS` / :class:`~pyro.infer.mcmc.HMC`
            (step_size, target_accept_prob, max_tree_depth, num_steps, trajectory_length, full_mass, ...).

    Returns:
        z ``[C, num_samples, d]``, sample statistics ``{name: [C, num_samples]}``, wall time in seconds.
        Statistics: ``diverging``, ``acceptance_rate`` (1.0 if the transition was accepted, from Pyro's
        acceptance count, else 0.0: its mean over draws is Pyro's acceptance rate),
        ``step_size``, ``n_steps`` (gradient evaluations), ``lp`` = −U, ``energy`` (the Hamiltonian at
        the start of the transition, after the momentum refresh) and for NUTS ``tree_depth``.
    """
    check_kernel_kwargs(method, kernel_kwargs)
    cls = _OBSERVED[method]
    cache: dict[bytes, float] = {}

    def potential_fn(params: dict) -> Tensor:
        potential.num_grad_evals += 1  # Pyro differentiates every evaluation (pyro.ops.integrator.potential_grad)
        z = params["z"]
        u = potential(z)
        cache[z.detach().cpu().numpy().tobytes()] = float(u.detach())
        return u

    start = time.perf_counter()
    draws, records = [], []
    for c, chain_seed in enumerate(chain_seeds):
        recorder = _Recorder(potential, cache, warmup_steps)
        kernel = cls(potential_fn=potential_fn, momentum=recorder.momentum, **kernel_kwargs)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(chain_seed)
            mcmc = MCMC(
                kernel,
                num_samples=num_samples,
                warmup_steps=warmup_steps,
                initial_params={"z": init[c].detach()},
                num_chains=1,
                disable_progbar=not progress,
                hook_fn=recorder,
            )
            cache.clear()
            recorder.start(init[c].detach())
            mcmc.run()
        draws.append(mcmc.get_samples()["z"])
        records.append(recorder.records)
    elapsed = time.perf_counter() - start
    z = torch.stack(draws)
    dtypes = {"diverging": torch.bool, "accepted": torch.bool, "n_steps": torch.long}
    stats = {
        name: torch.tensor([[r[name] for r in rec] for rec in records], dtype=dtypes.get(name, torch.float64))
        for name in records[0][0]
    }
    stats["acceptance_rate"] = stats.pop("accepted").to(torch.float64)
    if method == "nuts":
        # the number of tree doublings j: a trajectory built in j doublings has 2^(j−1) < n_steps + 1 ≤ 2^j
        stats["tree_depth"] = torch.tensor(
            [[math.ceil(math.log2(r["n_steps"] + 1)) for r in rec] for rec in records], dtype=torch.long
        )
    return z, stats, elapsed


def _runner(method: str):
    def run(potential, init, *, num_samples, warmup_steps, generator, chain_seeds, progress, **settings):
        return run_pyro_mcmc(potential, init, chain_seeds, method, num_samples, warmup_steps, progress, **settings)

    return run


def _check(method: str):
    def check(backend: str, kwargs: dict) -> None:
        if backend == "pyro":
            check_kernel_kwargs(method, kwargs)
        # the NumPyro backend checks against numpyro.infer.NUTS/HMC itself (gebm_ppl.numpyro.mcmc)

    return check


SPECS = tuple(
    register_sampler(
        SamplerSpec(
            name=method,
            summary=summary,
            gradient_based=True,
            torch_runner=_runner(method),
            jax_kernel=f"gebm_ppl.numpyro.kernels_hmc:{method}_kernel",
            passthrough=_check(method),
            stats=("diverging", "acceptance_rate", "step_size", "n_steps", "lp", "energy")
            + (("tree_depth",) if method == "nuts" else ()),
        )
    )
    for method, summary in (
        ("nuts", "No-U-Turn Hamiltonian Monte Carlo (adaptive, exact)"),
        ("hmc", "Hamiltonian Monte Carlo (exact)"),
    )
)
