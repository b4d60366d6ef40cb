"""What `zimg send` and `zimg nodes` say while they wait: for a broker that is not there, for
inputs that are not there, for workers that are not there (issue 15 §2 item 4)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from zimg.cli import app
from zimg.cluster import wait_for_workers
from zimg.testing import Processes, free_tcp_url

runner = CliRunner()


def wait_for_text(logdir: Path, label: str, text: str, timeout_s: float) -> str:
    """The output of the process logged as ``label-*.log`` once it holds ``text``."""
    deadline = time.monotonic() + timeout_s
    output = ""
    while time.monotonic() < deadline:
        output = "".join(p.read_text(errors="replace") for p in logdir.glob(f"{label}-*.log"))
        if text in output:
            return output
        time.sleep(0.1)
    raise AssertionError(f"no {text!r} within {timeout_s} s in:\n{output}")


@pytest.mark.timeout(30)
def test_send_without_a_broker_says_what_it_waits_for_and_never_lost(
    procs: Processes, tmp_path: Path, samples: Path
) -> None:
    url = free_tcp_url()
    started = time.monotonic()
    proc = procs.zimg(
        "send", "send", str(samples / "coins.png"), "-b", url, "-o", str(tmp_path), "--timeout", "5"
    )
    hint = f"waiting for the broker at {url} (is `zimg broker` running there?)"
    wait_for_text(procs.logdir, "send", hint, timeout_s=8)
    assert time.monotonic() - started < 8  # ~3 s of silence, plus the interpreter's start
    assert proc.wait(timeout=15) == 1
    output = wait_for_text(procs.logdir, "send", "no answer", timeout_s=1)
    assert f"no answer from the broker at {url} within 5 s (is `zimg broker`" in output
    assert output.count("waiting for the broker") == 1
    assert "lost" not in output
    assert "Traceback" not in output


@pytest.mark.timeout(20)
def test_send_with_only_missing_inputs_fails_before_connecting(tmp_path: Path) -> None:
    started = time.monotonic()
    missing = [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    result = runner.invoke(app, ["send", *missing, "-b", free_tcp_url(), "-o", str(tmp_path)])
    assert result.exit_code == 1
    assert "none of the 2 inputs exist" in result.output
    assert time.monotonic() - started < 2  # no broker was waited for


@pytest.mark.timeout(20)
def test_nodes_with_keys_and_no_answer_names_the_keys(tmp_path: Path) -> None:
    for name in ("me", "broker"):
        assert runner.invoke(app, ["keys", "new", name, "--dir", str(tmp_path)]).exit_code == 0
    result = runner.invoke(
        app,
        [
            "nodes",
            "-b",
            free_tcp_url(),
            "--timeout",
            "0.3",
            "--key",
            str(tmp_path / "me.key_secret"),
            "--broker-key",
            str(tmp_path / "broker.key"),
        ],
    )
    assert result.exit_code == 1
    assert "(is `zimg broker` running there? with keys: check --key and --broker-key)" in (
        " ".join(result.output.split())  # rich may wrap the line
    )


@pytest.mark.timeout(40)
def test_send_to_a_broker_without_workers_warns_within_seconds(
    procs: Processes, tcp_url: str, tmp_path: Path, samples: Path
) -> None:
    procs.broker(tcp_url)
    started = time.monotonic()
    proc = procs.zimg(
        "send", "send", str(samples / "coins.png"), "-b", tcp_url, "-o", str(tmp_path)
    )
    warning = f"no worker is connected to the broker at {tcp_url}; waiting (start one with "
    output = wait_for_text(procs.logdir, "send", warning, timeout_s=10)
    assert time.monotonic() - started < 10
    assert output.count("no worker is connected") == 1
    assert proc.poll() is None  # it keeps waiting, as before (the fixture stops it)


# ---------------------------------------------------------------------- a worker before its broker
# (issue 15 §2 item 5): it waits as long as it takes, unless --death-timeout says otherwise.


@pytest.mark.timeout(40)
def test_worker_started_before_the_broker_waits_then_joins(procs: Processes) -> None:
    url = free_tcp_url()
    worker = procs.worker(url, "n1", "--log-level", "info", wait=False)
    hint = f"waiting for the broker at {url} (is `zimg broker` running there?)"
    wait_for_text(procs.logdir, "worker-n1", hint, timeout_s=15)
    assert worker.poll() is None
    procs.broker(url)
    wait_for_workers(url, ["n1"], timeout_s=20, processes={"n1": worker})
    output = wait_for_text(procs.logdir, "worker-n1", "worker n1 ready", timeout_s=5)
    assert output.count("waiting for the broker") == 1
    assert "Traceback" not in output


@pytest.mark.timeout(30)
def test_worker_death_timeout_exits_1_naming_the_broker(procs: Processes) -> None:
    url = free_tcp_url()
    worker = procs.worker(url, "n1", "--death-timeout", "1", wait=False)
    assert worker.wait(timeout=20) == 1
    output = wait_for_text(procs.logdir, "worker-n1", "no answer", timeout_s=1)
    assert f"no answer from the broker at {url} within 1 s (is `zimg broker` running" in output
    assert "Traceback" not in output


@pytest.mark.timeout(30)
def test_worker_waiting_for_the_broker_stops_cleanly_on_sigterm(procs: Processes) -> None:
    url = free_tcp_url()
    worker = procs.worker(url, "n1", wait=False)
    wait_for_text(procs.logdir, "worker-n1", "waiting for the broker", timeout_s=15)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=10) == 0
    output = "".join(p.read_text() for p in procs.logdir.glob("worker-n1-*.log"))
    assert "Traceback" not in output
    assert "error" not in output
