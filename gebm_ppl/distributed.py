"""torch.distributed for the training loops: the process group from torchrun's environment, rank helpers,
the few collectives the loops need, and :func:`launch` (``gebm fit --nproc N``).

A script started by ``torchrun --nproc_per_node N script.py`` (or ``python -m torch.distributed.run``)
finds ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in its environment;
:func:`init` joins the process group they describe (gloo on the CPU, NCCL when the device is CUDA, each
rank on ``cuda:LOCAL_RANK``). The training functions call it themselves, so ``fit_kale(...)`` under
torchrun trains data-parallel with no other change. Without those variables (or with ``WORLD_SIZE=1``)
nothing is initialised and every helper answers for a single process: rank 0 of 1.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = [
    "all_gather",
    "any_true",
    "backend_for",
    "barrier",
    "broadcast_object",
    "broadcast_state",
    "init",
    "is_distributed",
    "is_main",
    "launch",
    "launched",
    "process_group",
    "rank",
    "rank_device",
    "shard",
    "shutdown",
    "world_size",
]


def is_distributed() -> bool:
    """Whether a process group with more than one rank is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """The number of ranks W (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """Whether this process is rank 0 (the one that writes checkpoints, run files and progress)."""
    return rank() == 0


def launched() -> bool:
    """Whether torchrun (or an equivalent launcher) started this process as one of several ranks."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ
    except ValueError:
        return False


def backend_for(device: str | torch.device | None) -> str:
    """``"nccl"`` for a CUDA device, ``"gloo"`` otherwise."""
    return "nccl" if device is not None and torch.device(device).type == "cuda" else "gloo"


def rank_device(device: str | torch.device | None) -> torch.device | None:
    """The device this rank trains on: ``"cuda"`` without an index becomes ``cuda:LOCAL_RANK`` under a launcher."""
    if device is None:
        return None
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and launched():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def init(device: str | torch.device | None = None) -> bool:
    """Join the process group described by the launcher's environment; True when training is distributed.

    Does nothing (and returns False) outside a launcher or with ``WORLD_SIZE=1``; does nothing more when
    the group is already initialised. The backend is NCCL when ``device`` is CUDA (this rank's GPU
    becomes ``cuda:LOCAL_RANK``), gloo otherwise. The group is destroyed at exit (or by :func:`shutdown`).

    Raises:
        RuntimeError: CUDA was asked for but this rank's GPU is not there.
    """
    if not dist.is_available():
        if launched():
            raise RuntimeError("this torch build has no torch.distributed; cannot train on several ranks.")
        return False
    if dist.is_initialized():
        return dist.get_world_size() > 1
    if not launched():
        return False
    backend = backend_for(device)
    if backend == "nccl":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if not torch.cuda.is_available() or local >= torch.cuda.device_count():
            raise RuntimeError(f"rank with LOCAL_RANK={local} asked for CUDA but sees "
                               f"{torch.cuda.device_count()} GPU(s).")
        torch.cuda.set_device(local)
    dist.init_process_group(backend=backend)
    atexit.register(shutdown)
    return dist.get_world_size() > 1


def shutdown() -> None:
    """Destroy the process group if one is initialised."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def process_group(device: str | torch.device | None = None) -> Iterator[bool]:
    """``with process_group(device) as distributed:`` :func:`init` on entry, :func:`shutdown` on exit."""
    try:
        yield init(device)
    finally:
        shutdown()


# ------------------------------------------------------------------------------------------ collectives
def _comm_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    """Wait for every rank (nothing to wait for in a single process)."""
    if is_distributed():
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def all_gather(values: Tensor) -> Tensor:
    """Every rank's ``values`` stacked: ``[W, *values.shape]`` on ``values``' device (``values[None]`` for W = 1)."""
    if not is_distributed():
        return values[None]
    dev = _comm_device()
    local = values.detach().to(dev).contiguous()
    out = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(out, local)
    return torch.stack(out).to(values.device)


def any_true(flag: bool) -> bool:
    """Whether ``flag`` is True on any rank (the same answer on every rank)."""
    if not is_distributed():
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def broadcast_object(obj: object, src: int = 0) -> object:
    """Rank ``src``'s ``obj`` (picklable) on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=_comm_device() if dist.get_backend() == "nccl" else None)
    return box[0]


@torch.no_grad()
def broadcast_state(module: nn.Module, src: int = 0) -> None:
    """Overwrite every parameter and buffer of ``module`` with rank ``src``'s values, in place."""
    if not is_distributed():
        return
    dev = _comm_device()
    for t in module.state_dict().values():  # the state_dict's tensors share storage with the module's
        if t.device == dev:
            dist.broadcast(t, src)
        else:
            moved = t.to(dev)
            dist.broadcast(moved, src)
            t.copy_(moved)


def shard(n: int, rank_: int | None = None, world: int | None = None) -> slice:
    """Rank ``rank_``'s contiguous share of ``n`` rows: the first ``n mod W`` ranks get one row more.

    The shares of ranks 0 … W−1 are consecutive and cover ``range(n)`` exactly (some are empty when n < W).
    """
    r = rank() if rank_ is None else rank_
    w = world_size() if world is None else world
    q, extra = divmod(n, w)
    start = r * q + min(r, extra)
    return slice(start, start + q + (1 if r < extra else 0))


# ------------------------------------------------------------------------------------------ launcher
def launch(argv: Sequence[str], nproc: int, *, module: str = "gebm_ppl") -> int:
    """Run ``python -m <module> <argv>`` on ``nproc`` local ranks with torch.distributed.run; its exit code.

    Uses torchrun's standalone rendezvous (a free port on this machine), so several launches can run at once.
    """
    if not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"'nproc' should be a positive integer. Got {nproc!r}.")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", module, *argv]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")  # torchrun's own default, said here so it does not warn
    return subprocess.call(cmd, env=env)
