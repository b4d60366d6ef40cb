"""What ``zimg send`` does before its first job goes out (issue 18): it loads neither the lane
modules (their pyzmq socket monitor imports asyncio), hmac (``secrets``' OpenSSL) nor OpenCV,
and typer builds the one command it runs, not all of them."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from tests.cli.heavy import heavy_modules_after
from tests.reference import copies, manifest
from zimg.cli import app, main
from zimg.cli._app import _app_for

pytestmark = pytest.mark.timeout(120)

NOT_FOR_A_SENDER = ("asyncio", "cv2", "hmac", "zimg._lanes", "zimg._lane_out", "zimg._lane_path")


def test_an_encoded_send_loads_no_lanes_no_asyncio_no_hmac_and_no_opencv(
    procs, ipc_url, tmp_path: Path, samples: Path
) -> None:
    procs.broker(ipc_url)
    procs.worker(ipc_url, "n1")
    files = copies(samples / "chelsea.jpg", tmp_path / "in", 1)
    out = tmp_path / "out"
    loaded = heavy_modules_after(
        "send",
        "--broker",
        ipc_url,
        "-o",
        str(out),
        "--timeout",
        "60",
        *map(str, files),
        modules=(*NOT_FOR_A_SENDER, "zmq"),
    )
    assert loaded == ["zmq"]  # it did send, and loaded none of the others
    [entry] = manifest(out)
    assert entry["error"] is None
    assert Path(entry["output"]).is_file()


def _built_for(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The commands typer turned into click commands for ``zimg ARGV`` (run in-process)."""
    built: list[str] = []
    real = typer.main.get_command_from_info

    def counting(command_info, **kwargs):  # type: ignore[no-untyped-def]
        command = real(command_info, **kwargs)
        built.append(command.name or "")
        return command

    monkeypatch.setattr(typer.main, "get_command_from_info", counting)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")  # main() sets it when unset
    monkeypatch.setattr("sys.argv", ["zimg", *argv])
    with pytest.raises(SystemExit) as ended:
        main()
    assert ended.value.code == 0
    return built


def test_a_command_line_builds_only_the_command_it_names(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _built_for(["send", "--help"], monkeypatch) == ["send"]
    assert _built_for(["broker", "-h"], monkeypatch) == ["broker"]
    everything = _built_for(["--help"], monkeypatch)
    assert {"send", "broker", "worker", "nodes", "new", "authorize"} <= set(everything)
    assert "zimg send [OPTIONS]" in capsys.readouterr().out


LINES = [
    [command, *rest]
    for command in ["broker", "worker", "send", "run", "nodes", "dashboard", "fetch", "grid"]
    for rest in (["--help"], ["--no-such-option"], ["--window", "x"], ["--version"])
] + [["send"], ["run"], ["--help"], ["--version"], ["keys", "new", "--help"], ["sned"], []]


@pytest.mark.parametrize("argv", LINES, ids=" ".join)
def test_the_command_alone_reads_its_command_line_as_the_whole_app_does(
    argv: list[str],
) -> None:
    whole = CliRunner().invoke(app, argv, env={"COLUMNS": "80"}, prog_name="zimg")
    alone = CliRunner().invoke(_app_for(argv[:1]), argv, env={"COLUMNS": "80"}, prog_name="zimg")
    assert (alone.exit_code, alone.output) == (whole.exit_code, whole.output)
