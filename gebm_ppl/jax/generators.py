"""JAX twins of the generator bases and the conv energy: pure functions of a static spec and a params pytree.

Mirrors :mod:`gebm_ppl.bases.generators` and :mod:`gebm_ppl.energies.conv`. Modules are read in eval
mode: BatchNorm becomes the affine map of its running statistics, (x − μ)/√(σ² + ε)·γ + β, and a
spectrally normalised layer contributes its normalised weight W/σ(W), so no power iteration runs.
Images are flat ``[..., C·H·W]`` in and out, as on the torch side.

Each spec has ``dim`` and ``latent_dim`` (bases) or ``dim`` (energies) and a method ``forward(params, z)``
(bases: G(z)) or ``energy(params, x)`` (energies); ``convert_*`` read a torch module into
``(spec, params)``.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from torch import nn

from ..bases.generators import ConvGenerator, MLPGenerator
from ..energies.conv import ConvEnergy
from ._nn import MLPOps, check_last_dim, mlp, softplus

__all__ = [
    "ConvEnergySpec",
    "ConvGeneratorSpec",
    "MLPGeneratorSpec",
    "convert_conv_energy",
    "convert_conv_generator",
    "convert_mlp_generator",
    "image_net",
]

# An image network is a tuple of ops ``(name, *static_args)`` applied in order to x [N, ...]:
#   ("linear",)                         x Wᵀ + b with the next {"weight": [out, in], "bias": [out] | None}
#   ("reshape", (C, H, W)) ("flatten",)
#   ("conv", stride, padding)           torch Conv2d with {"weight": [out, in, k, k], "bias"}
#   ("conv_transpose", stride, padding) torch ConvTranspose2d with {"weight": [in, out, k, k], "bias"}
#   ("batch_norm", eps)                 eval-mode BatchNorm2d with {"mean", "var", "weight", "bias"}
#   ("relu",) ("tanh",) ("leaky_relu", slope) ("elu", alpha) ("softplus", beta, threshold) ("silu",)
ImageOps = tuple[tuple[Any, ...], ...]
_DIMS = ("NCHW", "OIHW", "NCHW")


def _bias(x: jax.Array, b: jax.Array | None) -> jax.Array:
    return x if b is None else x + b[None, :, None, None]


def image_net(ops: ImageOps, params: list, x: jax.Array) -> jax.Array:
    """Apply the image-network ``ops`` with per-layer ``params`` to a batch ``x`` (first axis N)."""
    k = 0
    for op in ops:
        name = op[0]
        if name in ("linear", "conv", "conv_transpose", "batch_norm"):
            p = params[k]
            k += 1
        if name == "linear":
            x = x @ p["weight"].T
            if p["bias"] is not None:
                x = x + p["bias"]
        elif name == "conv":
            s, pad = op[1], op[2]
            x = jax.lax.conv_general_dilated(x, p["weight"], (s, s), [(pad, pad), (pad, pad)], dimension_numbers=_DIMS)
            x = _bias(x, p["bias"])
        elif name == "conv_transpose":
            # torch's transposed convolution = a convolution of the input dilated by the stride, with the
            # kernel flipped and its in/out axes swapped, padded by k − 1 − padding
            s, pad = op[1], op[2]
            w = p["weight"]
            size = w.shape[-1]
            kernel = jnp.flip(w, (2, 3)).transpose(1, 0, 2, 3)
            edge = size - 1 - pad
            x = jax.lax.conv_general_dilated(
                x, kernel, (1, 1), [(edge, edge), (edge, edge)], lhs_dilation=(s, s), dimension_numbers=_DIMS
            )
            x = _bias(x, p["bias"])
        elif name == "batch_norm":
            scale = p["weight"] / jnp.sqrt(p["var"] + op[1])
            x = (x - p["mean"][None, :, None, None]) * scale[None, :, None, None] + p["bias"][None, :, None, None]
        elif name == "reshape":
            x = x.reshape(x.shape[0], *op[1])
        elif name == "flatten":
            x = x.reshape(x.shape[0], -1)
        elif name == "relu":
            x = jax.nn.relu(x)
        elif name == "tanh":
            x = jnp.tanh(x)
        elif name == "leaky_relu":
            x = jnp.where(x >= 0, x, op[1] * x)
        elif name == "elu":
            x = jax.nn.elu(x, alpha=op[1])
        elif name == "softplus":
            x = softplus(x, op[1], op[2])
        elif name == "silu":
            x = jax.nn.silu(x)
        else:  # only reachable with a hand-made op list
            raise ValueError(f"unknown image-network op {name!r}.")
    return x


class MLPGeneratorSpec(NamedTuple):
    """Static structure of :class:`gebm_ppl.MLPGenerator` (params: ``{"net": [{"weight", "bias"}, ...]}``)."""

    latent_dim: int
    dim: int
    net: MLPOps

    def forward(self, params: dict, z: jax.Array) -> jax.Array:
        """G(z), ``[..., d] → [..., D]``."""
        check_last_dim(z, self.latent_dim, "z")
        return mlp(self.net, params["net"], z)


class ConvGeneratorSpec(NamedTuple):
    """Static structure of :class:`gebm_ppl.ConvGenerator` (params: ``{"net": [layer params, ...]}``)."""

    latent_dim: int
    image_shape: tuple[int, int, int]
    net: ImageOps

    @property
    def dim(self) -> int:
        return math.prod(self.image_shape)

    def forward(self, params: dict, z: jax.Array) -> jax.Array:
        """G(z), ``[..., d] → [..., C·H·W]``."""
        check_last_dim(z, self.latent_dim, "z")
        flat = z.reshape(-1, self.latent_dim)
        return image_net(self.net, params["net"], flat).reshape(*z.shape[:-1], self.dim)


class ConvEnergySpec(NamedTuple):
    """Static structure of :class:`gebm_ppl.ConvEnergy` (params: ``{"net": [layer params, ...]}``).

    E(x) = f(x), then with a floor E = floor + softplus(E − floor).
    """

    image_shape: tuple[int, int, int]
    net: ImageOps
    floor: float | None

    @property
    def dim(self) -> int:
        return math.prod(self.image_shape)

    def energy(self, params: dict, x: jax.Array) -> jax.Array:
        """E(x), ``[..., C·H·W] → [...]``."""
        shape = jnp.shape(x)
        if len(shape) < 1 or shape[-1] != self.dim:
            raise ValueError(
                f"ConvEnergy expected [..., {self.dim}] = flattened {self.image_shape}. Got shape {tuple(shape)}."
            )
        flat = x.reshape(-1, *self.image_shape)
        e = image_net(self.net, params["net"], flat)[:, 0]
        if self.floor is not None:
            e = self.floor + softplus(e - self.floor, 1.0, 20.0)
        return e.reshape(shape[:-1])


# ---------------------------------------------------------------------------------------- converters
def _array(t, dtype: type) -> jax.Array | None:
    if t is None:
        return None
    return jnp.asarray(np.asarray(t.detach().cpu().numpy(), dtype=dtype))


def _read(seq: nn.Module, dtype: type, owner: str) -> tuple[list[tuple], list[dict]]:
    """Read a sequence of torch layers (read in eval mode) into (ops, params)."""
    ops: list[tuple] = []
    params: list[dict] = []
    for module in seq:
        kind = type(module)
        if isinstance(module, nn.ConvTranspose2d):  # parametrised (spectral-norm) layers are subclasses
            kind = nn.ConvTranspose2d
        elif isinstance(module, nn.Conv2d):
            kind = nn.Conv2d
        elif isinstance(module, nn.Linear):
            kind = nn.Linear
        if kind is nn.Linear:
            ops.append(("linear",))
            params.append({"weight": _array(module.weight, dtype), "bias": _array(module.bias, dtype)})
        elif kind in (nn.Conv2d, nn.ConvTranspose2d):
            if module.groups != 1 or module.dilation != (1, 1) or module.stride[0] != module.stride[1]:
                raise TypeError(f"to_jax: {owner} has a {kind.__name__} with groups/dilation, which has no JAX twin.")
            if kind is nn.ConvTranspose2d and module.output_padding != (0, 0):
                raise TypeError(f"to_jax: {owner} has a ConvTranspose2d with output_padding, which has no JAX twin.")
            if module.padding[0] != module.padding[1] or isinstance(module.padding, str):
                raise TypeError(f"to_jax: {owner} has a {kind.__name__} with unequal padding.")
            name = "conv" if kind is nn.Conv2d else "conv_transpose"
            ops.append((name, int(module.stride[0]), int(module.padding[0])))
            params.append({"weight": _array(module.weight, dtype), "bias": _array(module.bias, dtype)})
        elif kind is nn.BatchNorm2d:
            if not module.track_running_stats or not module.affine:
                raise TypeError(f"to_jax: {owner} has a BatchNorm2d without running statistics or affine weights.")
            ops.append(("batch_norm", float(module.eps)))
            params.append(
                {
                    "mean": _array(module.running_mean, dtype),
                    "var": _array(module.running_var, dtype),
                    "weight": _array(module.weight, dtype),
                    "bias": _array(module.bias, dtype),
                }
            )
        elif kind is nn.ReLU:
            ops.append(("relu",))
        elif kind is nn.Tanh:
            ops.append(("tanh",))
        elif kind is nn.LeakyReLU:
            ops.append(("leaky_relu", float(module.negative_slope)))
        elif kind is nn.ELU:
            ops.append(("elu", float(module.alpha)))
        elif kind is nn.Softplus:
            ops.append(("softplus", float(module.beta), float(module.threshold)))
        elif kind is nn.SiLU:
            ops.append(("silu",))
        else:
            raise TypeError(f"to_jax: {owner} contains a {kind.__name__} layer, which has no JAX twin.")
    return ops, params


def _check_eval(module: nn.Module, owner: str) -> None:
    if any(m.training for m in module.modules()):
        raise ValueError(f"to_jax: put {owner} in eval mode first (BatchNorm and spectral norm are read in eval mode).")


def convert_mlp_generator(base: MLPGenerator, dtype: type = np.float32) -> tuple[MLPGeneratorSpec, dict]:
    """(spec, params) of an :class:`~gebm_ppl.MLPGenerator` (read in eval mode)."""
    _check_eval(base, "the MLPGenerator")
    ops, params = _read(base.net, dtype, "MLPGenerator.net")
    return MLPGeneratorSpec(base.latent_dim, base.dim, tuple(ops)), {"net": params}


def convert_conv_generator(base: ConvGenerator, dtype: type = np.float32) -> tuple[ConvGeneratorSpec, dict]:
    """(spec, params) of a :class:`~gebm_ppl.ConvGenerator` (read in eval mode: BatchNorm with running statistics)."""
    _check_eval(base, "the ConvGenerator")
    ops, params = _read([base.project], dtype, "ConvGenerator.project")
    ops.append(("reshape", tuple(base.start)))
    more_ops, more_params = _read(base.net, dtype, "ConvGenerator.net")
    spec = ConvGeneratorSpec(base.latent_dim, tuple(base.image_shape), tuple(ops + more_ops))
    return spec, {"net": params + more_params}


def convert_conv_energy(energy: ConvEnergy, dtype: type = np.float32) -> tuple[ConvEnergySpec, dict]:
    """(spec, params) of a :class:`~gebm_ppl.ConvEnergy` (spectral norm folded into the weights)."""
    _check_eval(energy, "the ConvEnergy")
    ops, params = _read(energy.features, dtype, "ConvEnergy.features")
    ops.append(("flatten",))
    head_ops, head_params = _read([energy.head], dtype, "ConvEnergy.head")
    spec = ConvEnergySpec(tuple(energy.image_shape), tuple(ops + head_ops), energy.floor)
    return spec, {"net": params + head_params}
