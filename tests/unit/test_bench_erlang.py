"""The Erlang/OTP peer of the actor benchmark: its result line, and the skip without ``erl``.

Nothing here starts a BEAM; tests/integration/test_bench_erlang.py runs the peer where it can.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from zimg.bench import actor_figures, actor_report, actors, broker_process, erlang
from zimg.bench._common import BenchError, Timings
from zimg.bench.report import micro_rows

LINE = (
    "zimg-erlang-peer otp=25 rtt_bytes=64 one_way_bytes=12 rounds=4 rtt_total_ns=400000 "
    "messages=1000 one_way_ns=2000000 samples_ns=90000,110000,100000,100000\n"
)


def test_parse_line_reads_every_field() -> None:
    out = erlang.parse_line("some boot noise\n" + LINE)
    assert out.otp == "25"
    assert (out.rtt_bytes, out.one_way_bytes, out.messages) == (64, 12, 1000)
    np.testing.assert_allclose(out.samples_us, [90.0, 110.0, 100.0, 100.0])
    assert out.rtt_total_s == pytest.approx(4e-4)
    assert out.one_way_s == pytest.approx(2e-3)
    rtt = actor_figures.Rtt.of(out.samples_us, out.rtt_total_s)
    assert (rtt.p50_us, rtt.rounds, rtt.per_s) == (100.0, 4, 10_000.0)
    assert actor_figures.Rate.of(out.messages, out.one_way_s).per_s == 500_000.0


@pytest.mark.parametrize(
    "text",
    [
        "",
        "driver failed: exit:echo_timeout\n",
        LINE.replace("one_way_ns=2000000 ", ""),
        LINE.replace("rtt_total_ns=400000", "rtt_total_ns=fast"),
        LINE.replace("rounds=4", "rounds=5"),  # a sample missing
        LINE.replace("one_way_ns=2000000", "one_way_ns=0"),
        LINE.replace("samples_ns=90000,", "samples_ns=,"),
    ],
)
def test_parse_line_rejects_what_is_not_a_whole_result(text: str) -> None:
    with pytest.raises(BenchError):
        erlang.parse_line(text)


def test_without_erl_nothing_runs_and_the_table_says_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert erlang.missing() == erlang.NOT_INSTALLED
    with pytest.raises(BenchError, match="not installed"):
        erlang.run_peer(10, 1, 10, 1, tmp_path, 5.0)
    cfg = actor_figures.make_config(quick=True, rounds=10, messages=10, spawns=1)
    erl = actors.run_erlang(cfg, str(tmp_path), Timings())
    assert erl == erlang.NOT_INSTALLED
    assert list(tmp_path.iterdir()) == []  # nothing compiled, nothing started

    z, raw = _zimg(), _raw()
    table = actor_report.format_table(cfg, _machine(), z, raw, erl)
    assert "zimg/erl" not in table
    assert "erlang:       not installed" in table
    report = actor_report.to_json(cfg, _machine(), z, raw, Timings(), erl)
    assert report["erlang"] == {"skipped": erlang.NOT_INSTALLED}
    assert not any(key.endswith("/erlang") for key in report["ratios"])


def test_erlang_figures_sit_beside_zimgs() -> None:
    cfg = actor_figures.make_config(quick=True, rounds=10, messages=10, spawns=1)
    erl = actor_figures.ErlangResults(
        "25", 64, 12, _rtt(50.0), actor_figures.Rate(10, 0.001, 10_000.0)
    )
    z, raw = _zimg(), _raw()
    table = actor_report.format_table(cfg, _machine(), z, raw, erl)
    p50 = next(line for line in table.splitlines() if line.strip().startswith("p50"))
    assert p50.split()[-2:] == ["50.0", "10.00x"]  # zimg 500 us against Erlang 50 us
    assert "Erlang/OTP 25" in table
    report = actor_report.to_json(cfg, _machine(), z, raw, Timings(), erl)
    assert report["ratios"]["rtt_n1_n2.p50_us/erlang"] == 10.0
    assert report["ratios"]["one_way.per_s/erlang"] == 0.1
    assert report["ratios"]["rtt_n1_n2.p50_us/direct"] == 5.0  # the pyzmq ratios as before


def test_micro_rows_have_erlang_rows_or_a_not_installed_one() -> None:
    act = {
        "zimg": {"rtt_n1_n2": {"p50_us": 500.0, "p99_us": 900.0}, "one_way_n1_n2": {"per_s": 1e3}},
        "pyzmq": {
            name: {"rtt": {"p50_us": 100.0, "p99_us": 300.0}, "one_way": {"per_s": 1e4}}
            for name in ("direct", "proxy")
        },
    }
    erlang_rows = [r for r in micro_rows({"micro": {"actors": act}}) if "Erlang" in r[0]]
    assert erlang_rows == []  # results from before the peer existed
    act["erlang"] = {"skipped": erlang.NOT_INSTALLED}
    erlang_rows = [r for r in micro_rows({"micro": {"actors": act}}) if "Erlang" in r[0]]
    assert erlang_rows == [("actor figures vs Erlang/OTP distribution", "-", "not installed", "-")]
    act["erlang"] = {"rtt": {"p50_us": 50.0, "p99_us": 90.0}, "one_way": {"per_s": 1e5}}
    erlang_rows = [r for r in micro_rows({"micro": {"actors": act}}) if "Erlang" in r[0]]
    assert [r[1:] for r in erlang_rows] == [
        ("500", "50", "10.00x"),
        ("900", "90", "10.00x"),
        ("1,000", "100,000", "0.01x"),
    ]


def _rtt(p50: float) -> actor_figures.Rtt:
    return actor_figures.Rtt(1000, p50, 2 * p50, p50, 1e6 / p50)


def _zimg() -> actor_figures.ZimgResults:
    spawn = actor_figures.Spawns(1, 2.0, 1.0, 3.0, 1.0)
    rate = actor_figures.Rate(10, 0.01, 1000.0)
    return actor_figures.ZimgResults(_rtt(500.0), _rtt(400.0), _rtt(50.0), rate, spawn)


def _raw() -> dict[str, actor_figures.RawResults]:
    rate = actor_figures.Rate(10, 0.001, 10_000.0)
    return {
        "direct": actor_figures.RawResults(_rtt(100.0), rate),
        "proxy": actor_figures.RawResults(_rtt(200.0), rate),
    }


def _machine() -> dict[str, object]:
    keys = ("date", "cpu_count", "cpus_usable", "cpu_model", "load_avg_1m", "platform", "python")
    keys += ("pyzmq", "libzmq", "msgpack", "numpy", "zimg")
    return dict.fromkeys(keys, "?")


def test_the_python_floor_has_its_column_between_the_proxy_and_erlang() -> None:
    cfg = actor_figures.make_config(quick=True, rounds=10, messages=10, spawns=1)
    erl = actor_figures.ErlangResults(
        "25", 64, 12, _rtt(50.0), actor_figures.Rate(10, 0.001, 10_000.0)
    )
    z, raw = _zimg(), _raw()
    raw["floor"] = actor_figures.RawResults(_rtt(250.0), actor_figures.Rate(10, 0.002, 5_000.0))
    table = actor_report.format_table(cfg, _machine(), z, raw, erl)
    head = next(line for line in table.splitlines() if "pyzmq direct" in line)
    assert head.split()[-4:] == ["floor", "zimg/flr", "erlang", "zimg/erl"]
    p50 = next(line for line in table.splitlines() if line.strip().startswith("p50"))
    assert p50.split()[-4:] == ["250.0", "2.00x", "50.0", "10.00x"]  # zimg 500 us
    messages = next(line for line in table.splitlines() if "messages/s" in line)
    assert messages.split()[-4:-2] == ["5,000", "0.20x"]  # zimg 1,000 messages/s
    assert "py floor:" in table
    report = actor_report.to_json(cfg, _machine(), z, raw, Timings(), erl)
    assert report["ratios"]["rtt_n1_n2.p50_us/floor"] == 2.0
    assert report["ratios"]["one_way.per_s/floor"] == 0.2


def test_micro_rows_have_python_floor_rows_when_it_was_measured() -> None:
    act: dict[str, Any] = {
        "zimg": {"rtt_n1_n2": {"p50_us": 500.0, "p99_us": 900.0}, "one_way_n1_n2": {"per_s": 1e3}},
        "pyzmq": {
            name: {"rtt": {"p50_us": 100.0, "p99_us": 300.0}, "one_way": {"per_s": 1e4}}
            for name in ("direct", "proxy")
        },
    }
    assert not [r for r in micro_rows({"micro": {"actors": act}}) if "floor" in r[0]]
    act["pyzmq"]["floor"] = {"rtt": {"p50_us": 125.0, "p99_us": 450.0}, "one_way": {"per_s": 4e3}}
    floor_rows = [r for r in micro_rows({"micro": {"actors": act}}) if "floor" in r[0]]
    assert [r[1:] for r in floor_rows] == [
        ("500", "125", "4.00x"),
        ("900", "450", "2.00x"),
        ("1,000", "4,000", "0.25x"),
    ]


def test_the_workers_cpu_per_one_way_message_has_its_rows_when_measured() -> None:
    cfg = actor_figures.make_config(quick=True, rounds=10, messages=10, spawns=1)
    z = _zimg()
    table = actor_report.format_table(cfg, _machine(), z, _raw(), "not installed")
    assert "CPU per message" not in table  # not measured (no /proc)
    z = dataclasses.replace(z, one_way_sender_cpu_us=7.25, one_way_receiver_cpu_us=9.5)
    table = actor_report.format_table(cfg, _machine(), z, _raw(), "not installed")
    rows = {line.split("(us)")[0].strip(): line.split()[-5:] for line in table.splitlines()}
    assert rows["sending node's CPU per message"][0] == "7.2"
    assert rows["receiving node's CPU per message"][0] == "9.5"
    report = actor_report.to_json(cfg, _machine(), z, _raw(), Timings(), "not installed")
    assert report["zimg"]["one_way_receiver_cpu_us"] == 9.5


def test_a_workers_total_cpu_counts_threads_that_ended() -> None:
    pid = os.getpid()
    before = broker_process.process_total_cpu_s(pid)

    def spin() -> None:
        end = time.thread_time() + 0.2
        while time.thread_time() < end:
            pass

    worker = threading.Thread(target=spin)
    worker.start()
    worker.join()
    assert broker_process.process_total_cpu_s(pid) - before >= 0.15  # the thread is gone
