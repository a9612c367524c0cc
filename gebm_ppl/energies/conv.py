"""Energies on images given as flat vectors ``[..., C·H·W] → [...]``: a spectrally normalised conv net."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from .._layers import _activation, check_activation
from .._validation import check_finite_float, check_positive_int
from ..bases.generators import check_image_shape
from ..registry import register_energy
from .base import Energy
from .mlp import check_optional_floor, smooth_floor

__all__ = ["ConvEnergy", "check_flat_images"]


def check_flat_images(x: object, image_shape: tuple[int, int, int], owner: str) -> Tensor:
    """Check that ``x`` is a tensor ``[..., C·H·W]`` of flattened ``image_shape`` images and return it."""
    dim = math.prod(image_shape)
    if not isinstance(x, Tensor):
        raise TypeError(f"{owner} expected a torch.Tensor of shape [..., {dim}]. Got {type(x).__name__}.")
    if x.dim() < 1 or x.shape[-1] != dim:
        raise ValueError(
            f"{owner} expected [..., {dim}] = flattened {tuple(image_shape)} (images are flat vectors "
            f"[..., C*H*W]). Got shape {tuple(x.shape)}."
        )
    return x


@register_energy(jax="gebm_ppl.jax.generators:convert_conv_energy")
class ConvEnergy(Energy):
    """Convolutional energy on flat images, E: ℝ^{C·H·W} → ℝ, floored smoothly: E = floor + softplus(f(x) − floor).

    f: a first convolution to ``channels[0]`` maps, then one 4×4 stride-2 convolution per further
    width (each halves the size), every one followed by the activation, then a linear layer to a
    scalar. The first convolution is 3×3 at stride 1 (``first_stride=1``, full resolution) or, as in a
    DCGAN discriminator (Radford et al., 2016), 4×4 at stride 2 (``first_stride=2``): every later layer
    then sees a quarter of the pixels, which makes the network about 4× cheaper (see
    docs/results/training_speed_images.md); the two are different networks (the first layer's kernel
    and the head's width differ), so a checkpoint records which one it holds.
    With ``spectral_norm`` every convolution and the linear layer are spectrally normalised (Miyato
    et al., 2018, https://arxiv.org/abs/1802.05957; the convolutions' reshaped kernels), as in
    the GEBM paper's image energies, whose output is floored at −10.

    Args:
        image_shape: ``(C, H, W)``; inputs are ``[..., C·H·W]``.
        channels: feature maps of the successive convolutions.
        spectral_norm: normalise every layer.
        floor: smooth lower bound of E, or None.
        activation: one of leaky_relu, relu, elu, softplus, tanh, silu.
        negative_slope: slope of leaky_relu.
        first_stride: 1 (3×3 stride-1 first convolution) or 2 (4×4 stride-2, DCGAN).

    Example:
        >>> import torch, gebm_ppl as gp
        >>> e = gp.ConvEnergy((1, 8, 8), channels=(8, 16))
        >>> e(torch.zeros(5, 64)).shape
        torch.Size([5])
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        channels: Sequence[int] = (32, 64),
        spectral_norm: bool = True,
        floor: float | None = -10.0,
        activation: str = "leaky_relu",
        negative_slope: float = 0.1,
        first_stride: int = 1,
    ):
        super().__init__()
        self.image_shape = check_image_shape(image_shape)
        if isinstance(channels, int) or not isinstance(channels, Sequence) or len(channels) == 0:
            raise ValueError(f"'channels' should be a non-empty sequence of widths. Got {channels!r}.")
        channels = [check_positive_int(c, "channels") for c in channels]
        if not isinstance(spectral_norm, bool):
            raise TypeError(f"'spectral_norm' should be True or False. Got {spectral_norm!r}.")
        check_activation(activation)
        self.floor = check_optional_floor(floor)
        negative_slope = check_finite_float(negative_slope, "negative_slope")
        if type(first_stride) is not int or first_stride not in (1, 2):
            raise ValueError(f"'first_stride' should be 1 (3×3 stride 1) or 2 (4×4 stride 2). Got {first_stride!r}.")
        self.dim = math.prod(self.image_shape)
        self._config = dict(
            image_shape=list(self.image_shape),
            channels=list(channels),
            spectral_norm=spectral_norm,
            floor=self.floor,
            activation=activation,
            negative_slope=negative_slope,
        )
        if first_stride != 1:  # the config of a first_stride=1 net stays as before (old checkpoints compare equal)
            self._config["first_stride"] = first_stride

        def sn(layer: nn.Module) -> nn.Module:
            return _spectral_norm(layer) if spectral_norm else layer

        c, h, w = self.image_shape
        layers: list[nn.Module] = []
        strided = len(channels) - 1 + (first_stride == 2)
        for i, (a, b) in enumerate(zip([c, *channels[:-1]], channels, strict=True)):
            if i == 0 and first_stride == 1:  # full resolution: 3×3, stride 1, padding 1 keeps (h, w)
                layers.append(sn(nn.Conv2d(a, b, kernel_size=3, padding=1)))
            else:  # 4×4, stride 2, padding 1: ⌊h/2⌋
                layers.append(sn(nn.Conv2d(a, b, kernel_size=4, stride=2, padding=1)))
                h, w = (h + 2 - 4) // 2 + 1, (w + 2 - 4) // 2 + 1
            layers.append(_activation(activation, negative_slope))
            if h < 1 or w < 1:
                raise ValueError(
                    f"ConvEnergy: {strided} stride-2 convolutions shrink {self.image_shape} below 1 pixel; "
                    "use fewer channel widths."
                )
        self.features = nn.Sequential(*layers)
        self.head = sn(nn.Linear(channels[-1] * h * w, 1))

    @property
    def config(self) -> dict:
        return dict(self._config)

    def forward(self, x: Tensor) -> Tensor:
        """E(x), shape ``[...]`` for flat images x of shape ``[..., C·H·W]``."""
        check_flat_images(x, self.image_shape, "ConvEnergy")
        flat = x.reshape(-1, *self.image_shape)
        e = self.head(self.features(flat).flatten(1)).squeeze(-1)
        return smooth_floor(e, self.floor).reshape(x.shape[:-1])
