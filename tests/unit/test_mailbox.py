"""The mailbox: arrival order, selective receive, timeouts and interrupts, with real threads; and
its bounds: messages and bytes per mailbox, bytes per node, system messages, and term_size."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from zimg._errors import ZimgTimeout
from zimg._mailbox import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_MESSAGES,
    DEFAULT_NODE_MAX_BYTES,
    ByteBudget,
    Mailbox,
    term_size,
)
from zimg.wire import Pid, Ref

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


# ---------------------------------------------------------------------------- bounds


def drain(box):
    out = []
    while True:
        try:
            out.append(box.receive(timeout=0))
        except ZimgTimeout:
            return out


def test_the_defaults_are_the_documented_ones():
    assert (DEFAULT_MAX_MESSAGES, DEFAULT_MAX_BYTES, DEFAULT_NODE_MAX_BYTES) == (
        100_000,
        64 << 20,
        512 << 20,
    )
    box = Mailbox()
    assert (box.max_messages, box.max_bytes, box.budget.max_bytes) == (
        100_000,
        64 << 20,
        512 << 20,
    )


def test_beyond_the_message_bound_the_newest_is_dropped_and_counted():
    box = Mailbox(max_messages=3)
    assert [box.put(i) for i in range(5)] == [True, True, True, False, False]
    assert box.dropped == 2
    assert drain(box) == [0, 1, 2]
    assert box.put("room again")
    assert drain(box) == ["room again"]


def test_the_byte_bound_counts_network_messages_and_frees_them_on_receive():
    box = Mailbox(max_bytes=1000)
    assert box.put("a", 400)
    assert box.put("b", 400)
    assert not box.put("c", 400)  # 1200 > 1000
    assert box.put("local", 0)  # a local message counts no bytes
    assert (box.dropped, box.nbytes) == (1, 800)
    assert box.receive(timeout=0) == "a"
    assert box.nbytes == 400
    assert box.put("d", 400)
    assert drain(box) == ["b", "local", "d"]
    assert box.nbytes == 0


def test_one_message_larger_than_the_bound_gets_into_an_empty_mailbox_only():
    box = Mailbox(max_bytes=1000)
    assert box.put("big", 5000)
    assert not box.put("second big", 5000)
    assert not box.put("small", 10)  # the mailbox is over its bound until "big" is taken
    assert box.receive(timeout=0) == "big"
    assert box.put("small", 10)


def test_all_mailboxes_of_a_node_share_its_byte_budget():
    budget = ByteBudget(max_bytes=10_000)
    a = Mailbox(max_bytes=8_000, budget=budget)
    b = Mailbox(max_bytes=10_000, budget=budget)
    assert a.put("a1", 6_000)
    assert not b.put("b1", 6_000)  # fits b, not the node
    assert b.put("b2", 3_000)
    assert budget.held <= budget.max_bytes
    assert a.receive(timeout=0) == "a1"
    a.close()  # gives back what it reserved, used or not
    assert b.put("b3", 6_000)
    assert [b.dropped, a.dropped] == [1, 0]
    assert drain(b) == ["b2", "b3"]
    b.close()
    assert budget.held == 0


def test_the_budget_never_holds_more_than_its_bound():
    budget = ByteBudget(max_bytes=1 << 20)
    boxes = [Mailbox(max_bytes=1 << 20, budget=budget) for _ in range(8)]
    rng = np.random.default_rng(3)
    for step in range(5_000):
        box = boxes[int(rng.integers(len(boxes)))]
        if rng.random() < 0.6:
            box.put(step, int(rng.integers(1, 50_000)))
        else:
            drain(box)
        assert 0 <= budget.held <= budget.max_bytes
        assert sum(b.nbytes for b in boxes) <= budget.held
    for box in boxes:
        box.close()
    assert budget.held == 0


def test_system_messages_ignore_the_message_bound_not_the_byte_bound():
    box = Mailbox(max_messages=1, max_bytes=100)
    assert box.put("ordinary")
    assert not box.put("over")
    assert box.put(("DOWN", 1), system=True)
    assert box.put(("EXIT", 2), 60, system=True)
    assert not box.put(("EXIT", 3), 60, system=True)  # its bytes do not fit
    assert drain(box) == ["ordinary", ("DOWN", 1), ("EXIT", 2)]


def test_a_closed_mailbox_takes_nothing_and_counts_no_drop():
    budget = ByteBudget(max_bytes=1000)
    box = Mailbox(budget=budget)
    box.put("held", 500)
    box.close()
    assert budget.held == 0
    assert box.put("late", 10)  # not a drop: the process is gone
    assert (len(box), box.dropped) == (0, 0)


def test_term_size_counts_strings_bytes_and_arrays_in_nested_terms():
    pid = Pid("n1", 1, 2)
    small = term_size(("echo", pid, 17))
    assert small < 400
    blob = b"x" * (1 << 20)
    assert (1 << 20) < term_size(blob) < (1 << 20) + 200
    assert term_size(("img", pid, np.zeros((512, 512), np.uint8))) > 512 * 512
    nested = [{"k": ("a" * 1000, [b"y" * 2000])}, Ref("n1", 1, 3), None, 1.5]
    assert 3000 < term_size(nested) < 4000
    assert term_size(list(range(1000))) >= 1000 * 64  # many small objects count too


def test_put_many_bounds_and_counts_each_message_as_put_would():
    budget = ByteBudget(max_bytes=10_000)
    many = Mailbox(max_messages=4, max_bytes=1000, budget=budget)
    one = Mailbox(max_messages=4, max_bytes=1000, budget=ByteBudget(max_bytes=10_000))
    messages, sizes = ["a", "b", "c", "d", "e", "f"], [400, 400, 400, 100, 100, 100]
    kept = [one.put(m, n) for m, n in zip(messages, sizes, strict=True)]
    assert many.put_many(messages, sizes) == kept.count(False) == 2  # "c" (bytes), "f" (count)
    assert (many.dropped, many.nbytes) == (one.dropped, one.nbytes)
    assert drain(many) == drain(one) == ["a", "b", "d", "e"]
    assert many.nbytes == 0
    many.close()
    assert budget.held == 0


def test_put_many_wakes_one_waiting_receive_per_message():
    box = Mailbox()
    got: list[object] = []

    def take() -> None:
        got.append(box.receive(timeout=5))

    waiting = [threading.Thread(target=take) for _ in range(3)]
    for thread in waiting:
        thread.start()
    assert until(lambda: len(box._waiters) == 3)  # all three wait
    assert box.put_many(["x", "y"], [10, 10]) == 0
    assert until(lambda: len(got) == 2)
    assert sorted(got) == ["x", "y"]
    box.put("z")
    for thread in waiting:
        thread.join(5)
    assert sorted(got) == ["x", "y", "z"]


def test_a_closed_mailbox_takes_no_run():
    box = Mailbox()
    box.close()
    assert box.put_many(["a"], [10]) == 0
    assert (len(box), box.dropped) == (0, 0)


def until(condition, timeout: float = 5.0) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True
