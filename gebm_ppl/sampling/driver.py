"""Shared sampling machinery: counted potentials, the batched chain driver (with step-size schedules) and seeds."""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ..inference_data import build_inference_data
from .registry import BACKENDS, SamplerSpec, get_sampler, scheduled_step_size

__all__ = [
    "CountingPotential",
    "batched_runner",
    "SamplingProgress",
    "auto_backend",
    "progress_mode",
    "NUMPYRO_CHAIN_METHODS",
    "check_chain_method",
    "check_count",
    "check_init",
    "run_attrs",
    "run_torch",
    "spec_for",
    "Kernel",
    "LatentPotential",
    "build_inference_data",
    "chain_seeds",
    "data_space",
    "potential_and_grad",
    "run_batched",
    "sampling_mode",
]


class CountingPotential:
    """A latent potential ``potential_fn: [..., d] → [...]`` (U, with ν ∝ e^{−U}) that counts its evaluations.

    ``num_evals`` counts single-point evaluations (a ``[C, d]`` batch counts C), and ``num_grad_evals``
    those of them made by :func:`potential_and_grad` (an evaluation with its gradient).

    Args:
        potential_fn: any differentiable torch function of the latent points.
        latent_dim: d.
        dtype: that of the latent points.
        device: that of the latent points.
    """

    def __init__(
        self,
        potential_fn: Callable[[Tensor], Tensor],
        latent_dim: int,
        dtype: torch.dtype | None = None,
        device: torch.device | str = "cpu",
    ):
        self.potential_fn = potential_fn
        self.latent_dim = int(latent_dim)
        self.dtype = dtype or torch.get_default_dtype()
        self.device = torch.device(device)
        self.num_evals = 0
        self.num_grad_evals = 0

    def __call__(self, z: Tensor) -> Tensor:
        self.num_evals += z[..., 0].numel()
        return self.potential_fn(z)


class LatentPotential(CountingPotential):
    """U(z) = ½‖z‖² + T·E(G_θ(z)), ``[..., d] → [...]``, counting the points it is evaluated at.

    The latent posterior is ν(z) ∝ exp(−U(z)); if z ∼ ν (and T = 1) then G_θ(z) ∼ Q.

    Args:
        gebm: a :class:`gebm_ppl.GEBM` (put it in eval mode, e.g. with :func:`sampling_mode`).
        temperature: T > 0.
    """

    def __init__(self, gebm, temperature: float = 1.0):
        p = next(gebm.parameters(), None)
        super().__init__(
            self._potential,
            gebm.latent_dim,
            p.dtype if p is not None else torch.get_default_dtype(),
            p.device if p is not None else torch.device("cpu"),
        )
        self.gebm = gebm
        self.temperature = float(temperature)

    def _potential(self, z: Tensor) -> Tensor:
        return self.gebm.latent_potential(z, self.temperature)

    def __reduce__(self):
        # picklable through the GEBM's checkpoint (parametrised modules, e.g. spectral norm, do not pickle),
        # for Pyro's parallel chains in spawned processes; rebuilt in eval mode with frozen parameters
        try:
            ckpt = self.gebm.checkpoint()
        except Exception as e:
            raise TypeError(f"this GEBM cannot be sent to a spawned process (its checkpoint fails: {e}); "
                            "use chain_method='sequential'.") from e
        return _rebuild_latent_potential, (ckpt, self.temperature, str(self.device), self.num_evals,
                                           self.num_grad_evals)


def _rebuild_latent_potential(ckpt: dict, temperature: float, device: str, num_evals: int,
                              num_grad_evals: int) -> LatentPotential:
    from ..gebm import GEBM

    gebm = GEBM.from_checkpoint(ckpt).to(device).eval()
    for p in gebm.parameters():
        p.requires_grad_(False)
    potential = LatentPotential(gebm, temperature)
    potential.num_evals, potential.num_grad_evals = num_evals, num_grad_evals
    return potential


def potential_and_grad(potential: Callable[[Tensor], Tensor], z: Tensor) -> tuple[Tensor, Tensor]:
    """U(z) and ∇U(z) for a batch of points ``[C, d]`` → ``([C], [C, d])``, both detached."""
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        u = potential(z)
        (grad,) = torch.autograd.grad(u.sum(), z)
    if isinstance(potential, CountingPotential):
        potential.num_grad_evals += z.shape[0]
    return u.detach(), grad.detach()


@contextlib.contextmanager
def sampling_mode(gebm) -> Iterator[None]:
    """Put the GEBM in eval mode with frozen parameters for the duration of sampling, then restore.

    Eval mode matters: in training mode, spectral normalisation runs a power iteration at every call,
    which would change the target while the chains run.
    """
    was_training = gebm.training
    flags = [(p, p.requires_grad) for p in gebm.parameters()]
    gebm.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        gebm.train(was_training)


def chain_seeds(
    seed: int, num_chains: int, device: torch.device | str = "cpu"
) -> tuple[torch.Generator, list[int]]:
    """A generator on ``device`` seeded with ``seed``, and one derived 62-bit seed per chain."""
    seeds = torch.randint(0, 2**62, (num_chains,), generator=torch.Generator().manual_seed(int(seed))).tolist()
    return torch.Generator(device=device).manual_seed(int(seed)), seeds


class Kernel(NamedTuple):
    """A batched latent-space sampler, NumPyro style (see :func:`run_batched`).

    Fields:
        init: ``init(z, potential, generator=..., **params) -> state``; ``z`` is ``[C, d]``.
        step: ``step(state, potential, generator, **params) -> state``, one transition of every chain.
        stats: ``stats(state) -> {name: [C] tensor}``, the per-draw sample statistics.
    """

    init: Callable[..., Any]
    step: Callable[..., Any]
    stats: Callable[[Any], dict[str, Tensor]]


def progress_mode(progress: bool | None, stream=None) -> str:
    """``"off"`` (progress False), ``"bar"`` (True or None on a terminal) or ``"lines"`` (True or None elsewhere)."""
    stream = sys.stderr if stream is None else stream
    if progress is False:
        return "off"
    return "bar" if bool(getattr(stream, "isatty", lambda: False)()) else "lines"


class SamplingProgress:
    """Progress of a sampling run, with the training loops' rule (:mod:`gebm_ppl.training._progress`).

    ``progress`` False: nothing. True or None on a terminal (stderr is a TTY): a tqdm bar over transitions.
    True or None elsewhere (a log file, a pipe, a notebook's captured stream): one line every ``interval``
    seconds (default :data:`~gebm_ppl.training._progress.PROGRESS_INTERVAL`, 10 s) once a run has lasted
    that long, and a last line when it ends, to standard error or the ``gebm_ppl.training`` logger; a
    run shorter than ``interval`` writes nothing.

    Args:
        progress: True, False or None.
        total: transitions to run (warmup included).
        desc: the first word of every line.
        interval: seconds between two lines off a terminal.
        stream: the stream whose ``isatty()`` decides (default ``sys.stderr``).
    """

    def __init__(self, progress: bool | None, total: int, desc: str = "sampling", interval: float | None = None,
                 stream=None):
        from ..training._progress import PROGRESS_INTERVAL

        stream = sys.stderr if stream is None else stream
        self.mode = progress_mode(progress, stream)
        self.total, self.desc, self.done, self.lines = int(total), desc, 0, 0
        self.interval = PROGRESS_INTERVAL if interval is None else float(interval)
        self.t0 = self.last = time.perf_counter()
        self.bar = None
        if self.mode == "bar":
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, desc=desc, file=stream)

    def _line(self, final: bool = False) -> None:
        from ..training._progress import _emit, format_duration

        elapsed = time.perf_counter() - self.t0
        if final:
            _emit(f"{self.desc}: done, {self.done} transitions in {format_duration(elapsed)}")
            return
        eta = elapsed / self.done * max(self.total - self.done, 0) if self.done else math.nan
        _emit(f"{self.desc}: transition {self.done}/{self.total} | elapsed {format_duration(elapsed)} "
              f"ETA {format_duration(eta)}")
        self.lines += 1

    def update(self, n: int = 1) -> None:
        """``n`` transitions done."""
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.mode == "lines":
            now = time.perf_counter()
            if now - self.last >= self.interval and self.done < self.total:
                self._line()
                self.last = now

    def close(self) -> None:
        """Close the bar; off a terminal, the last line (when a line was written before)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.mode == "lines" and self.lines:
            self._line(final=True)
            self.lines = 0


def run_batched(
    kernel: Kernel,
    potential: LatentPotential,
    z0: Tensor,
    num_samples: int,
    warmup_steps: int,
    generator: torch.Generator,
    thin: int = 1,
    progress: bool | None = False,
    **params,
) -> tuple[Tensor, dict[str, Tensor], float]:
    """Run a batched kernel: ``warmup_steps`` discarded transitions, then ``num_samples`` draws, each
    kept after ``thin`` transitions. ``progress``: see :class:`SamplingProgress`.

    With ``step_size``, ``step_size_decay`` ρ and ``decay_every`` k among the settings, transition t
    (0, 1, ..., warmup included) uses γ_t = γ₀ ρ^⌊t/k⌋, recorded per draw as the statistic ``step_size``.

    Returns:
        z ``[C, num_samples, d]``, sample statistics ``{name: [C, num_samples]}``, wall time in seconds.
    """
    start = time.perf_counter()
    schedule = None
    if "step_size" in params and "step_size_decay" in params:
        schedule = (params["step_size"], params.pop("step_size_decay", 1.0), params.pop("decay_every", 1))
    state = kernel.init(z0, potential, generator=generator, **params)
    total = warmup_steps + num_samples * thin
    draws, stats = [], []
    bar = SamplingProgress(progress, total)
    try:
        for i in range(total):
            if schedule is not None:
                params["step_size"] = scheduled_step_size(*schedule, i)
            state = kernel.step(state, potential, generator, **params)
            if not bool(torch.isfinite(state.z).all()):
                bad = (~torch.isfinite(state.z)).any(-1).nonzero().flatten().tolist()
                raise FloatingPointError(
                    f"the sampler diverged: chain(s) {bad} left the finite numbers at transition {i + 1} "
                    f"of {total} (settings {params}); use a smaller step_size."
                )
            k = i - warmup_steps + 1
            if k > 0 and k % thin == 0:
                draws.append(state.z)
                stats.append(kernel.stats(state))
                if schedule is not None:
                    step = float(params["step_size"])
                    stats[-1]["step_size"] = torch.full(state.z.shape[:1], step, dtype=torch.float64)
            bar.update(1)
    finally:
        bar.close()
    z = torch.stack(draws, 1)
    sample_stats = {name: torch.stack([s[name] for s in stats], 1) for name in stats[0]}
    return z, sample_stats, time.perf_counter() - start


def data_space(gebm, z: Tensor, batch_size: int = 65536) -> Tensor:
    """x = G_θ(z) for latent draws ``[..., d]`` → ``[..., D]`` (no gradients, in batches)."""
    flat = z.reshape(-1, z.shape[-1])
    with torch.no_grad():
        parts = [gebm.base(flat[i : i + batch_size]) for i in range(0, flat.shape[0], batch_size)]
    return torch.cat(parts).reshape(*z.shape[:-1], -1)


# ---- shared by sample_latent and sample_potential (argument checks, the torch run, the run's attrs)
def check_count(value: object, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"'{name}' should be an integer >= {low}. Got {value!r}.")
    if value < low:
        raise ValueError(f"'{name}' should be an integer >= {low}. Got {value}.")
    return int(value)


def check_init(init: object, num_chains: int, dim: int, dtype: torch.dtype, device: torch.device) -> Tensor:
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


NUMPYRO_CHAIN_METHODS = ("vectorized", "parallel", "sequential")  # numpyro.infer.MCMC's, default first


def check_chain_method(spec: SamplerSpec, backend: str, chain_method: object) -> str:
    """How a run's chains are run; None is the backend's default for the method.

    NumPyro: ``"vectorized"`` (default, one program batched over chains), ``"parallel"`` (one device per
    chain), ``"sequential"``. Pyro: the methods whose runner declares ``chain_methods`` (NUTS, HMC:
    ``"sequential"``, the default, or ``"parallel"``, one process per chain); the batched torch kernels
    run all chains as one batch, ``"vectorized"``.
    """
    allowed = NUMPYRO_CHAIN_METHODS if backend == "numpyro" else getattr(spec.torch_runner, "chain_methods",
                                                                         ("vectorized",))
    if chain_method is None:
        return allowed[0]
    if not isinstance(chain_method, str) or chain_method not in allowed:
        batched = " (its torch kernel runs all chains as one batch)" if allowed == ("vectorized",) else ""
        raise ValueError(f"'chain_method' should be one of {list(allowed)} for method {spec.name!r} with backend "
                         f"{backend!r}{batched}. Got {chain_method!r}.")
    return chain_method


def auto_backend(method: str = "nuts") -> str:
    """``backend="auto"``, the rule of ``gebm sample``: ``"numpyro"`` (JIT-compiled JAX, several times faster)
    when ``method`` has a NumPyro implementation and JAX and NumPyro import, else ``"pyro"``."""
    if "numpyro" not in get_sampler(method).backends:
        return "pyro"
    try:
        import jax  # noqa: F401
        import numpyro  # noqa: F401
    except ImportError:
        return "pyro"
    return "numpyro"


def _plain(value: object) -> bool:
    return isinstance(value, int | float | str)


def spec_for(method: object, backend: object) -> SamplerSpec:
    spec = get_sampler(method)  # ValueError naming the known methods
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: expected one of {[*BACKENDS, 'auto']}.")
    return spec


def run_attrs(spec: SamplerSpec, backend: str, settings: dict, potential: CountingPotential, elapsed: float,
           seed: int, **extra) -> dict:
    return {
        "method": spec.name,
        "backend": backend,
        **extra,
        "num_grad_evals": int(potential.num_grad_evals),
        "num_energy_evals": int(potential.num_evals),
        "sampling_time": float(elapsed),
        "seed": seed,
        # plain settings only, bools as 0/1: netCDF attributes hold numbers and strings
        **{k: int(v) if isinstance(v, bool) else v for k, v in settings.items() if _plain(v)},
    }


def run_torch(spec: SamplerSpec, potential: CountingPotential, init: Tensor | None, num_samples: int,
               warmup_steps: int, num_chains: int, seed: int, progress: bool, settings: dict,
               chain_method: str | None = None):
    """Run ``spec``'s torch runner on the potential's device; None ``init`` draws N(0, I) starting points.

    The starting points are drawn on the CPU and moved to the device, so a seed gives the same points on
    every device (and for the NumPyro backend); the transitions use a generator on the device.
    """
    generator, seeds = chain_seeds(seed, num_chains, potential.device)
    if init is None:
        if potential.device.type == "cpu":
            init = torch.randn(num_chains, potential.latent_dim, generator=generator, dtype=potential.dtype)
        else:
            cpu = torch.Generator().manual_seed(int(seed))
            init = torch.randn(num_chains, potential.latent_dim, generator=cpu, dtype=potential.dtype)
            init = init.to(potential.device)
    extra = {"chain_method": chain_method} if hasattr(spec.torch_runner, "chain_methods") and chain_method else {}
    return spec.torch_runner(
        potential, init, num_samples=num_samples, warmup_steps=warmup_steps if spec.burn_in else 0,
        generator=generator, chain_seeds=seeds, progress=progress, **extra, **settings,
    )


def batched_runner(kernel: Any) -> Callable[..., Any]:
    """A ``torch_runner`` for a batched kernel ``driver.Kernel(init, step, stats)`` run by ``driver.run_batched``.

    The settings reach ``init``/``step`` as keywords; ``thin`` (if declared) thins the draws; with the
    :data:`SCHEDULE_OPTIONS`, ``step_size`` follows their schedule.
    """

    def run(potential, init, *, num_samples, warmup_steps, generator, chain_seeds, progress, **settings):
        thin = settings.pop("thin", 1)
        return run_batched(kernel, potential, init, num_samples, warmup_steps, generator, thin, progress, **settings)

    return run
