"""examples/distributed_main.ipynb runs headless, top to bottom, without an error in any cell.

It runs as Jupyter would run it (nbclient and an ipykernel kernel, from the ``notebook`` extra),
in a temporary directory, against the embedded cluster its cells start; the kernel imports this
checkout's zimg. Skipped when the extra is not installed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "examples" / "distributed_main.ipynb"

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


def test_the_notebook_runs_every_cell_and_shows_its_pictures_inline(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") for c in notebook.cells), "store the notebook without outputs"

    client = nbclient.NotebookClient(
        notebook,
        timeout=60,  # per cell
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError on the first cell that fails

    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    pictures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pictures) >= 3  # the input, the processed result, the grid
    assert any(o.get("data", {}).get("text/plain") == "['n1', 'n2']" for o in outputs)
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "32 results in" in text
    # distribute(progress=True): rich's bar, drawn in an ipywidgets Output widget
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)
    for workers in (1, 2, 4):
        assert f"{workers} workers:" in text
