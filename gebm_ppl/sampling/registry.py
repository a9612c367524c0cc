"""The sampler registry: one :class:`SamplerSpec` per latent sampler, read by ``sample_latent``, the CLI and benchmarks.

A sampler is added by ONE module that builds its kernel and calls :func:`register_sampler`; it then
appears in ``gebm_ppl.sampling.METHODS``, is accepted by :func:`gebm_ppl.sample_latent` and
:func:`gebm_ppl.sampling.sample_potential` (its options validated from their declared types), and is
offered by ``gebm sample --method`` with its one-line summary as help. Example (a random-walk
Metropolis sampler in a few lines)::

    from gebm_ppl.sampling.driver import batched_runner
    from gebm_ppl.sampling.registry import Option, SamplerSpec, register_sampler
    register_sampler(SamplerSpec(
        name="rwm", summary="random-walk Metropolis", gradient_based=False,
        options=(Option("scale", float, 0.5, "proposal standard deviation"),),
        torch_runner=batched_runner(RWM_KERNEL),  # a driver.Kernel(init, step, stats)
    ))

The specs live in the component registry (:mod:`gebm_ppl.registry`, kind ``"sampler"``), beside the bases
and energies; :data:`SAMPLERS` is the ``{name: spec}`` view of it. This module imports neither torch nor
JAX: kernels are reached through the spec's callables, and a JAX kernel may be named lazily as
``"module:attribute"``.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import registry as _registry

__all__ = [
    "BACKENDS",
    "SAMPLERS",
    "Option",
    "SamplerSpec",
    "get_sampler",
    "methods_help",
    "methods_table",
    "numpyro_backend",
    "register_sampler",
    "sampler_names",
    "scheduled_step_size",
    "SCHEDULE_OPTIONS",
]

BACKENDS = ("pyro", "numpyro")
NUMPYRO_BACKEND = {
    "latent": "gebm_ppl.numpyro.mcmc:sample_latent_numpyro",
    "potential": "gebm_ppl.numpyro.mcmc:sample_potential_numpyro",
}
"""The NumPyro backend's runners, named like the samplers' JAX kernels (``"module:attribute"``) and imported on
first use by :func:`numpyro_backend`: the backend builds on this package, which names it and never imports it."""


def numpyro_backend(part: str) -> Callable[..., Any]:
    """The NumPyro runner ``part`` (``"latent"`` or ``"potential"``); ImportError saying what to install without JAX."""
    try:
        return _registry.resolve(NUMPYRO_BACKEND[part])
    except ImportError as e:
        raise ImportError(
            f"backend='numpyro' needs JAX and NumPyro (pip install jax numpyro); importing them failed: {e}"
        ) from e


SAMPLERS: dict[str, SamplerSpec] = _registry.ComponentView("sampler")
"""name → :class:`SamplerSpec`, in registration order (read it; add to it with :func:`register_sampler`)."""


@dataclass(frozen=True)
class Option:
    """A typed sampler setting with its default and its bounds.

    Args:
        name: keyword name (a Python identifier).
        type: ``int``, ``float`` or ``bool``.
        default: value used when the keyword is not given (``None`` allowed with ``allow_none``).
        help: one line for docs and ``--help``.
        minimum: lower bound (None: unbounded); strict for floats unless ``inclusive``, inclusive for ints.
        maximum: inclusive upper bound (None: unbounded).
        inclusive: whether a float may equal ``minimum``.
        allow_none: whether ``None`` is a valid value (e.g. "estimate it").
    """

    name: str
    type: type
    default: Any
    help: str
    minimum: float | None = 0.0
    maximum: float | None = None
    inclusive: bool = False
    allow_none: bool = False

    def validate(self, value: object) -> Any:
        """Return ``value`` converted to the option's type, or raise TypeError/ValueError naming the option."""
        if value is None and self.allow_none:
            return None
        what = {int: "an integer", float: "a number", bool: "a bool"}[self.type]
        if self.type is bool:
            if not isinstance(value, bool):
                raise TypeError(f"'{self.name}' should be a bool. Got {value!r}.")
            return value
        ok = int if self.type is int else (int, float)
        if isinstance(value, bool) or not isinstance(value, ok) and not _is_numpy_number(value, self.type):
            raise TypeError(f"'{self.name}' should be {what}{self._bounds()}. Got {value!r}.")
        value = self.type(value)
        if self.type is float and not math.isfinite(value):
            raise ValueError(f"'{self.name}' should be a finite number{self._bounds()}. Got {value}.")
        low_bad = self.minimum is not None and (
            value < self.minimum or (self.type is float and not self.inclusive and value == self.minimum)
        )
        if low_bad or (self.maximum is not None and value > self.maximum):
            raise ValueError(f"'{self.name}' should be {what}{self._bounds()}. Got {value}.")
        return value

    def _bounds(self) -> str:
        parts = []
        if self.minimum is not None:
            strict = self.type is float and not self.inclusive
            parts.append(f"{'>' if strict else '>='} {self.minimum:g}")
        if self.maximum is not None:
            parts.append(f"<= {self.maximum:g}")
        return (" " + " and ".join(parts)) if parts else ""


def _is_numpy_number(value: object, kind: type) -> bool:
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency
        return False
    return isinstance(value, np.integer if kind is int else (np.integer, np.floating))


SCHEDULE_OPTIONS = (
    Option("step_size_decay", float, 1.0, "step-size factor applied every decay_every transitions (1: constant)",
           maximum=1.0),
    Option("decay_every", int, 200, "transitions between step-size decays", minimum=1),
)
"""The step-size schedule of the Langevin-type samplers: γ_t = γ₀ · step_size_decay^⌊t / decay_every⌋."""


def scheduled_step_size(step_size: float, step_size_decay: float, decay_every: int, t: Any) -> Any:
    """γ_t = γ₀ · ρ^⌊t / k⌋ at transition t = 0, 1, ... (warmup included); works on ints and JAX arrays."""
    return step_size * step_size_decay ** (t // decay_every)


@dataclass(frozen=True)
class SamplerSpec:
    """What the library needs to know about one latent sampler.

    Args:
        name: the method name (``sample_latent(method=name)``, ``gebm sample --method name``).
        summary: one line (CLI help, docs table).
        gradient_based: whether the sampler evaluates ∇U.
        options: the typed settings of the library's own kernels, with defaults.
        torch_runner: the Pyro/torch implementation, ``run(potential, init, *, num_samples, warmup_steps,
            generator, chain_seeds, progress, **settings) -> (z [C, N, d], stats {name: [C, N]}, seconds)``;
            ``potential`` is a :class:`~gebm_ppl.sampling.driver.CountingPotential` (``[..., d] → [...]``),
            ``init`` ``[C, d]``. :func:`~gebm_ppl.sampling.driver.batched_runner` makes one from a batched kernel.
        jax_kernel: the NumPyro implementation: ``factory(potential_fn, **settings)`` returning a
            ``numpyro.infer.mcmc.MCMCKernel`` (see :mod:`gebm_ppl.numpyro.kernels`), or its
            ``"module:attribute"`` path, imported on first use.
        burn_in: whether ``warmup_steps`` transitions are run and discarded (False for samplers whose
            draws are independent of the previous one, e.g. SIR and DOT).
        passthrough: for wrappers of third-party kernels (Pyro/NumPyro NUTS, HMC): a callable
            ``check(backend, kwargs)`` that raises TypeError on keywords the kernel does not take; the
            keywords are then passed on unvalidated by the registry.
        stats: names of the per-draw ``sample_stats`` the sampler records (documentation).
    """

    name: str
    summary: str
    gradient_based: bool
    options: tuple[Option, ...] = ()
    torch_runner: Callable[..., Any] | None = None
    jax_kernel: Callable[..., Any] | str | None = None
    burn_in: bool = True
    passthrough: Callable[[str, dict], None] | None = None
    stats: tuple[str, ...] = ("lp",)
    _options: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier() or self.name != self.name.lower():
            raise ValueError(f"'name' should be a lower-case identifier. Got {self.name!r}.")
        if self.torch_runner is None and self.jax_kernel is None:
            raise ValueError(f"sampler {self.name!r}: give a torch_runner, a jax_kernel or both.")
        names = [o.name for o in self.options]
        if len(set(names)) != len(names):
            raise ValueError(f"sampler {self.name!r}: duplicate option names in {names}.")
        self._options.update({o.name: o for o in self.options})

    @property
    def backends(self) -> tuple[str, ...]:
        """The backends that implement the sampler, among ``("pyro", "numpyro")``."""
        return tuple(b for b, impl in zip(BACKENDS, (self.torch_runner, self.jax_kernel), strict=True) if impl)

    @property
    def defaults(self) -> dict[str, Any]:
        """``{option: default}``."""
        return {o.name: o.default for o in self.options}

    def validate(self, kwargs: Mapping[str, Any], backend: str = "pyro") -> dict[str, Any]:
        """The settings for a run: defaults overridden by ``kwargs``, each checked against its :class:`Option`.

        Raises:
            TypeError: unknown keywords (named, with the allowed ones) or wrong types.
            ValueError: out-of-range values, or a backend that does not implement the sampler.
        """
        if backend not in self.backends:
            raise ValueError(
                f"method {self.name!r} is not available with backend {backend!r} "
                f"(it has {list(self.backends)}); methods with backend {backend!r}: {list(sampler_names(backend))}."
            )
        if self.passthrough is not None:
            self.passthrough(backend, dict(kwargs))
            return dict(kwargs)
        unknown = sorted(set(kwargs) - set(self._options))
        if unknown:
            raise TypeError(
                f"unknown keyword argument(s) {unknown} for method {self.name!r} (allowed: {sorted(self._options)})."
            )
        return {name: opt.validate(kwargs.get(name, opt.default)) for name, opt in self._options.items()}

    def kernel_factory(self) -> Callable[..., Any]:
        """The JAX kernel factory, importing it if it was given as ``"module:attribute"``."""
        if isinstance(self.jax_kernel, str):
            module, _, attr = self.jax_kernel.partition(":")
            return getattr(importlib.import_module(module), attr)
        if self.jax_kernel is None:
            raise ValueError(f"method {self.name!r} has no NumPyro implementation.")
        return self.jax_kernel

    def help_text(self) -> str:
        """``summary (options: name=default, ...) [backends]``, for docs and ``--help``."""
        opts = ", ".join(f"{o.name}={o.default}" for o in self.options)
        return f"{self.summary}" + (f" (options: {opts})" if opts else "") + f" [{', '.join(self.backends)}]"


def register_sampler(spec: SamplerSpec, *, replace: bool = False) -> SamplerSpec:
    """Add ``spec`` to :data:`SAMPLERS` (and so to ``METHODS``, ``sample_latent`` and the CLI); returns it.

    Raises:
        TypeError: ``spec`` is not a :class:`SamplerSpec`.
        ValueError: the name is taken and ``replace`` is False.
    """
    if not isinstance(spec, SamplerSpec):
        raise TypeError(f"'spec' should be a SamplerSpec. Got {type(spec).__name__}.")
    if spec.name in SAMPLERS and not replace and SAMPLERS[spec.name] is not spec:
        raise ValueError(f"a sampler named {spec.name!r} is already registered (pass replace=True to override).")
    _registry.register("sampler", spec, spec.name, jax=spec.jax_kernel, docs=spec.summary)
    return spec


def _builtins() -> None:
    importlib.import_module("gebm_ppl.sampling")  # registers the built-in samplers


def get_sampler(name: str) -> SamplerSpec:
    """The spec of method ``name``; ValueError naming the known methods otherwise."""
    _builtins()
    if not isinstance(name, str) or name not in SAMPLERS:
        raise ValueError(f"unknown method {name!r}: expected one of {list(SAMPLERS)}.")
    return SAMPLERS[name]


def sampler_names(backend: str | None = None) -> tuple[str, ...]:
    """Registered method names, optionally only those that ``backend`` implements."""
    _builtins()
    return tuple(n for n, s in SAMPLERS.items() if backend is None or backend in s.backends)


def methods_help() -> str:
    """One ``name: help`` clause per registered sampler, joined with ``"; "`` (the CLI's ``--method`` help)."""
    _builtins()
    return "; ".join(f"{n}: {s.help_text()}" for n, s in SAMPLERS.items())


def methods_table() -> str:
    """The registered samplers as a Markdown table (method, summary, gradients, backends, options and defaults)."""
    _builtins()
    rows = ["| `method` | what it is | gradients | backends | options (defaults) |", "|---|---|---|---|---|"]
    for name, spec in SAMPLERS.items():
        if spec.passthrough is not None:
            opts = "the keywords of the backend's own kernel"
        else:
            opts = ", ".join(f"`{o.name}` ({o.default})" for o in spec.options) or "none"
        grads = "yes" if spec.gradient_based else "no"
        rows.append(f"| `{name}` | {spec.summary} | {grads} | {', '.join(spec.backends)} | {opts} |")
    return "\n".join(rows)
