"""Checking op params without an image (``@op(check=...)``, run by ``ops.validate``): the
shipped ops' checks refuse what the ops refuse, with the same words (issue 15 §2 item 3)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from zimg import _op_registry, ops
from zimg._errors import OpError
from zimg.ops import OpSpec, op, validate

IMAGE = np.zeros((8, 8, 3), np.uint8)


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let a test register ops without leaking them into other tests."""
    monkeypatch.setattr(_op_registry, "_REGISTRY", dict(_op_registry._REGISTRY))


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("threshold", {"thresh": "abc"}),
        ("threshold", {"maxval": float("nan")}),
        ("threshold", {"type": "otsu"}),
        ("blur", {"ksize": 4}),
        ("blur", {"ksize": 257}),
        ("blur", {"ksize": 3.0}),
        ("blur", {"sigma": -1}),
        ("resize", {}),
        ("resize", {"scale": 0.5, "width": 3}),
        ("resize", {"width": 0}),
        ("resize", {"height": "tall"}),
        ("resize", {"scale": -1}),
        ("resize", {"width": 4, "interpolation": "bogus"}),
        ("label", {"scale": -2}),
        ("label", {"org": (1, 2, 3)}),
        ("label", {"color": (1, 2, 3, 4, 5)}),
        ("label", {"thickness": 0}),
        ("label", {"text": "{nodes}"}),
    ],
)
def test_a_check_refuses_what_its_op_refuses_in_the_same_words(
    name: str, params: dict[str, Any]
) -> None:
    with pytest.raises(OpError) as by_op:
        ops.get_op(name)(IMAGE, **params, **({"node": "n1"} if name == "label" else {}))
    with pytest.raises(OpError) as by_check:
        validate([OpSpec(name, params)])
    assert str(by_check.value) == str(by_op.value)
    assert name in str(by_check.value)


@pytest.mark.parametrize(
    "text",
    [
        "threshold",
        "threshold:thresh=3.5,type=tozero",
        "blur:ksize=7,sigma=1.5",
        "grayscale",
        "resize:width=4",
        "resize:height=4,interpolation=cubic",
        "resize:scale=0.5",
        "label",
        "label:text=at {node},org=1/2,scale=0.5,color=255,thickness=3",
    ],
)
def test_a_check_passes_what_its_op_runs(text: str) -> None:
    spec = ops.parse_op(text)
    validate([spec])
    ops.run_pipeline(IMAGE, [spec], node="n1")


def test_a_user_op_opts_in_and_sees_its_defaults(registry: None) -> None:
    seen: list[dict[str, Any]] = []

    def check(params: Any) -> None:
        seen.append(dict(params))
        if params["gain"] <= 0:
            raise OpError(f"gain: gain must be positive, got {params['gain']}")

    @op("gain", check=check)
    def gain(image: Any, *, gain: float = 1.0, bias: int = 0, node: str = "") -> Any:
        return image * gain + bias

    validate([OpSpec("gain", {"bias": 2})])
    assert seen == [{"gain": 1.0, "bias": 2}]
    with pytest.raises(OpError, match="gain must be positive, got -1"):
        validate([OpSpec("gain", {"gain": -1})])


def test_an_op_without_a_check_is_left_to_run(registry: None) -> None:
    @op("unchecked")
    def unchecked(image: Any, *, level: object = 1) -> Any:
        return image

    validate([OpSpec("unchecked", {"level": "anything"})])


def test_a_check_that_breaks_is_an_op_error(registry: None) -> None:
    def check(params: Any) -> None:
        raise KeyError("width")

    @op("fragile", check=check)
    def fragile(image: Any) -> Any:
        return image

    with pytest.raises(OpError, match=r"op 'fragile': its check failed: KeyError"):
        validate([OpSpec("fragile", {})])
