"""TransformBase: a density base from any bijection (torch Transform, zuko flow or lazy transform)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .._validation import check_points, check_positive_int
from .base import Base

__all__ = ["TransformBase"]


def _sum_to_batch(ladj: Tensor, v: Tensor) -> Tensor:
    """A Jacobian term ``[N]`` (event-level) from a transform's ``[N]`` or elementwise ``[N, D]``."""
    return ladj.sum(-1) if ladj.dim() == v.dim() else ladj


class TransformBase(Base):
    """Density base from a bijection T: log g(x) = log η(G⁻¹(x)) + log|det ∂G⁻¹(x)/∂x| (change of variables).

    ``transform`` is either

    * a ``torch.distributions.Transform`` on real vectors: by default G = T (latent z → data x,
      torch's ``TransformedDistribution`` convention);
    * a zuko flow (``zuko.flows.Flow``, e.g. ``zuko.flows.NSF(D)``, whose prior must be N(0, I)) or a
      zuko ``LazyTransform``: these map data → noise, so by default G = T⁻¹. Their parameters are
      parameters of the base (trained by :func:`gebm_ppl.fit_mle` / :func:`gebm_ppl.fit_kale`).

    ``direction`` overrides the default: ``"generate"`` (T maps z → x) or ``"normalize"`` (T maps x → z);
    pass ``direction="normalize"`` for an already built zuko transform (``flow.transform()``), which maps x → z.
    A plain torch transform has no parameters; its tensors do not follow ``.to()``. The base has no
    ``config`` (checkpoints need a subclass that defines one, such as :class:`RealNVP` or :class:`gebm_ppl.NSF`).

    Example:
        >>> from torch.distributions import AffineTransform
        >>> base = TransformBase(AffineTransform(torch.ones(2), 2.0 * torch.ones(2)), dim=2)
        >>> base.log_prob(torch.zeros(3, 2)).shape
        torch.Size([3])
    """

    has_density = True

    def __init__(self, transform: Any, dim: int, direction: str | None = None):
        super().__init__()
        dim = check_positive_int(dim, "dim")
        self.dim = self.latent_dim = dim
        transform, self.direction, self._lazy = self._adopt(transform, direction)
        self.transform = transform

    @staticmethod
    def _adopt(transform: Any, direction: str | None) -> tuple[Any, str, bool]:
        """(what to store, direction, whether calling it yields the transform)."""
        if direction not in (None, "generate", "normalize"):
            raise ValueError(f"'direction' should be None, 'generate' or 'normalize'. Got {direction!r}.")
        try:
            import zuko
        except ImportError:  # pragma: no cover - zuko is a dependency
            zuko = None
        if zuko is not None and isinstance(transform, zuko.flows.Flow):
            _check_standard_normal(transform)
            return transform.transform, direction or "normalize", True
        if zuko is not None and isinstance(transform, zuko.flows.LazyTransform):
            return transform, direction or "normalize", True
        if isinstance(transform, torch.distributions.Transform):  # a built zuko transform too: say direction
            return transform, direction or "generate", False
        raise TypeError(
            "'transform' should be a torch.distributions.Transform, a zuko flow or a zuko LazyTransform. "
            f"Got {type(transform).__name__}."
        )

    def _current(self) -> torch.distributions.Transform:
        return self.transform() if self._lazy else self.transform

    @staticmethod
    def _run(t: torch.distributions.Transform, v: Tensor) -> tuple[Tensor, Tensor]:
        if hasattr(t, "call_and_ladj"):  # zuko: value and log|det J| in one pass
            y, ladj = t.call_and_ladj(v)
        else:
            y = t(v)
            ladj = t.log_abs_det_jacobian(v, y)
        return y, _sum_to_batch(ladj, v)

    def _generate(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """G(z) and log|det ∂G/∂z| for flat ``z`` ``[N, D]``."""
        t = self._current()
        return self._run(t if self.direction == "generate" else t.inv, z)

    def _normalize(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """G⁻¹(x) and log|det ∂G⁻¹/∂x| for flat ``x`` ``[N, D]``."""
        t = self._current()
        return self._run(t.inv if self.direction == "generate" else t, x)

    def _check_latent(self, z: Tensor) -> None:
        # shape and type only: samplers evaluate G on diverging (non-finite) trajectories on purpose
        if not isinstance(z, Tensor) or z.dim() < 1 or z.shape[-1] != self.dim:
            shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise ValueError(f"{type(self).__name__} expects z of shape [..., {self.dim}]. Got {shape}.")

    def forward(self, z: Tensor) -> Tensor:
        """G(z): latent ``[..., D]`` → data ``[..., D]``."""
        return self.forward_and_log_det(z)[0]

    def forward_and_log_det(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """G(z) and log|det ∂G(z)/∂z|."""
        self._check_latent(z)
        x, logabsdet = self._generate(z.reshape(-1, self.dim))
        return x.reshape(z.shape), logabsdet.reshape(z.shape[:-1])

    def inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """G⁻¹(x) and log|det ∂G⁻¹(x)/∂x|, shapes ``[..., D]`` and ``[...]``."""
        check_points(x, self.dim, dtype=self._param_like().dtype)
        z, logabsdet = self._normalize(x.reshape(-1, self.dim))
        return z.reshape(x.shape), logabsdet.reshape(x.shape[:-1])


def _check_standard_normal(flow: nn.Module) -> None:
    """A zuko flow's prior should be N(0, I): the base contract fixes η."""
    try:
        prior = flow.base()
        loc, scale = prior.mean, prior.stddev
    except Exception:  # noqa: BLE001 - an unusual prior: say what we need
        loc = scale = None
    if loc is None or not (bool((loc == 0).all()) and bool((scale == 1).all())):
        raise ValueError("TransformBase needs a zuko flow whose prior is N(0, I) (as zuko's MAF/NSF have).")
