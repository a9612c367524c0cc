"""NUTS and HMC in latent space through Pyro's MCMC with a ``potential_fn``, one chain after another."""

from __future__ import annotations

import inspect
import math
import time

import torch
from pyro.infer.mcmc import HMC, MCMC, NUTS
from torch import Tensor

from .driver import LatentPotential

__all__ = ["check_kernel_kwargs", "run_pyro_mcmc"]


def _recording(kernel_class: type) -> type:
    """A subclass of Pyro's HMC or NUTS that records per-draw statistics after the warmup.

    Pyro keeps only running summaries (mean acceptance probability, divergence indices); this reads
    them around each transition. Recorded per draw: ``diverging``, ``acceptance_rate`` (the
    transition's mean Metropolis acceptance probability), ``step_size``, ``n_steps`` (leapfrog steps,
    i.e. gradient evaluations), ``lp`` (−U at the returned point) and ``energy`` (the Hamiltonian
    U + K at the start of the transition, after the momentum refresh).
    """

    class Recording(kernel_class):
        def __init__(self, *args, counter: LatentPotential, **kwargs):
            super().__init__(*args, **kwargs)
            self._counter = counter
            self.records: list[dict] = []

        def _sample_r(self, name):
            r, r_unscaled = super()._sample_r(name)
            self._start_energy = float(self._kinetic_energy(r_unscaled) + self._potential_energy_last)
            return r, r_unscaled

        def sample(self, params):
            evals, mean_accept = self._counter.num_grad_evals, self._mean_accept_prob
            divergences = len(self._divergences)
            params = super().sample(params)
            if self._t > self._warmup_steps:
                n = self._t - self._warmup_steps
                self.records.append(
                    {
                        "diverging": len(self._divergences) > divergences,
                        # Pyro's running mean m_n = m_{n−1} + (a_n − m_{n−1})/n, solved for a_n
                        "acceptance_rate": n * self._mean_accept_prob - (n - 1) * mean_accept,
                        "step_size": float(self.step_size),
                        "n_steps": self._counter.num_grad_evals - evals,
                        "lp": -float(self._potential_energy_last),
                        "energy": self._start_energy,
                    }
                )
            return params

    Recording.__name__ = Recording.__qualname__ = f"Recording{kernel_class.__name__}"
    return Recording


_RecordingNUTS = _recording(NUTS)
_RecordingHMC = _recording(HMC)
_KERNELS = {"nuts": NUTS, "hmc": HMC}


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
    potential: LatentPotential,
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
    """
    check_kernel_kwargs(method, kernel_kwargs)
    cls = {"nuts": _RecordingNUTS, "hmc": _RecordingHMC}[method]

    def potential_fn(params: dict) -> Tensor:
        potential.num_grad_evals += 1  # Pyro differentiates every evaluation (pyro.ops.integrator.potential_grad)
        return potential(params["z"])

    start = time.perf_counter()
    draws, records = [], []
    for c, chain_seed in enumerate(chain_seeds):
        kernel = cls(potential_fn=potential_fn, counter=potential, **kernel_kwargs)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(chain_seed)
            mcmc = MCMC(
                kernel,
                num_samples=num_samples,
                warmup_steps=warmup_steps,
                initial_params={"z": init[c].detach()},
                num_chains=1,
                disable_progbar=not progress,
            )
            mcmc.run()
        draws.append(mcmc.get_samples()["z"])
        records.append(kernel.records)
    elapsed = time.perf_counter() - start
    z = torch.stack(draws)
    names = records[0][0].keys()
    dtypes = {"diverging": torch.bool, "n_steps": torch.long}
    stats = {
        name: torch.tensor([[r[name] for r in rec] for rec in records], dtype=dtypes.get(name, torch.float64))
        for name in names
    }
    if method == "nuts":
        # the number of tree doublings j: a trajectory built in j doublings has 2^(j−1) < n_steps + 1 ≤ 2^j
        stats["tree_depth"] = torch.tensor(
            [[math.ceil(math.log2(r["n_steps"] + 1)) for r in rec] for rec in records], dtype=torch.long
        )
    return z, stats, elapsed
