"""Bounds on what a pipeline may ask (issue 12): op and param counts, param sizes, short error
texts, op outputs in bytes, blur's cost, label's stroke, and the deadline between ops."""

from __future__ import annotations

import time
import types
from typing import Any

import numpy as np
import pytest

from zimg import _op_registry, images, ops
from zimg._errors import OpError
from zimg.ops import (
    MAX_OPS,
    MAX_PARAMS,
    MAX_SEQUENCE,
    MAX_STR_CHARS,
    DeadlinePassed,
    OpSpec,
    parse_op,
    run_pipeline,
    short_repr,
    validate,
)

SHORT = 300  # an error that repeats a param stays about this short, whatever the param


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let a test register ops without leaking them into other tests."""
    monkeypatch.setattr(_op_registry, "_REGISTRY", dict(_op_registry._REGISTRY))


# ---- param values ----------------------------------------------------------------------------


def test_params_at_the_bounds_are_accepted() -> None:
    params = {f"p{i}": i for i in range(MAX_PARAMS - 4)}
    params.update(
        text="x" * MAX_STR_CHARS,
        color=tuple(range(MAX_SEQUENCE)),
        width=None,  # scalars include None (resize's own default)
        big=2**64 - 1,
    )
    spec = OpSpec("label", params)
    assert spec.params["color"] == tuple(range(MAX_SEQUENCE))
    assert OpSpec.from_wire(spec.to_wire()) == spec


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({f"p{i}": 1 for i in range(MAX_PARAMS + 1)}, "17 params, over the limit of 16"),
        ({"text": "x" * (MAX_STR_CHARS + 1)}, "a string of 257 characters, over the limit of 256"),
        ({"color": [0] * (MAX_SEQUENCE + 1)}, "has 17 entries, over the limit of 16"),
        ({"color": [0] * 380_000}, "has 380000 entries, over the limit of 16"),
        ({"n": 2**64}, "does not fit in 64 bits"),
        ({"n": [1, 2**70]}, "up to 16 numbers"),
        ({"x" * 65: 1}, "param name must be an identifier of at most 64 characters"),
    ],
    ids=["params", "text", "list", "huge-list", "int", "int-in-list", "name"],
)
def test_params_over_the_bounds_are_refused_in_a_short_message(
    params: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(OpError) as info:
        OpSpec.from_wire(["label", params])
    message = str(info.value)
    assert fragment in message
    assert message.startswith("op 'label'")
    assert len(message) < SHORT, len(message)


def test_a_long_op_name_is_refused_in_a_short_message() -> None:
    with pytest.raises(OpError, match="at most 64 characters") as info:
        OpSpec.from_wire(["x" * 100_000, {}])
    assert len(str(info.value)) < SHORT


def test_short_repr_keeps_the_start_and_the_count() -> None:
    assert short_repr([0] * 380_000).startswith("[0, 0, 0")
    assert "380000 entries" in short_repr([0] * 380_000)
    assert len(short_repr("y" * 10**6)) <= 80
    assert short_repr((1, 2)) == "(1, 2)"


# ---- op count --------------------------------------------------------------------------------


def test_a_pipeline_has_at_most_max_ops() -> None:
    assert MAX_OPS == 32
    validate([OpSpec("threshold", {})] * MAX_OPS)
    with pytest.raises(OpError, match="a pipeline has at most 32 ops, got 1001"):
        validate([OpSpec("blur", {})] * 1001)
    with pytest.raises(OpError, match="at most 32 ops"):
        run_pipeline(np.zeros((4, 4), np.uint8), [OpSpec("threshold", {})] * 33, node="n")


# ---- the CLI form: the client refuses the same pipelines --------------------------------------


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("label:color=" + "/".join(["1"] * 17), "has 17 entries"),
        ("label:text=" + "t" * 300, "a string of 300 characters"),
        ("label:org=" + "9" * 5000, "a string of 5000 characters"),
        ("x" * 5000, "identifier of at most 64 characters"),
        ("threshold:" + ",".join(f"k{i}=1" for i in range(17)), "17 params"),
    ],
    ids=["long-list", "long-text", "long-number", "long-name", "many-params"],
)
def test_parse_op_refuses_what_a_worker_would(text: str, fragment: str) -> None:
    with pytest.raises(OpError) as info:
        parse_op(text)
    assert fragment in str(info.value)
    assert len(str(info.value)) < SHORT + 200  # the syntax reminder included


# ---- outputs in bytes ------------------------------------------------------------------------


def test_resize_caps_its_output_in_bytes_before_allocating() -> None:
    # 14142 x 14142 passes the 200 Mpx check; with 4 float64 channels it is 6.4 GB.
    pixel = np.zeros((1, 1, 4), np.float64)
    with pytest.raises(
        OpError,
        match=r"^resize: 14142x14142 of 4 float64 channels is 6399877248 bytes, over the limit "
        r"of 536870912 bytes$",
    ):
        ops.resize(pixel, scale=14142)


def test_resize_uses_the_pipelines_byte_limit() -> None:
    image = np.zeros((10, 10, 3), np.uint8)
    spec = [OpSpec("resize", {"width": 20})]  # 20 x 20 x 3 = 1200 bytes
    assert run_pipeline(image, spec, node="n", max_bytes=1200).shape == (20, 20, 3)
    with pytest.raises(OpError, match="is 1200 bytes, over the limit of 1199 bytes"):
        run_pipeline(image, spec, node="n", max_bytes=1199)
    assert ops.max_output_bytes() == images.DEFAULT_MAX_IMAGE_BYTES  # restored


def test_an_op_returning_more_than_max_bytes_fails(registry: None) -> None:
    @ops.op("test_bounds_grow")
    def grow(image: np.ndarray) -> np.ndarray:
        return np.zeros((100, 100), np.float64)

    spec = [OpSpec("test_bounds_grow", {})]
    with pytest.raises(OpError, match=r"op 'test_bounds_grow' returned .* 80000 bytes, over"):
        run_pipeline(np.zeros((4, 4), np.uint8), spec, node="n", max_bytes=79_999)


# ---- blur's cost, label's stroke -------------------------------------------------------------


def test_blur_ksize_stops_at_255() -> None:
    image = np.zeros((20, 20), np.uint8)
    assert ops.blur(image, ksize=255).shape == (20, 20)
    with pytest.raises(OpError, match=r"ksize must be an integer in \[1, 255\], got 1001"):
        ops.blur(image, ksize=1001)


def test_blur_cost_is_bounded_by_ksize_times_samples() -> None:
    # A 4 Mpx colour image (12 M samples): ksize 177 is 2.1e9 taps per pass, 179 over 2**31.
    image = np.broadcast_to(np.zeros(1, np.uint8), (2000, 2000, 3))  # no memory behind it
    with pytest.raises(OpError, match=r"ksize 179 .* over the budget of 2147483648; .*<= 177"):
        ops.blur(image, ksize=179)


def test_label_thickness_and_text_are_bounded() -> None:
    image = np.zeros((20, 20, 3), np.uint8)
    assert ops.label(image, node="n", thickness=255).shape == image.shape
    with pytest.raises(OpError, match=r"thickness must be an integer in \[1, 255\]"):
        ops.label(image, node="n", thickness=32767)
    with pytest.raises(OpError, match="text of 257 characters, over the limit of 256"):
        ops.label(image, node="n", text="t" * 257)
    with pytest.raises(OpError) as info:
        ops.label(image, node="n", color=tuple(range(10_000)))
    assert len(str(info.value)) < SHORT


# ---- the deadline between ops ----------------------------------------------------------------


class FakeClock:
    """``time.monotonic`` for zimg.ops only: an op moves it on."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.module = types.SimpleNamespace(monotonic=lambda: self.now)


def test_no_op_starts_after_the_deadline(registry: None, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(ops, "time", clock.module)
    ran: list[int] = []

    @ops.op("test_bounds_tick")
    def tick(image: np.ndarray, *, n: int) -> np.ndarray:
        ran.append(n)
        clock.now += 1.0
        return image.copy()

    specs = [OpSpec("test_bounds_tick", {"n": n}) for n in range(5)]
    image = np.zeros((2, 2), np.uint8)
    with pytest.raises(DeadlinePassed, match="before op 'test_bounds_tick'"):
        run_pipeline(image, specs, node="n", deadline=clock.now + 2.5)
    assert ran == [0, 1, 2]  # 3 started by 1002.5; the 4th would start at 1003
    ran.clear()
    with pytest.raises(DeadlinePassed):
        run_pipeline(image, specs, node="n", deadline=clock.now - 0.1)
    assert ran == []
    assert run_pipeline(image, specs, node="n", deadline=None).shape == (2, 2)
    assert isinstance(DeadlinePassed("x"), OpError)


def test_the_deadline_check_costs_nothing_measurable() -> None:
    image = np.zeros((2, 2), np.uint8)
    specs = [OpSpec("threshold", {})] * MAX_OPS
    started = time.perf_counter()
    for _ in range(100):
        run_pipeline(image, specs, node="n", deadline=time.monotonic() + 60, max_bytes=10**9)
    assert (time.perf_counter() - started) / (100 * MAX_OPS) < 200e-6
