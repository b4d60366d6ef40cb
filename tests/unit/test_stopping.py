"""Stopping is prompt: the broker's loop is woken rather than left to its next timer, and a
cluster's workers are all signalled before any is waited for."""

from __future__ import annotations

import signal
from typing import Any

import pytest
import zmq

from zimg import broker as broker_module
from zimg._broker_state import BrokerConfig
from zimg.broker import Broker
from zimg.cluster import stop_processes

pytestmark = pytest.mark.timeout(30)


def test_stop_wakes_the_broker_loop_instead_of_waiting_for_its_timers(monkeypatch):
    monkeypatch.setattr(broker_module, "_MAX_SLEEP_S", 3600.0)
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()  # ours: stop() does not end it
    try:
        config = BrokerConfig(heartbeat_interval_s=3600.0)
        broker = Broker("inproc://zimg-test-stop", config, context=context).start()
        thread = broker._thread
        assert thread is not None
        broker.stop(timeout_s=10.0)  # without the wake-up the loop would sleep for an hour
        assert not thread.is_alive()
    finally:
        context.term()  # ends a loop still polling (ETERM), so that a failure cannot hang


class FakeChild:
    """A child process that records what is done to it, and exits when signalled."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log, self.code = name, log, None

    def poll(self) -> Any:
        return self.code

    def send_signal(self, sig: int) -> None:
        self.log.append(f"{signal.Signals(sig).name} {self.name}")
        self.code = 0

    def wait(self, timeout: float | None = None) -> int:
        self.log.append(f"wait {self.name}")
        return 0

    def kill(self) -> None:
        self.log.append(f"kill {self.name}")


def test_stop_processes_signals_every_child_before_waiting_for_any():
    log: list[str] = []
    children = [FakeChild(n, log) for n in ("n1", "n2", "n3")]
    stop_processes(children)  # type: ignore[arg-type]
    assert log == ["SIGTERM n1", "SIGTERM n2", "SIGTERM n3", "wait n1", "wait n2", "wait n3"]
