"""Jobs on the wire: several items per job, per-item results, and validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from zimg import wire
from zimg._batch_files import Temporaries
from zimg._errors import ImageError, WireError
from zimg.batch import BatchOptions, group_items
from zimg.jobs import (
    MAX_ERROR_CHARS,
    MAX_ITEMS,
    ItemResult,
    JobItem,
    JobRequest,
    JobResult,
    cap_text,
)
from zimg.wire import Command

OPS = [["threshold", {}], ["label", {}]]


def roundtrip(command: Command, header: dict) -> dict:
    return wire.decode(wire.encode(command, header)).header


def test_a_job_of_several_items_survives_the_wire():
    payloads = [np.arange(n, dtype=np.uint8) for n in (3, 5)]
    request = JobRequest(
        7,
        "encoded",
        OPS,
        [
            JobItem(7, "a.jpg", ".jpg", payload=payloads[0]),
            JobItem(8, "b.png", ".png", payload=payloads[1]),
        ],
    )
    back = JobRequest.from_header(roundtrip(Command.JOB, request.header(41)))
    assert back.id == 41
    assert [(i.index, i.name, i.ext) for i in back.items] == [
        (0, "a.jpg", ".jpg"),
        (1, "b.png", ".png"),
    ]
    for got, want in zip(back.items, payloads, strict=True):
        assert np.array_equal(got.payload, want)


def test_path_items_carry_an_output_prefix_and_no_payload():
    request = JobRequest(0, "path", OPS, [JobItem(0, "/in/a.jpg", ".jpg", output="/out/.a.t")])
    header = roundtrip(Command.JOB, request.header(1))
    assert "payload" not in header["items"][0]
    assert JobRequest.from_header(header).items[0].output == "/out/.a.t"


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"mode": "zip"}, "payload mode"),
        ({"items": []}, "1 to"),
        ({"items": [{"name": "a", "ext": ".jpg"}] * (MAX_ITEMS + 1)}, "1 to"),
        ({"items": ["not a map"]}, "not a map"),
        ({"items": [{"name": "a", "ext": ".jpg"}]}, "'payload' is missing"),
        ({"items": [{"name": "a", "ext": ".jpg", "payload": np.zeros((2, 2), np.uint8)}]}, "1-D"),
        ({"mode": "path", "items": [{"name": "a", "ext": ".jpg"}]}, "'output' is missing"),
    ],
)
def test_bad_jobs_are_refused_with_a_reason(change, fragment):
    header = {"id": 1, "mode": "encoded", "ops": OPS, "items": []}
    header.update(change)
    with pytest.raises(WireError, match=fragment):
        JobRequest.from_header(roundtrip(Command.JOB, header))


def test_a_whole_job_failure_fails_each_item_with_its_reason():
    result = JobResult.from_header(
        roundtrip(Command.RESULT, {"id": 3, "ok": False, "attempt": 3, "error": "gave up"})
    )
    assert result.item(0) == ItemResult(ok=False, error="gave up")
    assert result.item(5).error == "gave up"


def test_item_results_keep_their_order_and_kind():
    items = [
        ItemResult(ok=True, ms=1.5, payload=np.ones(4, np.uint8)),
        ItemResult(ok=False, error="x.jpg: bad"),
    ]
    header = {
        "id": 3,
        "ok": True,
        "attempt": 1,
        "node": "n1",
        "items": [i.to_wire() for i in items],
    }
    result = JobResult.from_header(roundtrip(Command.RESULT, header))
    assert result.node == "n1"
    assert result.item(0).ok is True
    assert np.array_equal(result.item(0).payload, np.ones(4, np.uint8))
    assert result.item(1) == ItemResult(ok=False, ms=0.0, error="x.jpg: bad")


def test_items_per_job_by_mode():
    assert BatchOptions(outdir=Path("."), mode="path").items_per_job() == 8
    assert BatchOptions(outdir=Path("."), mode="encoded").items_per_job() == 32
    assert BatchOptions(outdir=Path("."), mode="raw").items_per_job() == 1
    assert BatchOptions(outdir=Path("."), mode="encoded", job_items=4).items_per_job() == 4
    assert BatchOptions(outdir=Path("."), job_items=10_000).items_per_job() == MAX_ITEMS


def test_guided_spread_follows_the_workers_when_known():
    out = Path(".")
    assert BatchOptions(outdir=out, mode="path").guided_spread() == 8
    assert BatchOptions(outdir=out, mode="path", workers=2).guided_spread() == 4
    assert BatchOptions(outdir=out, mode="path", workers=6).guided_spread() == 12
    assert BatchOptions(outdir=out, mode="path", workers=2, job_items=3).guided_spread() is None
    # 1/4 still ends with one-image jobs, and needs far fewer jobs than 1/8 (18 against 29)
    two = sizes(64, per_job=8, job_bytes=1 << 30, spread=4)
    assert two[-7:] == [1] * 7
    assert len(two) < 0.7 * len(sizes(64, per_job=8, job_bytes=1 << 30, spread=8))


def test_bytes_per_job_by_mode():
    assert BatchOptions(outdir=Path("."), mode="path").bytes_per_job() == 2 << 20
    assert BatchOptions(outdir=Path("."), mode="encoded").bytes_per_job() == 512 << 10
    assert BatchOptions(outdir=Path("."), mode="raw", job_bytes=1).bytes_per_job() == 1


def test_temporaries_rename_only_files_of_their_own_batch(tmp_path):
    temps = Temporaries(tmp_path)
    prefix = temps.prefix("cat_processed.jpg")
    mine = Path(f"{prefix}.n1-42.tmp")
    mine.write_bytes(b"image")
    temps.keep(str(mine), "cat_processed.jpg", tmp_path / "cat_processed.jpg")
    assert (tmp_path / "cat_processed.jpg").read_bytes() == b"image"
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    other = Temporaries(tmp_path).prefix("cat_processed.jpg") + ".n1-42.tmp"
    Path(other).write_bytes(b"x")
    for reported in (str(victim), "/etc/passwd", other, f"{prefix}.n1-42.tmp/../../x", None):
        with pytest.raises(ImageError, match="unexpected output file"):
            temps.keep(reported, "cat_processed.jpg", tmp_path / "stolen")
    assert victim.read_text() == "keep me"
    # a duplicate answer's files go, each checked against its own item
    dup = Path(f"{prefix}.n2-9-1.tmp")
    dup.write_bytes(b"late")
    request = JobRequest(0, "path", OPS, [JobItem(0, "/in/cat.jpg", ".jpg", output=prefix)])
    late = JobResult(1, True, "n2", 2, items=[ItemResult(ok=True, output=str(dup))])
    temps.discard(request, late, ["cat_processed.jpg"])
    assert not dup.exists()
    wrong = JobResult(1, True, "n2", 2, items=[ItemResult(ok=True, output=str(victim))])
    temps.discard(request, wrong, ["cat_processed.jpg"])
    assert victim.exists()
    leftover = Path(f"{temps.prefix('dog_processed.jpg')}.n2-7.tmp")
    leftover.write_bytes(b"half")
    temps.sweep()
    assert not leftover.exists()
    assert Path(other).exists()  # another batch's file: not ours to sweep


def sizes(total: int, nbytes: int = 1, **kw) -> list[int]:
    items = ((JobItem(i, f"f{i}.jpg", ".jpg"), nbytes) for i in range(total))
    groups = list(group_items(items, total, **kw))
    assert [item.index for g in groups for item in g] == list(range(total))  # all, in order
    return [len(g) for g in groups]


def test_job_sizes_shrink_to_one_item_towards_the_end():
    got = sizes(256, per_job=8, job_bytes=1 << 30, spread=8)
    assert got[:24] == [8] * 24  # while 64 or more are left, full jobs
    assert got == sorted(got, reverse=True)  # then never larger
    assert got[-8:] == [1] * 8  # the last 8 items (one spread) go one per job
    assert len(got) < 256 / 4


def test_job_sizes_respect_the_byte_limit_and_small_batches():
    assert sizes(256, nbytes=100, per_job=8, job_bytes=250, spread=2)[:80] == [3] * 80
    assert sizes(5, per_job=8, job_bytes=1 << 30, spread=8) == [1] * 5
    assert sizes(0, per_job=8, job_bytes=1, spread=4) == []
    assert sizes(10, per_job=1, job_bytes=1 << 30, spread=1) == [1] * 10


def test_job_sizes_without_guidance_are_as_given():
    assert sizes(20, per_job=8, job_bytes=1 << 30, spread=None) == [8, 8, 4]
    assert sizes(3, per_job=8, job_bytes=1 << 30, spread=None) == [3]


def test_the_worker_writes_on_images_it_decoded_but_never_on_a_raw_payload():
    from zimg import images, ops
    from zimg.worker import process

    raw = np.random.default_rng(5).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    before = raw.copy()
    expected = ops.run_pipeline(raw, ops.DEFAULT_PIPELINE, node="n1")
    out = process(JobItem(0, "a.png", ".png", payload=raw), "raw", ops.DEFAULT_PIPELINE, node="n1")
    assert np.array_equal(raw, before)  # the caller's array, untouched
    assert np.array_equal(out, expected)
    encoded = images.encode(raw, ".png", name="a.png")
    out = process(
        JobItem(0, "a.png", ".png", payload=encoded), "encoded", ops.DEFAULT_PIPELINE, node="n1"
    )
    assert np.array_equal(images.decode(out, name="a.png"), expected)


# ---- deadline_s, busy and capped errors (issue 12, protocol 3) ---------------------------------


def job_header(**extra):
    item = {"name": "a.png", "ext": ".png", "payload": np.zeros(3, np.uint8)}
    return {"id": 1, "mode": "encoded", "ops": OPS, "items": [item], **extra}


@pytest.mark.parametrize(("given", "parsed"), [(None, None), (2, 2.0), (0.25, 0.25)])
def test_deadline_s_is_optional_and_taken_as_float_seconds(given, parsed):
    header = job_header() if given is None else job_header(deadline_s=given)
    request = JobRequest.from_header(roundtrip(Command.JOB, header))
    assert request.deadline_s == parsed
    assert type(request.deadline_s) is (float if given is not None else type(None))


@pytest.mark.parametrize("bad", [True, 0, -1.5, "5", float("nan"), float("inf"), None])
def test_a_bad_deadline_s_fails_the_job(bad):
    with pytest.raises(WireError, match="deadline_s"):
        JobRequest.from_header(roundtrip(Command.JOB, job_header(deadline_s=bad)))


def test_a_client_may_set_deadline_s():
    request = JobRequest(0, "encoded", OPS, [JobItem(0, "a.png", ".png", np.zeros(3, np.uint8))])
    assert "deadline_s" not in request.header(5)
    request.deadline_s = 30.0
    header = roundtrip(Command.JOB, request.header(5))
    assert header["deadline_s"] == 30.0
    assert JobRequest.from_header(header).deadline_s == 30.0


def test_a_busy_result_says_so():
    busy = {"id": 9, "ok": False, "attempt": 0, "busy": True, "error": "the broker is full"}
    result = JobResult.from_header(roundtrip(Command.RESULT, busy))
    assert result.busy
    assert not result.ok
    assert result.attempt == 0
    assert result.item(0).error == "the broker is full"
    for value in (None, 1, "true"):
        other = JobResult.from_header({**busy, "busy": value})
        assert not other.busy
    assert not JobResult.from_header({"id": 9, "ok": True, "attempt": 1}).busy


def test_error_texts_are_capped_keeping_their_start():
    assert MAX_ERROR_CHARS == 1000
    assert cap_text("short") == "short"
    exact = "e" * MAX_ERROR_CHARS
    assert cap_text(exact) == exact
    long = "a.png: label: " + "0, " * 400_000
    capped = cap_text(long)
    assert len(capped) == MAX_ERROR_CHARS
    assert capped.startswith("a.png: label: 0, 0")
    assert capped.endswith("\u2026")


def test_an_item_result_caps_its_error_on_the_wire():
    wired = ItemResult(ok=False, error="b.png: " + "x" * 10**6).to_wire()
    assert len(wired["error"]) == MAX_ERROR_CHARS
    assert wired["error"].startswith("b.png: x")
    assert ItemResult(ok=True).to_wire()["error"] is None
