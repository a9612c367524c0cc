"""Bases G_θ: latent noise Z ~ N(0, I) pushed forward by a generator X = G_θ(Z).

The base protocol (what every base implements, and all the rest of gebm_ppl relies on):

* ``dim`` (D, data dimension) and ``latent_dim`` (d, latent dimension; d = D for flows);
* ``sample_prior(n) -> [n, d]``: draws from η = N(0, I_d) on the base's device and dtype;
* ``forward(z) -> x``: the generator G_θ, ``[..., d] -> [..., D]``, differentiable in z and θ;
* ``sample(n) -> [n, D]``: ``forward(sample_prior(n))``;
* ``config``: the constructor's keyword arguments (plain Python values), so that
  ``type(base)(**base.config)`` rebuilds the architecture for checkpoints;
* bases with a density (invertible generators) also implement ``inverse(x) -> (z, logabsdet)``
  with ``logabsdet = log|det ∂G_θ⁻¹(x)/∂x|`` of shape ``[...]``, and ``log_prob(x) -> [...]``,
  ``log g_θ(x) = log η(G_θ⁻¹(x)) + logabsdet``. Bases without one raise
  :class:`DensityNotAvailable` there.

nflows transforms map data → noise in ``forward``; the flip to our generator direction
(G = ``transform.inverse``) stays inside :class:`RealNVP`.
"""

from __future__ import annotations

import math
import warnings

import torch
from nflows.transforms import AffineCouplingTransform, CompositeTransform
from torch import Tensor, nn

from ._validation import check_points, check_positive_float, check_positive_int

__all__ = ["AffineBase", "Base", "DensityNotAvailable", "RealNVP", "BASES", "register_base"]


class DensityNotAvailable(TypeError):
    """The base is a generator without a tractable density (no inverse / log_prob)."""


class Base(nn.Module):
    """Base class of the base protocol (see the module docstring)."""

    dim: int
    latent_dim: int

    @property
    def config(self) -> dict:
        raise TypeError(f"{type(self).__name__} does not define 'config', which checkpoints need.")

    def _param_like(self) -> Tensor:
        return next(self.parameters())

    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``[n, latent_dim]`` latent points from the prior η = N(0, I_d)."""
        n = check_positive_int(n, "n")
        p = self._param_like()
        return torch.randn(n, self.latent_dim, device=p.device, dtype=p.dtype, generator=generator)

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Deprecated alias of :meth:`sample_prior` (``gebm_ppl.sample_latent`` is MCMC on the posterior)."""
        warnings.warn(
            "Base.sample_latent is deprecated: use Base.sample_prior for z ~ N(0, I) "
            "(gebm_ppl.sample_latent is MCMC on the latent posterior).",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.sample_prior(n, generator=generator)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``[n, dim]`` points X = G_θ(Z), Z ~ η."""
        return self.forward(self.sample_prior(n, generator=generator))

    def inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        raise DensityNotAvailable(f"{type(self).__name__} is not invertible: it has no inverse or density.")

    def log_prob(self, x: Tensor) -> Tensor:
        """log g_θ(x) = log η(G⁻¹(x)) + log|det ∂G⁻¹/∂x|, shape ``[...]``."""
        z, logabsdet = self.inverse(x)
        return standard_normal_log_prob(z) + logabsdet


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """log N(z; 0, I) summed over the last dimension."""
    return -0.5 * (z * z).sum(-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)


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


class RealNVP(Base):
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
        super().__init__()
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
        self.dim = self.latent_dim = dim
        self._config = dict(
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
        self.transform = CompositeTransform(layers)

    @property
    def config(self) -> dict:
        return dict(self._config)

    def forward(self, z: Tensor) -> Tensor:
        """G(z): latent ``[..., D]`` → data ``[..., D]``."""
        flat = z.reshape(-1, self.dim)
        x, _ = self.transform.inverse(flat)
        return x.reshape(z.shape)

    def forward_and_log_det(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """G(z) and log|det ∂G(z)/∂z|."""
        flat = z.reshape(-1, self.dim)
        x, logabsdet = self.transform.inverse(flat)
        return x.reshape(z.shape), logabsdet.reshape(z.shape[:-1])

    def inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """G⁻¹(x) and log|det ∂G⁻¹(x)/∂x|, shapes ``[..., D]`` and ``[...]``."""
        check_points(x, self.dim, dtype=self._param_like().dtype)
        flat = x.reshape(-1, self.dim)
        z, logabsdet = self.transform.forward(flat)
        return z.reshape(x.shape), logabsdet.reshape(x.shape[:-1])


class AffineBase(Base):
    """Gaussian base with an affine generator G(z) = loc + L z (L lower triangular, positive diagonal).

    The base distribution is N(loc, L Lᵀ). With a quadratic energy the GEBM is Gaussian in closed
    form, which makes this base the reference case of the tests; it is also a sensible base for
    nearly Gaussian data.

    Args:
        dim: dimension D.
        loc: ``[D]`` initial mean (default 0).
        scale_tril: ``[D, D]`` initial lower-triangular factor (default I).
    """

    def __init__(self, dim: int, loc: Tensor | None = None, scale_tril: Tensor | None = None):
        super().__init__()
        dim = check_positive_int(dim, "dim")
        self.dim = self.latent_dim = dim
        loc = torch.zeros(dim) if loc is None else torch.as_tensor(loc)
        if not loc.is_floating_point():
            loc = loc.to(torch.get_default_dtype())
        tril = torch.eye(dim, dtype=loc.dtype) if scale_tril is None else torch.as_tensor(scale_tril, dtype=loc.dtype)
        if loc.shape != (dim,) or tril.shape != (dim, dim):
            raise ValueError(
                f"AffineBase expects loc [{dim}] and scale_tril [{dim}, {dim}]. "
                f"Got {tuple(loc.shape)} and {tuple(tril.shape)}."
            )
        diag = torch.diagonal(tril)
        if not bool(torch.isfinite(loc).all() and torch.isfinite(tril).all()):
            raise ValueError("'loc' and 'scale_tril' should hold finite values. Got NaN or inf.")
        if not bool((diag > 0).all()) or not torch.allclose(tril, tril.tril()):
            raise ValueError("'scale_tril' should be lower triangular with a positive diagonal.")
        self.loc = nn.Parameter(loc.clone())
        # unconstrained: strictly-lower part as is, log of the diagonal on the diagonal
        self.raw_tril = nn.Parameter(tril.tril(-1) + torch.diag(torch.log(diag)))

    @property
    def config(self) -> dict:
        return {"dim": self.dim}

    @property
    def scale_tril(self) -> Tensor:
        return self.raw_tril.tril(-1) + torch.diag(torch.exp(torch.diagonal(self.raw_tril)))

    def forward(self, z: Tensor) -> Tensor:
        return self.loc + z @ self.scale_tril.T

    def inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        check_points(x, self.dim, dtype=self.loc.dtype)
        tril = self.scale_tril
        flat = (x - self.loc).reshape(-1, self.dim)
        z = torch.linalg.solve_triangular(tril, flat.T, upper=False).T.reshape(x.shape)
        logabsdet = -torch.diagonal(self.raw_tril).sum()
        return z, logabsdet.expand(x.shape[:-1])


BASES: dict[str, type[Base]] = {"RealNVP": RealNVP, "AffineBase": AffineBase}


def register_base(cls: type[Base]) -> type[Base]:
    """Register a base class by name so that checkpoints naming it can be loaded (usable as a decorator)."""
    BASES[cls.__name__] = cls
    return cls
