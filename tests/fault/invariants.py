"""The invariant every fault test checks once its batch has finished: exactly once in the output."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tests.reference import check_output, manifest
from zimg.batch import MANIFEST_NAME


def check_exactly_once(
    outdir: Path, inputs: Iterable[Path | str], *, failed: Iterable[Path | str] = ()
) -> dict[str, dict[str, Any]]:
    """Assert the delivery contract on a finished batch, and return its entries by input.

    - every input has exactly one manifest line (no input missing, none twice, none unknown);
    - the inputs in ``failed``, and only those, ended with an error and have no output;
    - every other input has exactly one output file, its own, pixel-exact (byte-identical to the
      in-process cv2 reference for the node the manifest names);
    - the output directory holds nothing else: no extra outputs, no temporary or partial files.
    """
    want = [str(p) for p in inputs]
    assert len(set(want)) == len(want), "the test passed the same input twice"
    must_fail = {str(p) for p in failed}
    entries = manifest(outdir)
    counts = Counter(e["input"] for e in entries)
    twice = sorted(name for name, n in counts.items() if n > 1)
    assert not twice, f"{len(twice)} inputs have more than one manifest line, e.g. {twice[:3]}"
    missing = sorted(set(want) - set(counts))
    assert not missing, f"{len(missing)} inputs have no manifest line, e.g. {missing[:3]}"
    unknown = sorted(set(counts) - set(want))
    assert not unknown, f"manifest lines for inputs never sent: {unknown[:3]}"
    assert sorted(e["index"] for e in entries) == list(range(len(want)))

    by_input = {e["input"]: e for e in entries}
    errors = {name for name, e in by_input.items() if e["error"] is not None}
    assert errors == must_fail, (
        f"unexpected failures: {[by_input[n]['error'] for n in sorted(errors - must_fail)][:3]}; "
        f"expected to fail but did not: {sorted(must_fail - errors)}"
    )
    outputs = []
    for name, entry in by_input.items():
        if name in must_fail:
            assert entry["output"] is None, entry
            continue
        assert entry["output"] is not None, entry
        out = Path(entry["output"])
        assert out.parent == outdir, f"{out} is outside {outdir}"
        outputs.append(out.name)
    assert len(set(outputs)) == len(outputs), "two inputs share an output file"
    on_disk = sorted(p.name for p in outdir.iterdir())
    expected = sorted([MANIFEST_NAME, *outputs])
    extra = sorted(set(on_disk) - set(expected))
    assert not extra, f"files in {outdir} that no manifest line accounts for: {extra[:5]}"
    absent = sorted(set(expected) - set(on_disk))
    assert not absent, f"outputs named in the manifest but not written: {absent[:5]}"
    for name, entry in by_input.items():
        if name not in must_fail:
            check_output(entry)
    return by_input
