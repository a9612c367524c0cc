"""Batched reductions shared across ranks so that they combine exactly: Â, NLL sums, per-example values.

A batched pass over B batches is split by batch: rank r of W evaluates the batches b ≡ r (mod W).
Each rank fills a per-batch (or per-row) table, holding at the batches it does not own the
identity of the combination: −inf for logsumexp terms (combined by MAX), 0 for sums (combined by
SUM). Combining the ranks' tables (``torch.distributed.all_reduce`` when W > 1, or
:func:`combine_tables` in one process) therefore reproduces every batch's value exactly, and
folding the values in batch order gives the unsharded result bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from ._validation import check_positive_int

__all__ = [
    "all_reduce_table",
    "batch_ranges",
    "check_shard",
    "combine_tables",
    "distributed_shard",
    "fold_sum",
    "owns",
    "row_table",
    "sharded_mean",
    "sum_table",
]


def check_shard(rank: int, world_size: int) -> tuple[int, int]:
    """Check ``0 <= rank < world_size`` (integers) and return them."""
    for value, name in ((rank, "rank"), (world_size, "world_size")):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"'{name}' should be an integer. Got {value!r}.")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size and world_size >= 1. Got rank={rank}, world_size={world_size}.")
    return rank, world_size


def distributed_shard() -> tuple[int, int]:
    """``(rank, world_size)`` of the initialised ``torch.distributed`` process group, else ``(0, 1)``."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def owns(batch: int, rank: int, world_size: int) -> bool:
    """Whether ``rank`` evaluates ``batch`` (round robin: b ≡ rank mod world_size)."""
    return batch % world_size == rank


def batch_ranges(n: int, batch_size: int) -> Iterator[tuple[int, int, int]]:
    """``(b, start, stop)`` of the batches ``x.split(batch_size)`` makes of ``n`` rows."""
    for b, start in enumerate(range(0, n, batch_size)):
        yield b, start, min(start + batch_size, n)


def combine_tables(tables: list[Tensor], op: str) -> Tensor:
    """Combine the tables of all ranks in one process: elementwise ``"max"`` (−inf tables) or ``"sum"`` (0 tables)."""
    stacked = torch.stack([t.double().cpu() for t in tables])
    if op == "max":
        return stacked.max(0).values
    if op == "sum":
        return stacked.sum(0)
    raise ValueError(f"'op' should be 'max' or 'sum'. Got {op!r}.")


def all_reduce_table(table: Tensor, op: str, world_size: int) -> Tensor:
    """``table`` combined over the ranks of the initialised process group (unchanged for world_size 1).

    Raises:
        RuntimeError: ``world_size > 1`` but ``torch.distributed`` is not initialised with that many ranks.
    """
    if world_size == 1:
        return table
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() != world_size:
        have = dist.get_world_size() if dist.is_available() and dist.is_initialized() else "not initialised"
        raise RuntimeError(
            f"world_size={world_size} needs an initialised torch.distributed process group of that size "
            f"(e.g. under torchrun); have: {have}. In one process, compute each rank's table and combine "
            "them with gebm_ppl.sharding.combine_tables."
        )
    reduce_op = {"max": dist.ReduceOp.MAX, "sum": dist.ReduceOp.SUM}[op]
    work = table.double()
    if dist.get_backend() == "nccl":  # NCCL reduces CUDA tensors only
        work = work.cuda()
    work = work.clone()
    dist.all_reduce(work, op=reduce_op)
    return work.to(table.device)


def sum_table(fn: Callable[[Tensor], Tensor], x, batch_size: int, rank: int = 0, world_size: int = 1) -> Tensor:
    """``[B]`` float64: Σ fn(x[batch b]) for this rank's batches b, 0 at the others'.

    ``x`` is anything sliceable by rows (a tensor or a :class:`gebm_ppl.data.H5Array`); only
    this rank's batches are read.
    """
    rank, world_size = check_shard(rank, world_size)
    batch_size = check_positive_int(batch_size, "batch_size")
    n = x.shape[0]
    table = torch.zeros(-(-n // batch_size), dtype=torch.float64)
    for b, start, stop in batch_ranges(n, batch_size):
        if owns(b, rank, world_size):
            table[b] = fn(x[start:stop]).double().sum().cpu()
    return table


def row_table(fn: Callable[[Tensor], Tensor], x, batch_size: int, rank: int = 0, world_size: int = 1) -> Tensor:
    """``[N]`` float64: fn(x[batch b]) at the rows of this rank's batches, 0 at the others'."""
    rank, world_size = check_shard(rank, world_size)
    batch_size = check_positive_int(batch_size, "batch_size")
    n = x.shape[0]
    table = torch.zeros(n, dtype=torch.float64)
    for b, start, stop in batch_ranges(n, batch_size):
        if owns(b, rank, world_size):
            table[start:stop] = fn(x[start:stop]).double().cpu()
    return table


def fold_sum(table: Tensor) -> float:
    """Σ_b table[b] accumulated in batch order in float64 (the order of an unsharded batched sum)."""
    total = torch.zeros((), dtype=torch.float64)
    for value in table.double().cpu():
        total += value
    return float(total)


@torch.no_grad()
def sharded_mean(
    fn: Callable[[Tensor], Tensor], x, batch_size: int = 8192, rank: int = 0, world_size: int = 1
) -> float:
    """(1/N) Σ_n fn(x)_n over ``x`` ``[N, D]``, each rank evaluating its share of the batches.

    With ``fn = lambda c: -model.log_prob(c)`` this is :func:`gebm_ppl.training.mle.mean_nll`,
    bit for bit, for any ``world_size`` (``world_size > 1`` needs the initialised process group).
    """
    table = all_reduce_table(sum_table(fn, x, batch_size, rank, world_size), "sum", world_size)
    return fold_sum(table) / x.shape[0]
