"""Activation layers by name, shared by the energies and the generators (torch side)."""

from __future__ import annotations

from torch import nn

__all__ = ["check_activation"]

_ACTIVATIONS = {"leaky_relu", "relu", "elu", "softplus", "tanh", "silu"}


def _activation(name: str, negative_slope: float) -> nn.Module:
    return {
        "leaky_relu": lambda: nn.LeakyReLU(negative_slope),
        "relu": nn.ReLU,
        "elu": nn.ELU,
        "softplus": nn.Softplus,
        "tanh": nn.Tanh,
        "silu": nn.SiLU,
    }[name]()


def check_activation(activation: object) -> str:
    """The name of a supported activation (one of leaky_relu, relu, elu, softplus, tanh, silu)."""
    if activation not in _ACTIVATIONS:
        raise ValueError(f"'activation' should be one of {sorted(_ACTIVATIONS)}. Got {activation!r}.")
    return str(activation)
