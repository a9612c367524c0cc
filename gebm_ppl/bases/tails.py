"""StudentTBase: a heavy-tailed (Student-t, ν = 1 or 2) latent under any density base; the prior stays N(0, I).

A bounded energy cannot repair a base whose tails are too light: where log g(x) ≈ −½‖T(x)‖² is −76,000 nats,
exp(−E) with |E| ≤ B moves it by at most B. A flow with a Student-t latent instead pays only
(ν + 1)·log‖u‖ there. The latent prior of every base is η = N(0, I) (every latent sampler, Pyro/NumPyro and
the JAX twins assume it), so the heavy tail is a fixed elementwise bijection

    h = F_ν⁻¹ ∘ Φ : ℝ → ℝ,   u = h(z),

which maps N(0, 1) onto Student-t(ν) (F_ν its CDF, Φ the normal CDF), composed under an inner density base:
G = G_inner ∘ h. By change of variables, with (u, log|det ∂T_inner(x)/∂x|) = ``inner.inverse(x)``,

    log g(x) = Σ_j log t_ν(u_j) + log|det ∂T_inner(x)/∂x|,

and the latent of x is z = h⁻¹(u) = Φ⁻¹(F_ν(u)) with log|dz/du| = log t_ν(u) − log φ(z), so the base contract's
``log η(z) + logabsdet`` is the same number. torch has no Student-t CDF for general ν; ν = 1 (Cauchy) and ν = 2
have closed forms (r = √(2 + u²), S_ν = 1 − F_ν the survival function, u ≥ 0):

* ν = 1: t₁(u) = 1 / (π(1 + u²)),  S₁(u) = atan(1/u)/π,  2F₁(u) − 1 = (2/π)·atan(u),  h(z) = tan(π/2·erf(z/√2));
* ν = 2: t₂(u) = r⁻³,  S₂(u) = 1/(r(r + u)),  2F₂(u) − 1 = u/r,  h(z) = erf(z/√2) / √(2Φ(z)Φ(−z)).

Numerics: the Φ / Φ⁻¹ pieces run in float64; the tails use the survival forms above and log Φ (``log_ndtr``),
the centre erf / erfinv, so that neither side loses relative precision; Φ⁻¹ of a survival probability that
underflows float64 is found from its logarithm (Mills-ratio start, Newton steps on log Φ). The log-density
uses log t_ν(u) directly, never the cancelling pair log φ(z) and −log φ(z), so a point whose Gaussian-latent
log-density is −76,000 nats keeps a finite, accurate log-density.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..registry import get as _registered
from ..registry import register_base
from .base import Base

__all__ = ["SUPPORTED_DF", "StudentTBase", "check_df", "gaussian_to_student_t", "student_t_log_prob",
           "student_t_to_gaussian"]

SUPPORTED_DF = (1.0, 2.0)
"""The degrees of freedom ν with a closed-form Student-t CDF (Cauchy, and ν = 2)."""

_LOG_PI = math.log(math.pi)
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
_SQRT2 = math.sqrt(2.0)
_NDTRI_MIN_LOG = -700.0  # below, exp(log q) leaves float64's normal range: Φ⁻¹ from log q (Newton)


def check_df(df: object) -> float:
    """ν as a float, 1.0 or 2.0; ValueError naming ``df`` otherwise."""
    if isinstance(df, bool) or not isinstance(df, int | float) or float(df) not in SUPPORTED_DF:
        raise ValueError(
            f"'df' (the Student-t latent's degrees of freedom ν) should be 1 (Cauchy) or 2, the values with a "
            f"closed-form CDF (for a Gaussian latent use the inner base itself). Got {df!r}."
        )
    return float(df)


def _log_normal(z: Tensor) -> Tensor:
    return -0.5 * z * z - _HALF_LOG_2PI


def student_t_log_prob(u: Tensor, df: float) -> Tensor:
    """Elementwise log t_ν(u) for ν ∈ {1, 2}, in ``u``'s dtype (float64 inside).

    ν = 1: −log π − log(1 + u²) (as 2 log|u| + log(1 + u⁻²) for |u| > 1, no overflow); ν = 2: −3 log √(2 + u²).
    """
    df = check_df(df)
    v = u.double()
    if df == 1.0:
        a = v.abs()
        big = a > 1
        a_big = torch.where(big, a, torch.ones_like(a))  # safe inputs: no nan gradient from the unused branch
        v_small = torch.where(big, torch.zeros_like(v), v)
        log1p_sq = torch.where(big, 2 * torch.log(a_big) + torch.log1p(a_big.pow(-2)), torch.log1p(v_small * v_small))
        out = -_LOG_PI - log1p_sq
    else:
        out = -3 * torch.log(torch.hypot(v, torch.full_like(v, _SQRT2)))
    return out.to(u.dtype)


def _log_survival(a: Tensor, df: float) -> Tensor:
    """log S_ν(a) = log P(U > a) for a ≥ 0 (float64), in the forms that stay accurate for large a."""
    if df == 1.0:
        # S₁(a) = ½ − atan(a)/π = atan(1/a)/π; the second form for a > 1 (safe inputs for the other)
        big = a > 1
        a_big = torch.where(big, a, torch.ones_like(a))
        a_small = torch.where(big, torch.zeros_like(a), a)
        s_small = 0.5 - torch.atan(a_small) / math.pi
        return torch.where(big, torch.log(torch.atan(a_big.reciprocal())) - _LOG_PI, torch.log(s_small))
    r = torch.hypot(a, torch.full_like(a, _SQRT2))
    return -torch.log(r) - torch.log(r + a)  # S₂(a) = 1/(r(r + a))


def _normal_upper_quantile(log_q: Tensor) -> Tensor:
    """The z ≥ 0 with Φ(−z) = q, from log q ≤ log ½ (float64).

    ``−Φ⁻¹(q)`` while q is a normal float64; below that (log q < −700), the Mills-ratio start
    z₀² = −2 log q − log(−2 log q) − log 2π and three Newton steps on log Φ(−z) = log q.
    """
    deep = log_q < _NDTRI_MIN_LOG
    shallow = torch.where(deep, torch.full_like(log_q, -1.0), log_q)
    z = -torch.special.ndtri(torch.exp(shallow))
    if bool(deep.any()):
        lq = torch.where(deep, log_q, torch.full_like(log_q, 2 * _NDTRI_MIN_LOG))
        t = -2 * lq
        w = torch.sqrt(t - torch.log(t) - 2 * _HALF_LOG_2PI)
        for _ in range(3):
            log_sf = torch.special.log_ndtr(-w)
            # d/dw log Φ(−w) = −φ(w)/Φ(−w)
            w = w + (log_sf - lq) * torch.exp(log_sf - _log_normal(w))
        z = torch.where(deep, w, z)
    return z


def gaussian_to_student_t(z: Tensor, df: float) -> tuple[Tensor, Tensor]:
    """u = h(z) = F_ν⁻¹(Φ(z)) and log|h'(z)| = log φ(z) − log t_ν(u), elementwise, in ``z``'s dtype.

    ν = 1: u = tan(π/2·erf(z/√2)) for |z| ≤ 1, = sign(z)/tan(π·Φ(−|z|)) beyond (the same number, each form
    where it keeps its precision); ν = 2: u = erf(z/√2)·(2Φ(z)Φ(−z))^(−1/2), Φ(±z) from log Φ. float32
    overflows (|u| = inf) beyond |z| ≈ 13 (ν = 1) or 18.6 (ν = 2), probability below 1e-38 under N(0, 1).
    """
    df = check_df(df)
    v = z.double()
    erf = torch.special.erf(v / _SQRT2)
    if df == 1.0:
        a = v.abs()
        tail = a > 1
        a_tail = torch.where(tail, a, torch.ones_like(a))
        e_centre = torch.where(tail, torch.zeros_like(erf), erf)
        # Φ(−|z|) from log Φ: torch's ndtr underflows to 0 already near |z| = 8
        u_tail = torch.sign(v) / torch.tan(math.pi * torch.exp(torch.special.log_ndtr(-a_tail)))
        u = torch.where(tail, u_tail, torch.tan(0.5 * math.pi * e_centre))
    else:
        u = erf * torch.exp(-0.5 * (math.log(2.0) + torch.special.log_ndtr(v) + torch.special.log_ndtr(-v)))
    log_det = _log_normal(v) - student_t_log_prob(u, df)
    return u.to(z.dtype), log_det.to(z.dtype)


def student_t_to_gaussian(u: Tensor, df: float) -> tuple[Tensor, Tensor]:
    """z = h⁻¹(u) = Φ⁻¹(F_ν(u)) and log|dz/du| = log t_ν(u) − log φ(z), elementwise, in ``u``'s dtype.

    |u| < 1: z = √2·erfinv(2F_ν(u) − 1) (2F₁ − 1 = (2/π)atan(u), 2F₂ − 1 = u/√(2 + u²)); beyond,
    |z| = −Φ⁻¹(S_ν(|u|)) from log S_ν (finite for every finite u).
    """
    df = check_df(df)
    v = u.double()
    a = v.abs()
    centre = a < 1
    v_centre = torch.where(centre, v, torch.zeros_like(v))
    a_tail = torch.where(centre, torch.ones_like(a), a)
    if df == 1.0:
        y = (2 / math.pi) * torch.atan(v_centre)
    else:
        y = v_centre / torch.hypot(v_centre, torch.full_like(v_centre, _SQRT2))
    z_centre = _SQRT2 * torch.special.erfinv(y)
    z_tail = torch.sign(v) * _normal_upper_quantile(_log_survival(a_tail, df))
    z = torch.where(centre, z_centre, z_tail)
    log_det = student_t_log_prob(v, df) - _log_normal(z)
    return z.to(u.dtype), log_det.to(u.dtype)


@register_base(jax="gebm_ppl.jax.tails:convert_student_t_base")
class StudentTBase(Base):
    """Student-t latent under a density base: G = G_inner ∘ h, h = F_ν⁻¹∘Φ elementwise, ν ∈ {1, 2}.

    log g(x) = Σ_j log t_ν(u_j) + log|det ∂T_inner(x)/∂x| with (u, log det) = ``inner.inverse(x)``; the
    prior stays η = N(0, I) (the maths and numerics are in the module docstring). The wrapper has no
    parameters of its own: training it trains the inner base. ``gebm_ppl.runs.build_base`` wraps the
    configured base in it when the ``[base]`` table sets ``latent_df = 1`` or ``2``.

    Args:
        inner: a base with a density (RealNVP, NSF, any :class:`~gebm_ppl.TransformBase`, ...), or the
            registered name of its class (then built from ``inner_config``, with ``dim``).
        df: ν, 1 (Cauchy) or 2.
        inner_config: the inner class's keyword arguments, when ``inner`` is a name.
        dim: D, when ``inner`` is a name and ``inner_config`` leaves it out (checked against the inner base).

    Example:
        >>> import gebm_ppl as gp
        >>> base = StudentTBase(gp.RealNVP(2, hidden_features=8, num_layers=2), df=2)
        >>> base.log_prob(base.sample(3)).shape
        torch.Size([3])
    """

    has_density = True

    def __init__(self, inner: Base | str = "RealNVP", df: float = 2.0, inner_config: dict | None = None,
                 dim: int | None = None):
        super().__init__()
        self.df = check_df(df)
        if isinstance(inner, str):
            cls = _registered("base", inner)
            kwargs = dict(inner_config or {})
            if dim is not None and "dim" not in kwargs:
                kwargs["dim"] = dim
            inner = cls(**kwargs)
        elif inner_config is not None:
            raise ValueError("'inner_config' applies when 'inner' is a class name; the inner base is already built.")
        if not isinstance(inner, Base) or not getattr(inner, "has_density", False):
            raise ValueError(f"'inner' should be a base with a density (inverse and log_prob). Got "
                             f"{type(inner).__name__}.")
        if isinstance(inner, StudentTBase):
            raise ValueError("'inner' is already a StudentTBase; wrap its inner base instead.")
        if dim is not None and dim != inner.dim:
            raise ValueError(f"'dim' = {dim} differs from the inner base's dimension {inner.dim}.")
        self.inner = inner
        self.dim, self.latent_dim = inner.dim, inner.latent_dim

    @property
    def config(self) -> dict:
        return {"inner": type(self.inner).__name__, "df": self.df, "inner_config": self.inner.config}

    def extra_repr(self) -> str:
        return f"df={self.df:g}"

    def _param_like(self) -> Tensor:
        return self.inner._param_like()

    def forward(self, z: Tensor) -> Tensor:
        """G(z) = G_inner(h(z)): latent ``[..., d]`` → data ``[..., D]``."""
        return self.inner(gaussian_to_student_t(z, self.df)[0])

    def forward_and_log_det(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """G(z) and log|det ∂G(z)/∂z| = log|det ∂G_inner(u)/∂u| + Σ_j log h'(z_j)."""
        u, log_h = gaussian_to_student_t(z, self.df)
        if hasattr(self.inner, "forward_and_log_det"):
            x, log_det = self.inner.forward_and_log_det(u)
        else:
            x = self.inner(u)
            log_det = -self.inner.inverse(x)[1]
        return x, log_det + log_h.sum(-1)

    def inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """z = h⁻¹(T_inner(x)) and log|det ∂G⁻¹(x)/∂x|, shapes ``[..., D]`` and ``[...]``."""
        u, log_det = self.inner.inverse(x)
        z, log_h = student_t_to_gaussian(u, self.df)
        return z, log_det + log_h.sum(-1)

    def log_prob(self, x: Tensor) -> Tensor:
        """log g(x) = Σ_j log t_ν(u_j) + log|det ∂T_inner(x)/∂x|, shape ``[...]`` (no cancelling terms)."""
        u, log_det = self.inner.inverse(x)
        return log_det + student_t_log_prob(u, self.df).sum(-1)
