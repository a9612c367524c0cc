"""NUTS and HMC in latent space through Pyro's MCMC with a ``potential_fn``, chains one after another or in processes.

Per-draw statistics come from Pyro's public interfaces, and one attribute: ``MCMC(hook_fn=...)`` is called
after every transition with the kernel and the new point; the kernel's ``diagnostics()`` (divergences) and
``step_size``; the running mean ``_mean_accept_prob`` of the acceptance probability (what Pyro's bar
shows as "acc. prob"), from which each transition's own probability follows; the potential function
(ours: it counts gradient evaluations and caches U at the points it is evaluated at); and an effect handler (a
:class:`pyro.poutine.messenger.Messenger`, entered around the kernel's public ``sample``) that observes
the momentum draw ``r_t=…`` of each transition, from which the Hamiltonian at its start
is U(z) + ½‖r‖² (Pyro draws r ∼ N(0, I) and scales it by the mass matrix, so K = ½‖r‖² in those units).

``chain_method="parallel"`` runs Pyro's own multi-chain ``MCMC(num_chains=C, mp_context=...)``, one worker
process per chain, with the same per-chain seeds and starting points, hence the same draws, as the sequential
chains. The module is over ~300 lines: both chain methods share its recorder, potential function and kernels.
"""

from __future__ import annotations

import inspect
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp
from pyro.infer.mcmc import HMC, MCMC, NUTS
from pyro.poutine.messenger import Messenger
from torch import Tensor

from .driver import CountingPotential, SamplingProgress, progress_mode
from .registry import SamplerSpec, register_sampler

__all__ = ["CHAIN_METHODS", "SPECS", "check_kernel_kwargs", "max_parallel_chains", "run_pyro_mcmc"]

_KERNELS = {"nuts": NUTS, "hmc": HMC}
CHAIN_METHODS = ("sequential", "parallel")


def _observed(kernel_class: type) -> type:
    """Pyro's NUTS/HMC whose public ``sample`` runs under a :class:`_MomentumRecorder` (``MCMC.run`` blocks
    handlers installed outside it, so the handler is entered per transition) and whose ``setup``, in a
    worker process of parallel chains, first makes the worker its chain (:class:`_Parallel`)."""

    class Observed(kernel_class):
        def __init__(self, *args, recorder: _Recorder, parallel: _Parallel | None = None, **kwargs):
            super().__init__(*args, **kwargs)
            self.recorder = recorder
            self.momentum = recorder.momentum
            self.parallel = parallel

        def setup(self, warmup_steps, *args, **kwargs):
            if self.parallel is not None:  # in one of Pyro's worker processes: become chain c
                self.initial_params = {"z": self.parallel.enter(self.recorder)}
            return super().setup(warmup_steps, *args, **kwargs)

        def sample(self, params):
            before = self._mean_accept_prob
            with self.momentum:
                out = super().sample(params)
            self.recorder.accept_prob = _transition_accept_prob(self, before)
            return out

    Observed.__name__ = Observed.__qualname__ = f"Observed{kernel_class.__name__}"
    Observed.__module__ = __name__
    globals()[Observed.__name__] = Observed  # importable by name: picklable for mp_context="spawn"
    return Observed


def _transition_accept_prob(kernel, before: float) -> float:
    """The acceptance probability of the transition just made, from Pyro's running mean of it.

    Pyro's HMC/NUTS ``sample`` updates ``_mean_accept_prob`` m with the transition's acceptance
    probability a (HMC: min(1, e^{−ΔH}); NUTS: the mean of min(1, e^{−ΔH}) over the tree's proposals)
    as m_n = m_{n−1} + (a − m_{n−1}) / n, n counting the warmup transitions, then again the draws from
    1 (so m_1 = a of the first draw). Hence a = n·m_n − (n − 1)·m_{n−1}, clamped to [0, 1] against
    round-off. This is the statistic that Pyro's progress bar averages ("acc. prob") and that NumPyro
    records as ``accept_prob``.
    """
    t, warmup = kernel._t, kernel._warmup_steps
    n = t - warmup if t > warmup else t
    a = n * kernel._mean_accept_prob - (n - 1) * before
    return min(max(float(a), 0.0), 1.0)


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

    def __init__(self, potential: CountingPotential, cache: dict, warmup_steps: int, num_samples: int):
        self.potential = potential
        self.cache = cache
        self.warmup_steps = warmup_steps
        self.num_samples = num_samples
        self.momentum = _MomentumRecorder()
        self.records: list[dict[str, Any]] = []
        self.last_lp = math.nan
        self.last_key = b""
        self.last_evals = potential.num_grad_evals
        self.accept_prob = math.nan  # set by the kernel after each transition (_transition_accept_prob)
        self.divergences = 0
        self.progress: SamplingProgress | None = None  # progress lines off a terminal (a bar is Pyro's own)
        self.done: Path | None = None  # parallel chains: the file the worker writes its records to
        self.first_counts = (0, 0)  # parallel chains: the worker's potential counts when its chain started

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
        if self.progress is not None:
            self.progress.update(1)
        lp_start = self.last_lp
        self.last_lp = lp = self._lp(params["z"])
        self.cache.clear()
        evals, self.last_evals = self.potential.num_grad_evals - self.last_evals, self.potential.num_grad_evals
        if not stage.startswith("Sample"):
            return
        divergences = len(kernel.diagnostics()["divergences"])
        self.records.append(
            {
                "diverging": divergences > self.divergences,
                "acceptance_rate": self.accept_prob,
                "step_size": float(kernel.step_size),
                "n_steps": evals,
                "lp": lp,
                "energy": -lp_start + self.momentum.kinetic,
            }
        )
        self.divergences = divergences
        if self.done is not None and i == self.num_samples - 1:  # a worker's last draw: hand the records over
            grads, evals = self.first_counts
            counts = (self.potential.num_grad_evals - grads, self.potential.num_evals - evals)
            tmp = self.done.with_suffix(".tmp")
            torch.save({"records": self.records, "counts": counts}, tmp)
            tmp.replace(self.done)  # atomic: the parent reads a whole file or none


class _PotentialFn:
    """Pyro's ``potential_fn``: U(params["z"]), counting one gradient evaluation per call (Pyro differentiates
    every evaluation, pyro.ops.integrator.potential_grad) and caching U at the point for the recorder."""

    def __init__(self, potential: CountingPotential, cache: dict):
        self.potential = potential
        self.cache = cache

    def __call__(self, params: dict) -> Tensor:
        self.potential.num_grad_evals += 1
        z = params["z"]
        u = self.potential(z)
        self.cache[z.detach().cpu().numpy().tobytes()] = float(u.detach())
        return u


class _Parallel:
    """Per-chain set-up inside Pyro's worker processes (``MCMC(num_chains=C)``).

    Pyro seeds worker c with ``torch.initial_seed() + c`` of the parent; the parent sets that seed to 0,
    so a worker reads its chain index c from its seed, then reseeds torch with ``chain_seeds[c]`` (the
    sequential chain's seed, hence the same draws), starts from ``init[c]`` and writes its records to
    ``folder/chain{c}.pt``. (Pyro 1.9 sets every worker's starting point on the one shared kernel before
    the workers start, so they would all start from the last chain's point.)
    """

    def __init__(self, init: Tensor, chain_seeds: list[int], folder: str, threads: int):
        self.init = init.detach()
        self.chain_seeds = list(chain_seeds)
        self.folder = folder
        self.threads = threads

    def enter(self, recorder: _Recorder) -> Tensor:
        """Become chain c in this worker; returns its starting point."""
        c = torch.initial_seed()
        if not 0 <= c < len(self.chain_seeds):
            raise RuntimeError(f"Pyro's worker seed {c} is not a chain index in [0, {len(self.chain_seeds)}): this "
                               "Pyro version seeds its parallel chains differently; use chain_method='sequential'.")
        torch.set_num_threads(self.threads)
        torch.manual_seed(self.chain_seeds[c])
        recorder.cache.clear()
        recorder.first_counts = (recorder.potential.num_grad_evals, recorder.potential.num_evals)
        recorder.done = Path(self.folder) / f"chain{c}.pt"
        recorder.start(self.init[c])
        return self.init[c]


_OBSERVED = {name: _observed(cls) for name, cls in _KERNELS.items()}


def max_parallel_chains() -> int:
    """The most chains Pyro runs in processes: one per CPU core but one (kept for the main process), at least 1."""
    return max(mp.cpu_count() - 1, 1)


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
    progress: bool | None = False,
    chain_method: str = "sequential",
    **kernel_kwargs,
) -> tuple[Tensor, dict[str, Tensor], float]:
    """Run ``pyro.infer.MCMC`` with NUTS or HMC on U, chain c seeded with ``chain_seeds[c]`` in its own RNG scope.

    ``chain_method="sequential"`` runs the chains one after another in this process; ``"parallel"`` runs
    Pyro's ``MCMC(num_chains=C)``, one worker process per chain (context ``"fork"`` on Linux for CPU
    tensors, ``"spawn"`` for CUDA and elsewhere), each with ``torch.get_num_threads() // C`` threads (at
    least 1) and the same seed as its sequential twin, so both give the same draws. The caller's RNG
    state is left untouched either way.

    Args:
        potential: the latent potential U.
        init: starting points ``[C, d]``.
        chain_seeds: one seed per chain.
        method: ``"nuts"`` or ``"hmc"``.
        num_samples: draws per chain after the warmup.
        warmup_steps: adaptation steps per chain (step size and diagonal mass matrix by default).
        progress: True, False or None (:class:`~gebm_ppl.sampling.driver.SamplingProgress`): on a terminal
            Pyro's progress bar, elsewhere a line every 10 s.
        chain_method: ``"sequential"`` or ``"parallel"`` (at most :func:`max_parallel_chains` chains,
            Pyro's limit, which otherwise falls back to sequential chains).
        **kernel_kwargs: passed to :class:`pyro.infer.mcmc.NUTS` / :class:`~pyro.infer.mcmc.HMC`
            (step_size, target_accept_prob, max_tree_depth, num_steps, trajectory_length, full_mass, ...).

    Returns:
        z ``[C, num_samples, d]``, sample statistics ``{name: [C, num_samples]}``, wall time in seconds.
        Statistics: ``diverging``, ``acceptance_rate`` (the transition's mean Metropolis acceptance
        probability, as Pyro's progress bar and NumPyro's ``accept_prob``: :func:`_transition_accept_prob`),
        ``step_size``, ``n_steps`` (gradient evaluations), ``lp`` = −U, ``energy`` (the Hamiltonian at
        the start of the transition, after the momentum refresh) and for NUTS ``tree_depth``.

    Raises:
        ValueError: an unknown chain_method, or more parallel chains than :func:`max_parallel_chains`.
    """
    check_kernel_kwargs(method, kernel_kwargs)
    if chain_method not in CHAIN_METHODS:
        raise ValueError(f"'chain_method' should be one of {CHAIN_METHODS} for Pyro's {method}. Got {chain_method!r}.")
    num_chains = len(chain_seeds)
    if chain_method == "parallel" and num_chains > max_parallel_chains():
        raise ValueError(
            f"chain_method='parallel' runs one process per chain, and Pyro runs at most cpu_count - 1 = "
            f"{max_parallel_chains()} chain(s) in processes on this machine ({mp.cpu_count()} CPUs); asked for "
            f"{num_chains}. Use fewer chains or chain_method='sequential'."
        )
    cache: dict[bytes, float] = {}
    potential_fn = _PotentialFn(potential, cache)
    devices = [init.device] if init.device.type == "cuda" else []
    start = time.perf_counter()
    if chain_method == "parallel" and num_chains > 1:
        z, records, counts = _run_parallel(potential, cache, potential_fn, init, chain_seeds, method, num_samples,
                                           warmup_steps, progress, devices, kernel_kwargs)
        potential.num_grad_evals += counts[0]
        potential.num_evals += counts[1]
    else:
        z, records = _run_sequential(potential, cache, potential_fn, init, chain_seeds, method, num_samples,
                                     warmup_steps, progress, devices, kernel_kwargs)
    elapsed = time.perf_counter() - start
    dtypes = {"diverging": torch.bool, "n_steps": torch.long}
    stats = {
        name: torch.tensor([[r[name] for r in rec] for rec in records], dtype=dtypes.get(name, torch.float64))
        for name in records[0][0]
    }
    if method == "nuts":
        # the number of tree doublings j: a trajectory built in j doublings has 2^(j−1) < n_steps + 1 ≤ 2^j
        stats["tree_depth"] = torch.tensor(
            [[math.ceil(math.log2(r["n_steps"] + 1)) for r in rec] for rec in records], dtype=torch.long
        )
    return z, stats, elapsed


def _run_sequential(potential, cache, potential_fn, init, chain_seeds, method, num_samples, warmup_steps, progress,
                    devices, kernel_kwargs):
    """The chains one after another in this process: z ``[C, N, d]`` and each chain's records."""
    draws, records = [], []
    bar = progress_mode(progress) == "bar"  # Pyro's bar; off a terminal, our lines over all chains
    lines = SamplingProgress(progress if not bar else False, len(chain_seeds) * (warmup_steps + num_samples))
    for c, chain_seed in enumerate(chain_seeds):
        recorder = _Recorder(potential, cache, warmup_steps, num_samples)
        recorder.progress = lines
        kernel = _OBSERVED[method](potential_fn=potential_fn, recorder=recorder, **kernel_kwargs)
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(chain_seed)
            mcmc = MCMC(
                kernel,
                num_samples=num_samples,
                warmup_steps=warmup_steps,
                initial_params={"z": init[c].detach()},
                num_chains=1,
                disable_progbar=not bar,
                hook_fn=recorder,
            )
            cache.clear()
            recorder.start(init[c].detach())
            mcmc.run()
        draws.append(mcmc.get_samples()["z"])
        records.append(recorder.records)
    lines.close()
    return torch.stack(draws), records


def _run_parallel(potential, cache, potential_fn, init, chain_seeds, method, num_samples, warmup_steps, progress,
                  devices, kernel_kwargs):
    """Pyro's ``MCMC(num_chains=C)`` in worker processes: z ``[C, N, d]``, the records, the summed counts."""
    num_chains = len(chain_seeds)
    context = "fork" if sys.platform == "linux" and init.device.type == "cpu" else "spawn"
    with tempfile.TemporaryDirectory(prefix="gebm_chains_") as folder:
        recorder = _Recorder(potential, cache, warmup_steps, num_samples)
        bar = progress_mode(progress) == "bar"  # Pyro's bars; off a terminal, each worker writes its chain's lines
        recorder.progress = SamplingProgress(progress if not bar else False, warmup_steps + num_samples,
                                             desc="sampling (one chain)")
        parallel = _Parallel(init, chain_seeds, folder, max(1, torch.get_num_threads() // num_chains))
        kernel = _OBSERVED[method](potential_fn=potential_fn, recorder=recorder, parallel=parallel, **kernel_kwargs)
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(0)  # worker c is seeded with 0 + c: its chain index (see _Parallel)
            mcmc = MCMC(
                kernel,
                num_samples=num_samples,
                warmup_steps=warmup_steps,
                initial_params={"z": init.detach()},
                num_chains=num_chains,
                mp_context=context,
                disable_progbar=not bar,
                hook_fn=recorder,
            )
            mcmc.run()
        done = [torch.load(Path(folder) / f"chain{c}.pt", weights_only=False) for c in range(num_chains)]
    z = mcmc.get_samples(group_by_chain=True)["z"]
    counts = (sum(d["counts"][0] for d in done), sum(d["counts"][1] for d in done))
    return z, [d["records"] for d in done], counts


def _runner(method: str):
    def run(potential, init, *, num_samples, warmup_steps, generator, chain_seeds, progress,
            chain_method="sequential", **settings):
        return run_pyro_mcmc(potential, init, chain_seeds, method, num_samples, warmup_steps, progress, chain_method,
                             **settings)

    run.chain_methods = CHAIN_METHODS  # read by the driver: this runner takes chain_method
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
