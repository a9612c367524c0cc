"""Bases G_θ: latent noise Z ~ N(0, I_d) pushed forward by a generator X = G_θ(Z).

The base contract (:class:`Base`, an abstract class; the rest of gebm_ppl relies on nothing else):

* ``dim`` (D, data dimension) and ``latent_dim`` (d, latent dimension; d = D for flows), set by the
  constructor (checked when the object is built);
* ``forward(z) -> x`` (abstract): the generator G_θ, ``[..., d] -> [..., D]``, differentiable in z and θ;
* ``sample_prior(n) -> [n, d]``: draws from the prior η = N(0, I_d) on the base's device and dtype
  (``sample_latent`` is its deprecated old name);
* ``sample(n) -> [n, D]``: ``forward(sample_prior(n))``;
* ``config``: the constructor's keyword arguments (plain Python values), so that
  ``type(base)(**base.config)`` rebuilds the architecture for checkpoints;
* ``has_density`` (class flag): bases with a density (invertible generators) implement
  ``inverse(x) -> (z, logabsdet)`` with ``logabsdet = log|det ∂G_θ⁻¹(x)/∂x|`` of shape ``[...]``, and
  get ``log_prob(x) = log η(G_θ⁻¹(x)) + logabsdet``. Bases without one raise
  :class:`DensityNotAvailable` there.

:class:`~gebm_ppl.bases.transform.TransformBase` turns any bijection into a density base by change of
variables: a ``torch.distributions.Transform`` (z → x), or a zuko flow / lazy transform (x → z, flipped
inside). nflows transforms also map data → noise; that flip (G = ``transform.inverse``) stays inside
:class:`~gebm_ppl.bases.realnvp.NflowsTransformBase`.

The concrete bases live beside this module, one per file: :mod:`.transform`, :mod:`.realnvp`,
:mod:`.affine`, :mod:`.nsf` and :mod:`.generators`; each registers itself with
:func:`gebm_ppl.registry.register_base`.
"""

from __future__ import annotations

import abc
import math
import warnings
from typing import Any

import torch
from torch import Tensor, nn

from .._validation import check_positive_int

__all__ = ["Base", "DensityNotAvailable", "standard_normal_log_prob"]


class DensityNotAvailable(NotImplementedError, TypeError):
    """The base is a generator without a tractable density (no inverse / log_prob).

    A ``NotImplementedError``; also a ``TypeError``, as it was before the base contract became abstract.
    """


class _BaseMeta(abc.ABCMeta):
    """Checks after construction that a base has set integer ``dim`` and ``latent_dim``."""

    def __call__(cls, *args, **kwargs):
        obj = super().__call__(*args, **kwargs)
        for name in ("dim", "latent_dim"):
            value = getattr(obj, name, None)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TypeError(
                    f"{cls.__name__} breaks the base contract: its constructor should set '{name}' to a positive "
                    f"integer (data dimension D and latent dimension d). Got {value!r}."
                )
        return obj


class Base(nn.Module, metaclass=_BaseMeta):
    """Abstract base G_θ = (G_θ)#η, η = N(0, I_d) (the contract is in the module docstring).

    Subclasses implement ``forward`` and set ``dim``/``latent_dim`` in their constructor; density
    bases also implement ``inverse`` (``has_density`` then defaults to True) and checkpointable
    ones ``config``. A base without parameters works: a non-persistent buffer carries its device/dtype.
    """

    dim: int
    latent_dim: int
    has_density: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # a flag set in the class (or an ancestor's) body wins; else: does the class provide an inverse?
        for k in cls.__mro__:
            if k is Base or ("has_density" in k.__dict__ and not k.__dict__.get("_has_density_derived", False)):
                break
        if k is Base:
            cls.has_density = cls.inverse is not Base.inverse
            cls._has_density_derived = True

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("_anchor", torch.empty(0), persistent=False)

    @abc.abstractmethod
    def forward(self, z: Tensor) -> Tensor:
        """G_θ(z): latent ``[..., d]`` → data ``[..., D]``."""

    @property
    def config(self) -> dict:
        """The constructor's keyword arguments (plain values); checkpoints need it."""
        raise TypeError(f"{type(self).__name__} does not define 'config', which checkpoints need.")

    def _param_like(self) -> Tensor:
        p = next(self.parameters(), None)
        if p is not None:
            return p
        anchor = getattr(self, "_anchor", None)
        return anchor if anchor is not None else torch.empty(0)

    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``[n, latent_dim]`` latent points from the prior η = N(0, I_d)."""
        n = check_positive_int(n, "n")
        p = self._param_like()
        return torch.randn(n, self.latent_dim, device=p.device, dtype=p.dtype, generator=generator)

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Deprecated alias of :meth:`sample_prior` (``gebm_ppl.sample_latent`` is MCMC on the posterior)."""
        warnings.warn(
            "Base.sample_latent is deprecated: use Base.sample_prior for z ~ N(0, I) "
            "(gebm_ppl.sample_latent is MCMC on the latent posterior).",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.sample_prior(n, generator=generator)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``[n, dim]`` points X = G_θ(Z), Z ~ η."""
        return self.forward(self.sample_prior(n, generator=generator))

    def inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """G⁻¹(x) and log|det ∂G⁻¹(x)/∂x| (density bases only)."""
        raise DensityNotAvailable(f"{type(self).__name__} is not invertible: it has no inverse or density.")

    def log_prob(self, x: Tensor) -> Tensor:
        """log g_θ(x) = log η(G⁻¹(x)) + log|det ∂G⁻¹/∂x|, shape ``[...]``."""
        z, logabsdet = self.inverse(x)
        return standard_normal_log_prob(z) + logabsdet


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """log N(z; 0, I) summed over the last dimension."""
    return -0.5 * (z * z).sum(-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)
