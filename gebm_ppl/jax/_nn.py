"""Multi-layer perceptrons as pure JAX functions: a static op list and a weights pytree."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["check_last_dim", "mlp", "softplus"]

# An MLP is a tuple of ops, each a tuple ``(name, *static_args)``:
#   ("linear",)                      y = x Wᵀ + b, consuming the next {"weight": [out, in], "bias": [out]}
#   ("relu",) ("tanh",) ("silu",)
#   ("leaky_relu", negative_slope)
#   ("elu", alpha)
#   ("softplus", beta, threshold)    torch's: x if βx > threshold else log(1 + exp(βx))/β
MLPOps = tuple[tuple[Any, ...], ...]


def softplus(x: jax.Array, beta: float, threshold: float) -> jax.Array:
    # jax.nn.softplus is stable, so the discarded branch of the where has no NaN gradient.
    return jnp.where(beta * x > threshold, x, jax.nn.softplus(beta * x) / beta)


def mlp(ops: MLPOps, params: Sequence[dict], x: jax.Array) -> jax.Array:
    """Apply the MLP ``ops`` with linear weights ``params`` to ``x``, ``[..., in] → [..., out]``."""
    k = 0
    for op in ops:
        name = op[0]
        if name == "linear":
            layer = params[k]
            k += 1
            x = x @ layer["weight"].T + layer["bias"]
        elif name == "relu":
            x = jax.nn.relu(x)
        elif name == "leaky_relu":
            x = jnp.where(x >= 0, x, op[1] * x)
        elif name == "elu":
            x = jax.nn.elu(x, alpha=op[1])
        elif name == "softplus":
            x = softplus(x, op[1], op[2])
        elif name == "tanh":
            x = jnp.tanh(x)
        elif name == "silu":
            x = jax.nn.silu(x)
        else:  # only reachable with a hand-made op list
            raise ValueError(f"unknown MLP op {name!r}.")
    return x


def check_last_dim(x: jax.Array, dim: int, name: str) -> None:
    """Raise ValueError unless ``x`` has shape ``[..., dim]`` (a static check, fine under jit)."""
    shape = jnp.shape(x)
    if len(shape) < 1 or shape[-1] != dim:
        raise ValueError(f"'{name}' should have shape [..., {dim}]. Got shape {tuple(shape)}.")
