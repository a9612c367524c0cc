"""The module paths of gebm_ppl 0.1 that moved in the package layout, kept for one release with a DeprecationWarning.

``import gebm_ppl.generators`` (and every other old path in :data:`MOVED`) still works: a finder on
``sys.meta_path`` warns and answers with the module at its new path (the same module object, so that
names, monkeypatching and ``isinstance`` agree). Nothing is stored at the old paths, so the package tree
holds each module once.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from types import ModuleType

__all__ = ["MOVED", "install"]

MOVED = {
    "gebm_ppl._cli_commands": "gebm_ppl.cli.commands",
    "gebm_ppl.distribution": "gebm_ppl.pyro.distribution",
    "gebm_ppl.generators": "gebm_ppl.bases.generators",
    "gebm_ppl.image_energies": "gebm_ppl.energies.conv",
    "gebm_ppl.nsf": "gebm_ppl.bases.nsf",
    "gebm_ppl.reparam": "gebm_ppl.pyro.reparam",
    "gebm_ppl.toys": "gebm_ppl.data.toys",
    "gebm_ppl.userdata": "gebm_ppl.data.userdata",
}
"""old module path → new module path."""


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the old paths of :data:`MOVED`; loading one warns and binds the old name to the new module."""

    def find_spec(self, fullname: str, path: object = None, target: object = None):
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec) -> ModuleType:
        return ModuleType(spec.name)  # a placeholder: exec_module puts the real module in its place

    def exec_module(self, module: ModuleType) -> None:
        old = module.__name__
        new = MOVED[old]
        warnings.warn(
            f"{old} is deprecated and will be removed in the next release: import {new} instead "
            "(the public names are also available from gebm_ppl).",
            DeprecationWarning,
            stacklevel=2,
        )
        # the import system reads sys.modules[old] back after exec_module: the old name becomes the new module
        sys.modules[old] = importlib.import_module(new)


_FINDER = _MovedModuleFinder()


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (once): it answers only the old paths, and must answer them
    before any other finder (an editable install of an older checkout would still hold the old files)."""
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
