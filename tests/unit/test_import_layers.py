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


def every_import(path: Path) -> set[str]:
    """The absolute names of every module ``path`` imports anywhere in it (in a function,
    under ``TYPE_CHECKING``...), and each ``from x import y`` also as ``x.y``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def reachable(start: str) -> set[str]:
    """The zimg modules that importing ``start`` imports, directly or not (``start`` too)."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(imported_modules(name, MODULES[name]))
    return seen


def test_the_actor_runtime_needs_no_socket() -> None:
    """The runtime speaks to a ``Transport``: neither it nor anything it imports imports zmq or
    the concrete ``Connection``, so it runs over ``zimg.testing.MemoryTransport`` as well."""
    assert "zmq" in every_import(MODULES["zimg.connection"])  # the check sees such imports
    assert "zimg._actor" in reachable("zimg.node")
    # The package itself is left out: it names every public module, lazily (``zimg._lazy``).
    for module in reachable("zimg._actor") - {"zimg"}:
        imports = every_import(MODULES[module])
        assert "zimg.connection" not in imports, f"{module} imports zimg.connection"
        assert not {m for m in imports if m.split(".")[0] == "zmq"}, f"{module} imports zmq"
