"""Griffe extension for the API reference: read a Google-style ``Example:`` section as ``Examples:``.

Griffe's Google parser recognises only the plural title; with the singular one, the doctest lines
would render as nested block quotes instead of a code example.
"""

from __future__ import annotations

import re

import griffe

_SINGULAR = re.compile(r"^(?P<indent>[ \t]*)Example:[ \t]*$", re.M)


class ExampleSections(griffe.Extension):
    """Rename ``Example:`` section titles to ``Examples:`` before the docstrings are parsed."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _SINGULAR.sub(r"\g<indent>Examples:", obj.docstring.value)
