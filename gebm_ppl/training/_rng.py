"""Random streams of the training loops: counter-based generators and the global RNG states of a checkpoint.

Every draw is a pure function of (seed, stream, counter), so a resumed run redraws exactly what the
uninterrupted run would have drawn, whatever happened in between.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "STREAM_BASE",
    "STREAM_DATA",
    "STREAM_EVAL",
    "STREAM_NOISE",
    "STREAM_STEP",
    "get_rng_state",
    "prior_chunks",
    "prior_draw",
    "set_rng_state",
    "stream_generator",
]

STREAM_DATA, STREAM_STEP, STREAM_BASE, STREAM_EVAL, STREAM_NOISE = 1, 2, 3, 4, 5


def stream_generator(seed: int, stream: int, counter: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh ``torch.Generator`` seeded from ``(seed, stream, counter)`` by numpy's SeedSequence."""
    words = np.random.SeedSequence([seed, stream, counter]).generate_state(2, dtype=np.uint32)
    g = torch.Generator(device=device)
    g.manual_seed((int(words[0]) << 31) ^ int(words[1]))  # < 2**63
    return g


def prior_draw(base, n: int, generator: torch.Generator | None = None) -> Tensor:
    """z ~ N(0, I_d), ``[n, d]``, from the base's prior (``sample_prior``, or the older ``sample_latent``)."""
    draw = getattr(base, "sample_prior", None) or base.sample_latent
    return draw(n, generator=generator)


def prior_chunks(base, total: int, chunk: int, generator: torch.Generator | None = None):
    """Yield ``total`` prior draws z ~ N(0, I_d) in chunks of at most ``chunk`` rows, from ``generator``."""
    done = 0
    while done < total:
        n = min(chunk, total - done)
        yield prior_draw(base, n, generator=generator)
        done += n


def get_rng_state() -> dict:
    """Global RNG states (torch CPU, CUDA when initialised, numpy, python) as checkpoint-safe values."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return {
        "torch": torch.get_rng_state(),
        "cuda": cuda,
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": random.getstate(),
    }


def set_rng_state(state: dict) -> None:
    """Inverse of :func:`get_rng_state`."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["name"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
