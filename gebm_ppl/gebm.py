"""The GEBM module: a base, an energy and the scalar log-partition c, with save/load."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn

from ._io import atomic_torch_save
from ._validation import check_points
from .bases import BASES
from .energies import ENERGIES

__all__ = ["GEBM", "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = "gebm_ppl.GEBM"
_CHECKPOINT_VERSION = 1


class GEBM(nn.Module):
    """Generalized Energy Based Model dQ(x) = exp(−E(x) − A) dG_θ(x) (Arbel, Zhou & Gretton, 2021).

    Holds the ``base`` G_θ (see :mod:`gebm_ppl.bases`), the ``energy`` E and the scalar parameter
    ``log_partition`` c, KALE's learned estimate of A = log E_η[exp(−E(G_θ(z)))].

    Args:
        base: a base following the base protocol.
        energy: an ``nn.Module`` mapping ``[..., D] → [...]``.
        log_partition: initial c.

    Reference:
        Arbel, Zhou & Gretton (2021) "Generalized Energy Based Models", ICLR,
        https://arxiv.org/abs/2003.05033
    """

    def __init__(self, base: nn.Module, energy: nn.Module, log_partition: float = 0.0):
        super().__init__()
        if not isinstance(base, nn.Module) or not hasattr(base, "dim"):
            raise TypeError(f"'base' should be a gebm_ppl base (nn.Module with 'dim'). Got {type(base).__name__}.")
        if not isinstance(energy, nn.Module):
            raise TypeError(f"'energy' should be an nn.Module. Got {type(energy).__name__}.")
        if getattr(energy, "dim", base.dim) != base.dim:
            raise ValueError(f"base and energy dimensions differ: base.dim = {base.dim}, energy.dim = {energy.dim}.")
        self.base = base
        self.energy = energy
        p = next(base.parameters(), None)
        dtype = p.dtype if p is not None else torch.get_default_dtype()
        self.log_partition = nn.Parameter(torch.tensor(float(log_partition), dtype=dtype))

    @property
    def dim(self) -> int:
        return self.base.dim

    @property
    def latent_dim(self) -> int:
        return self.base.latent_dim

    def latent_energy(self, z: Tensor) -> Tensor:
        """E(G_θ(z)), ``[..., d] → [...]``."""
        return self.energy(self.base(z))

    def latent_potential(self, z: Tensor, temperature: float = 1.0) -> Tensor:
        """U(z) = ½‖z‖² + T·E(G_θ(z)), the potential of the latent posterior ν(z) ∝ η(z) exp(−T·E(G_θ(z)))."""
        return 0.5 * (z * z).sum(-1) + temperature * self.latent_energy(z)

    def unnormalized_log_prob(self, x: Tensor) -> Tensor:
        """log g_θ(x) − E(x), ``[..., D] → [...]``."""
        check_points(x, self.dim)
        return self.base.log_prob(x) - self.energy(x)

    def log_prob(self, x: Tensor, log_partition: Tensor | float | None = None) -> Tensor:
        """log q(x) = log g_θ(x) − E(x) − A, with A = ``log_partition`` or, if None, the stored c."""
        a = self.log_partition if log_partition is None else log_partition
        return self.unnormalized_log_prob(x) - a

    def distribution(self, log_partition: Tensor | float | None = None, num_proposals: int = 256):
        """This GEBM as a Pyro :class:`~gebm_ppl.distribution.GEBMDistribution`."""
        from .distribution import GEBMDistribution

        return GEBMDistribution(self, log_partition=log_partition, num_proposals=num_proposals)

    # ---------------------------------------------------------------- checkpoints
    def checkpoint(self, **extra) -> dict:
        """The checkpoint dictionary: architecture configs, weights and ``extra`` (plain values)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "version": _CHECKPOINT_VERSION,
            "base": {"class": type(self.base).__name__, "config": self.base.config},
            "energy": {"class": type(self.energy).__name__, "config": self.energy.config},
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
            "extra": extra,
        }

    def save(self, path: str | os.PathLike, **extra) -> None:
        """Write the checkpoint atomically to ``path`` (temporary file, fsync, rename)."""
        atomic_torch_save(self.checkpoint(**extra), path)

    @classmethod
    def from_checkpoint(cls, ckpt: dict, source: str = "checkpoint") -> GEBM:
        """Rebuild a GEBM from :meth:`checkpoint`'s dictionary."""
        if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{source} is not a gebm_ppl GEBM checkpoint (no format tag {CHECKPOINT_FORMAT!r}).")
        if ckpt.get("version") != _CHECKPOINT_VERSION:
            version = ckpt.get("version")
            raise ValueError(f"{source} has checkpoint version {version!r}; expected {_CHECKPOINT_VERSION}.")
        parts = {}
        for part, registry in (("base", BASES), ("energy", ENERGIES)):
            name = ckpt[part]["class"]
            if name not in registry:
                raise ValueError(
                    f"{source} names {part} class {name!r}, which is not registered "
                    f"(known: {sorted(registry)}; register custom classes with register_{part})."
                )
            parts[part] = registry[name](**ckpt[part]["config"])
        gebm = cls(parts["base"], parts["energy"])
        state = ckpt["state_dict"]
        dtype = state["log_partition"].dtype
        gebm.to(dtype)
        try:
            gebm.load_state_dict(state)
        except RuntimeError as e:
            raise ValueError(f"{source}: weights do not match the architecture: {e}") from e
        return gebm

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu") -> GEBM:
        """Load a GEBM saved by :meth:`save`.

        Raises:
            FileNotFoundError: no file at ``path``.
            ValueError: the file is not a (readable) gebm_ppl GEBM checkpoint.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no GEBM checkpoint at {str(path)!r}.")
        try:
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as e:  # torch raises several types for torn or foreign files
            raise ValueError(f"{str(path)!r} is not a gebm_ppl GEBM checkpoint: {type(e).__name__}: {e}") from e
        return cls.from_checkpoint(ckpt, source=repr(str(path)))

