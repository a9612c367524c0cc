"""Masked autoregressive flow base (zuko's MAF); its JAX twin is :mod:`gebm_ppl.jax.maf`.

G = T⁻¹ where T: data → noise is zuko's masked autoregressive flow of affine layers (Papamakarios et
al., 2017, https://arxiv.org/abs/1705.07057): each of ``transforms`` layers maps
x_i ↦ exp(a_i) x_i + b_i with (b_i, a_i) = φ_i(x_{<i}) from a masked MLP, the log-scale soft-clipped
to a_i = ã_i / (1 + |ã_i / log s|) (s = 10⁻³, zuko's minimum slope). Then
log g(x) = log N(T(x); 0, I) + Σ_layers Σ_i a_i(x). T is one network pass per layer; G needs
``passes`` (D when fully autoregressive, 2 for coupling) sequential passes per layer.

The torch base is a :class:`~gebm_ppl.TransformBase` around ``zuko.flows.MAF``; the JAX twin (named in
its registration, imported only by :func:`gebm_ppl.to_jax`) reproduces zuko's affine layers.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..registry import register_base
from ._autoregressive import check_autoregressive
from .transform import TransformBase

__all__ = ["MAF"]


@register_base(jax="gebm_ppl.jax.maf:convert_maf")
class MAF(TransformBase):
    """Masked autoregressive flow base G = T⁻¹, T = zuko's ``MAF`` (masked autoregressive affine layers).

    Args:
        dim: data dimension D (≥ 2).
        transforms: number of autoregressive affine layers (feature order reversed between layers).
        hidden_features: widths of each layer's masked MLP.
        passes: None (fully autoregressive: G takes D passes per layer, sampling is slow) or 2
            (coupling: G takes 2, sampling as fast as the density).

    Example:
        >>> base = MAF(2, transforms=2, hidden_features=(16,))
        >>> base.log_prob(base.sample(3)).shape
        torch.Size([3])
    """

    def __init__(
        self,
        dim: int,
        transforms: int = 5,
        hidden_features: Sequence[int] = (64, 64),
        passes: int | None = None,
    ):
        import zuko

        dim, transforms, hidden, passes = check_autoregressive("MAF", dim, transforms, hidden_features, passes)
        flow = zuko.flows.MAF(dim, transforms=transforms, hidden_features=hidden, passes=passes)
        super().__init__(flow, dim)
        self._config = dict(dim=dim, transforms=transforms, hidden_features=hidden, passes=passes)

    @property
    def config(self) -> dict:
        return {**self._config, "hidden_features": list(self._config["hidden_features"])}
