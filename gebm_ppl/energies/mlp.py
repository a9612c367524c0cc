"""The MLP energy (the paper's UCI energy), the smooth floor shared by energies, and the gradient penalty."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from .._layers import _activation, check_activation
from .._validation import check_finite_float, check_positive_float, check_positive_int
from ..kale import gradient_penalty  # the one penalty (issue 20): defined with the KALE maths
from ..registry import register_energy
from .base import Energy

__all__ = ["EnergyMLP", "check_activation", "check_optional_floor", "gradient_penalty", "smooth_floor"]

def smooth_floor(energy: Tensor, floor: float | None) -> Tensor:
    """E ↦ floor + softplus(E − floor): a smooth lower bound (≈ E above the floor); None leaves E as is."""
    if floor is None:
        return energy
    return floor + F.softplus(energy - floor)


def check_optional_floor(floor: object) -> float | None:
    """None, or a finite real number, as ``float``."""
    return None if floor is None else check_finite_float(floor, "floor")


@register_energy(jax="gebm_ppl.jax.convert:convert_energy_mlp")
class EnergyMLP(Energy):
    """Multi-layer perceptron energy, ``[..., D] → [...]``.

    As in Arbel et al. (2021): hidden widths (100, 200, 100) with LeakyReLU(0.1) by default.
    With ``spectral_norm=True`` every linear layer is spectrally normalised (Miyato et al., 2018),
    so E is ``lipschitz``-Lipschitz for 1-Lipschitz activations; ``"output"`` normalises only
    the last layer (the paper's code); ``False`` none. An optional smooth ``floor`` keeps
    E ≥ floor: E = floor + softplus(f(x) − floor).

    Args:
        dim: input dimension D.
        hidden: hidden layer widths.
        activation: one of leaky_relu, relu, elu, softplus, tanh, silu.
        spectral_norm: True, "output" or False.
        lipschitz: output multiplier (the Lipschitz bound when every layer is normalised).
        floor: optional lower bound of the energy.
        negative_slope: slope of leaky_relu.
    """

    def __init__(
        self,
        dim: int,
        hidden: Sequence[int] = (100, 200, 100),
        activation: str = "leaky_relu",
        spectral_norm: bool | str = True,
        lipschitz: float = 1.0,
        floor: float | None = None,
        negative_slope: float = 0.1,
    ):
        super().__init__()
        self.dim = check_positive_int(dim, "dim")
        hidden = [check_positive_int(h, "hidden") for h in hidden]
        check_activation(activation)
        if spectral_norm not in (True, False, "output"):
            raise ValueError(f"'spectral_norm' should be True, False or 'output'. Got {spectral_norm!r}.")
        check_positive_float(lipschitz, "lipschitz")
        check_finite_float(negative_slope, "negative_slope")
        floor = check_optional_floor(floor)
        self._config = dict(
            dim=self.dim,
            hidden=list(hidden),
            activation=activation,
            spectral_norm=spectral_norm,
            lipschitz=float(lipschitz),
            floor=None if floor is None else float(floor),
            negative_slope=float(negative_slope),
        )
        self.lipschitz = float(lipschitz)
        self.floor = floor
        widths = [self.dim, *hidden, 1]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            linear = nn.Linear(a, b)
            last = i == len(widths) - 2
            if spectral_norm is True or (spectral_norm == "output" and last):
                linear = _spectral_norm(linear)
            layers.append(linear)
            if not last:
                layers.append(_activation(activation, negative_slope))
        self.net = nn.Sequential(*layers)

    @property
    def config(self) -> dict:
        return dict(self._config)

    def forward(self, x: Tensor) -> Tensor:
        """E(x), shape ``[...]`` for x of shape ``[..., D]``."""
        if x.dim() < 1 or x.shape[-1] != self.dim:
            raise ValueError(f"EnergyMLP expected x of shape [..., {self.dim}]. Got shape {tuple(x.shape)}.")
        return smooth_floor(self.lipschitz * self.net(x).squeeze(-1), self.floor)
