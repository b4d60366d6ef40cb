"""The command line through typer's CliRunner (workers of `run` and `demo` are real processes)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
from typer.testing import CliRunner

from tests.reference import check_output, manifest
from zimg import _affinity
from zimg._affinity import format_cpus, usable_cpus
from zimg.cli import app
from zimg.testing import free_tcp_url

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_help_lists_every_command():
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("broker", "worker", "send", "run", "nodes", "fetch", "grid", "demo"):
        assert command in result.output


@pytest.mark.parametrize("command", ["send", "run", "worker", "broker"])
def test_command_help_explains_options(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0
    assert "--help" in result.output
    assert len(result.output.splitlines()) > 8


def test_broker_refuses_a_public_bind_without_insecure():
    result = invoke("broker", "--bind", "tcp://0.0.0.0:5555")
    assert result.exit_code == 2
    assert "--insecure" in result.output


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--payload", "zip"], "encoded, raw"),
        (["--op", "nosuchop"], "nosuchop"),
        (["--op", "threshold:bogus=1"], "bogus"),
        (["--op", "threshold:thresh"], "NAME"),
    ],
)
def test_bad_run_options_are_usage_errors(tmp_path, samples, args, fragment):
    result = invoke("run", str(samples / "coins.png"), "-o", str(tmp_path), *args)
    assert result.exit_code == 2
    assert fragment in result.output


def test_worker_rejects_a_bad_name():
    result = invoke("worker", "--name", "bad name!")
    assert result.exit_code == 2
    assert "invalid node name" in result.output


def test_worker_rejects_a_bad_cpu_list():
    result = invoke("worker", "--name", "n1", "--cpus", "3-1")
    assert result.exit_code == 2
    assert "ascending range" in result.output


@pytest.mark.timeout(20)
def test_worker_refuses_cpus_this_process_may_not_use(monkeypatch):
    monkeypatch.setattr("zimg.worker.serve", _never_serve)
    result = invoke("worker", "--name", "n1", "--cpus", "100000", "--connect", free_tcp_url())
    assert result.exit_code == 2
    usable = format_cpus(usable_cpus())
    assert f"CPU 100000 is not usable here; this process may use CPUs {usable}" in result.output


def _never_serve(*args: object, **kwargs: object) -> None:
    raise AssertionError("a usage error must come before the worker starts")


@pytest.mark.parametrize(
    ("cpus", "words"),
    [
        ("7", "CPU 7 is not usable here; this process may use CPUs 0-1"),
        ("0-3", "CPUs 2-3 are not usable here; this process may use CPUs 0-1"),
    ],
)
def test_worker_names_the_usable_cpus(monkeypatch, cpus, words):
    monkeypatch.setattr(_affinity, "usable_cpus", lambda: [0, 1])
    monkeypatch.setattr("zimg.worker.serve", _never_serve)
    result = invoke("worker", "--name", "n1", "--cpus", cpus)
    assert result.exit_code == 2
    assert words in " ".join(result.output.split())
    assert "Errno" not in result.output


@pytest.mark.timeout(30)
def test_worker_beyond_the_machine_exits_2_without_a_traceback():
    beyond = str(max(usable_cpus()) + 1)
    args = ["worker", "--name", "n1", "--cpus", beyond, "--connect", free_tcp_url()]
    done = subprocess.run(
        [sys.executable, "-m", "zimg", *args], capture_output=True, text=True, timeout=25
    )
    assert done.returncode == 2, done.stderr
    assert f"CPU {beyond} is not usable here" in done.stderr
    assert f"may use CPUs {format_cpus(usable_cpus())}" in done.stderr
    assert "Traceback" not in done.stderr
    assert "Errno" not in done.stderr


@pytest.mark.timeout(20)
def test_nodes_reports_a_missing_broker():
    result = invoke("nodes", "--broker", free_tcp_url(), "--timeout", "0.3")
    assert result.exit_code == 1
    assert "no answer" in result.output


def test_fetch_reports_a_bad_url(tmp_path):
    result = invoke("fetch", "ftp://example.com/a.png", "-o", str(tmp_path))
    assert result.exit_code == 1
    assert "http" in result.output


def test_grid_writes_one_image(tmp_path, samples):
    files = [str(samples / n) for n in ("chelsea.jpg", "brick.jpg", "coins.png", "grass.png")] * 2
    result = invoke("grid", *files, "-o", str(tmp_path / "g.png"), "--columns", "4")
    assert result.exit_code == 0, result.output
    grid = cv2.imread(str(tmp_path / "g.png"))
    assert grid is not None
    assert grid.shape[1] > grid.shape[0]  # 4 columns by 2 rows


@pytest.mark.timeout(120)
def test_run_processes_files_on_an_embedded_cluster(tmp_path, samples):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("chelsea.jpg", "brick.jpg", "coins.png", "grass.png"):
        shutil.copyfile(samples / name, inputs / name)
    out = tmp_path / "out"
    result = invoke(
        "run",
        *map(str, sorted(inputs.iterdir())),
        "-o",
        str(out),
        "--grid",
        str(tmp_path / "grid.png"),
    )
    assert result.exit_code == 0, result.output
    entries = manifest(out)
    assert len(entries) == 4
    for entry in entries:
        assert entry["node"] in ("n1", "n2")
        check_output(entry)
    assert (tmp_path / "grid.png").exists()
    assert "per node" in result.output


@pytest.mark.timeout(120)
def test_demo_makes_32_outputs_a_manifest_and_a_grid(tmp_path):
    result = invoke("demo", "--dir", str(tmp_path / "demo"))
    assert result.exit_code == 0, result.output
    out = tmp_path / "demo" / "out"
    entries = manifest(out)
    assert len(entries) == 32
    assert {e["node"] for e in entries} == {"n1", "n2"}
    for entry in entries:
        check_output(entry)
    assert (tmp_path / "demo" / "images" / "README.md").exists()
    assert (tmp_path / "demo" / "grid.png").exists()
    assert str(out) in result.output


def test_keys_new_and_authorize(tmp_path):
    result = invoke("keys", "new", "n1", "--dir", str(tmp_path / "nodes"))
    assert result.exit_code == 0, result.output
    secret = tmp_path / "nodes" / "n1.key_secret"
    assert (secret.stat().st_mode & 0o777) == 0o600
    assert "keep it private" in result.output
    result = invoke("keys", "authorize", str(secret), "--dir", str(tmp_path / "broker"))
    assert result.exit_code == 2
    assert "never the secret" in result.output
    result = invoke(
        "keys", "authorize", str(tmp_path / "nodes" / "n1.key"), "--dir", str(tmp_path / "broker")
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "broker" / "authorized" / "n1.key").read_bytes() == (
        tmp_path / "nodes" / "n1.key"
    ).read_bytes()
    again = invoke("keys", "new", "n1", "--dir", str(tmp_path / "nodes"))
    assert again.exit_code == 2
    assert "already exists" in again.output


def test_broker_with_a_keys_dir_lacking_its_certificate_is_a_usage_error(tmp_path):
    result = invoke("broker", "--keys", str(tmp_path), "--bind", "tcp://0.0.0.0:5555")
    assert result.exit_code == 2
    assert "broker.key_secret" in result.output


def test_key_without_broker_key_is_a_usage_error(tmp_path):
    result = invoke("nodes", "--key", str(tmp_path / "n1.key_secret"))
    assert result.exit_code == 2
    assert "--broker-key" in result.output


@pytest.mark.timeout(120)
def test_run_applies_max_pixels_in_path_mode(tmp_path, samples):
    result = invoke("run", str(samples / "coins.png"), "-o", str(tmp_path), "--max-pixels", "1000")
    assert result.exit_code == 1
    [entry] = manifest(tmp_path)
    assert "pixels" in entry["error"]
    assert entry["node"] in ("n1", "n2")  # refused by the worker that read it


@pytest.mark.timeout(120)
def test_run_tells_the_batch_how_many_workers_share_it(tmp_path, samples, monkeypatch):
    from zimg.cli import batches

    seen = []
    real = batches.run_with_progress

    def spy(conn, files, options, **kw):  # type: ignore[no-untyped-def]
        seen.append(options.workers)  # guided job sizes depend on it
        return real(conn, files, options, **kw)

    monkeypatch.setattr(batches, "run_with_progress", spy)
    result = invoke("run", str(samples / "coins.png"), "-o", str(tmp_path), "--workers", "3")
    assert result.exit_code == 0, result.output
    assert seen == [3]


@pytest.mark.parametrize(
    ("flags", "cpu_slots"), [((), True), (("--oversubscribe",), False)], ids=["default", "oversub"]
)
def test_run_starts_one_job_per_cpu_unless_told_to_oversubscribe(
    monkeypatch, tmp_path, samples, flags, cpu_slots
):
    from contextlib import contextmanager

    from zimg import cluster
    from zimg._errors import ZimgError

    seen = []

    @contextmanager
    def no_cluster(workers, **kw):  # type: ignore[no-untyped-def]
        seen.append((workers, kw["config"].cpu_slots))
        raise ZimgError("no cluster in this test")
        yield

    monkeypatch.setattr(_affinity, "usable_cpus", lambda: [0, 1])
    monkeypatch.setattr(cluster, "local_cluster", no_cluster)
    args = ("run", str(samples / "coins.png"), "-o", str(tmp_path), "--workers", "3", *flags)
    result = invoke(*args)
    assert result.exit_code == 1
    assert seen == [(3, cpu_slots)]
    assert ("3 workers on 2 CPUs: at most 2 run jobs at once" in result.output) is cpu_slots


@pytest.mark.parametrize(("flags", "kept"), [((), True), (("--trim-heap",), False)])
def test_broker_keeps_freed_memory_unless_told_to_trim(monkeypatch, flags, kept):
    from zimg import _heap
    from zimg.broker import Broker

    calls = []
    monkeypatch.setattr(_heap, "keep_freed_memory", lambda: calls.append("kept") or True)
    monkeypatch.setattr(Broker, "run", lambda self: self.context.term())  # serve nothing
    result = invoke("broker", "--bind", free_tcp_url(), *flags)
    assert result.exit_code == 0, result.output
    assert calls == (["kept"] if kept else [])


@pytest.mark.parametrize(
    ("bind", "warned"),
    [
        ("tcp://0.0.0.0:5555", True),
        ("tcp://*:5555", True),
        ("tcp://192.168.1.10:5555", True),
        ("tcp://127.0.0.1:5555", False),
        ("ipc:///tmp/zimg-broker", False),
    ],
)
def test_insecure_on_a_reachable_address_logs_a_warning(monkeypatch, caplog, bind, warned):
    import logging
    import signal

    from zimg import broker

    made = []

    class NoBroker:  # binds and serves nothing
        yielded = None  # never gave way to a failover peer

        def __init__(self, bind, config, keys=None, failover=None):  # type: ignore[no-untyped-def]
            made.append(bind)

        def run(self):  # type: ignore[no-untyped-def]
            pass

    monkeypatch.setattr(broker, "Broker", NoBroker)
    monkeypatch.setattr(signal, "signal", lambda *args: None)
    with caplog.at_level(logging.INFO):
        result = invoke("broker", "--bind", bind, "--insecure")
    assert result.exit_code == 0, result.output
    assert made == [bind]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    if not warned:
        assert warnings == []
        return
    [record] = warnings
    assert record.name == "zimg.broker"
    message = record.getMessage()
    assert bind in message
    assert "reachable by anyone" in message
    assert "without keys" in message


@pytest.mark.parametrize("command", ["send", "run"])
@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["-o", "afile"], "--output afile is a file: give a folder"),
        (["-o", "afile/out"], "--output afile/out is under afile, a file: give a folder"),
        (["--grid", "nodir/grid.png"], "the folder nodir does not exist"),
    ],
)
def test_output_places_are_refused_before_any_work(
    tmp_path, samples, monkeypatch, command, args, words
):
    # No broker runs and no cluster may start: the refusal comes first, in one line.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("not a folder")
    image = str(next(iter(samples.glob("*.jpg"))))
    result = invoke(command, *args, image)
    assert result.exit_code == 2, result.output
    assert words in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert not list(tmp_path.glob("out*"))


def test_demo_refuses_a_dir_that_is_a_file(tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    result = invoke("demo", "--dir", str(tmp_path / "afile"))
    assert result.exit_code == 2
    assert "is a file: give a folder" in " ".join(result.output.split())


def test_run_resume_skips_the_inputs_the_manifest_records_as_done(tmp_path, samples):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("chelsea.jpg", "brick.jpg", "coins.png", "grass.png"):
        shutil.copyfile(samples / name, inputs / name)
    files = [str(p) for p in sorted(inputs.iterdir())]
    out = tmp_path / "out"
    first = invoke("run", *files[:2], "-o", str(out), "--workers", "1")
    assert first.exit_code == 0, first.output
    old_lines = (out / "manifest.jsonl").read_text().splitlines()
    old_outputs = {e["input"]: Path(e["output"]).stat().st_mtime_ns for e in manifest(out)}
    with open(out / "manifest.jsonl", "a") as f:  # a line cut short by a kill
        f.write('{"index": 2, "input": "' + files[2].replace("\\", "\\\\") + '", "outp')

    result = invoke("run", *files, "-o", str(out), "--workers", "1", "--resume")

    assert result.exit_code == 0, result.output
    assert "skipped 2 done inputs" in result.output
    assert "2 inputs in" in result.output
    lines = (out / "manifest.jsonl").read_text().splitlines()
    assert lines[:2] == old_lines  # kept as they were; new lines appended
    entries = manifest(out)
    assert sorted(e["input"] for e in entries) == files  # exactly one line per input
    for entry in entries:
        check_output(entry)
    for source, mtime in old_outputs.items():
        done = next(e for e in entries if e["input"] == source)
        assert Path(done["output"]).stat().st_mtime_ns == mtime  # not written again
    assert len(list(out.glob("*_processed*"))) == 4


def test_a_rerun_without_resume_does_every_input_again(tmp_path, samples):
    source = str(samples / "coins.png")
    out = tmp_path / "out"
    for _ in range(2):
        result = invoke("run", source, "-o", str(out), "--workers", "1")
        assert result.exit_code == 0, result.output
        assert "skipped" not in result.output
    assert [e["input"] for e in manifest(out)] == [source]


def test_resume_is_explained_in_help():
    for command in ("send", "run"):
        text = " ".join(invoke(command, "--help").output.split())
        assert "--resume" in text
