"""Reference flows for the UCI benchmark: nflows MAF and an autoregressive rational-quadratic spline flow.

Each is a small ``nn.Module`` adapter with ``dim``, ``config``, ``log_prob(x) -> [N]`` and
``sample(n)``, so that :func:`gebm_ppl.fit_mle` trains it like any base.
"""

from __future__ import annotations

import torch
from nflows.distributions import StandardNormal
from nflows.flows import Flow, MaskedAutoregressiveFlow
from nflows.transforms import (
    CompositeTransform,
    MaskedPiecewiseRationalQuadraticAutoregressiveTransform,
    ReversePermutation,
)
from torch import Tensor, nn

__all__ = ["FLOWS", "MAF", "NSF"]


class _FlowAdapter(nn.Module):
    """Wraps an nflows ``Flow``: ``log_prob(x)`` ``[N, D] → [N]``, ``sample(n)`` ``→ [n, D]``."""

    flow: Flow

    def __init__(self, dim: int, **config):
        super().__init__()
        self.dim = int(dim)
        self._config = {"dim": self.dim, **config}

    @property
    def config(self) -> dict:
        return dict(self._config)

    def log_prob(self, x: Tensor) -> Tensor:
        return self.flow.log_prob(x)

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        return self.flow.sample(n)


class MAF(_FlowAdapter):
    """Masked autoregressive flow (Papamakarios et al., 2017, https://arxiv.org/abs/1705.07057).

    nflows' ``MaskedAutoregressiveFlow``: ``num_layers`` MADE affine layers with reversed orders
    between them, each with ``num_blocks`` residual blocks of width ``hidden_features``.
    """

    def __init__(self, dim: int, hidden_features: int = 128, num_layers: int = 5, num_blocks: int = 2):
        super().__init__(dim, hidden_features=hidden_features, num_layers=num_layers, num_blocks=num_blocks)
        self.flow = MaskedAutoregressiveFlow(
            features=dim, hidden_features=hidden_features, num_layers=num_layers, num_blocks_per_layer=num_blocks
        )


class NSF(_FlowAdapter):
    """Autoregressive neural spline flow (Durkan et al., 2019, https://arxiv.org/abs/1906.04032).

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
        super().__init__(
            dim,
            hidden_features=hidden_features,
            num_layers=num_layers,
            num_blocks=num_blocks,
            num_bins=num_bins,
            tail_bound=float(tail_bound),
        )
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
        self.flow = Flow(CompositeTransform(layers), StandardNormal([dim]))


FLOWS: dict[str, type[_FlowAdapter]] = {"maf": MAF, "nsf": NSF}
