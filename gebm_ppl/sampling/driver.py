"""Shared sampling machinery: the latent potential, the batched chain driver and the InferenceData builder."""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "Kernel",
    "LatentPotential",
    "build_inference_data",
    "chain_seeds",
    "data_space",
    "potential_and_grad",
    "run_batched",
    "sampling_mode",
]


class LatentPotential:
    """U(z) = ½‖z‖² + T·E(G_θ(z)), ``[..., d] → [...]``, counting the points it is evaluated at.

    The latent posterior is ν(z) ∝ exp(−U(z)); if z ∼ ν (and T = 1) then G_θ(z) ∼ Q.
    ``num_evals`` counts single-point evaluations (a ``[C, d]`` batch counts C), and ``num_grad_evals``
    those of them made by :func:`potential_and_grad` (an evaluation with its gradient).

    Args:
        gebm: a :class:`gebm_ppl.GEBM` (put it in eval mode, e.g. with :func:`sampling_mode`).
        temperature: T > 0.
    """

    def __init__(self, gebm, temperature: float = 1.0):
        self.gebm = gebm
        self.temperature = float(temperature)
        self.num_evals = 0
        self.num_grad_evals = 0
        p = next(gebm.parameters(), None)
        self.dtype = p.dtype if p is not None else torch.get_default_dtype()
        self.device = p.device if p is not None else torch.device("cpu")
        self.latent_dim = gebm.latent_dim

    def __call__(self, z: Tensor) -> Tensor:
        self.num_evals += z[..., 0].numel()
        return self.gebm.latent_potential(z, self.temperature)


def potential_and_grad(potential: Callable[[Tensor], Tensor], z: Tensor) -> tuple[Tensor, Tensor]:
    """U(z) and ∇U(z) for a batch of points ``[C, d]`` → ``([C], [C, d])``, both detached."""
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        u = potential(z)
        (grad,) = torch.autograd.grad(u.sum(), z)
    if isinstance(potential, LatentPotential):
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
        init: ``init(z, potential, **params) -> state``; ``z`` is ``[C, d]``.
        step: ``step(state, potential, generator, **params) -> state``, one transition of every chain.
        stats: ``stats(state) -> {name: [C] tensor}``, the per-draw sample statistics.
    """

    init: Callable[..., Any]
    step: Callable[..., Any]
    stats: Callable[[Any], dict[str, Tensor]]


def run_batched(
    kernel: Kernel,
    potential: LatentPotential,
    z0: Tensor,
    num_samples: int,
    warmup_steps: int,
    generator: torch.Generator,
    thin: int = 1,
    progress: bool = False,
    **params,
) -> tuple[Tensor, dict[str, Tensor], float]:
    """Run a batched kernel: ``warmup_steps`` discarded transitions, then ``num_samples`` draws, each
    kept after ``thin`` transitions.

    Returns:
        z ``[C, num_samples, d]``, sample statistics ``{name: [C, num_samples]}``, wall time in seconds.
    """
    start = time.perf_counter()
    state = kernel.init(z0, potential, **params)
    total = warmup_steps + num_samples * thin
    draws, stats = [], []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="sampling")
    try:
        for i in range(total):
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
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    z = torch.stack(draws, 1)
    sample_stats = {name: torch.stack([s[name] for s in stats], 1) for name in stats[0]}
    return z, sample_stats, time.perf_counter() - start


def _numpy(value: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(value, Tensor):
        return value.detach().cpu().numpy()  # dtypes kept: float32/64, int64 (step counts), bool (flags)
    return np.asarray(value)


def build_inference_data(
    z: Tensor | np.ndarray,
    x: Tensor | np.ndarray,
    sample_stats: Mapping[str, Tensor | np.ndarray],
    attrs: Mapping[str, Any],
):
    """The :class:`arviz.InferenceData` of a latent-space run (layout in :mod:`gebm_ppl.sampling`).

    Args:
        z: latent draws ``[chain, draw, d]``.
        x: data-space draws G_θ(z) ``[chain, draw, D]``.
        sample_stats: per-draw statistics ``{name: [chain, draw]}``.
        attrs: run attributes (strings and numbers); set on the InferenceData and on both groups.
    """
    import arviz as az

    posterior = {"z": _numpy(z), "x": _numpy(x)}
    stats = {name: _numpy(v) for name, v in sample_stats.items()}
    dims = {"z": ["z_dim"], "x": ["x_dim"]}
    attrs = dict(attrs)
    if int(az.__version__.split(".")[0]) >= 1:  # ArviZ 1.x: one dict of groups, returns a DataTree
        idata = az.from_dict({"posterior": posterior, "sample_stats": stats}, dims=dims)
        for node in (idata, idata["posterior"], idata["sample_stats"]):
            node.attrs.update(attrs)
        return idata
    with warnings.catch_warnings():
        # ArviZ guesses the layout from the shapes; ours is (chain, draw, ...) by construction.
        warnings.filterwarnings("ignore", message="More chains .* than draws", category=UserWarning)
        return az.from_dict(
            posterior=posterior,
            sample_stats=stats,
            dims=dims,
            attrs=dict(attrs),
            posterior_attrs=dict(attrs),
            sample_stats_attrs=dict(attrs),
        )


def data_space(gebm, z: Tensor, batch_size: int = 65536) -> Tensor:
    """x = G_θ(z) for latent draws ``[..., d]`` → ``[..., D]`` (no gradients, in batches)."""
    flat = z.reshape(-1, z.shape[-1])
    with torch.no_grad():
        parts = [gebm.base(flat[i : i + batch_size]) for i in range(0, flat.shape[0], batch_size)]
    return torch.cat(parts).reshape(*z.shape[:-1], -1)
