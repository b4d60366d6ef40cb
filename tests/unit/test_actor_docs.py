"""docs/actors.md names every public actor call: Node's, Process's, LocalCluster's attributes and
the module-level names zimg exports for actors, so that the page cannot fall behind the code."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import zimg
from zimg.cluster import LocalCluster

pytestmark = pytest.mark.timeout(10)

DOC = (Path(__file__).parents[2] / "docs" / "actors.md").read_text(encoding="utf-8")
FENCED = re.findall(r"^```\w*\n(.*?)^```", DOC, flags=re.MULTILINE | re.DOTALL)
INLINE = re.findall(r"`([^`\n]+)`", re.sub(r"^```.*?^```", "", DOC, flags=re.MULTILINE | re.DOTALL))
CODE = "\n".join(FENCED + INLINE)  # what the page shows as code
ACTOR_MODULES = {"zimg._actor", "zimg._registry", "zimg.node", "zimg.cluster", "zimg.wire"}


def public_members(cls: type) -> set[str]:
    """Methods and properties, inherited ones included."""
    return {
        name
        for name in dir(cls)
        if not name.startswith("_")
        and isinstance(inspect.getattr_static(cls, name), (property, type(public_members)))
    }


def documented_attributes(cls: type) -> set[str]:
    """The names in the ``Attributes:`` section of a class's docstring."""
    doc = inspect.getdoc(cls) or ""
    section = doc.partition("Attributes:\n")[2]
    return set(re.findall(r"^    (\w+):", section, flags=re.MULTILINE))


def actor_names() -> list[str]:
    names = {name for name, module in zimg._EXPORTS.items() if module in ACTOR_MODULES}
    names |= public_members(zimg.Node) | public_members(zimg.Process)
    for cls in (zimg.Node, zimg.Process, LocalCluster):
        names |= documented_attributes(cls)
    return sorted(names)


def test_the_lists_are_not_empty():
    names = actor_names()
    assert {"connect", "local_cluster", "behaviour", "Pid", "ExitSignal", "report"} <= set(names)
    assert {"spawn_monitor", "unregister", "whereis", "check", "processes", "keeper"} <= set(names)


@pytest.mark.parametrize("name", actor_names())
def test_docs_name_it(name):
    assert re.search(rf"(?<![\w.]){name}\b|\.{name}\b", CODE), (
        f"docs/actors.md never shows `{name}`"
    )
