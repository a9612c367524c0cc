"""Implicit generator bases G_θ: ℝᵈ → ℝᴰ without a density (d ≪ D): an MLP and a DCGAN-style conv generator.

A generator base defines the base G = (G_θ)#η, η = N(0, I_d), only through samples: it has no
inverse and no density when d < D (G is then concentrated on a d-dimensional manifold). Everything
a GEBM dQ ∝ exp(−E) dG needs from it is G itself: the log-partition estimate
Â = logmeanexp(−E(G(z))), KALE training, sampling–importance–resampling and MCMC in latent space on
U(z) = ½‖z‖² + E(G(z)). ``log_prob`` and ``inverse`` raise :class:`~gebm_ppl.DensityNotAvailable`,
and so does every data-space density built on them (``GEBM.log_prob``, ``unnormalized_log_prob``,
``GEBMDistribution.log_prob``): use the latent potential, KALE or samples instead.

Images are flat vectors ``[..., C·H·W]`` in and out (pixel values in [−1, 1] with the tanh output);
``image_shape = (C, H, W)`` is kept so that callers can reshape.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from .._layers import _activation, check_activation
from .._validation import check_positive_int
from ..registry import register_base
from .base import Base, DensityNotAvailable

__all__ = ["ConvGenerator", "MLPGenerator", "check_image_shape"]

_OUTPUTS = ("tanh", "identity")


def check_image_shape(image_shape: object, name: str = "image_shape") -> tuple[int, int, int]:
    """``(C, H, W)`` of positive integers, as a tuple."""
    if not isinstance(image_shape, list | tuple) or len(image_shape) != 3:
        raise ValueError(f"'{name}' should be (channels, height, width). Got {image_shape!r}.")
    return tuple(check_positive_int(v, name) for v in image_shape)  # type: ignore[return-value]


def _check_output(output: object) -> str:
    if output not in _OUTPUTS:
        raise ValueError(f"'output' should be one of {list(_OUTPUTS)}. Got {output!r}.")
    return str(output)


def _no_density(base: Base, what: str) -> DensityNotAvailable:
    return DensityNotAvailable(
        f"{type(base).__name__} is an implicit generator (latent_dim {base.latent_dim} → dim {base.dim}): it has "
        f"no {what} and no density, so log_prob / unnormalized_log_prob are undefined in data space. Use what needs "
        "only samples of G: gp.estimate_log_partition (Â), KALE (gp.fit_adversarial, gp.kale_objective), "
        "GEBMDistribution.sample (SIR), or MCMC in latent space (gp.sample_latent, gp.GEBMReparam)."
    )


class _Generator(Base):
    """Shared part of the generator bases: latent checks, flat outputs and the missing density."""

    has_density = False
    dim: int
    latent_dim: int
    image_shape: tuple[int, int, int] | None

    @property
    def config(self) -> dict:
        return dict(self._config)

    def _check_latent(self, z: Tensor) -> Tensor:
        if not isinstance(z, Tensor) or not z.is_floating_point():
            what = f"dtype {z.dtype}" if isinstance(z, Tensor) else type(z).__name__
            raise TypeError(
                f"{type(self).__name__} expects a floating-point z of shape [..., {self.latent_dim}]. Got {what}."
            )
        if z.dim() < 1 or z.shape[-1] != self.latent_dim:
            raise ValueError(
                f"{type(self).__name__} expected z of shape [..., {self.latent_dim}] (its latent_dim). "
                f"Got shape {tuple(z.shape)}."
            )
        return z.reshape(-1, self.latent_dim)

    def _net(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, z: Tensor) -> Tensor:
        """G_θ(z): latent ``[..., d]`` → flat data ``[..., D]``."""
        flat = self._check_latent(z)
        return self._net(flat).reshape(*z.shape[:-1], self.dim)

    def inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        raise _no_density(self, "inverse")

    def log_prob(self, x: Tensor) -> Tensor:
        raise _no_density(self, "inverse G⁻¹")


@register_base(jax="gebm_ppl.jax.generators:convert_mlp_generator")
class MLPGenerator(_Generator):
    """MLP generator G_θ(z) = out(W_L σ(… σ(W_1 z + b_1) …) + b_L), ``[..., d] → [..., D]``, without a density.

    Args:
        latent_dim: d, the dimension of the latent noise z ~ N(0, I_d).
        dim: D, the data dimension (C·H·W for images).
        hidden: hidden layer widths.
        activation: hidden activation (leaky_relu, relu, elu, softplus, tanh, silu).
        output: ``"tanh"`` (outputs in (−1, 1), for images) or ``"identity"``.
        image_shape: optional ``(C, H, W)`` with C·H·W = D, kept for reshaping images.
        negative_slope: slope of leaky_relu.

    Example:
        >>> import gebm_ppl as gp
        >>> g = gp.MLPGenerator(4, 64, hidden=(32,), image_shape=(1, 8, 8))
        >>> g.sample(3).shape
        torch.Size([3, 64])
    """

    def __init__(
        self,
        latent_dim: int,
        dim: int,
        hidden: Sequence[int] = (64, 64),
        activation: str = "relu",
        output: str = "tanh",
        image_shape: Sequence[int] | None = None,
        negative_slope: float = 0.2,
    ):
        super().__init__()
        self.latent_dim = check_positive_int(latent_dim, "latent_dim")
        self.dim = check_positive_int(dim, "dim")
        if isinstance(hidden, int) or not isinstance(hidden, Sequence):
            raise TypeError(f"'hidden' should be a sequence of widths. Got {hidden!r}.")
        hidden = [check_positive_int(h, "hidden") for h in hidden]
        check_activation(activation)
        self.output = _check_output(output)
        self.image_shape = None if image_shape is None else check_image_shape(image_shape)
        if self.image_shape is not None and math.prod(self.image_shape) != self.dim:
            raise ValueError(
                f"'image_shape' {self.image_shape} has {math.prod(self.image_shape)} pixels but dim = {self.dim}."
            )
        self._config = dict(
            latent_dim=self.latent_dim,
            dim=self.dim,
            hidden=list(hidden),
            activation=activation,
            output=output,
            image_shape=None if self.image_shape is None else list(self.image_shape),
            negative_slope=float(negative_slope),
        )
        widths = [self.latent_dim, *hidden, self.dim]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            layers.append(nn.Linear(a, b))
            if i < len(widths) - 2:
                layers.append(_activation(activation, float(negative_slope)))
        if self.output == "tanh":
            layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)

    def _net(self, z: Tensor) -> Tensor:
        return self.net(z)


@register_base(jax="gebm_ppl.jax.generators:convert_conv_generator")
class ConvGenerator(_Generator):
    """DCGAN-style generator (Radford et al., 2016, https://arxiv.org/abs/1511.06434), ``[..., d] → [..., C·H·W]``.

    z → Linear → ``channels[0]`` maps of size (H/2ᵏ, W/2ᵏ) → k = ``len(channels) − 1`` transposed
    convolutions (kernel 4, stride 2, padding 1: each doubles the size) → 3×3 convolution to C
    channels → tanh. ReLU after every layer but the last, with BatchNorm before it when
    ``batch_norm``. H and W must be divisible by 2ᵏ: (8, 8) and (28, 28) work with the default
    three channel widths (2×2 → 8×8, 7×7 → 28×28). No density (see the module docstring).

    Args:
        latent_dim: d.
        image_shape: ``(C, H, W)``.
        channels: feature maps after the linear layer and after each transposed convolution.
        batch_norm: BatchNorm (train-mode batch statistics, eval-mode running statistics).
        output: ``"tanh"`` or ``"identity"``.

    Example:
        >>> import gebm_ppl as gp
        >>> g = gp.ConvGenerator(8, image_shape=(1, 28, 28), channels=(16, 8, 4))
        >>> g.sample(2).shape
        torch.Size([2, 784])
    """

    def __init__(
        self,
        latent_dim: int,
        image_shape: Sequence[int] = (1, 8, 8),
        channels: Sequence[int] = (64, 32, 16),
        batch_norm: bool = False,
        output: str = "tanh",
    ):
        super().__init__()
        self.latent_dim = check_positive_int(latent_dim, "latent_dim")
        self.image_shape = check_image_shape(image_shape)
        if isinstance(channels, int) or not isinstance(channels, Sequence) or len(channels) == 0:
            raise ValueError(f"'channels' should be a non-empty sequence of widths. Got {channels!r}.")
        channels = [check_positive_int(c, "channels") for c in channels]
        if not isinstance(batch_norm, bool):
            raise TypeError(f"'batch_norm' should be True or False. Got {batch_norm!r}.")
        self.output = _check_output(output)
        c_out, h, w = self.image_shape
        k = len(channels) - 1
        if h % 2**k or w % 2**k:
            raise ValueError(
                f"ConvGenerator with {len(channels)} channel widths upsamples {k} times (×{2**k}): the image "
                f"height and width must be divisible by {2**k}. Got image_shape {self.image_shape}; "
                "use fewer channel widths."
            )
        self.dim = c_out * h * w
        self.start = (channels[0], h // 2**k, w // 2**k)
        self._config = dict(
            latent_dim=self.latent_dim,
            image_shape=list(self.image_shape),
            channels=list(channels),
            batch_norm=batch_norm,
            output=output,
        )
        self.project = nn.Linear(self.latent_dim, math.prod(self.start), bias=not batch_norm)
        layers: list[nn.Module] = []
        if batch_norm:
            layers.append(nn.BatchNorm2d(channels[0]))
        layers.append(nn.ReLU())
        for a, b in zip(channels[:-1], channels[1:], strict=True):
            layers.append(nn.ConvTranspose2d(a, b, kernel_size=4, stride=2, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(b))
            layers.append(nn.ReLU())
        layers.append(nn.Conv2d(channels[-1], c_out, kernel_size=3, padding=1))
        if self.output == "tanh":
            layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)

    def _net(self, z: Tensor) -> Tensor:
        return self.net(self.project(z).reshape(-1, *self.start)).reshape(z.shape[0], self.dim)
