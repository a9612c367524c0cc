"""The JAX twin of :class:`gebm_ppl.StudentTBase`: G = G_inner ∘ h, h = F_ν⁻¹∘Φ elementwise (ν = 1 or 2).

The same closed forms as :mod:`gebm_ppl.bases.tails` (read its docstring for the maths), as pure functions of
(params, input) in the input's dtype: float64 where the user has switched on ``jax_enable_x64``, else float32
(JAX's own convention; the torch base computes these pieces in float64 always).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy import special

if TYPE_CHECKING:
    from ..bases.tails import StudentTBase

__all__ = ["StudentTBaseSpec", "convert_student_t_base", "gaussian_to_student_t", "student_t_log_prob",
           "student_t_to_gaussian"]

_LOG_PI = math.log(math.pi)
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
_SQRT2 = math.sqrt(2.0)


def _log_normal(z: jax.Array) -> jax.Array:
    return -0.5 * z * z - _HALF_LOG_2PI


def student_t_log_prob(u: jax.Array, df: float) -> jax.Array:
    """Elementwise log t_ν(u): ν = 1: −log π − log(1 + u²); ν = 2: −3 log √(2 + u²)."""
    if df == 1.0:
        a = jnp.abs(u)
        big = a > 1
        a_big = jnp.where(big, a, 1.0)
        u_small = jnp.where(big, 0.0, u)
        return -_LOG_PI - jnp.where(big, 2 * jnp.log(a_big) + jnp.log1p(a_big**-2), jnp.log1p(u_small * u_small))
    return -3 * jnp.log(jnp.hypot(u, _SQRT2))


def _log_survival(a: jax.Array, df: float) -> jax.Array:
    """log S_ν(a) for a ≥ 0: ν = 1: log(atan(1/a)/π) (a > 1), log(½ − atan(a)/π); ν = 2: −log(r(r + a))."""
    if df == 1.0:
        big = a > 1
        a_big = jnp.where(big, a, 1.0)
        a_small = jnp.where(big, 0.0, a)
        return jnp.where(big, jnp.log(jnp.arctan(1 / a_big)) - _LOG_PI, jnp.log(0.5 - jnp.arctan(a_small) / math.pi))
    r = jnp.hypot(a, _SQRT2)
    return -jnp.log(r) - jnp.log(r + a)


def _normal_upper_quantile(log_q: jax.Array) -> jax.Array:
    """z ≥ 0 with Φ(−z) = q: −Φ⁻¹(q) while q is a normal float, else a Mills-ratio start and Newton steps."""
    floor = math.log(float(jnp.finfo(log_q.dtype).tiny)) + 10.0
    deep = log_q < floor
    z = -special.ndtri(jnp.exp(jnp.where(deep, -1.0, log_q)))
    lq = jnp.where(deep, log_q, 2 * floor)
    t = -2 * lq
    w = jnp.sqrt(t - jnp.log(t) - 2 * _HALF_LOG_2PI)
    for _ in range(3):
        log_sf = special.log_ndtr(-w)
        w = w + (log_sf - lq) * jnp.exp(log_sf - _log_normal(w))
    return jnp.where(deep, w, z)


def gaussian_to_student_t(z: jax.Array, df: float) -> tuple[jax.Array, jax.Array]:
    """u = h(z) = F_ν⁻¹(Φ(z)) and log|h'(z)| = log φ(z) − log t_ν(u), elementwise."""
    erf = special.erf(z / _SQRT2)
    if df == 1.0:
        a = jnp.abs(z)
        tail = a > 1
        a_tail = jnp.where(tail, a, 1.0)
        u_tail = jnp.sign(z) / jnp.tan(math.pi * jnp.exp(special.log_ndtr(-a_tail)))
        u = jnp.where(tail, u_tail, jnp.tan(0.5 * math.pi * jnp.where(tail, 0.0, erf)))
    else:
        u = erf * jnp.exp(-0.5 * (math.log(2.0) + special.log_ndtr(z) + special.log_ndtr(-z)))
    return u, _log_normal(z) - student_t_log_prob(u, df)


def student_t_to_gaussian(u: jax.Array, df: float) -> tuple[jax.Array, jax.Array]:
    """z = h⁻¹(u) = Φ⁻¹(F_ν(u)) and log|dz/du| = log t_ν(u) − log φ(z), elementwise."""
    a = jnp.abs(u)
    centre = a < 1
    u_centre = jnp.where(centre, u, 0.0)
    y = (2 / math.pi) * jnp.arctan(u_centre) if df == 1.0 else u_centre / jnp.hypot(u_centre, _SQRT2)
    z_tail = jnp.sign(u) * _normal_upper_quantile(_log_survival(jnp.where(centre, 1.0, a), df))
    z = jnp.where(centre, _SQRT2 * special.erfinv(y), z_tail)
    return z, student_t_log_prob(u, df) - _log_normal(z)


class StudentTBaseSpec(NamedTuple):
    """Static structure of :class:`~gebm_ppl.StudentTBase` (params: ``{"inner": the inner base's params}``).

    Fields: the inner base's spec and ν.
    """

    inner: Any
    df: float

    @property
    def dim(self) -> int:
        return self.inner.dim

    @property
    def latent_dim(self) -> int:
        return self.inner.latent_dim

    def forward(self, params, z: jax.Array) -> jax.Array:
        """G(z) = G_inner(h(z))."""
        return self.inner.forward(params["inner"], gaussian_to_student_t(z, self.df)[0])

    def forward_and_log_det(self, params, z: jax.Array) -> tuple[jax.Array, jax.Array]:
        """G(z) and log|det ∂G_inner(u)/∂u| + Σ_j log h'(z_j)."""
        u, log_h = gaussian_to_student_t(z, self.df)
        x, log_det = self.inner.forward_and_log_det(params["inner"], u)
        return x, log_det + jnp.sum(log_h, -1)

    def inverse(self, params, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """z = h⁻¹(T_inner(x)) and log|det ∂G⁻¹(x)/∂x|."""
        u, log_det = self.inner.inverse(params["inner"], x)
        z, log_h = student_t_to_gaussian(u, self.df)
        return z, log_det + jnp.sum(log_h, -1)


def convert_student_t_base(base: StudentTBase, dtype: type) -> tuple[StudentTBaseSpec, dict]:
    """The JAX twin of :class:`~gebm_ppl.StudentTBase` (registered with the class): its inner base's twin, and ν.

    Raises:
        TypeError: the inner base has no JAX twin, or its twin has no density (``inverse``).
    """
    from .convert import converter_for

    inner_spec, inner_params = converter_for(base.inner, "inner base of StudentTBase")(base.inner, dtype)
    if not hasattr(inner_spec, "inverse") or not hasattr(inner_spec, "forward_and_log_det"):
        raise TypeError(f"to_jax: the JAX twin of {type(base.inner).__name__} has no density (inverse), which "
                        "StudentTBase needs.")
    return StudentTBaseSpec(inner_spec, float(base.df)), {"inner": inner_params}
