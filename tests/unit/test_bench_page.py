"""A run of ``python -m zimg.bench`` rewrites docs/performance.md without losing the sections
other benchmarks wrote there."""

from __future__ import annotations

from zimg.bench.page import keep_other_sections


def test_sections_the_run_does_not_write_are_kept_in_their_order() -> None:
    generated = "# Performance\n\n## Results\nnew\n\n## Targets\nnew targets\n"
    previous = (
        "# Performance\n\n## Results\nold\n\n## Scale: one broker\nscale table\n\n"
        "## Targets\nold targets\n\n## Throughput\nthroughput table\n"
    )
    merged = keep_other_sections(generated, previous)
    assert merged.startswith(generated.rstrip("\n"))
    assert "old" not in merged.replace("old targets", "").replace("scale", "")
    assert merged.index("## Scale: one broker") < merged.index("## Throughput")
    assert "scale table" in merged
    assert "throughput table" in merged


def test_nothing_to_keep() -> None:
    assert keep_other_sections("# P\n", None) == "# P\n"
    assert keep_other_sections("# P\n## A\n", "# P\n## A\nold\n") == "# P\n## A\n"
