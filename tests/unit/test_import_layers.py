"""The zimg modules are layered: no module imports, at import time, one that imports it back."""

from __future__ import annotations

import ast
from pathlib import Path

import zimg

PACKAGE = Path(zimg.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_time_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """The import statements that run when the module is imported: not those in a function
    body or under ``if TYPE_CHECKING:`` (its ``else`` branch does run)."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            return
        elif isinstance(node, ast.If) and is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
        else:
            for child in ast.iter_child_nodes(node):
                visit(child)

    visit(tree)
    return found


def imported_modules(name: str, path: Path) -> set[str]:
    """The zimg modules that importing ``name`` imports directly."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    edges: set[str] = set()
    for node in import_time_imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            edges.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            base = f"{anchor}.{base}" if base else anchor
        edges.add(base)
        edges.update(f"{base}.{alias.name}" for alias in node.names)  # from pkg import module
    return {edge for edge in edges if edge in MODULES and edge != name}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import each other, directly or not (the strongly connected
    components of more than one module, by Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = stack[stack.index(node) :]
            del stack[stack.index(node) :]
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return sorted(found)


def test_the_walk_sees_the_package() -> None:
    graph = {name: imported_modules(name, path) for name, path in MODULES.items()}
    assert "zimg.images" in graph["zimg.grid"]  # an edge the layering keeps
    assert "zimg.ops" in graph["zimg.worker"]  # from zimg import images, ops, ...


def test_circles() -> None:
    assert circles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    graph = {"a": {"b"}, "b": {"c"}, "c": {"b", "d"}, "d": {"e"}, "e": {"d"}}
    assert circles(graph) == [["b", "c"], ["d", "e"]]


def test_no_import_cycles() -> None:
    graph = {name: imported_modules(name, path) for name, path in MODULES.items()}
    found = circles(graph)
    assert not found, f"modules that import each other at import time: {found}"
