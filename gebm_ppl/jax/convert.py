"""torch → JAX export of a GEBM: :func:`to_jax` reads the weights into a :class:`JaxGEBM`, through the registry.

Each torch base or energy class has a converter, its JAX twin in :mod:`gebm_ppl.registry`: named where the
class is registered (``@register_base(jax="module:converter")``), or added with
``register_jax(TorchClass)(converter)`` (also usable as a decorator). The signature is::

    converter(module: nn.Module, dtype: type) -> (spec, params)

``module`` is the torch base/energy, already in eval mode; ``dtype`` is ``numpy.float32`` or
``numpy.float64`` (convert every array to it). ``params`` is a pytree of JAX arrays and ``spec`` a static,
hashable object (a NamedTuple) carrying the functions of (params, input):

* a base spec: ``dim`` (D), ``latent_dim`` (d), ``forward(params, z) -> x`` (G); density bases add
  ``inverse(params, x) -> (z, logabsdet)`` and ``forward_and_log_det(params, z) -> (x, logabsdet)``
  (a spec without ``inverse`` makes ``JaxGEBM.log_prob`` raise :class:`gebm_ppl.DensityNotAvailable`);
* an energy spec: ``dim`` (D) and ``energy(params, x) -> [...]``.

:func:`to_jax` looks the module's class up along its MRO (a subclass uses its parent's converter
unless it registers its own) and raises TypeError naming a class without one. Converters raise
TypeError naming a layer without a JAX twin.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import torch
from nflows.transforms import AffineCouplingTransform, CompositeTransform
from torch import nn

from .._modes import eval_mode
from ..bases.affine import AffineBase
from ..bases.realnvp import ExpTanhAffineCoupling, RealNVP
from ..energies.mlp import EnergyMLP
from ..energies.quadratic import QuadraticEnergy
from ..registry import JAX_TWINS, jax_twin, register_jax_twin
from .bases import AffineSpec, CouplingSpec, RealNVPSpec
from .energies import EnergyMLPSpec, QuadraticEnergySpec
from .gebm import GEBMSpec, JaxGEBM

__all__ = ["converter_for", "register_jax", "to_jax"]

_DTYPES = {"float32": np.float32, "float64": np.float64}

Converter = Callable[[nn.Module, type], tuple[Any, Any]]
JAX_CONVERTERS: dict[type, Converter | str] = JAX_TWINS
"""torch class → converter (or its ``"module:attribute"`` path): the registry's :data:`~gebm_ppl.registry.JAX_TWINS`."""


def register_jax(torch_cls: type) -> Callable[[Converter], Converter]:
    """``register_jax(TorchClass)(converter)``: the JAX twin of ``TorchClass`` (signature in the module docstring)."""
    if not isinstance(torch_cls, type) or not issubclass(torch_cls, nn.Module):
        raise TypeError(f"register_jax expects an nn.Module subclass. Got {torch_cls!r}.")

    def add(converter: Converter) -> Converter:
        if not callable(converter):
            raise TypeError(f"register_jax({torch_cls.__name__}) expects a callable converter. Got {converter!r}.")
        register_jax_twin(torch_cls, converter)
        return converter

    return add


def converter_for(module: nn.Module, part: str = "module") -> Converter:
    """The registered converter of ``type(module)`` or its nearest registered parent class."""
    converter = jax_twin(type(module))
    if converter is not None:
        return converter
    known = sorted(c.__name__ for c in JAX_CONVERTERS)
    raise TypeError(
        f"to_jax does not support the {part} {type(module).__name__}: no JAX twin is registered for it "
        f"(registered: {', '.join(known)}; add one with gebm_ppl.jax.register_jax)."
    )


def _resolve_dtype(dtype: Any, torch_dtype: torch.dtype) -> type:
    x64 = bool(jax.config.jax_enable_x64)
    if dtype is None:
        if torch_dtype not in (torch.float32, torch.float64):
            raise TypeError(f"to_jax converts float32 and float64 GEBMs. Got dtype {torch_dtype}.")
        # JAX's own convention: without x64, float64 values become float32 silently.
        return np.float64 if torch_dtype == torch.float64 and x64 else np.float32
    try:
        name = str(dtype).removeprefix("torch.") if isinstance(dtype, torch.dtype) else np.dtype(dtype).name
    except TypeError:
        name = None
    if name not in _DTYPES:
        raise ValueError(f"'dtype' should be None, 'float32' or 'float64'. Got {dtype!r}.")
    if name == "float64" and not x64:
        raise ValueError(
            "'dtype' float64 needs JAX's 64-bit mode: call jax.config.update('jax_enable_x64', True) "
            "at startup (gebm_ppl never switches it on for you)."
        )
    return _DTYPES[name]


def _array(t: torch.Tensor, dtype: type) -> jax.Array:
    return jnp.asarray(np.asarray(t.detach().cpu().numpy(), dtype=dtype))


def _mlp(seq: nn.Module, dtype: type, owner: str) -> tuple[tuple, list[dict]]:
    """Read an ``nn.Sequential`` of linear layers and activations into (ops, weights)."""
    ops: list[tuple] = []
    weights: list[dict] = []
    for module in seq.children():
        if isinstance(module, nn.Linear):
            if module.bias is None:
                raise TypeError(f"to_jax: {owner} has a Linear layer without bias, which is not supported.")
            # In eval mode a parametrised weight (spectral norm) is the normalised W/σ(W), with no power step.
            ops.append(("linear",))
            weights.append({"weight": _array(module.weight, dtype), "bias": _array(module.bias, dtype)})
        elif type(module) is nn.LeakyReLU:
            ops.append(("leaky_relu", float(module.negative_slope)))
        elif type(module) is nn.ReLU:
            ops.append(("relu",))
        elif type(module) is nn.ELU:
            ops.append(("elu", float(module.alpha)))
        elif type(module) is nn.Softplus:
            ops.append(("softplus", float(module.beta), float(module.threshold)))
        elif type(module) is nn.Tanh:
            ops.append(("tanh",))
        elif type(module) is nn.SiLU:
            ops.append(("silu",))
        else:
            raise TypeError(
                f"to_jax: {owner} contains a {type(module).__name__} layer, which has no JAX twin "
                "(supported: Linear, LeakyReLU, ReLU, ELU, Softplus, Tanh, SiLU)."
            )
    return tuple(ops), weights


def _realnvp(base: RealNVP, dtype: type) -> tuple[RealNVPSpec, dict]:
    transform = base.transform
    if type(transform) is not CompositeTransform:
        name = type(transform).__name__
        raise TypeError(f"to_jax: RealNVP.transform is a {name}; expected a CompositeTransform.")
    cfg = base.config
    scale = cfg["scale"]
    layers, weights = [], []
    for i, layer in enumerate(transform._transforms):
        expected = ExpTanhAffineCoupling if scale == "exp_tanh" else AffineCouplingTransform
        if type(layer) is not expected or layer.unconditional_transform is not None:
            raise TypeError(
                f"to_jax: RealNVP layer {i} is a {type(layer).__name__}, which has no JAX twin "
                f"(expected {expected.__name__} for scale={scale!r})."
            )
        net = getattr(layer.transform_net, "net", None)
        if not isinstance(net, nn.Sequential):
            raise TypeError(
                f"to_jax: the conditioner of RealNVP layer {i} is a {type(layer.transform_net).__name__}, "
                "which has no JAX twin (expected gebm_ppl's coupling MLP)."
            )
        ops, w = _mlp(net, dtype, f"the conditioner of RealNVP layer {i}")
        identity = tuple(int(j) for j in layer.identity_features.tolist())
        moved = tuple(int(j) for j in layer.transform_features.tolist())
        layers.append(CouplingSpec(identity, moved, ops))
        weights.append(w)
    return RealNVPSpec(base.dim, tuple(layers), scale, float(cfg["scale_bound"])), {"layers": weights}


def convert_realnvp(base: RealNVP, dtype: type) -> tuple[RealNVPSpec, dict]:
    """The JAX twin of :class:`~gebm_ppl.RealNVP` (registered with the class)."""
    return _realnvp(base, dtype)


def convert_affine(base: AffineBase, dtype: type) -> tuple[AffineSpec, dict]:
    """The JAX twin of :class:`~gebm_ppl.AffineBase` (registered with the class)."""
    params = {"loc": _array(base.loc, dtype), "scale_tril": _array(base.scale_tril, dtype)}
    return AffineSpec(base.dim), params


def convert_energy_mlp(energy: EnergyMLP, dtype: type) -> tuple[EnergyMLPSpec, dict]:
    """The JAX twin of :class:`~gebm_ppl.EnergyMLP` (registered with the class)."""
    ops, w = _mlp(energy.net, dtype, "EnergyMLP.net")
    floor = None if energy.floor is None else float(energy.floor)
    return EnergyMLPSpec(energy.dim, ops, float(energy.lipschitz), floor), {"net": w}


def convert_quadratic(energy: QuadraticEnergy, dtype: type) -> tuple[QuadraticEnergySpec, dict]:
    """The JAX twin of :class:`~gebm_ppl.QuadraticEnergy` (registered with the class)."""
    params = {"center": _array(energy.center, dtype), "factor": _array(energy.factor, dtype)}
    return QuadraticEnergySpec(energy.dim), params


def _in_features(spec: Any, params: dict) -> int:
    if isinstance(spec, EnergyMLPSpec):
        return int(params["net"][0]["weight"].shape[1])
    return int(spec.dim)


@torch.no_grad()
def to_jax(gebm: nn.Module, dtype: str | None = None) -> JaxGEBM:
    """Export a torch :class:`gebm_ppl.GEBM` to a pure-JAX :class:`JaxGEBM` (a copy of its current weights).

    Every class registered with :func:`register_jax`: bases :class:`~gebm_ppl.RealNVP` (scales
    ``"exp_tanh"`` and ``"sigmoid"``), :class:`~gebm_ppl.AffineBase`, :class:`~gebm_ppl.NSF`,
    :class:`~gebm_ppl.MLPGenerator`, :class:`~gebm_ppl.ConvGenerator`; energies :class:`~gebm_ppl.EnergyMLP`
    (every activation, the Lipschitz multiplier and the smooth floor; spectral normalisation folded into
    the weights, read in eval mode so that no power iteration runs), :class:`~gebm_ppl.QuadraticEnergy`,
    :class:`~gebm_ppl.ConvEnergy`; and c. The JAX functions then never call torch.

    Precision: ``dtype=None`` follows the GEBM's dtype where JAX can: a float64 GEBM stays float64
    only if the user has switched on ``jax_enable_x64``; otherwise it becomes float32, as JAX itself
    does with float64 inputs. An explicit ``dtype="float64"`` without x64 raises. gebm_ppl never
    switches x64 on itself.

    Args:
        gebm: a :class:`gebm_ppl.GEBM`.
        dtype: None, ``"float32"`` or ``"float64"`` (numpy/torch dtypes accepted).

    Returns:
        A :class:`JaxGEBM` with methods ``forward``, ``inverse``, ``base_log_prob``, ``energy``,
        ``latent_energy``, ``latent_potential``, ``unnormalized_log_prob`` and ``log_prob``.

    Raises:
        TypeError: ``gebm`` is not a GEBM, or contains a module without a JAX twin (named).
        ValueError: the base and energy dimensions differ, or float64 without x64.

    Example:
        >>> import jax, gebm_ppl as gp
        >>> gebm = gp.GEBM(gp.RealNVP(2, hidden_features=8, num_layers=2), gp.EnergyMLP(2, hidden=(8,)))
        >>> jg = gp.to_jax(gebm)
        >>> jg.log_prob(jg.sample(jax.random.PRNGKey(0), 3)).shape
        (3,)
    """
    if not isinstance(gebm, nn.Module) or not hasattr(gebm, "base") or not hasattr(gebm, "energy"):
        raise TypeError(f"'gebm' should be a gebm_ppl.GEBM. Got {type(gebm).__name__}.")
    np_dtype = _resolve_dtype(dtype, gebm.log_partition.dtype)
    base_converter = converter_for(gebm.base, "base")
    energy_converter = converter_for(gebm.energy, "energy")
    with eval_mode(gebm):
        base_spec, base_params = base_converter(gebm.base, np_dtype)
        energy_spec, energy_params = energy_converter(gebm.energy, np_dtype)
        log_partition = _array(gebm.log_partition, np_dtype)
    in_features = _in_features(energy_spec, energy_params)
    if base_spec.dim != energy_spec.dim or in_features != base_spec.dim:
        raise ValueError(
            f"base and energy dimensions differ: the base maps to {base_spec.dim} dims, "
            f"the energy expects {in_features}."
        )
    params = {"base": base_params, "energy": energy_params, "log_partition": log_partition}
    return JaxGEBM(params, GEBMSpec(base_spec, energy_spec))
