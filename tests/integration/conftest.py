"""Fixtures shared by the tests that speak the protocol by hand to a real broker."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.integration.test_hostile_peers import Raw


@pytest.fixture
def raws() -> Iterator[list[Raw]]:
    """Hand-made nodes (``Raw``) to close after the test."""
    made: list[Raw] = []
    yield made
    for raw in made:
        raw.close()


@pytest.fixture(params=["ipc", "tcp"])
def any_url(request: pytest.FixtureRequest) -> str:
    """A broker endpoint over ipc, then over tcp (the test runs once with each)."""
    return str(request.getfixturevalue(f"{request.param}_url"))
