"""One registry of components: bases, energies and latent samplers, by config name, with JAX twin and docs line.

A component is registered once, where it is defined, with a decorator (modelled on torch's
``biject_to.register``: one line at the definition site, no central list to edit)::

    @register_energy(jax="my_package.my_module:convert_my_energy", docs="E(x) = a·Σ x⁴")
    class MyEnergy(gp.energies.Energy):
        ...

after which ``[energy] class = "MyEnergy"`` works in run configurations (:mod:`gebm_ppl.runs.config`),
checkpoints naming it load (:meth:`gebm_ppl.GEBM.load`), :func:`gebm_ppl.to_jax` finds its JAX twin
(:func:`jax_twin`), and :func:`components_table` lists it in the docs. Samplers are registered the same
way through :func:`gebm_ppl.sampling.registry.register_sampler`, which records its
:class:`~gebm_ppl.sampling.registry.SamplerSpec` here under kind ``"sampler"``.

A JAX twin is a converter ``converter(module, dtype) -> (spec, params)`` (contract in
:mod:`gebm_ppl.jax.convert`) or its ``"module:attribute"`` path, imported on first use, so that a torch
module never imports JAX to register its twin.

This module imports neither torch nor JAX.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = [
    "COMPONENTS",
    "JAX_TWINS",
    "KINDS",
    "Component",
    "components_table",
    "get",
    "jax_twin",
    "names",
    "register",
    "register_base",
    "register_energy",
    "register_jax_twin",
    "resolve",
    "unregister",
]

KINDS = ("base", "energy", "sampler")

T = TypeVar("T")


@dataclass(frozen=True)
class Component:
    """One registered component.

    Args:
        kind: ``"base"``, ``"energy"`` or ``"sampler"``.
        name: its config name (``[base] class = name``, ``sample_latent(method=name)``).
        obj: the class (bases, energies) or the :class:`~gebm_ppl.sampling.registry.SamplerSpec`.
        jax: the JAX twin: a converter, its ``"module:attribute"`` path, or None (no NumPyro twin).
        docs: one line for the docs table (default: the first line of the class docstring).
    """

    kind: str
    name: str
    obj: Any
    jax: Callable[..., Any] | str | None = None
    docs: str = ""


COMPONENTS: dict[str, dict[str, Component]] = {kind: {} for kind in KINDS}
"""kind → name → :class:`Component`, in registration order (add with :func:`register`)."""

JAX_TWINS: dict[type, Callable[..., Any] | str] = {}
"""torch class → its JAX converter (or ``"module:attribute"``); read by :func:`jax_twin` along the MRO."""


def _check_kind(kind: object) -> str:
    if kind not in KINDS:
        raise ValueError(f"'kind' should be one of {list(KINDS)}. Got {kind!r}.")
    return str(kind)


def _first_line(obj: Any) -> str:
    """A sampler spec's ``summary``, else the first line of the docstring ("" if there is none)."""
    summary = getattr(obj, "summary", None)
    doc = summary if isinstance(summary, str) and summary else getattr(obj, "__doc__", None)
    doc = doc if isinstance(doc, str) else ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def _check_jax(jax: object, owner: str) -> None:
    if jax is None or callable(jax):
        return
    if not isinstance(jax, str) or jax.count(":") != 1 or not all(jax.split(":")):
        raise TypeError(f"{owner}: 'jax' should be a converter, a 'module:attribute' string or None. Got {jax!r}.")


def register(kind: str, obj: Any, name: str | None = None, *, jax: Callable[..., Any] | str | None = None,
             docs: str | None = None, replace: bool = True) -> Any:
    """Register ``obj`` (a class, or a sampler spec) as a component of ``kind``; returns ``obj``.

    Args:
        kind: ``"base"``, ``"energy"`` or ``"sampler"``.
        obj: the class (bases, energies) or the sampler spec.
        name: the config name (default ``obj.__name__``, or ``obj.name`` for a sampler spec).
        jax: the JAX twin (converter or ``"module:attribute"``); for classes it is also recorded in
            :data:`JAX_TWINS`.
        docs: one line for the docs (default: the first docstring line, or a spec's ``summary``).
        replace: whether a component of the same name may be replaced (a re-imported module re-registers).

    Raises:
        ValueError: unknown kind, or a taken name with ``replace=False``.
        TypeError: a base or energy that is not a class, a name that is not an identifier, a bad ``jax``.
    """
    kind = _check_kind(kind)
    if kind != "sampler" and not isinstance(obj, type):
        raise TypeError(f"register({kind!r}): expected a class. Got {obj!r}.")
    name = name if name is not None else (getattr(obj, "name", None) if kind == "sampler" else obj.__name__)
    if not isinstance(name, str) or not name.isidentifier():
        raise TypeError(f"register({kind!r}): 'name' should be an identifier. Got {name!r}.")
    _check_jax(jax, f"register({kind!r}, {name!r})")
    table = COMPONENTS[kind]
    if not replace and name in table and table[name].obj is not obj:
        raise ValueError(f"a {kind} named {name!r} is already registered (pass replace=True to override).")
    table[name] = Component(kind, name, obj, jax, _first_line(obj) if docs is None else docs)
    if jax is not None and isinstance(obj, type):
        JAX_TWINS[obj] = jax
    return obj


def unregister(kind: str, name: str) -> None:
    """Remove a component (and its class's JAX twin); KeyError naming it if absent."""
    comp = COMPONENTS[_check_kind(kind)].pop(name, None)
    if comp is None:
        raise KeyError(f"no {kind} named {name!r} is registered.")
    if isinstance(comp.obj, type) and JAX_TWINS.get(comp.obj) is comp.jax:
        JAX_TWINS.pop(comp.obj, None)


def _class_decorator(kind: str, cls: type | None, name: str | None, jax: Any, docs: str | None) -> Any:
    if cls is not None:
        return register(kind, cls, name, jax=jax, docs=docs)

    def add(c: type[T]) -> type[T]:
        return register(kind, c, name, jax=jax, docs=docs)

    return add


def register_base(cls: type | None = None, *, name: str | None = None, jax: Callable[..., Any] | str | None = None,
                  docs: str | None = None) -> Any:
    """Register a base class: ``@register_base`` or ``@register_base(name=..., jax=..., docs=...)``.

    Checkpoints naming it load, ``[base] class = name`` works, and ``to_jax`` uses ``jax``.
    """
    return _class_decorator("base", cls, name, jax, docs)


def register_energy(cls: type | None = None, *, name: str | None = None, jax: Callable[..., Any] | str | None = None,
                    docs: str | None = None) -> Any:
    """Register an energy class: ``@register_energy`` or ``@register_energy(name=..., jax=..., docs=...)``."""
    return _class_decorator("energy", cls, name, jax, docs)


def register_jax_twin(cls: type, converter: Callable[..., Any] | str) -> None:
    """Record the JAX twin of ``cls`` (a class that need not be a registered component)."""
    if not isinstance(cls, type):
        raise TypeError(f"register_jax_twin expects a class. Got {cls!r}.")
    _check_jax(converter, f"register_jax_twin({cls.__name__})")
    JAX_TWINS[cls] = converter


def resolve(path: Callable[..., Any] | str) -> Callable[..., Any]:
    """The object that a ``"module:attribute"`` path names (imported now); a callable is returned as is."""
    if not isinstance(path, str):
        return path
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def _resolve(path: Callable[..., Any] | str) -> Callable[..., Any]:
    try:
        return resolve(path)
    except (ImportError, AttributeError) as e:
        raise TypeError(f"the JAX twin {path!r} cannot be imported: {e}") from e


def jax_twin(cls: type) -> Callable[..., Any] | None:
    """The JAX converter of ``cls`` or of its nearest registered parent class (None if there is none)."""
    for k in cls.__mro__:
        if k in JAX_TWINS:
            return _resolve(JAX_TWINS[k])
    return None


def get(kind: str, name: object) -> Any:
    """The registered object of ``kind`` called ``name``; ValueError naming the known ones otherwise."""
    table = COMPONENTS[_check_kind(kind)]
    if not isinstance(name, str) or name not in table:
        raise ValueError(f"unknown {kind} {name!r}: expected one of {list(table)}.")
    return table[name].obj


def names(kind: str) -> tuple[str, ...]:
    """The registered names of ``kind``, in registration order."""
    return tuple(COMPONENTS[_check_kind(kind)])


def components_table(kind: str) -> str:
    """The registered components of ``kind`` as a Markdown table (config name, what it is, JAX twin)."""
    rows = ["| `class` | what it is | JAX twin |", "|---|---|---|"]
    for name, comp in COMPONENTS[_check_kind(kind)].items():
        rows.append(f"| `{name}` | {comp.docs} | {'yes' if comp.jax is not None else 'no'} |")
    return "\n".join(rows)


class ComponentView(MutableMapping):
    """A ``{name: object}`` view of one kind of :data:`COMPONENTS` (the older ``BASES``/``ENERGIES``/``SAMPLERS``).

    Setting an item registers the object under that name; deleting it unregisters it.
    """

    def __init__(self, kind: str) -> None:
        self.kind = _check_kind(kind)

    def __getitem__(self, name: str) -> Any:
        return COMPONENTS[self.kind][name].obj

    def __setitem__(self, name: str, obj: Any) -> None:
        register(self.kind, obj, name)

    def __delitem__(self, name: str) -> None:
        unregister(self.kind, name)

    def __iter__(self) -> Iterator[str]:
        return iter(list(COMPONENTS[self.kind]))

    def __len__(self) -> int:
        return len(COMPONENTS[self.kind])

    def __repr__(self) -> str:
        return f"ComponentView({self.kind!r}: {list(self)})"
