"""The GEBM module: a base, an energy and the scalar log-partition c, with save/load."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import Tensor, nn

from ._io import atomic_torch_save
from ._validation import check_finite_float, check_points
from .bases import BASES
from .energies import ENERGIES
from .kale import LogPartitionEstimate, check_ess

__all__ = ["GEBM", "CHECKPOINT_FORMAT", "checkpoint_digest"]

CHECKPOINT_FORMAT = "gebm_ppl.GEBM"
_CHECKPOINT_VERSION = 1
_CHECKPOINT_KEYS = {"format", "version", "base", "energy", "state_dict", "extra", "digest"}


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
        p = base._param_like() if hasattr(base, "_param_like") else next(base.parameters(), None)
        dtype = p.dtype if p is not None else torch.get_default_dtype()  # a parameter-free Base: its buffer's
        c = check_finite_float(log_partition, "log_partition")
        self.log_partition = nn.Parameter(torch.tensor(c, dtype=dtype))

    @property
    def dim(self) -> int:
        return self.base.dim

    @property
    def latent_dim(self) -> int:
        return self.base.latent_dim

    def latent_energy(self, z: Tensor) -> Tensor:
        """E(G_θ(z)), ``[..., d] → [...]``."""
        # shape and type only: samplers evaluate U on diverging (non-finite) trajectories on purpose
        if not isinstance(z, Tensor) or not z.is_floating_point():
            what = f"dtype {z.dtype}" if isinstance(z, Tensor) else type(z).__name__
            raise TypeError(f"'z' should be a floating-point tensor of shape [..., {self.latent_dim}]. Got {what}.")
        if z.dim() < 1 or z.shape[-1] != self.latent_dim:
            raise ValueError(f"'z' should have shape [..., {self.latent_dim}]. Got shape {tuple(z.shape)}.")
        return self.energy(self.base(z))

    def latent_potential(self, z: Tensor, temperature: float = 1.0) -> Tensor:
        """U(z) = ½‖z‖² + T·E(G_θ(z)), the potential of the latent posterior ν(z) ∝ η(z) exp(−T·E(G_θ(z)))."""
        energy = self.latent_energy(z)  # checks z first
        return 0.5 * (z * z).sum(-1) + temperature * energy

    def unnormalized_log_prob(self, x: Tensor) -> Tensor:
        """log g_θ(x) − E(x), ``[..., D] → [...]``."""
        check_points(x, self.dim, dtype=self.log_partition.dtype)
        return self.base.log_prob(x) - self.energy(x)

    def log_prob(self, x: Tensor, log_partition: Tensor | float | None = None) -> Tensor:
        """log q(x) = log g_θ(x) − E(x) − A, with A = ``log_partition`` or, if None, the stored c."""
        if log_partition is None:
            a = self.log_partition
        elif isinstance(log_partition, Tensor):  # kept as a tensor: it may carry gradients
            if log_partition.dim() != 0 or not bool(torch.isfinite(log_partition)):
                raise ValueError(f"'log_partition' should be a finite scalar. Got {log_partition}.")
            a = log_partition
        else:
            a = check_finite_float(log_partition, "log_partition")
        return self.unnormalized_log_prob(x) - a

    def distribution(
        self, log_partition: LogPartitionEstimate | Tensor | float | None = None, num_proposals: int = 256,
        *, on_low_ess: str = "warn",
    ):  # fmt: skip
        """This GEBM as a Pyro :class:`~gebm_ppl.pyro.distribution.GEBMDistribution`.

        Args:
            log_partition: A for log q = log g − E − A: a :class:`~gebm_ppl.kale.LogPartitionEstimate`
                (from :func:`gebm_ppl.estimate_log_partition`; its ESS is checked), a float or 0-d
                tensor, or None (the GEBM's c).
            num_proposals: proposals per draw of the distribution's sampler.
            on_low_ess: the ESS rule (:func:`gebm_ppl.kale.check_ess`) for an estimate whose ESS is
                below :data:`~gebm_ppl.kale.MIN_ESS_FRACTION` of its draws: ``"warn"``
                (:class:`~gebm_ppl.kale.LowESSWarning`), ``"raise"``
                (:class:`~gebm_ppl.kale.DegenerateLogPartition`) or ``"ignore"``.
        """
        from .pyro.distribution import GEBMDistribution

        if isinstance(log_partition, LogPartitionEstimate):
            check_ess(log_partition, what="GEBM.distribution", on_low=on_low_ess, stacklevel=2,
                      hint="; log_prob would be off by the error of Â: draw more num_samples.")  # fmt: skip
            log_partition = log_partition.estimate
        return GEBMDistribution(self, log_partition=log_partition, num_proposals=num_proposals)

    # ---------------------------------------------------------------- checkpoints
    def checkpoint(self, **extra) -> dict:
        """The checkpoint dictionary: architecture configs, weights, ``extra`` (plain values) and a digest.

        ``digest`` is the :func:`checkpoint_digest` of everything else, so that a file damaged after
        saving (torch does not check the bytes of tensor data) fails to load instead of loading
        wrong weights.
        """
        ckpt = {
            "format": CHECKPOINT_FORMAT,
            "version": _CHECKPOINT_VERSION,
            "base": {"class": type(self.base).__name__, "config": self.base.config},
            "energy": {"class": type(self.energy).__name__, "config": self.energy.config},
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
            "extra": extra,
        }
        ckpt["digest"] = checkpoint_digest(ckpt)
        return ckpt

    def save(self, path: str | os.PathLike, **extra) -> None:
        """Write the checkpoint atomically to ``path`` (temporary file, fsync, rename)."""
        atomic_torch_save(self.checkpoint(**extra), path)

    @classmethod
    def from_checkpoint(cls, ckpt: dict, source: str = "checkpoint") -> GEBM:
        """Rebuild a GEBM from :meth:`checkpoint`'s dictionary.

        Raises:
            ValueError: not a GEBM checkpoint, a damaged one (digest mismatch, missing or malformed
                entries, non-finite weights), or weights that do not fit the architecture.
        """
        if not isinstance(ckpt, dict) or not _is(ckpt.get("format"), str, CHECKPOINT_FORMAT):
            raise ValueError(f"{source} is not a gebm_ppl GEBM checkpoint (no format tag {CHECKPOINT_FORMAT!r}).")
        if not _is(ckpt.get("version"), int, _CHECKPOINT_VERSION):
            version = ckpt.get("version")
            raise ValueError(f"{source} has checkpoint version {version!r}; expected {_CHECKPOINT_VERSION}.")
        unknown = sorted(map(str, set(ckpt) - _CHECKPOINT_KEYS))
        if unknown:  # e.g. a damaged 'digest' key, which would otherwise skip the integrity check
            raise ValueError(f"{source} is damaged: unexpected entries {unknown}.")
        for part, registry in (("base", BASES), ("energy", ENERGIES)):
            entry = ckpt.get(part)
            if not isinstance(entry, dict) or not isinstance(entry.get("class"), str):
                raise ValueError(f"{source} is damaged: its {part!r} entry should be a dict with a 'class' name.")
            if entry["class"] not in registry:
                raise ValueError(
                    f"{source} names {part} class {entry['class']!r}, which is not registered "
                    f"(known: {sorted(registry)}; register custom classes with register_{part})."
                )
        verify_digest(ckpt, source)
        state = ckpt.get("state_dict")
        if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
            raise ValueError(f"{source} is damaged: 'state_dict' should be a dict of tensors.")
        # Every width or layer count of a saved architecture is at most its number of stored weights: a larger
        # integer comes from a damaged or edited config, and building it could exhaust the memory.
        stored = sum(v.numel() for v in state.values())
        parts = {}
        for part, registry in (("base", BASES), ("energy", ENERGIES)):
            name, config = ckpt[part]["class"], ckpt[part].get("config")
            if not isinstance(config, dict) or not all(isinstance(k, str) for k in config):
                raise ValueError(f"{source} is damaged: the {part} 'config' should be a dict of keyword arguments.")
            too_big = [v for v in _integers(config) if v > stored]
            if too_big:
                raise ValueError(
                    f"{source} is damaged: the {part} config holds {too_big[0]}, more than the {stored} weights "
                    "stored with it."
                )
            try:
                parts[part] = registry[name](**config)
            except (TypeError, ValueError, RuntimeError) as e:
                raise ValueError(f"{source}: cannot rebuild the {part} {name} from its config {config!r}: {e}") from e
        try:
            gebm = cls(parts["base"], parts["energy"])
        except (TypeError, ValueError) as e:
            raise ValueError(f"{source}: {e}") from e
        c = state.get("log_partition")
        if c is None or c.dim() != 0 or not c.is_floating_point():
            raise ValueError(f"{source} is damaged: 'state_dict' has no scalar floating-point 'log_partition'.")
        bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
        if bad:
            raise ValueError(f"{source} holds NaN or inf weights (in {bad[:3]}); it cannot define a model.")
        gebm.to(c.dtype)
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



# ---------------------------------------------------------------------------- integrity
def checkpoint_digest(obj: object) -> str:
    """SHA-256 of a checkpoint's content: tensors by dtype, shape and bytes; dicts in sorted key order.

    Lists and tuples hash alike, so the digest survives a ``torch.save`` / ``torch.load`` round trip.
    """
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def verify_digest(ckpt: dict, source: str, required: bool = False) -> None:
    """Raise ValueError if ``ckpt`` holds a ``digest`` that its other entries do not match (or, if
    ``required``, holds none)."""
    digest = ckpt.get("digest")
    if digest is None:
        if required:
            raise ValueError(
                f"{source} has no integrity digest: it was written by an older gebm_ppl or edited after saving."
            )
        return  # a GEBM checkpoint written before digests existed
    body = {k: v for k, v in ckpt.items() if k != "digest"}
    try:
        actual = checkpoint_digest(body)
    except Exception as e:  # an object the digest cannot read: not a file we wrote
        raise ValueError(f"{source} is damaged: its content cannot be read back ({type(e).__name__}: {e}).") from e
    if not _is(digest, str, actual):
        raise ValueError(
            f"{source} is damaged: its content does not match the SHA-256 digest it was saved with "
            "(the file changed after saving)."
        )


def _integers(value: object) -> list[int]:
    """All integers (not booleans) in a nested config of dicts, lists and tuples."""
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, dict):
        return [i for v in value.values() for i in _integers(v)]
    if isinstance(value, list | tuple):
        return [i for v in value for i in _integers(v)]
    return []


def _is(value: object, kind: type, expected: object) -> bool:
    """``value == expected`` for a value of type ``kind`` (never a tensor's elementwise comparison)."""
    return isinstance(value, kind) and not isinstance(value, bool) and value == expected


def _feed(h, obj: object) -> None:
    if isinstance(obj, Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}:".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}:".encode())
        for k, v in sorted(obj.items(), key=lambda kv: (type(kv[0]).__name__, repr(kv[0]))):
            _feed(h, k)
            _feed(h, v)
    elif isinstance(obj, list | tuple):
        h.update(f"L{len(obj)}:".encode())
        for v in obj:
            _feed(h, v)
    elif isinstance(obj, str):
        data = obj.encode("utf-8", "surrogatepass")
        h.update(f"S{len(data)}:".encode() + data)
    else:  # None, bool, int, float, torch.dtype, ...
        h.update(f"{type(obj).__name__}:{obj!r};".encode())
