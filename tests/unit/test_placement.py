"""A worker's placement (host, CPUs, threads), as its HELLO carries it."""

from __future__ import annotations

import socket

import pytest

from zimg import _placement
from zimg._errors import WireError
from zimg._placement import Placement, this_host


def test_placement_round_trips_through_a_hello():
    placement = Placement("boot:abc", frozenset({3, 1}), 2)
    header = {"name": "n1", **placement.to_hello()}
    assert header["cpus"] == [1, 3]
    assert Placement.from_hello(header) == placement


def test_a_hello_without_a_host_has_no_placement():
    assert Placement.from_hello({"name": "n1", "capacity": 2}) is None


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"host": "", "cpus": [0], "threads": 1}, "host must be"),
        ({"host": "h" * 257, "cpus": [0], "threads": 1}, "host must be"),
        ({"host": 7, "cpus": [0], "threads": 1}, "'host' must be str"),
        ({"host": "h", "cpus": [], "threads": 1}, "cpus must list"),
        ({"host": "h", "cpus": list(range(4097)), "threads": 1}, "cpus must list"),
        ({"host": "h", "cpus": [-1], "threads": 1}, "CPU numbers"),
        ({"host": "h", "cpus": [True], "threads": 1}, "CPU numbers"),
        ({"host": "h", "cpus": ["0"], "threads": 1}, "CPU numbers"),
        ({"host": "h", "cpus": 2, "threads": 1}, "'cpus' must be list"),
        ({"host": "h", "threads": 1}, "'cpus' is missing"),
        ({"host": "h", "cpus": [0], "threads": 0}, "threads 0"),
        ({"host": "h", "cpus": [0]}, "'threads' is missing"),
    ],
)
def test_a_malformed_placement_is_refused(fields, fragment):
    with pytest.raises(WireError, match=fragment):
        Placement.from_hello(fields)


def test_this_host_is_the_kernels_boot_id(tmp_path, monkeypatch):
    boot_id = tmp_path / "boot_id"
    boot_id.write_text("6f1c-42\n")
    monkeypatch.setattr(_placement, "_BOOT_ID", str(boot_id))
    assert this_host() == "boot:6f1c-42"


def test_this_host_falls_back_to_the_host_name(tmp_path, monkeypatch):
    monkeypatch.setattr(_placement, "_BOOT_ID", str(tmp_path / "missing"))
    assert this_host() == f"name:{socket.gethostname()}"
