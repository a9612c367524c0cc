"""Bases G_θ: latent noise Z ~ N(0, I_d) pushed forward by a generator X = G_θ(Z).

The base contract (:class:`Base`, an abstract class; the rest of gebm_ppl relies on nothing else):

* ``dim`` (D, data dimension) and ``latent_dim`` (d, latent dimension; d = D for flows), set by the
  constructor (checked when the object is built);
* ``forward(z) -> x`` (abstract): the generator G_θ, ``[..., d] -> [..., D]``, differentiable in z and θ;
* ``sample_prior(n) -> [n, d]``: draws from the prior η = N(0, I_d) on the base's device and dtype
  (``sample_latent`` is its deprecated old name);
* ``sample(n) -> [n, D]``: ``forward(sample_prior(n))``;
* ``config``: the constructor's keyword arguments (plain Python values), so that
  ``type(base)(**base.config)`` rebuilds the architecture for checkpoints;
* ``has_density`` (class flag): bases with a density (invertible generators) implement
  ``inverse(x) -> (z, logabsdet)`` with ``logabsdet = log|det ∂G_θ⁻¹(x)/∂x|`` of shape ``[...]``, and
  get ``log_prob(x) = log η(G_θ⁻¹(x)) + logabsdet``. Bases without one raise
  :class:`DensityNotAvailable` there.

:class:`TransformBase` turns any bijection into a density base by change of variables: a
``torch.distributions.Transform`` (z → x), or a zuko flow / lazy transform (x → z, flipped inside).
nflows transforms also map data → noise; that flip (G = ``transform.inverse``) stays inside :class:`RealNVP`.

Length: the base contract and the three bases built directly on it (TransformBase, RealNVP, AffineBase)
live together because the contract's checks and the registry are exercised by each of them; generator bases
are in :mod:`gebm_ppl.generators`, the zuko NSF in :mod:`gebm_ppl.nsf`.
"""

from __future__ import annotations

import abc
import importlib
import math
import warnings
from typing import Any

import torch
from nflows.transforms import AffineCouplingTransform, CompositeTransform
from torch import Tensor, nn

from ._validation import check_points, check_positive_float, check_positive_int

__all__ = ["AffineBase", "Base", "DensityNotAvailable", "RealNVP", "TransformBase", "BASES", "register_base"]


class DensityNotAvailable(NotImplementedError, TypeError):
    """The base is a generator without a tractable density (no inverse / log_prob).

    A ``NotImplementedError``; also a ``TypeError``, as it was before the base contract became abstract.
    """


class _BaseMeta(abc.ABCMeta):
    """Checks after construction that a base has set integer ``dim`` and ``latent_dim``."""

    def __call__(cls, *args, **kwargs):
        obj = super().__call__(*args, **kwargs)
        for name in ("dim", "latent_dim"):
            value = getattr(obj, name, None)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TypeError(
                    f"{cls.__name__} breaks the base contract: its constructor should set '{name}' to a positive "
                    f"integer (data dimension D and latent dimension d). Got {value!r}."
                )
        return obj


class Base(nn.Module, metaclass=_BaseMeta):
    """Abstract base G_θ = (G_θ)#η, η = N(0, I_d) (the contract is in the module docstring).

    Subclasses implement ``forward`` and set ``dim``/``latent_dim`` in their constructor; density
    bases also implement ``inverse`` (``has_density`` then defaults to True) and checkpointable
    ones ``config``. A base without parameters works: a non-persistent buffer carries its device/dtype.
    """

    dim: int
    latent_dim: int
    has_density: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # a flag set in the class (or an ancestor's) body wins; else: does the class provide an inverse?
        for k in cls.__mro__:
            if k is Base or ("has_density" in k.__dict__ and not k.__dict__.get("_has_density_derived", False)):
                break
        if k is Base:
            cls.has_density = cls.inverse is not Base.inverse
            cls._has_density_derived = True

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("_anchor", torch.empty(0), persistent=False)

    @abc.abstractmethod
    def forward(self, z: Tensor) -> Tensor:
        """G_θ(z): latent ``[..., d]`` → data ``[..., D]``."""

    @property
    def config(self) -> dict:
        """The constructor's keyword arguments (plain values); checkpoints need it."""
        raise TypeError(f"{type(self).__name__} does not define 'config', which checkpoints need.")

    def _param_like(self) -> Tensor:
        p = next(self.parameters(), None)
        if p is not None:
            return p
        anchor = getattr(self, "_anchor", None)
        return anchor if anchor is not None else torch.empty(0)

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
        """G⁻¹(x) and log|det ∂G⁻¹(x)/∂x| (density bases only)."""
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


def _sum_to_batch(ladj: Tensor, v: Tensor) -> Tensor:
    """A Jacobian term ``[N]`` (event-level) from a transform's ``[N]`` or elementwise ``[N, D]``."""
    return ladj.sum(-1) if ladj.dim() == v.dim() else ladj


class TransformBase(Base):
    """Density base from a bijection T: log g(x) = log η(G⁻¹(x)) + log|det ∂G⁻¹(x)/∂x| (change of variables).

    ``transform`` is either

    * a ``torch.distributions.Transform`` on real vectors: by default G = T (latent z → data x,
      torch's ``TransformedDistribution`` convention);
    * a zuko flow (``zuko.flows.Flow``, e.g. ``zuko.flows.NSF(D)``, whose prior must be N(0, I)) or a
      zuko ``LazyTransform``: these map data → noise, so by default G = T⁻¹. Their parameters are
      parameters of the base (trained by :func:`gebm_ppl.fit_mle` / :func:`gebm_ppl.fit_kale`).

    ``direction`` overrides the default: ``"generate"`` (T maps z → x) or ``"normalize"`` (T maps x → z);
    pass ``direction="normalize"`` for an already built zuko transform (``flow.transform()``), which maps x → z.
    A plain torch transform has no parameters; its tensors do not follow ``.to()``. The base has no
    ``config`` (checkpoints need a subclass that defines one, such as :class:`RealNVP` or :class:`gebm_ppl.NSF`).

    Example:
        >>> from torch.distributions import AffineTransform
        >>> base = TransformBase(AffineTransform(torch.ones(2), 2.0 * torch.ones(2)), dim=2)
        >>> base.log_prob(torch.zeros(3, 2)).shape
        torch.Size([3])
    """

    has_density = True

    def __init__(self, transform: Any, dim: int, direction: str | None = None):
        super().__init__()
        dim = check_positive_int(dim, "dim")
        self.dim = self.latent_dim = dim
        transform, self.direction, self._lazy = self._adopt(transform, direction)
        self.transform = transform

    @staticmethod
    def _adopt(transform: Any, direction: str | None) -> tuple[Any, str, bool]:
        """(what to store, direction, whether calling it yields the transform)."""
        if direction not in (None, "generate", "normalize"):
            raise ValueError(f"'direction' should be None, 'generate' or 'normalize'. Got {direction!r}.")
        try:
            import zuko
        except ImportError:  # pragma: no cover - zuko is a dependency
            zuko = None
        if zuko is not None and isinstance(transform, zuko.flows.Flow):
            _check_standard_normal(transform)
            return transform.transform, direction or "normalize", True
        if zuko is not None and isinstance(transform, zuko.flows.LazyTransform):
            return transform, direction or "normalize", True
        if isinstance(transform, torch.distributions.Transform):  # a built zuko transform too: say direction
            return transform, direction or "generate", False
        raise TypeError(
            "'transform' should be a torch.distributions.Transform, a zuko flow or a zuko LazyTransform. "
            f"Got {type(transform).__name__}."
        )

    def _current(self) -> torch.distributions.Transform:
        return self.transform() if self._lazy else self.transform

    @staticmethod
    def _run(t: torch.distributions.Transform, v: Tensor) -> tuple[Tensor, Tensor]:
        if hasattr(t, "call_and_ladj"):  # zuko: value and log|det J| in one pass
            y, ladj = t.call_and_ladj(v)
        else:
            y = t(v)
            ladj = t.log_abs_det_jacobian(v, y)
        return y, _sum_to_batch(ladj, v)

    def _generate(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """G(z) and log|det ∂G/∂z| for flat ``z`` ``[N, D]``."""
        t = self._current()
        return self._run(t if self.direction == "generate" else t.inv, z)

    def _normalize(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """G⁻¹(x) and log|det ∂G⁻¹/∂x| for flat ``x`` ``[N, D]``."""
        t = self._current()
        return self._run(t.inv if self.direction == "generate" else t, x)

    def _check_latent(self, z: Tensor) -> None:
        # shape and type only: samplers evaluate G on diverging (non-finite) trajectories on purpose
        if not isinstance(z, Tensor) or z.dim() < 1 or z.shape[-1] != self.dim:
            shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise ValueError(f"{type(self).__name__} expects z of shape [..., {self.dim}]. Got {shape}.")

    def forward(self, z: Tensor) -> Tensor:
        """G(z): latent ``[..., D]`` → data ``[..., D]``."""
        return self.forward_and_log_det(z)[0]

    def forward_and_log_det(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """G(z) and log|det ∂G(z)/∂z|."""
        self._check_latent(z)
        x, logabsdet = self._generate(z.reshape(-1, self.dim))
        return x.reshape(z.shape), logabsdet.reshape(z.shape[:-1])

    def inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """G⁻¹(x) and log|det ∂G⁻¹(x)/∂x|, shapes ``[..., D]`` and ``[...]``."""
        check_points(x, self.dim, dtype=self._param_like().dtype)
        z, logabsdet = self._normalize(x.reshape(-1, self.dim))
        return z.reshape(x.shape), logabsdet.reshape(x.shape[:-1])


def _check_standard_normal(flow: nn.Module) -> None:
    """A zuko flow's prior should be N(0, I): the base contract fixes η."""
    try:
        prior = flow.base()
        loc, scale = prior.mean, prior.stddev
    except Exception:  # noqa: BLE001 - an unusual prior: say what we need
        loc = scale = None
    if loc is None or not (bool((loc == 0).all()) and bool((scale == 1).all())):
        raise ValueError("TransformBase needs a zuko flow whose prior is N(0, I) (as zuko's MAF/NSF have).")


class NflowsTransformBase(TransformBase):
    """A :class:`TransformBase` on an nflows transform T: data → noise, so that G = T⁻¹; ``config`` from ``_config``.

    The shared adapter of :class:`RealNVP` and of nflows flows built elsewhere (e.g. the benchmark's MAF and NSF).
    """

    @property
    def config(self) -> dict:
        return dict(self._config)

    @staticmethod
    def _adopt(transform: Any, direction: str | None) -> tuple[Any, str, bool]:
        return transform, "normalize", False  # an nflows transform (data → noise), flipped below

    def _generate(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return self.transform.inverse(z)

    def _normalize(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.transform.forward(x)


class RealNVP(NflowsTransformBase):
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
        config = dict(
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
        super().__init__(CompositeTransform(layers), dim, direction="normalize")
        self._config = config

    def forward(self, z: Tensor) -> Tensor:
        """G(z): latent ``[..., D]`` → data ``[..., D]``."""
        flat = z.reshape(-1, self.dim)
        x, _ = self.transform.inverse(flat)
        return x.reshape(z.shape)


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


class _Registry(dict):
    """Name → class; names of bases defined in optional modules import their module on first lookup."""

    _LAZY = {"NSF": "gebm_ppl.nsf"}

    def _load(self, key: object) -> bool:
        module = self._LAZY.get(key) if isinstance(key, str) else None
        if module is None or dict.__contains__(self, key):
            return dict.__contains__(self, key)
        try:
            importlib.import_module(module)
        except ImportError:
            return False
        return dict.__contains__(self, key)

    def __contains__(self, key: object) -> bool:
        return self._load(key)

    def __missing__(self, key: object):
        if self._load(key):
            return dict.__getitem__(self, key)
        raise KeyError(key)


BASES: dict[str, type[Base]] = _Registry({"RealNVP": RealNVP, "AffineBase": AffineBase})


def register_base(cls: type[Base]) -> type[Base]:
    """Register a base class by name so that checkpoints naming it can be loaded (usable as a decorator)."""
    BASES[cls.__name__] = cls
    return cls
