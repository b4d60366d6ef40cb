"""The mailbox: arrival order, selective receive, timeouts and interrupts, with real threads."""

from __future__ import annotations

import threading
import time

import pytest

from zimg._errors import ZimgTimeout
from zimg._mailbox import Mailbox

pytestmark = pytest.mark.timeout(10)


def test_receive_takes_messages_in_arrival_order():
    box = Mailbox()
    for i in range(5):
        box.put(i)
    assert [box.receive(timeout=0) for _ in range(5)] == [0, 1, 2, 3, 4]


def test_selective_receive_leaves_the_others_in_order():
    box = Mailbox()
    for m in ["a", ("x", 1), "b", ("x", 2), "c"]:
        box.put(m)
    assert box.receive(lambda m: m[0] == "x", timeout=0) == ("x", 1)
    assert box.receive(lambda m: m == "c", timeout=0) == "c"
    assert [box.receive(timeout=0) for _ in range(3)] == ["a", "b", ("x", 2)]
    assert len(box) == 0


def test_a_raising_pattern_is_no_match():
    box = Mailbox()
    box.put("short")
    box.put(("long", "tuple"))
    assert box.receive(lambda m: m[1] == "tuple", timeout=0) == ("long", "tuple")


@pytest.mark.parametrize("timeout", [0.0, 0.05, 0.2])
def test_timeout_is_honoured_within_50ms(timeout):
    box = Mailbox()
    box.put("other")
    started = time.monotonic()
    with pytest.raises(ZimgTimeout):
        box.receive(lambda m: m == "never", timeout=timeout)
    assert timeout <= time.monotonic() - started < timeout + 0.05
    assert box.receive(timeout=0) == "other"


def test_a_waiting_receive_wakes_for_a_matching_message_only():
    box = Mailbox()
    got = []
    started = threading.Event()

    def waiter():
        started.set()
        got.append(box.receive(lambda m: m == "yes", timeout=5))

    thread = threading.Thread(target=waiter)
    thread.start()
    started.wait(5)
    box.put("no")
    box.put("yes")
    thread.join(5)
    assert got == ["yes"]
    assert box.receive(timeout=0) == "no"


def test_interrupt_runs_the_check_of_a_waiting_receive():
    box = Mailbox()
    flag = threading.Event()
    errors = []

    def check():
        if flag.is_set():
            raise RuntimeError("exit signal")

    def waiter():
        try:
            box.receive(timeout=5, check=check)
        except RuntimeError as exc:
            errors.append(exc)

    thread = threading.Thread(target=waiter)
    thread.start()
    flag.set()
    box.interrupt()
    thread.join(5)
    assert not thread.is_alive()
    assert [str(e) for e in errors] == ["exit signal"]
