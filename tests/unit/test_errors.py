"""The error tree: what is exported, what each class also is, and that each is raised.

Each raise site that once raised the bare root (or a builtin) is driven here to show the specific
class, and that callers catching the old class still catch it.
"""

from __future__ import annotations

import ast
import re
import threading
from pathlib import Path

import pytest

import zimg
from zimg import _errors, worker
from zimg._actor import Process
from zimg._registry import behaviour
from zimg.broker import Broker
from zimg.cluster import WorkerKeeper, wait_for_workers
from zimg.testing import MemoryRouter, wait_for_broker

pytestmark = pytest.mark.timeout(20)

PACKAGE = Path(zimg.__file__).resolve().parent


def tree() -> list[type[zimg.ZimgError]]:
    """Every error class defined in zimg._errors."""
    return [
        value
        for value in vars(_errors).values()
        if isinstance(value, type) and issubclass(value, zimg.ZimgError)
    ]


def exported_errors() -> list[type[zimg.ZimgError]]:
    found = [getattr(zimg, name) for name in zimg.__all__]
    return [v for v in found if isinstance(v, type) and issubclass(v, zimg.ZimgError)]


def called_names() -> set[str]:
    """The names called anywhere in the package but the tree itself: ``X(...)``, ``m.X(...)``."""
    names: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        if path.name == "_errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                if isinstance(node.func, ast.Name):
                    names.add(node.func.id)
                elif isinstance(node.func, ast.Attribute):
                    names.add(node.func.attr)
    return names


# ---------------------------------------------------------------------------- the tree


def test_every_class_of_the_tree_is_exported_in_all_three_places():
    init = ast.parse((PACKAGE / "__init__.py").read_text())
    typed: set[str] = set()
    for node in ast.walk(init):
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for stmt in ast.walk(node):
                if isinstance(stmt, ast.ImportFrom):
                    typed.update(alias.name for alias in stmt.names)
    for cls in tree():
        assert zimg._EXPORTS[cls.__name__] == "zimg._errors", cls
        assert cls.__name__ in zimg.__all__, cls
        assert cls.__name__ in typed, cls
        assert getattr(zimg, cls.__name__) is cls
    assert {*zimg._EXPORTS, "distribute"} == set(zimg.__all__) == typed


def test_the_removed_classes_are_gone():
    for name in ("ActorDeadError", "RemoteError"):
        assert not hasattr(_errors, name)
        assert name not in zimg.__all__
        with pytest.raises(AttributeError):
            getattr(zimg, name)


@pytest.mark.parametrize(
    ("cls", "bases"),
    [
        (zimg.ZimgTimeout, (TimeoutError,)),
        (zimg.ClosedError, ()),
        (zimg.BrokenError, (zimg.ClusterError, ConnectionError)),
        (zimg.RejectedError, (zimg.ClusterError,)),
        (zimg.SpawnError, (zimg.ClusterError,)),
        (zimg.ClusterStartError, (zimg.ClusterError,)),
        (zimg.WireError, (zimg.InputError, ValueError)),
        (zimg.OpError, (zimg.InputError, ValueError)),
        (zimg.ImageError, (zimg.InputError, ValueError)),
        (zimg.NameTakenError, (zimg.InputError, ValueError)),
        (zimg.KeyFileError, (zimg.InputError,)),
        (zimg.AffinityError, (zimg.InputError, OSError)),
        (zimg.FetchError, ()),
    ],
)
def test_each_leaf_is_a_zimg_error_and_what_callers_caught_before(
    cls: type[Exception], bases: tuple[type[Exception], ...]
):
    assert issubclass(cls, zimg.ZimgError)
    for base in bases:
        assert issubclass(cls, base)
    assert cls.__doc__, cls


def test_every_exported_error_is_raised_somewhere_and_no_group_directly():
    """A class nothing raises is dead API; a group raised directly hides the failure's kind."""
    called = called_names()
    errors = exported_errors()
    for cls in errors:
        is_group = any(other is not cls and issubclass(other, cls) for other in errors)
        if is_group:
            assert cls.__name__ not in called, f"{cls.__name__} is a group: raise a subclass"
        else:
            assert cls.__name__ in called, f"nothing in zimg/ raises {cls.__name__}"


def test_the_docstring_draws_every_class():
    drawing = _errors.__doc__ or ""
    for cls in tree():
        assert re.search(rf"^[│├└─ ]*{cls.__name__} ", drawing, re.MULTILINE), cls


# ---------------------------------------------------------------------------- raise sites


def test_a_behaviour_name_taken_by_another_function_raises_name_taken():
    def first(ctx: Process) -> None:
        pass

    def second(ctx: Process) -> None:
        pass

    behaviour("zt.unit.errors.taken")(first)
    with pytest.raises(zimg.NameTakenError, match="already registered") as info:
        behaviour("zt.unit.errors.taken")(second)
    assert isinstance(info.value, zimg.ZimgError)
    assert isinstance(info.value, ValueError)


def test_a_process_name_held_by_another_process_raises_name_taken():
    router = MemoryRouter()
    runtime = router.runtime("n1")
    try:
        runtime.main.register("keeper")
        other = runtime._new_process()
        with pytest.raises(zimg.NameTakenError, match="already registered") as info:
            other.register("keeper")
        assert isinstance(info.value, zimg.ZimgError)
        runtime.main.register("keeper")  # the holder again: not an error
        assert runtime.whereis("keeper") == runtime.main.pid
    finally:
        router.close()


class Exited:
    """A child process that has already exited."""

    returncode = 3

    def poll(self) -> int:
        return self.returncode


def test_a_worker_that_exits_before_joining_raises_cluster_start(ipc_url: str):
    with Broker(ipc_url):
        with pytest.raises(zimg.ClusterStartError, match="n1 exited with code 3") as info:
            wait_for_workers(ipc_url, ["n1"], timeout_s=5, processes={"n1": Exited()})  # type: ignore[dict-item]
        assert isinstance(info.value, zimg.ClusterError)

        keeper = WorkerKeeper({"n1": ["true"]})  # never started: only its verdict is read
        keeper.gave_up.add("n1")
        with pytest.raises(zimg.ClusterStartError, match="keep dying"):
            wait_for_workers(ipc_url, ["n1"], timeout_s=5, keeper=keeper)


def test_a_broker_that_exits_before_answering_raises_cluster_start(ipc_url: str):
    with pytest.raises(zimg.ClusterStartError, match="broker exited with code 3"):
        wait_for_broker(ipc_url, timeout_s=5, process=Exited())  # type: ignore[arg-type]


def test_cpus_the_system_refuses_raise_affinity(monkeypatch: pytest.MonkeyPatch):
    def refuse(cpus: object) -> bool:
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr(worker, "pin_process", refuse)  # the test process is never pinned
    with pytest.raises(zimg.AffinityError, match="cannot run worker n1 on CPUs 7") as info:
        worker.serve("ipc:///nonexistent/zimg", "n1", cpus={7})
    assert isinstance(info.value, OSError)
    assert isinstance(info.value, zimg.InputError)
    assert isinstance(info.value.__cause__, OSError)


def test_a_broker_that_does_not_bind_in_time_raises_zimg_timeout(
    ipc_url: str, monkeypatch: pytest.MonkeyPatch
):
    broker = Broker(ipc_url)
    released = threading.Event()
    monkeypatch.setattr(broker, "run", lambda: released.wait(5.0))  # never binds
    try:
        with pytest.raises(zimg.ZimgTimeout, match="did not bind") as info:
            broker.start(timeout_s=0.05)
        assert isinstance(info.value, TimeoutError)
    finally:
        released.set()
        broker.stop()


def test_the_errors_page_lists_every_class_in_its_table():
    page = (PACKAGE.parent / "docs" / "errors.md").read_text()
    for cls in tree():
        assert f"| `{cls.__name__}` |" in page, cls
