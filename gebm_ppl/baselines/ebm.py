"""An energy-based model in data space, p(x) ∝ exp(−T·E(x)), trained by contrastive divergence with short-run Langevin.

The baseline of the GEBM paper's "GEBMs outperform EBMs": the same energy network as a GEBM, but with no
base, so that its samples come from Langevin dynamics in data space (D = 784 for MNIST) instead of in the
latent space of a generator. Training follows Du & Mordatch (2019) and Nijkamp et al. (2019): the
maximum-likelihood gradient T·(E_P[∇_φE] − E_p[∇_φE]) with the model expectation replaced by K steps of
Langevin from noise (short-run) or from a replay buffer of earlier chains (persistent).

The Langevin transitions are those of :mod:`gebm_ppl.sampling.ula` (z ← z − γ∇U(z) + √(2γ) ξ) on the
data-space potential U(x) = T·E(x); :func:`sample_ebm` runs them through
:func:`gebm_ppl.sampling.sample_potential` (evaluation counts, timing, InferenceData).

References:
    [1] Du & Mordatch (2019) "Implicit Generation and Generalization in Energy-Based Models", NeurIPS,
        https://arxiv.org/abs/1903.08689
    [2] Nijkamp, Hill, Zhu & Wu (2019) "Learning Non-Convergent Non-Persistent Short-Run MCMC Toward
        Energy-Based Model", NeurIPS, https://arxiv.org/abs/1904.09770
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from .._modes import eval_mode, train_mode
from .._threads import torch_threads
from .._validation import check_positive_float, check_positive_int
from ..sampling import sample_potential, ula

__all__ = ["fit_ebm", "langevin_data_space", "sample_ebm"]


def _check_energy(energy) -> int:
    if not isinstance(energy, nn.Module):
        raise TypeError(f"'energy' should be an nn.Module mapping [..., D] → [...]. Got {type(energy).__name__}.")
    dim = getattr(energy, "dim", None)
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise TypeError(f"'energy' should have an integer 'dim' (the data dimension D). Got {dim!r}.")
    return dim


def _check_bounds(bounds) -> tuple[float, float] | None:
    if bounds is None:
        return None
    lo, hi = (float(b) for b in bounds)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"'bounds' should be (low, high) with finite low < high, or None. Got {bounds!r}.")
    return lo, hi


@contextlib.contextmanager
def _frozen(energy: nn.Module) -> Iterator[None]:
    """Eval mode (spectral normalisation's power iteration paused) and no parameter gradients, then restore."""
    flags = [(p, p.requires_grad) for p in energy.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        with eval_mode(energy):
            yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _potential(energy: nn.Module, temperature: float) -> Callable[[Tensor], Tensor]:
    """U(x) = T·E(x), ``[C, D] → [C]``."""

    def potential(x: Tensor) -> Tensor:
        return temperature * energy(x)

    return potential


def _noise(n: int, dim: int, bounds, generator: torch.Generator, dtype) -> Tensor:
    """The chains' starting points: uniform on the box ``bounds`` (images), else N(0, I)."""
    if bounds is None:
        return torch.randn(n, dim, generator=generator, dtype=dtype)
    lo, hi = bounds
    return lo + (hi - lo) * torch.rand(n, dim, generator=generator, dtype=dtype)


def langevin_data_space(
    energy: nn.Module,
    init: Tensor,
    *,
    steps: int,
    step_size: float,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``steps`` ULA transitions x ← x − γ T∇E(x) + √(2γ) ξ from ``init`` ``[C, D]``; returns the last states.

    The kernel is :func:`gebm_ppl.sampling.ula.step` on U(x) = T·E(x): for small γ its stationary law is
    p(x) ∝ exp(−T·E(x)) (biased by O(γ)). The energy must be in the mode wanted (eval for sampling);
    gradients flow to ``x`` only.

    Args:
        energy: E, ``[..., D] → [...]``.
        init: starting points ``[C, D]``.
        steps: K ≥ 1 transitions.
        step_size: γ > 0.
        temperature: T > 0 (the inverse scale of the density: T·E is the potential).
        generator: the noise's ``torch.Generator``.
    """
    steps = check_positive_int(steps, "steps")
    step_size = check_positive_float(step_size, "step_size")
    potential = _potential(energy, check_positive_float(temperature, "temperature"))
    state = ula.init(init, potential)
    for _ in range(steps):
        state = ula.step(state, potential, generator, step_size=step_size)
    return state.z


def fit_ebm(
    energy: nn.Module,
    train: Tensor | np.ndarray,
    val: Tensor | np.ndarray | None = None,
    *,
    steps: int = 1000,
    batch_size: int = 64,
    langevin_steps: int = 20,
    step_size: float = 1e-3,
    temperature: float = 1.0,
    lr: float = 1e-4,
    betas: tuple[float, float] = (0.0, 0.999),
    energy_l2: float = 0.1,
    buffer_size: int = 10_000,
    reinit_prob: float = 0.05,
    bounds: tuple[float, float] | None = (-1.0, 1.0),
    eval_every: int = 100,
    seed: int = 0,
) -> list[dict]:
    """Train an energy E in data space by contrastive divergence (the model p(x) ∝ exp(−T·E(x))).

    Each step draws a data minibatch x⁺ and negatives x⁻ by ``langevin_steps`` ULA transitions
    (:func:`langevin_data_space`, energy in eval mode) started from a replay buffer of earlier negatives,
    or, with probability ``reinit_prob`` per chain (always with ``buffer_size=0``: Nijkamp et al.'s
    non-persistent short-run), from uniform noise on ``bounds``; then one Adam step on

        L(φ) = T·(mean E_φ(x⁺) − mean E_φ(x⁻)) + ℓ₂·(mean E_φ(x⁺)² + mean E_φ(x⁻)²),

    whose first term's gradient is the maximum-likelihood gradient with E_p replaced by the negatives
    (Du & Mordatch's regulariser ℓ₂ keeps the energies near 0). Negatives are clamped into ``bounds``
    before they enter the buffer. Every draw comes from a ``torch.Generator`` seeded with ``seed``.

    Args:
        energy: E, ``[..., D] → [...]`` with a ``dim`` attribute (e.g. :class:`gebm_ppl.EnergyMLP`), trained in place.
        train: data ``[N, D]``.
        val: optional data ``[N_val, D]``: each record then holds its mean energy ``val_energy``.
        steps: optimizer steps.
        batch_size: data points and negatives per step.
        langevin_steps: K, ULA transitions per negative per step.
        step_size: γ of those transitions.
        temperature: T, the potential is T·E.
        lr: Adam learning rate.
        betas: Adam betas (Du & Mordatch: (0, 0.999)).
        energy_l2: ℓ₂, the weight of the energies' squares.
        buffer_size: replay-buffer size (0: every chain starts from noise).
        reinit_prob: chance that a chain restarts from noise instead of the buffer.
        bounds: the box of the data (images in [−1, 1]); None: noise N(0, I) and no clamping.
        eval_every: a record every this many steps (and at the end).
        seed: seed of minibatches, noise and Langevin draws.

    Returns:
        The records: ``step``, ``loss`` (mean over the steps since the last record), ``energy_data``,
        ``energy_negative`` (mean energies), ``val_energy`` (with ``val``), ``wall_time`` (seconds).

    Raises:
        ValueError: bad settings, or a loss that is not finite (the error names the step).
    """
    dim = _check_energy(energy)
    steps = check_positive_int(steps, "steps")
    batch_size = check_positive_int(batch_size, "batch_size")
    langevin_steps = check_positive_int(langevin_steps, "langevin_steps")
    step_size = check_positive_float(step_size, "step_size")
    temperature = check_positive_float(temperature, "temperature")
    eval_every = check_positive_int(eval_every, "eval_every")
    bounds = _check_bounds(bounds)
    if not 0.0 <= reinit_prob <= 1.0:
        raise ValueError(f"'reinit_prob' should be in [0, 1]. Got {reinit_prob!r}.")
    if isinstance(buffer_size, bool) or not isinstance(buffer_size, int) or buffer_size < 0:
        raise ValueError(f"'buffer_size' should be an integer ≥ 0. Got {buffer_size!r}.")
    p = next(energy.parameters())
    x_train = torch.as_tensor(np.asarray(train), dtype=p.dtype)
    if x_train.ndim != 2 or x_train.shape[1] != dim:
        raise ValueError(f"'train' should have shape [N, {dim}]. Got {tuple(x_train.shape)}.")
    x_val = None if val is None else torch.as_tensor(np.asarray(val), dtype=p.dtype)
    with torch_threads(model=energy):  # a small network: one thread unless chosen (gebm_ppl._threads)
        return _fit_ebm(energy, x_train, x_val, dim, steps, batch_size, langevin_steps, step_size, temperature, lr,
                        betas, energy_l2, buffer_size, reinit_prob, bounds, eval_every, seed)


def _fit_ebm(energy, x_train, x_val, dim, steps, batch_size, langevin_steps, step_size, temperature, lr, betas,
             energy_l2, buffer_size, reinit_prob, bounds, eval_every, seed) -> list[dict]:  # fmt: skip
    """:func:`fit_ebm`'s loop, its arguments checked."""
    p = next(energy.parameters())
    gen = torch.Generator().manual_seed(int(seed))
    buffer = _noise(buffer_size, dim, bounds, gen, p.dtype) if buffer_size else None
    opt = torch.optim.Adam(energy.parameters(), lr=lr, betas=betas)
    records: list[dict] = []
    start, losses, e_pos, e_neg = time.perf_counter(), [], [], []
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(x_train), (batch_size,), generator=gen)
        init = _noise(batch_size, dim, bounds, gen, p.dtype)
        if buffer is not None:
            slots = torch.randint(0, buffer_size, (batch_size,), generator=gen)
            keep = torch.rand(batch_size, generator=gen) >= reinit_prob
            init[keep] = buffer[slots[keep]]
        with _frozen(energy):
            neg = langevin_data_space(energy, init, steps=langevin_steps, step_size=step_size,
                                      temperature=temperature, generator=gen)
        if bounds is not None:
            neg = neg.clamp(*bounds)
        if buffer is not None:
            buffer[slots] = neg
        with train_mode(energy):
            e = energy(torch.cat([x_train[idx], neg]))
        pos, negative = e[:batch_size], e[batch_size:]
        loss = temperature * (pos.mean() - negative.mean()) + energy_l2 * ((pos**2).mean() + (negative**2).mean())
        if not torch.isfinite(loss):
            raise ValueError(f"fit_ebm: the contrastive-divergence loss is not finite at step {step} "
                             "(lower step_size or temperature, or raise energy_l2).")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        e_pos.append(float(pos.detach().mean()))
        e_neg.append(float(negative.detach().mean()))
        if step % eval_every == 0 or step == steps:
            record = {"step": step, "loss": float(np.mean(losses)), "energy_data": float(np.mean(e_pos)),
                      "energy_negative": float(np.mean(e_neg)), "wall_time": time.perf_counter() - start}
            if x_val is not None:
                with torch.no_grad(), eval_mode(energy):
                    record["val_energy"] = float(energy(x_val).mean())
            records.append(record)
            losses, e_pos, e_neg = [], [], []
    return records


def sample_ebm(
    energy: nn.Module,
    num_chains: int,
    *,
    steps: int,
    step_size: float,
    temperature: float = 1.0,
    step_size_decay: float = 1.0,
    decay_every: int = 200,
    num_recorded: int = 1,
    init: Tensor | None = None,
    bounds: tuple[float, float] | None = (-1.0, 1.0),
    seed: int = 0,
    progress: bool | None = False,
):
    """Sample p(x) ∝ exp(−T·E(x)) in data space by ULA (:func:`gebm_ppl.sampling.sample_potential`).

    ``num_chains`` chains start at ``init`` (default: uniform noise on ``bounds``, or N(0, I) without
    bounds, seeded with ``seed``) and run ``steps`` transitions with step size γ_t = γ₀ ρ^⌊t/k⌋
    (``step_size_decay`` ρ, ``decay_every`` k). ``num_recorded`` evenly spaced states are kept (the last
    is the final one), for an FD-against-steps curve. The posterior ``z`` holds the raw states and ``x``
    those states clamped into ``bounds`` (the images scored); the energy is in eval mode with frozen
    parameters throughout.

    Args:
        energy: E with a ``dim`` attribute.
        num_chains: C ≥ 1 (one image per chain).
        steps: transitions per chain (a multiple of ``num_recorded``).
        step_size: γ₀ > 0.
        temperature: T > 0.
        step_size_decay: ρ in (0, 1].
        decay_every: k ≥ 1.
        num_recorded: states kept per chain.
        init: ``[C, D]`` starting points, or None.
        bounds: the data's box, or None.
        seed: seed of the starting noise and the Langevin draws.
        progress: as :func:`gebm_ppl.sample_latent`'s.

    Returns:
        An ``arviz.InferenceData`` (posterior ``z`` and ``x`` with dims (chain, draw, dim); attrs
        ``num_grad_evals``, ``num_energy_evals``, ``sampling_time``).
    """
    dim = _check_energy(energy)
    num_chains = check_positive_int(num_chains, "num_chains")
    steps = check_positive_int(steps, "steps")
    num_recorded = check_positive_int(num_recorded, "num_recorded")
    if steps % num_recorded:
        raise ValueError(f"'steps' should be a multiple of 'num_recorded'. Got steps={steps}, "
                         f"num_recorded={num_recorded}.")
    bounds = _check_bounds(bounds)
    temperature = check_positive_float(temperature, "temperature")
    p = next(energy.parameters())
    if init is None:
        init = _noise(num_chains, dim, bounds, torch.Generator().manual_seed(int(seed) + 1), p.dtype)
    thin = steps // num_recorded
    forward = None if bounds is None else (lambda x: x.clamp(*bounds))
    with _frozen(energy), torch_threads(model=energy):
        return sample_potential(_potential(energy, temperature), init, "ula", num_samples=num_recorded,
                                warmup_steps=0, seed=seed, progress=progress, forward=forward, thin=thin,
                                step_size=step_size, step_size_decay=step_size_decay, decay_every=decay_every)
