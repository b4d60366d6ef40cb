"""Unit tests for zimg.ops: the op registry, the CLI op syntax and the shipped ops."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

import zimg
from zimg import _op_registry, ops
from zimg._errors import OpError
from zimg.ops import (
    DEFAULT_PIPELINE,
    OpSpec,
    get_op,
    load_module,
    op,
    parse_op,
    registered_ops,
    run_pipeline,
    validate,
)

SAMPLES = Path(zimg.__file__).parent / "samples"
SAMPLE_NAMES = ["chelsea.jpg", "brick.jpg", "coins.png", "grass.png"]


def synthetic(kind: str) -> np.ndarray:
    """Deterministic 96x200 images: a gradient plus noise, crossing the threshold of 127."""
    rng = np.random.default_rng(0)
    h, w = 96, 200
    ramp = np.linspace(0, 255, w)[np.newaxis, :].repeat(h, axis=0)
    channels = {"gray8": 1, "bgr8": 3, "bgra8": 4, "gray16": 1, "bgr16": 3}[kind]
    layers = [ramp + rng.normal(0, 40, (h, w)) + 30 * c for c in range(channels)]
    if kind.endswith("16"):
        layers = [layer * 2 for layer in layers]  # 0..~600: both sides of 127, above 255 too
        image = np.clip(np.dstack(layers), 0, 65535).astype(np.uint16)
    else:
        image = np.clip(np.dstack(layers), 0, 255).astype(np.uint8)
    if kind == "bgra8":
        image[:, :, 3] = rng.integers(0, 256, (h, w), dtype=np.uint8)
    return image[:, :, 0] if channels == 1 else image


def reference(image: np.ndarray, name: str) -> np.ndarray:
    """The notebook's worker, verbatim; 16-bit images at their depth (127 and 255, x 257)."""
    scale = 257 if image.dtype == np.uint16 else 1
    t = cv2.threshold(image, 127 * scale, 255 * scale, cv2.THRESH_BINARY)[1]
    cv2.putText(t, name, (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (0, 0, 0), 2)
    return t


def read_only(image: np.ndarray) -> np.ndarray:
    view = image.view()
    view.flags.writeable = False
    return view


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let a test register ops without leaking them into other tests."""
    monkeypatch.setattr(_op_registry, "_REGISTRY", dict(_op_registry._REGISTRY))


# ---- the notebook's pipeline -----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["gray8", "bgr8", "bgra8", "gray16", "bgr16"])
def test_default_pipeline_matches_cv2_on_synthetic(kind: str) -> None:
    image = synthetic(kind)
    if kind.endswith("16"):  # the 8-bit image widened: both sides of the 16-bit threshold
        image = synthetic(kind.replace("16", "8")).astype(np.uint16) * 257
    before = image.copy()
    result = run_pipeline(read_only(image), DEFAULT_PIPELINE, node="n1")
    expected = reference(image, "n1")
    assert result.dtype == expected.dtype
    assert result.shape == expected.shape
    assert np.array_equal(result, expected)
    # the label really drew something, and the input is untouched
    assert not np.array_equal(result, ops.threshold(image))
    assert np.array_equal(image, before)


@pytest.mark.parametrize("sample", SAMPLE_NAMES)
def test_default_pipeline_matches_cv2_on_samples(sample: str) -> None:
    image = cv2.imread(str(SAMPLES / sample), cv2.IMREAD_UNCHANGED)
    assert image is not None
    before = image.copy()
    result = run_pipeline(read_only(image), DEFAULT_PIPELINE, node="n1")
    assert np.array_equal(result, reference(image, "n1"))
    assert not np.array_equal(result, reference(image, "n2"))
    assert np.array_equal(image, before)


def test_pipeline_node_name_changes_the_label() -> None:
    image = synthetic("bgr8")
    a = run_pipeline(image, DEFAULT_PIPELINE, node="worker-1")
    assert np.array_equal(a, reference(image, "worker-1"))


def test_run_pipeline_gives_ops_read_only_inputs(registry: None) -> None:
    @op()
    def scribble(image: np.ndarray) -> np.ndarray:
        image[0, 0] = 1
        return image

    image = np.zeros((4, 4), np.uint8)
    with pytest.raises(ValueError, match="read-only"):
        run_pipeline(image, [OpSpec("scribble", {})], node="n1")
    assert image[0, 0] == 0


def test_empty_pipeline_returns_read_only_view() -> None:
    image = synthetic("gray8")
    result = run_pipeline(image, [], node="n1")
    assert np.array_equal(result, image)
    assert not result.flags.writeable
    assert image.flags.writeable


def test_run_pipeline_needs_an_array() -> None:
    with pytest.raises(OpError, match="needs a numpy array, got list"):
        run_pipeline([[1, 2]], DEFAULT_PIPELINE, node="n1")  # type: ignore[arg-type]


def test_run_pipeline_validates_first() -> None:
    with pytest.raises(OpError, match="nope"):
        run_pipeline(synthetic("gray8"), [OpSpec("threshold", {"nope": 1})], node="n1")


# ---- registry --------------------------------------------------------------------------------


def test_registered_ops_lists_shipped_ops() -> None:
    assert {"threshold", "label", "grayscale", "resize", "blur"} <= set(registered_ops())
    assert registered_ops() == sorted(registered_ops())


def test_get_op_unknown_lists_known() -> None:
    with pytest.raises(OpError, match=r"unknown op 'sharpen'; known: .*threshold"):
        get_op("sharpen")


def test_custom_op_runs_with_params_and_node(registry: None) -> None:
    @op("stamp")
    def _stamp(image: np.ndarray, *, value: int = 7, node: str) -> np.ndarray:
        out = image.copy()
        out[0, 0] = value
        out[0, 1] = len(node)
        return out

    @op
    def invert(image: np.ndarray) -> np.ndarray:
        return 255 - image

    assert get_op("stamp") is _stamp
    assert "invert" in registered_ops()
    image = np.zeros((3, 3), np.uint8)
    specs = [OpSpec("stamp", {"value": 9}), OpSpec("invert", {})]
    result = run_pipeline(image, specs, node="node-five")
    assert result[0, 0] == 255 - 9
    assert result[0, 1] == 255 - len("node-five")
    assert result[2, 2] == 255


def test_register_twice_with_another_function_fails(registry: None) -> None:
    with pytest.raises(OpError, match="already registered"):

        @op("threshold")
        def _mine(image: np.ndarray) -> np.ndarray:
            return image


@pytest.mark.parametrize("name", ["bad name", "1st", ""])
def test_register_bad_name_fails(registry: None, name: str) -> None:
    with pytest.raises(OpError, match="identifier"):
        op(name)(lambda image: image)


def test_register_op_without_image_parameter_fails(registry: None) -> None:
    def no_image(*, k: int = 1) -> np.ndarray:
        return np.zeros(1)

    with pytest.raises(OpError, match="first parameter"):
        op()(no_image)


def test_op_returning_non_array_fails(registry: None) -> None:
    @op()
    def broken(image: np.ndarray) -> Any:
        return [1, 2]

    with pytest.raises(OpError, match="'broken' returned list"):
        run_pipeline(np.zeros((2, 2), np.uint8), [OpSpec("broken", {})], node="n1")


# ---- OpSpec and the wire ---------------------------------------------------------------------


def test_opspec_wire_round_trip() -> None:
    spec = OpSpec("label", {"text": "hi", "org": (1, 2), "scale": 0.5, "flag": True})
    wire = spec.to_wire()
    assert wire == ["label", {"text": "hi", "org": (1, 2), "scale": 0.5, "flag": True}]
    assert OpSpec.from_wire(wire) == spec
    assert OpSpec.from_wire(("label", {"org": [1, 2]})).params == {"org": (1, 2)}


@pytest.mark.parametrize(
    "obj",
    [
        None,
        "threshold",
        ["threshold"],
        ["threshold", {}, 3],
        [3, {}],
        ["bad name", {}],
        ["threshold", [("thresh", 1)]],
        ["threshold", {1: 2}],
        ["threshold", {"thresh": [None]}],
        ["threshold", {"thresh": {"a": 1}}],
        ["threshold", {"thresh": ["a", "b"]}],
        ["threshold", {"thresh": [True, 1]}],
        ["threshold", {"thresh": b"x"}],
    ],
)
def test_opspec_from_wire_rejects_bad_terms(obj: object) -> None:
    with pytest.raises(OpError):
        OpSpec.from_wire(obj)


def test_opspec_copies_params() -> None:
    params: dict[str, Any] = {"thresh": 1}
    spec = OpSpec("threshold", params)
    params["thresh"] = 2
    assert spec.params == {"thresh": 1}


# ---- parse_op --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "name", "params"),
    [
        ("threshold", "threshold", {}),
        ("threshold:thresh=100", "threshold", {"thresh": 100}),
        (
            "threshold:thresh=100,type=binary_inv",
            "threshold",
            {"thresh": 100, "type": "binary_inv"},
        ),
        ("blur:sigma=1.5,ksize=3", "blur", {"sigma": 1.5, "ksize": 3}),
        ("x:a=-3,b=+2,c=1e3,d=.5,e=-2.", "x", {"a": -3, "b": 2, "c": 1000.0, "d": 0.5, "e": -2.0}),
        ("x:on=true,off=False", "x", {"on": True, "off": False}),
        ("label:color=255/0/0", "label", {"color": (255, 0, 0)}),
        ("label:org=10/30,scale=0.5/2", "label", {"org": (10, 30), "scale": (0.5, 2)}),
        ("resize:size=320/240", "resize", {"size": (320, 240)}),
        ("label:text={node} says hi", "label", {"text": "{node} says hi"}),
        ("label:text=a/b", "label", {"text": "a/b"}),
        ("label:text=k=v: x", "label", {"text": "k=v: x"}),
        ("label:text=", "label", {"text": ""}),
        (" label : text= x ", "label", {"text": " x "}),
    ],
)
def test_parse_op(text: str, name: str, params: dict[str, Any]) -> None:
    spec = parse_op(text)
    assert spec == OpSpec(name, params)
    assert {k: type(v) for k, v in spec.params.items()} == {k: type(v) for k, v in params.items()}


@pytest.mark.parametrize(
    "text",
    ["", ":thresh=1", "thre shold", "threshold:", "threshold:thresh", "threshold:=3",
     "threshold:thresh=1,,type=binary", "threshold:thresh=1,thresh=2", "threshold:1x=2",
     "bad-name:x=1"],
)  # fmt: skip
def test_parse_op_errors_show_text_and_syntax(text: str) -> None:
    with pytest.raises(OpError) as info:
        parse_op(text)
    message = str(info.value)
    assert repr(text) in message
    assert "NAME[:KEY=VALUE" in message


# ---- validate --------------------------------------------------------------------------------


def test_validate_accepts_good_specs() -> None:
    validate([*DEFAULT_PIPELINE, parse_op("label:text=hi,org=1/2,color=1/2/3,scale=2")])
    validate([parse_op("resize:width=10,interpolation=cubic"), parse_op("blur:ksize=3")])


def test_validate_unknown_op() -> None:
    with pytest.raises(OpError, match=r"unknown op 'sharpen'.*blur, grayscale, label"):
        validate([OpSpec("threshold", {}), OpSpec("sharpen", {})])


def test_validate_unknown_param_names_it_and_lists_accepted() -> None:
    with pytest.raises(OpError) as info:
        validate([parse_op("threshold:treshold=3")])
    message = str(info.value)
    assert "'threshold'" in message
    assert "'treshold'" in message
    assert "maxval, thresh, type" in message


def test_validate_node_is_not_a_param() -> None:
    with pytest.raises(OpError, match="'node' is set by the worker"):
        validate([parse_op("label:node=n9")])
    with pytest.raises(OpError, match="accepted params: none"):
        validate([parse_op("grayscale:node=n9")])


def test_validate_accepts_anything_for_var_keyword_ops(registry: None) -> None:
    @op()
    def anything(image: np.ndarray, **kwargs: Any) -> np.ndarray:
        return image.copy()

    validate([parse_op("anything:a=1,b=x")])


# ---- load_module -----------------------------------------------------------------------------


def test_load_module_registers_user_ops(
    registry: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "zimg_test_user_ops.py").write_text(
        "import numpy as np\n"
        "from zimg.ops import op\n"
        "@op('negate')\n"
        "def negate(image):\n"
        "    return 255 - image\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        load_module("zimg_test_user_ops")
        result = run_pipeline(np.zeros((2, 2), np.uint8), [OpSpec("negate", {})], node="n1")
    finally:
        sys.modules.pop("zimg_test_user_ops", None)
    assert np.all(result == 255)


def test_load_module_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(OpError, match="cannot import op module 'zimg_no_such_mod'"):
        load_module("zimg_no_such_mod")
    with pytest.raises(OpError, match="dotted module name"):
        load_module("../evil")
    (tmp_path / "zimg_test_broken_ops.py").write_text("1 / 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with pytest.raises(OpError, match="ZeroDivisionError"):
            load_module("zimg_test_broken_ops")
    finally:
        sys.modules.pop("zimg_test_broken_ops", None)


# ---- threshold -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "flag"),
    [
        ("binary", cv2.THRESH_BINARY),
        ("binary_inv", cv2.THRESH_BINARY_INV),
        ("trunc", cv2.THRESH_TRUNC),
        ("tozero", cv2.THRESH_TOZERO),
        ("tozero_inv", cv2.THRESH_TOZERO_INV),
    ],
)
@pytest.mark.parametrize("image_kind", ["bgr8", "gray16"])
def test_threshold_types_match_cv2(kind: str, flag: int, image_kind: str) -> None:
    image = synthetic(image_kind)
    result = ops.threshold(read_only(image), thresh=100, maxval=200, type=kind)
    expected = cv2.threshold(image, 100, 200, flag)[1]
    assert np.array_equal(result, expected)
    assert result.dtype == image.dtype


def test_threshold_defaults_are_the_notebooks() -> None:
    image = synthetic("gray8")
    result = ops.threshold(image)
    assert set(np.unique(result)) == {0, 255}
    assert np.array_equal(result, (image > 127).astype(np.uint8) * 255)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"type": "otsu"}, "type must be one of binary"),
        ({"thresh": "high"}, "thresh must be a finite number"),
        ({"maxval": float("nan")}, "maxval must be a finite number"),
        ({"thresh": True}, "thresh must be a finite number"),
        ({"thresh": 10**400}, "thresh must be a finite number"),
    ],
)
def test_threshold_bad_params(params: dict[str, Any], match: str) -> None:
    with pytest.raises(OpError, match=match):
        ops.threshold(synthetic("gray8"), **params)


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (np.zeros((4, 4), np.int32), "OpenCV cannot handle this int32 image"),
        (np.zeros((4, 4), np.bool_), "cannot handle a bool image"),
        (np.zeros((4, 4), np.complex64), "cannot handle a complex64 image"),
        (np.zeros(4, np.uint8), r"shape \(h, w\)"),
        (np.zeros((2, 2, 2, 2), np.uint8), r"shape \(h, w\)"),
        (np.zeros((4, 4, 5), np.uint8), r"got \(4, 4, 5\)"),
        (np.zeros((0, 4), np.uint8), "empty"),
    ],
)
def test_threshold_bad_images(image: np.ndarray, match: str) -> None:
    with pytest.raises(OpError, match=match):
        ops.threshold(image)


def test_cv2_errors_become_op_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise cv2.error("simulated failure")

    monkeypatch.setattr(cv2, "threshold", boom)
    with pytest.raises(OpError, match="threshold: OpenCV cannot handle") as info:
        ops.threshold(synthetic("gray8"))
    assert isinstance(info.value.__cause__, cv2.error)


# ---- label -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["gray8", "bgr8", "bgra8", "gray16", "bgr16"])
def test_label_defaults_match_cv2(kind: str) -> None:
    image = synthetic(kind)
    result = ops.label(read_only(image), node="n7")
    expected = image.copy()
    cv2.putText(expected, "n7", (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (0, 0, 0), 2)
    assert np.array_equal(result, expected)
    assert not np.array_equal(result, image)


def test_label_params_match_cv2() -> None:
    image = synthetic("bgr8")
    result = ops.label(
        image, node="n1", text="at {node}!", org=(5, 60), scale=0.7, color=(255, 0, 10), thickness=1
    )
    expected = image.copy()
    cv2.putText(expected, "at n1!", (5, 60), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 0, 10), 1)
    assert np.array_equal(result, expected)


def test_label_single_number_color_on_gray() -> None:
    image = np.zeros((50, 80), np.uint8)
    result = ops.label(image, node="n1", color=200)
    assert set(np.unique(result)) == {0, 200}


def test_label_bgra_three_number_color_leaves_alpha_zero() -> None:
    """cv2 pads a 3-number scalar with 0, so drawn pixels get alpha 0; four numbers keep it."""
    image = np.full((50, 80, 4), 200, np.uint8)
    drawn = ops.label(image, node="n1", color=(9, 9, 9))
    mask = drawn[:, :, 0] == 9
    assert mask.any()
    assert np.all(drawn[:, :, 3][mask] == 0)
    opaque = ops.label(image, node="n1", color=(9, 9, 9, 255))
    assert np.all(opaque[:, :, 3][opaque[:, :, 0] == 9] == 255)


def test_label_escaped_braces() -> None:
    image = np.full((50, 120), 255, np.uint8)
    expected = image.copy()
    cv2.putText(expected, "{n1}", (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (0, 0, 0), 2)
    assert np.array_equal(ops.label(image, node="n1", text="{{{node}}}"), expected)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"text": "{other}"}, "may use only"),
        ({"text": "{node.__class__}"}, "may use only"),
        ({"text": "{node:>999999999}"}, "may use only"),
        ({"text": "{0}"}, "may use only"),
        ({"text": "{node"}, "bad text"),
        ({"text": 3}, "text must be a string"),
        ({"org": (10,)}, "org must be two integers"),
        ({"org": (10.5, 3)}, "org must be two integers"),
        ({"org": (True, 3)}, "org must be two integers"),
        ({"color": (1, 2, 3, 4, 5)}, "color must be 1 to 4 numbers"),
        ({"color": "red"}, "color must be 1 to 4 numbers"),
        ({"scale": -1.0}, r"scale must be in \[0, "),
        ({"thickness": 0}, r"thickness must be an integer in \[1, "),
        ({"thickness": 1.5}, r"thickness must be an integer in \[1, "),
        ({"thickness": 256}, r"thickness must be an integer in \[1, 255\]"),
        ({"scale": 1e9}, r"scale must be in \[0, 1000\]"),
        ({"org": (2**31, 0)}, "org must be two integers"),
    ],
)
def test_label_bad_params(params: dict[str, Any], match: str) -> None:
    with pytest.raises(OpError, match=match):
        ops.label(synthetic("gray8"), node="n1", **params)


def test_label_wraps_cv2_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise cv2.error("simulated failure")

    monkeypatch.setattr(cv2, "putText", boom)
    with pytest.raises(OpError, match="label: OpenCV cannot handle"):
        ops.label(synthetic("gray8"), node="n1")


# ---- grayscale -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["bgr8", "bgr16"])
def test_grayscale_bgr_matches_cv2(kind: str) -> None:
    image = synthetic(kind)
    result = ops.grayscale(read_only(image))
    assert result.shape == image.shape[:2]
    assert np.array_equal(result, cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))


def test_grayscale_bgra_matches_cv2() -> None:
    image = synthetic("bgra8")
    assert np.array_equal(ops.grayscale(image), cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY))


def test_grayscale_gray_stays_and_is_a_copy() -> None:
    image = synthetic("gray8")
    result = ops.grayscale(image)
    assert np.array_equal(result, image)
    assert not np.shares_memory(result, image)
    assert ops.grayscale(image[:, :, np.newaxis]).shape == image.shape


def test_grayscale_errors() -> None:
    with pytest.raises(OpError, match="2-channel"):
        ops.grayscale(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(OpError, match="OpenCV cannot handle this int16"):
        ops.grayscale(np.zeros((4, 4, 3), np.int16))


# ---- resize ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "size"),
    [
        ({"width": 100}, (100, 48)),
        ({"height": 48}, (100, 48)),
        ({"width": 50, "height": 70}, (50, 70)),
        ({"scale": 0.25}, (50, 24)),
        ({"scale": 0.001}, (1, 1)),
    ],
)
def test_resize_sizes_match_cv2(params: dict[str, Any], size: tuple[int, int]) -> None:
    image = synthetic("bgr8")  # 200 x 96
    result = ops.resize(read_only(image), **params)
    assert result.shape == (size[1], size[0], 3)
    assert np.array_equal(result, cv2.resize(image, size, interpolation=cv2.INTER_AREA))


def test_resize_interpolation() -> None:
    image = synthetic("gray16")
    result = ops.resize(image, width=300, interpolation="cubic")
    assert np.array_equal(result, cv2.resize(image, (300, 144), interpolation=cv2.INTER_CUBIC))
    assert not np.array_equal(result, ops.resize(image, width=300, interpolation="nearest"))


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({}, "give width, height or scale"),
        ({"scale": 2.0, "width": 3}, "not both"),
        ({"width": 0}, r"width must be an integer in \[1, "),
        ({"height": 2.5}, r"height must be an integer in \[1, "),
        ({"scale": -1.0}, r"scale must be in \[0, "),
        ({"scale": 1e300}, r"scale must be in \[0, 100000\]"),
        ({"width": 10**12}, r"width must be an integer in \[1, 2147483647\]"),
        ({"width": 10, "interpolation": "fancy"}, "interpolation must be one of"),
        ({"scale": 20000.0}, "exceeds 200000000 pixels"),
    ],
)
def test_resize_bad_params(params: dict[str, Any], match: str) -> None:
    with pytest.raises(OpError, match=match):
        ops.resize(synthetic("gray8"), **params)


# ---- blur ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("ksize", "sigma"), [(5, 0.0), (3, 1.5), (1, 0.0)])
def test_blur_matches_cv2(ksize: int, sigma: float) -> None:
    image = synthetic("bgra8")
    result = ops.blur(read_only(image), ksize=ksize, sigma=sigma)
    assert np.array_equal(result, cv2.GaussianBlur(image, (ksize, ksize), sigma))


def test_blur_default_changes_the_image() -> None:
    image = synthetic("gray16")
    assert not np.array_equal(ops.blur(image), image)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"ksize": 4}, "ksize must be odd"),
        ({"ksize": 0}, r"ksize must be an integer in \[1, "),
        ({"ksize": -3}, r"ksize must be an integer in \[1, "),
        ({"ksize": 3.0}, r"ksize must be an integer in \[1, "),
        ({"ksize": 257}, r"ksize must be an integer in \[1, 255\]"),
        ({"sigma": -0.5}, r"sigma must be in \[0, "),
    ],
)
def test_blur_bad_params(params: dict[str, Any], match: str) -> None:
    with pytest.raises(OpError, match=match):
        ops.blur(synthetic("gray8"), **params)


def test_ops_through_pipeline_with_parsed_specs() -> None:
    image = synthetic("bgr8")
    specs = [parse_op(t) for t in ["grayscale", "blur:ksize=3", "resize:scale=0.5"]]
    result = run_pipeline(image, specs, node="n1")
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    expected = cv2.resize(
        cv2.GaussianBlur(gray, (3, 3), 0.0), (100, 48), interpolation=cv2.INTER_AREA
    )
    assert np.array_equal(result, expected)


def test_load_module_refuses_a_file_that_would_shadow_a_loaded_module(tmp_path: Path) -> None:
    import json
    import sys

    shadow = tmp_path / "json.py"
    shadow.write_text("raise SystemExit('must not run')\n")
    with pytest.raises(OpError, match="already loaded"):
        load_module(str(shadow))
    assert sys.modules["json"] is json


def test_in_place_is_not_a_param_and_label_draws_on_intermediates_only(registry: None) -> None:
    with pytest.raises(OpError, match="'in_place' is set by the worker"):
        validate([parse_op("label:in_place=true")])
    image = np.full((40, 60, 3), 200, np.uint8)
    image.flags.writeable = True
    before = image.copy()
    # label alone: its input is the caller's array, so it must copy
    out = run_pipeline(image, [OpSpec("label", {})], node="n1")
    assert np.array_equal(image, before)
    assert not np.shares_memory(out, image)
    # after threshold, label draws on threshold's fresh output: same result, no extra copy
    calls = []
    real = ops.label

    @op("spy_label")
    def spy_label(img, *, node, in_place=False):  # type: ignore[no-untyped-def]
        calls.append((in_place, img.flags.writeable))
        return real(img, node=node, in_place=in_place)

    out = run_pipeline(image, [OpSpec("threshold", {}), OpSpec("spy_label", {})], node="n1")
    assert calls == [(True, True)]
    assert np.array_equal(image, before)
    expected = cv2.threshold(before, 127, 255, cv2.THRESH_BINARY)[1]
    cv2.putText(expected, "n1", (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (0, 0, 0), 2)
    assert np.array_equal(out, expected)


def test_consume_lets_threshold_and_label_write_on_the_input(registry: None) -> None:
    image = np.random.default_rng(3).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    before = image.copy()
    expected = run_pipeline(image, DEFAULT_PIPELINE, node="n1")
    assert np.array_equal(image, before)  # not consumed: untouched
    out = run_pipeline(image, DEFAULT_PIPELINE, node="n1", consume=True)
    assert out is image  # thresholded and labelled where it was: no new image
    assert np.array_equal(out, expected)


def test_consume_never_writes_on_a_read_only_or_strided_input(registry: None) -> None:
    base = np.random.default_rng(4).integers(0, 256, (40, 120, 3), dtype=np.uint8)
    before = base.copy()
    out = run_pipeline(read_only(base), DEFAULT_PIPELINE, node="n1", consume=True)
    assert np.array_equal(base, before)
    assert not np.shares_memory(out, base)
    strided = base[:, ::2]  # writeable but not contiguous: threshold makes a new image
    expected = run_pipeline(strided, DEFAULT_PIPELINE, node="n1")
    out = run_pipeline(strided, DEFAULT_PIPELINE, node="n1", consume=True)
    assert np.array_equal(out, expected)
    assert np.array_equal(base, before)
