"""nflows reference flows for the UCI benchmark: MAF and an autoregressive rational-quadratic spline flow.

The benchmark builds every flow from a configuration table with :func:`gebm_ppl.runs.build_base`, so any
registered base works (``class = "MAF"`` / ``"NSF"``: the library's zuko flows). The two nflows flows here
are registered on import as ``"NflowsMAF"`` and ``"NflowsNSF"`` (the classes of a ``[maf]`` / ``[nsf]``
table without ``class``, as older configurations are written). Without a JAX twin, they serve torch only.

Both are gebm_ppl density bases (:class:`gebm_ppl.TransformBase`, like :class:`gebm_ppl.RealNVP`):
T: data → noise is the nflows composite transform, the generator is G = T⁻¹ and
log g(x) = log N(T(x); 0, I) + log|det ∂T(x)/∂x|. So :func:`gebm_ppl.fit_mle` trains them and they
serve as GEBM bases (``sample``, ``forward``, ``log_prob``); G is sequential, D network passes per
autoregressive layer, so sampling costs about D times a density evaluation.
"""

from __future__ import annotations

from nflows.transforms import (
    CompositeTransform,
    MaskedAffineAutoregressiveTransform,
    MaskedPiecewiseRationalQuadraticAutoregressiveTransform,
    ReversePermutation,
)

from gebm_ppl.bases.realnvp import NflowsTransformBase
from gebm_ppl.registry import register_base

__all__ = ["DEFAULT_CLASS", "FLOWS", "MAF", "NflowsMAF", "NflowsNSF"]


class _NflowsBase(NflowsTransformBase):
    """A density base from an nflows transform T (data → noise): G = T⁻¹; ``config`` rebuilds it."""

    def __init__(self, transform: CompositeTransform, dim: int, config: dict):
        super().__init__(transform, dim, direction="normalize")
        self._config = {"dim": int(dim), **config}


@register_base(name="NflowsMAF")
class NflowsMAF(_NflowsBase):
    """Masked autoregressive flow (Papamakarios et al., 2017, https://arxiv.org/abs/1705.07057).

    As nflows' ``MaskedAutoregressiveFlow``: ``num_layers`` × (reverse permutation, MADE affine layer
    with ``num_blocks`` residual blocks of width ``hidden_features``), on a standard normal.
    """

    def __init__(self, dim: int, hidden_features: int = 128, num_layers: int = 5, num_blocks: int = 2):
        layers = []
        for _ in range(num_layers):
            layers.append(ReversePermutation(dim))
            layers.append(MaskedAffineAutoregressiveTransform(features=dim, hidden_features=hidden_features,
                                                              num_blocks=num_blocks))  # fmt: skip
        super().__init__(CompositeTransform(layers), dim,
                         dict(hidden_features=hidden_features, num_layers=num_layers, num_blocks=num_blocks))


@register_base(name="NflowsNSF")
class NflowsNSF(_NflowsBase):
    """Autoregressive neural spline flow (Durkan et al., 2019, https://arxiv.org/abs/1906.04032), built on nflows.

    Named apart from the library's zuko-backed :class:`gebm_ppl.NSF` base, which is a different implementation.

    ``num_layers`` masked autoregressive rational-quadratic spline transforms (``num_bins`` bins on
    [−B, B], linear tails outside) with reversed orders between them, on a standard normal.
    """

    def __init__(
        self,
        dim: int,
        hidden_features: int = 128,
        num_layers: int = 5,
        num_blocks: int = 2,
        num_bins: int = 8,
        tail_bound: float = 5.0,
    ):
        layers = []
        for _ in range(num_layers):
            layers.append(
                MaskedPiecewiseRationalQuadraticAutoregressiveTransform(
                    features=dim,
                    hidden_features=hidden_features,
                    num_bins=num_bins,
                    tails="linear",
                    tail_bound=tail_bound,
                    num_blocks=num_blocks,
                )
            )
            layers.append(ReversePermutation(dim))
        config = dict(hidden_features=hidden_features, num_layers=num_layers, num_blocks=num_blocks,
                      num_bins=num_bins, tail_bound=float(tail_bound))  # fmt: skip
        super().__init__(CompositeTransform(layers), dim, config)


MAF = NflowsMAF  # the older name

FLOWS: dict[str, type[_NflowsBase]] = {"maf": NflowsMAF, "nsf": NflowsNSF}
DEFAULT_CLASS = {"maf": "NflowsMAF", "nsf": "NflowsNSF"}
"""The class of a ``[maf]`` / ``[nsf]`` benchmark table that names none."""
