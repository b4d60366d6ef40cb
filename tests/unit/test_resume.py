"""What a resumed batch keeps of the manifest, and how it sizes the jobs that are left."""

from __future__ import annotations

import json
from pathlib import Path

from zimg._batch_files import keep_done, plan_outputs
from zimg.batch import group_items
from zimg.jobs import JobItem


def line(source: str, output: str | None, error: str | None = None) -> str:
    return json.dumps({"index": 0, "input": source, "output": output, "error": error}) + "\n"


def test_only_done_inputs_of_this_batch_with_their_output_are_kept(tmp_path):
    (tmp_path / "a_processed.png").write_bytes(b"x")
    (tmp_path / "e_processed.png").write_bytes(b"x")
    manifest = tmp_path / "manifest.jsonl"
    lines = [
        line("in/a.png", str(tmp_path / "a_processed.png")),
        line("in/a.png", str(tmp_path / "a_processed.png")),  # a second line for one input
        line("in/b.png", None, "in/b.png: not an image"),  # failed: done again
        line("in/c.png", str(tmp_path / "c_processed.png")),  # output gone: done again
        line("in/e.png", str(tmp_path / "e_processed.png")),  # not an input of this batch
        '{"index": 5, "input": "in/d.png", "outp',  # cut short by a kill
    ]
    manifest.write_text("".join(lines))
    paths = [Path(p) for p in ("in/a.png", "in/b.png", "in/c.png", "in/d.png")]

    kept = keep_done(manifest, paths)

    assert kept == {"in/a.png": "a_processed.png"}
    assert manifest.read_text() == lines[0]
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_a_missing_manifest_keeps_nothing(tmp_path):
    assert keep_done(tmp_path / "manifest.jsonl", [Path("a.png")]) == {}
    assert not (tmp_path / "manifest.jsonl").exists()


def test_new_names_avoid_the_outputs_kept():
    names = plan_outputs([Path("y/a.png")], Path("out"), taken=["a_processed.png"])
    assert names == ["a-2_processed.png"]


def test_guided_sizes_count_only_the_inputs_left():
    order = list(range(0, 64, 2))  # every other input was done
    items = ((JobItem(i, f"f{i}.jpg", ".jpg"), 1) for i in order)
    groups = list(group_items(items, 64, per_job=8, job_bytes=1 << 30, spread=8, order=order))
    assert [item.index for g in groups for item in g] == order
    assert [len(g) for g in groups][-8:] == [1] * 8
