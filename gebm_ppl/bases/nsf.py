"""Neural spline flow base (zuko's NSF); its JAX twin is :mod:`gebm_ppl.jax.nsf`.

G = T⁻¹ where T: data → noise is zuko's masked autoregressive flow of monotonic rational-quadratic
splines (Durkan et al., 2019, https://arxiv.org/abs/1906.04032): each of ``transforms`` layers maps
x_i ↦ s_i(x_i; φ_i(x_{<i})) with a spline s_i on [−B, B] (B = 5, identity outside) of ``bins`` bins
whose widths, heights and knot slopes φ_i come from a masked MLP. Then
log g(x) = log N(T(x); 0, I) + Σ_layers Σ_i log s_i'(x_i). T is one network pass per layer; G needs
``passes`` (D when fully autoregressive, 2 for coupling) sequential passes per layer.

The torch base is a :class:`~gebm_ppl.TransformBase` around ``zuko.flows.NSF``; the JAX twin
(named in its registration, imported only by :func:`gebm_ppl.to_jax`) reproduces zuko's spline
formulas, so NumPyro samplers can use it.
"""

from __future__ import annotations

from collections.abc import Sequence

from .._validation import check_positive_int
from ..registry import register_base
from ._autoregressive import check_autoregressive
from .transform import TransformBase

__all__ = ["NSF"]


@register_base(jax="gebm_ppl.jax.nsf:convert_nsf")
class NSF(TransformBase):
    """Neural spline flow base G = T⁻¹, T = zuko's ``NSF`` (masked autoregressive rational-quadratic splines).

    Args:
        dim: data dimension D (≥ 2).
        transforms: number of autoregressive spline layers (feature order reversed between layers).
        hidden_features: widths of each layer's masked MLP.
        bins: spline bins K per feature (spline on [−5, 5], identity outside: standardise the data).
        passes: None (fully autoregressive: G takes D passes per layer) or 2 (coupling: G takes 2).

    Example:
        >>> base = NSF(2, transforms=2, hidden_features=(16,), bins=4)
        >>> base.log_prob(base.sample(3)).shape
        torch.Size([3])
    """

    def __init__(
        self,
        dim: int,
        transforms: int = 3,
        hidden_features: Sequence[int] = (64, 64),
        bins: int = 8,
        passes: int | None = None,
    ):
        import zuko

        dim, transforms, hidden, passes = check_autoregressive("NSF", dim, transforms, hidden_features, passes)
        bins = check_positive_int(bins, "bins")
        if bins < 2:
            raise ValueError(f"'bins' should be >= 2. Got {bins}.")
        flow = zuko.flows.NSF(dim, transforms=transforms, hidden_features=hidden, bins=bins, passes=passes)
        super().__init__(flow, dim)
        self._config = dict(dim=dim, transforms=transforms, hidden_features=hidden, bins=bins, passes=passes)

    @property
    def config(self) -> dict:
        return {**self._config, "hidden_features": list(self._config["hidden_features"])}
