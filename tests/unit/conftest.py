"""Fixtures shared by the unit tests."""

from __future__ import annotations

import pytest

from zimg.testing import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    """A clock that moves only when a test advances it (the state machines take ``now``)."""
    return FakeClock()
