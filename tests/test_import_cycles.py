"""No import cycle inside gebm_ppl, counting imports inside functions (an import moved into a function to break a
cycle is still a cycle).

An edge A → B is an import of B anywhere in A. A module-level import of ``a.b.c`` also runs the packages
``a.b`` first (while A is still initialising), so it adds edges to those ``__init__`` modules too: that is how
``bases/__init__ → generators → energies/__init__ → conv → bases.generators`` would fail at import time.
An import inside a function runs once every module has finished initialising, so it adds only its target.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "gebm_ppl"
PACKAGE = "gebm_ppl"


def _modules() -> dict[str, Path]:
    """Dotted module name → file, for every ``.py`` file of the package."""
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement, at any depth (functions, classes, try blocks), except ``if TYPE_CHECKING:``,
    with whether it runs at module level (outside any function)."""
    found = []

    def visit(node: ast.AST, module_level: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child, module_level)
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append((node, module_level))
        inside = module_level and not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        for child in ast.iter_child_nodes(node):
            visit(child, inside)

    visit(tree, True)
    return found


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph() -> dict[str, set[str]]:
    """module → the gebm_ppl modules it imports: each target, and for module-level imports also the target's
    packages that are not the importer's own (those are already being imported)."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        package = name if is_package else name.rpartition(".")[0]
        for node, module_level in _imports(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:
                    base_parts = package.split(".")
                    base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                    base = ".".join(base_parts + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in modules else base)
            own = set(_ancestors(name)) | {name}
            for target in targets:
                if not (target == PACKAGE or target.startswith(PACKAGE + ".")):
                    continue
                if target not in modules:
                    raise AssertionError(f"{name} imports {target}, which is not a module of {PACKAGE}")
                for t in [*(_ancestors(target) if module_level else []), target]:
                    if t in modules and t not in own:
                        graph[name].add(t)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle ``[a, b, ..., a]`` of ``graph``, or None (depth-first search with colours)."""
    colour = dict.fromkeys(graph, 0)  # 0 new, 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if colour[nxt] == 1:
                return [*stack[stack.index(nxt):], nxt]
            if colour[nxt] == 0:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        colour[node] = 2
        return None

    for node in sorted(graph):
        if colour[node] == 0:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_graph_sees_imports_inside_functions_and_packages():
    graph = import_graph()
    # a module-level import, one inside a function, and the package that an import runs first
    assert "gebm_ppl.registry" in graph["gebm_ppl.runs.config"]
    assert "gebm_ppl.runs" in graph["gebm_ppl.cli.commands"]  # `from .. import runs` inside functions
    assert "gebm_ppl.jax._nn" in graph["gebm_ppl.jax.nsf"]  # inside methods
    assert "gebm_ppl.gebm" in graph["gebm_ppl.sampling.driver"]  # inside a function
    assert "gebm_ppl.sampling" in graph["gebm_ppl.numpyro.kernels"]  # ..sampling.registry runs sampling/__init__
    assert "gebm_ppl.bases" in graph["gebm_ppl.energies.conv"]  # ..bases.generators runs bases/__init__ first


def test_find_cycle_names_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_gebm_ppl_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    if cycle:
        pytest.fail("import cycle in gebm_ppl: " + " -> ".join(cycle))
