"""RealNVP (Dinh et al., 2017) on nflows affine couplings, and the nflows adapter G = T⁻¹ it shares."""

from __future__ import annotations

from typing import Any

import torch
from nflows.transforms import AffineCouplingTransform, CompositeTransform
from torch import Tensor, nn

from .._validation import check_positive_float, check_positive_int
from ..registry import register_base
from .transform import TransformBase

__all__ = ["ExpTanhAffineCoupling", "NflowsTransformBase", "RealNVP"]


class _CouplingNet(nn.Module):
    """MLP for a coupling layer's (shift, unconstrained scale); ignores the nflows ``context``."""

    def __init__(self, in_features: int, out_features: int, hidden_features: int, num_hidden_layers: int):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for _ in range(num_hidden_layers):
            layers += [nn.Linear(width, hidden_features), nn.ReLU()]
            width = hidden_features
        last = nn.Linear(width, out_features)
        nn.init.zeros_(last.weight)  # each coupling starts as the identity map
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(*layers, last)

    def forward(self, inputs: Tensor, context: Tensor | None = None) -> Tensor:
        return self.net(inputs)


class ExpTanhAffineCoupling(AffineCouplingTransform):
    """Affine coupling with scale = exp(b·tanh(u/b)): log-scale softly bounded in (−b, b).

    This is the scale of Dinh et al. (RealNVP) and of the GEBM paper's flow; nflows' own
    ``AffineCouplingTransform`` uses sigmoid(u + 2) + 1e-3, which can only contract data → noise.
    """

    def __init__(self, mask: Tensor, transform_net_create_fn, scale_bound: float = 3.0):
        self.scale_bound = float(scale_bound)
        super().__init__(mask, transform_net_create_fn)

    def _scale_and_shift(self, transform_params: Tensor) -> tuple[Tensor, Tensor]:
        unconstrained_scale = transform_params[:, self.num_transform_features :, ...]
        shift = transform_params[:, : self.num_transform_features, ...]
        b = self.scale_bound
        return torch.exp(b * torch.tanh(unconstrained_scale / b)), shift


class NflowsTransformBase(TransformBase):
    """A :class:`TransformBase` on an nflows transform T: data → noise, so that G = T⁻¹; ``config`` from ``_config``.

    The shared adapter of :class:`RealNVP` and of nflows flows built elsewhere (e.g. the benchmark's MAF and NSF).
    """

    @property
    def config(self) -> dict:
        return dict(self._config)

    @staticmethod
    def _adopt(transform: Any, direction: str | None) -> tuple[Any, str, bool]:
        return transform, "normalize", False  # an nflows transform (data → noise), flipped below

    def _generate(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return self.transform.inverse(z)

    def _normalize(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.transform.forward(x)


@register_base(jax="gebm_ppl.jax.convert:convert_realnvp")
class RealNVP(NflowsTransformBase):
    """RealNVP flow (Dinh et al., 2017, https://arxiv.org/abs/1605.08803) built from nflows couplings.

    ``num_layers`` affine coupling layers with alternating masks (even / odd features), each
    conditioned by an MLP of ``num_hidden_layers`` hidden layers of width ``hidden_features``.
    The generator is G = T⁻¹ where T: data → noise is the nflows composite transform.

    Args:
        dim: data dimension D (≥ 2).
        hidden_features: width of the coupling MLPs.
        num_layers: number of coupling layers.
        num_hidden_layers: hidden layers per coupling MLP.
        scale: ``"exp_tanh"`` (default, scale = exp(b·tanh(u/b))) or ``"sigmoid"`` (nflows' own).
        scale_bound: b for ``"exp_tanh"``.

    Example:
        >>> base = RealNVP(3, hidden_features=16, num_layers=2)
        >>> base.log_prob(base.sample(5)).shape
        torch.Size([5])
    """

    def __init__(
        self,
        dim: int,
        hidden_features: int = 128,
        num_layers: int = 5,
        num_hidden_layers: int = 2,
        scale: str = "exp_tanh",
        scale_bound: float = 3.0,
    ):
        dim = check_positive_int(dim, "dim")
        if dim < 2:
            raise ValueError(f"RealNVP needs 'dim' >= 2 (a coupling layer splits the features). Got {dim}.")
        check_positive_int(hidden_features, "hidden_features")
        check_positive_int(num_layers, "num_layers")
        if isinstance(num_hidden_layers, bool) or not isinstance(num_hidden_layers, int) or num_hidden_layers < 0:
            raise ValueError(f"'num_hidden_layers' should be an integer >= 0. Got {num_hidden_layers!r}.")
        check_positive_float(scale_bound, "scale_bound")
        if scale not in ("exp_tanh", "sigmoid"):
            raise ValueError(f"'scale' should be 'exp_tanh' or 'sigmoid'. Got {scale!r}.")
        config = dict(
            dim=dim,
            hidden_features=hidden_features,
            num_layers=num_layers,
            num_hidden_layers=num_hidden_layers,
            scale=scale,
            scale_bound=float(scale_bound),
        )

        def net(i: int, o: int) -> nn.Module:
            return _CouplingNet(i, o, hidden_features, num_hidden_layers)

        layers = []
        for k in range(num_layers):
            mask = (torch.arange(dim) + k) % 2
            if scale == "exp_tanh":
                layers.append(ExpTanhAffineCoupling(mask, net, scale_bound=scale_bound))
            else:
                layers.append(AffineCouplingTransform(mask, net))
        super().__init__(CompositeTransform(layers), dim, direction="normalize")
        self._config = config

    def forward(self, z: Tensor) -> Tensor:
        """G(z): latent ``[..., D]`` → data ``[..., D]``."""
        flat = z.reshape(-1, self.dim)
        x, _ = self.transform.inverse(flat)
        return x.reshape(z.shape)
