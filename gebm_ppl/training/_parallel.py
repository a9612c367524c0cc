"""Data-parallel pieces of the training steps: this rank's share of a step, the DDP wrappers, the global losses.

With W ranks (:mod:`gebm_ppl.distributed`), every optimizer step uses the same global minibatch and the
same random draws as one process: each rank draws the step's global latents, noise and penalty
interpolation weights from the step's counter-based generator and keeps its contiguous share of the rows
(:func:`gebm_ppl.distributed.shard`). Every loss of the loops is a sum over rows divided by a global count
(or, for the KALE exponential term, a log-sum-exp over rows), so rank r's loss is W times its share,

    L_r = W · Σ_{i ∈ rows(r)} ℓ_i / N,    (1/W) Σ_r ∇L_r = ∇ (1/N) Σ_i ℓ_i,

and DistributedDataParallel's gradient average is the gradient of the global-batch loss. The global value
of a loss (for metrics, divergence checks and the clipping scale) comes from one all-gather of the ranks'
partial sums (log-sum-exps are combined in log space). With W = 1 the same code runs without DDP and
without communication.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from .. import distributed
from ..kale import (
    data_log_weight_cap,
    kale_base_loss_pieces,
    kale_energy_sums,
    kale_from_sums,
    squared_gradient_norm_sum,
)

__all__ = ["EnergyTerms", "LogProb", "Shard", "base_loss", "base_samples", "energy_loss", "frozen", "penalty_pairs"]


class Shard:
    """This rank's place in the run: ``rank``, ``world`` (W) and its share of a step's rows.

    Constructing it joins the launcher's process group (:func:`gebm_ppl.distributed.init`) when there is one.
    """

    def __init__(self, device: torch.device):
        distributed.init(device)
        self.rank, self.world, self.device = distributed.rank(), distributed.world_size(), torch.device(device)
        if self.world > 1 and self.device.type == "cuda" and self.device.index != torch.cuda.current_device():
            raise RuntimeError(
                f"rank {self.rank} trains on {self.device} but its GPU is cuda:{torch.cuda.current_device()}; "
                "pass device='cuda' (each rank then takes cuda:LOCAL_RANK) instead of moving the model yourself."
            )

    def rows(self, n: int) -> slice:
        """This rank's contiguous share of ``n`` rows."""
        return distributed.shard(n, self.rank, self.world)

    def wrap(self, module: nn.Module) -> nn.Module:
        """``module`` in DistributedDataParallel when W > 1 (its parameters are broadcast from rank 0), else itself."""
        if self.world == 1:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)

    def gather(self, values: Tensor) -> Tensor:
        """Every rank's detached ``values``, ``[W, *values.shape]``."""
        return distributed.all_gather(values.detach())


@contextlib.contextmanager
def frozen(params: list[Tensor]) -> Iterator[None]:
    """Turn ``requires_grad`` off for ``params`` inside the block (a step that must not touch their gradients)."""
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)


class LogProb(nn.Module):
    """``forward(x) = model.log_prob(x)``: the module DDP wraps for maximum likelihood (DDP hooks ``forward``)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model.log_prob(x)


def penalty_pairs(g: torch.Generator, n: int, m: int, like: Tensor) -> tuple[Tensor | None, Tensor]:
    """The global draws of :func:`gebm_ppl.gradient_penalty`, in its order: the base row paired with each of
    the ``n`` data rows (None when m = n: row j with row j) and t ~ U(0, 1) ``[n, 1]``."""
    idx = torch.randint(0, m, (n,), device=like.device, generator=g) if m != n else None
    t = torch.rand(n, 1, device=like.device, dtype=like.dtype, generator=g)
    return idx, t


@torch.no_grad()
def base_samples(base: nn.Module, z: Tensor, shard: Shard, rows: slice, data_rows: slice,
                 pairs: tuple[Tensor | None, Tensor] | None) -> tuple[Tensor, Tensor | None]:  # fmt: skip
    """G(z) on this rank's ``rows`` of the global latents ``z``, and the base samples paired with its data rows.

    With W = 1 the pairs are rows of G(z); with W > 1 they are computed in the same call to the base (one
    call, as in one process: layers with per-call state such as a power iteration advance once).
    """
    if pairs is None:
        return base(z[rows]), None
    idx = pairs[0]
    if shard.world == 1:
        xb = base(z)
        return xb, xb if idx is None else xb[idx]
    if idx is None:  # m = n: the shares of data and base rows coincide
        xb = base(z[rows])
        return xb, xb
    own = z[rows]
    out = base(torch.cat([own, z[idx[data_rows]]]))
    return out[: own.shape[0]], out[own.shape[0] :]


class EnergyTerms(nn.Module):
    """This rank's partial sums of an energy step's loss, the module DDP wraps: ``forward(x, xb, x_hat) -> [4]``.

    KALE (``c`` given): [Σ_data (E + c), log Σ_base exp(ψ(−(E + c))), Σ‖∇ₓE(x̂)‖², Σ E²] with ψ the
    linearisation beyond the data's cap (:func:`gebm_ppl.kale.kale_energy_sums` with
    :func:`gebm_ppl.kale.data_log_weight_cap` over the step's global data rows and its ``num_base``
    base samples; ψ(u) = u unless the base draws a sample the data do not justify); logistic GAN
    (``c`` None): [Σ_data softplus(E), Σ_base softplus(−E), Σ‖∇ₓE(x̂)‖², Σ E²]; in float64. ``x_hat``
    None: no penalty (0).
    """

    def __init__(self, energy: nn.Module, c: Tensor | None, num_base: int):
        super().__init__()
        self.energy = energy
        self.c = c  # a Parameter: registered here, so that DDP all-reduces its gradient too
        self.num_base = num_base  # M, the step's global number of base samples

    def forward(self, x: Tensor, xb: Tensor, x_hat: Tensor | None) -> Tensor:
        n = x.shape[0]
        e = self.energy(torch.cat([x, xb])).double()  # the objective in float64: exp(−E − c) up to e^709
        ed, eb = e[:n], e[n:]
        if self.c is None:
            t0, t1 = F.softplus(ed).sum(), F.softplus(-eb).sum()
        else:
            c = self.c.double()
            cap = data_log_weight_cap(ed, c, self.num_base)
            if distributed.world_size() > 1:  # the max over all ranks' data rows: the one-process cap
                cap = distributed.all_gather(cap).max()
            t0, t1 = kale_energy_sums(ed, eb, c, cap)
        pen = e.new_zeros(()) if x_hat is None else squared_gradient_norm_sum(self.energy, x_hat).double()
        return torch.stack([t0, t1, pen, (e * e).sum()])


def energy_loss(shard: Shard, terms: Tensor, n: int, m: int, penalty: float, l2: float,
                kale: bool) -> tuple[Tensor, float, float | None]:  # fmt: skip
    """(this rank's loss L_r, the global loss, the global KALE F or None) from the ranks' :class:`EnergyTerms`.

    KALE: loss = −F + λ·PEN/N + ℓ₂·ΣE²/(N + M) with F = :func:`gebm_ppl.kale.kale_from_sums` of the ranks'
    :func:`gebm_ppl.kale.kale_energy_sums` (sums added, log-sum-exps combined by logsumexp); GAN: loss =
    Σ softplus(E_data)/N + Σ softplus(−E_base)/M + the same regularisers. L_r is W·(1 − F_r + reg_r), F_r
    from this rank's sums alone (its gradient is the rank's share: the constants drop out).
    """
    all_terms = shard.gather(terms)  # [W, 4]
    w = shard.world
    reg_local = penalty * terms[2] / n + l2 * terms[3] / (n + m)
    reg = penalty * float(all_terms[:, 2].sum()) / n + l2 * float(all_terms[:, 3].sum()) / (n + m)
    if kale:
        objective = float(kale_from_sums(all_terms[:, 0].sum(), torch.logsumexp(all_terms[:, 1], 0), n, m))
        local = w * (1.0 - kale_from_sums(terms[0], terms[1], n, m) + reg_local)
        return local, -objective + reg, objective
    value = float(all_terms[:, 0].sum()) / n + float(all_terms[:, 1].sum()) / m + reg
    return w * (terms[0] / n + terms[1] / m + reg_local), value, None


def base_loss(shard: Shard, e: Tensor, m: int, kale: bool) -> tuple[Tensor, float]:
    """(L_r, the global value) of the base loss on this rank's energies ``e`` of the step's M base samples.

    KALE: :func:`gebm_ppl.kale_base_loss` Σ_i w_i E_i with w = softmax(−E) over all M samples (held
    constant), its log-normaliser combined across ranks in log space; GAN: Σ softplus(E)/M.
    """
    ed = e.double()
    if not kale:
        s = F.softplus(ed).sum()
        return shard.world * s / m, float(shard.gather(s).sum()) / m
    lse_r, s_r = kale_base_loss_pieces(ed)  # log Σ_{i ∈ r} exp(−E_i), Σ_{i ∈ r} softmax_r(−E)_i E_i
    both = shard.gather(torch.stack([lse_r, s_r.detach()]))  # [W, 2]
    lse = torch.logsumexp(both[:, 0], 0)
    share = torch.exp(both[:, 0] - lse)  # each rank's mass of the global softmax
    value = float((share * torch.nan_to_num(both[:, 1])).sum())
    return shard.world * torch.exp(lse_r - lse) * s_r, value

