"""Bad images end to end: `zimg send` to a real broker and worker (subprocesses).

Decompression bombs, a truncated JPEG and a file that is not an image each get a manifest error
that names the file, the rest of the batch completes pixel-exact, `zimg send` exits 1, and the
worker never allocates the bomb's pixels: its peak resident memory (VmHWM) stays far below
what decoding would take.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from tests.reference import check_output, handmade_png, manifest
from zimg.nodes_query import query_nodes

pytestmark = pytest.mark.timeout(120)

# A worker is ~100 MB resident after a batch of the samples; the 20000 x 20000 bomb below needs
# 400 MB for its pixels alone (OpenCV peaks at ~800 MB decoding it), so an allocation cannot hide
# under this bound.
WORKER_HWM_LIMIT_MB = 300
SEND_TIMEOUT_S = 90


def tiny_bomb() -> bytes:
    """60,000 x 60,000 pixels declared in a file of a few hundred bytes (4 rows of data)."""
    data = handmade_png(60_000, 60_000, zlib.compress(b"\x00" * 60_001 * 4))
    assert len(data) < 400
    return data


def inflating_bomb() -> bytes:
    """20,000 x 20,000 pixels whose IDAT really inflates to all 400 MB of rows (~390 KB file).

    Unlike the 60,000 x 60,000 one, this is under OpenCV's own limit of 2**30 pixels: without
    zimg's check before decoding, cv2.imdecode would allocate and fill it.
    """
    side = 20_000
    packer = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter byte 0, then a row of black pixels
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    data = handmade_png(side, side, idat)
    assert len(data) < 500_000
    return data


def vm_kb(pid: int, field: str) -> int:
    """A /proc/PID/status memory figure (VmRSS, VmHWM) in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for process {pid}")


def send(url: str, outdir: Path, files: list[Path], *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "zimg", "send", "--broker", url, "-o", str(outdir)]
    cmd += ["--timeout", "60", *extra, *map(str, files)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=SEND_TIMEOUT_S)


@pytest.fixture
def inputs(tmp_path: Path, samples: Path) -> dict[str, Path]:
    """Good samples, interleaved with a bomb, a truncated JPEG and two files that are no images."""
    folder = tmp_path / "in"
    folder.mkdir()
    jpeg = (samples / "chelsea.jpg").read_bytes()
    made = {
        "bomb.png": tiny_bomb(),
        # Cut in the scan data: the headers (and so the size) are intact, the end is missing.
        "cut.jpg": jpeg[: len(jpeg) // 3],
        "notes.jpg": b"this is not a picture\n" * 20,
        "zeros.png": bytes(4096),
    }
    files: dict[str, Path] = {}
    good = ["chelsea.jpg", "coins.png", "brick.jpg", "grass.png", "chelsea.jpg", "coins.png"]
    for i, name in enumerate(good):
        path = folder / f"good{i}_{name}"
        shutil.copyfile(samples / name, path)
        files[path.name] = path
        if i < len(made):
            bad_name, data = list(made.items())[i]
            (folder / bad_name).write_bytes(data)
            files[bad_name] = folder / bad_name
    return files


def check_batch(
    result: subprocess.CompletedProcess[str], outdir: Path, files: dict[str, Path]
) -> dict[str, dict]:
    """Exit code 1, one manifest entry per input, the good ones pixel-exact; the entries by name."""
    report = f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert result.returncode == 1, report
    entries = {Path(e["input"]).name: e for e in manifest(outdir)}
    assert sorted(entries) == sorted(files), report
    for name, entry in entries.items():
        if name.startswith("good"):
            check_output(entry)
        else:
            assert entry["output"] is None, entry
            assert name in entry["error"], entry  # the error names the file
            assert not list(outdir.glob(f"{Path(name).stem}_processed*")), name
    failed = sum(not name.startswith("good") for name in files)
    assert f"{failed} failed" in result.stdout, report
    return entries


def check_bad_entries(entries: dict[str, dict]) -> None:
    bomb = entries["bomb.png"]["error"]
    assert "60000x60000" in bomb, bomb
    assert "pixels" in bomb, bomb
    assert "truncated" in entries["cut.jpg"]["error"], entries["cut.jpg"]
    for name in ("notes.jpg", "zeros.png"):
        assert "not an image" in entries[name]["error"], entries[name]


def check_workers_alive(url: str, workers: dict[str, subprocess.Popen[bytes]]) -> None:
    for name, proc in workers.items():
        assert proc.poll() is None, f"worker {name} exited with {proc.returncode}"
    assert [n["name"] for n in query_nodes(url)["nodes"]] == sorted(workers)


@pytest.mark.parametrize("mode", ["encoded", "raw"])
def test_bad_files_get_named_errors_and_the_rest_completes(procs, tcp_url, tmp_path, inputs, mode):
    procs.broker(tcp_url)
    worker = procs.worker(tcp_url, "n1")
    result = send(tcp_url, tmp_path / "out", list(inputs.values()), "--payload", mode)

    entries = check_batch(result, tmp_path / "out", inputs)
    check_bad_entries(entries)
    for name in ("bomb.png", "cut.jpg", "notes.jpg"):
        assert name in result.stderr, result.stderr  # printed as failures too
    check_workers_alive(tcp_url, {"n1": worker})
    hwm_mb = vm_kb(worker.pid, "VmHWM") / 1024
    print(f"worker n1 VmHWM after the {mode} batch: {hwm_mb:.0f} MB")
    assert hwm_mb < WORKER_HWM_LIMIT_MB


def test_bombs_that_reach_the_worker_are_refused_before_decoding(procs, tcp_url, tmp_path, inputs):
    """The client's own limit raised so far that it sends the bombs: the worker refuses them."""
    inflating = tmp_path / "in" / "inflating.png"
    inflating.write_bytes(inflating_bomb())
    files = {**inputs, "inflating.png": inflating}
    procs.broker(tcp_url)
    worker = procs.worker(tcp_url, "n1")  # its limit: the default 200,000,000 pixels
    result = send(tcp_url, tmp_path / "out", list(files.values()), "--max-pixels", str(10**12))

    entries = check_batch(result, tmp_path / "out", files)
    check_bad_entries(entries)
    for name in ("bomb.png", "inflating.png"):
        assert entries[name]["node"] == "n1", entries[name]  # refused by the worker, not the client
    inflated = entries["inflating.png"]
    assert "20000x20000 is 400000000 pixels" in inflated["error"], inflated
    assert "over the limit of 200000000 pixels" in inflated["error"], inflated
    check_workers_alive(tcp_url, {"n1": worker})
    hwm_mb = vm_kb(worker.pid, "VmHWM") / 1024
    print(f"worker n1 VmHWM after refusing the bombs: {hwm_mb:.0f} MB")
    assert hwm_mb < WORKER_HWM_LIMIT_MB
