"""The Binary Star state machine (zimg._failover) with a fake clock: no sockets."""

from __future__ import annotations

import itertools

import pytest

from zimg._failover import (
    ACCEPT,
    IGNORE,
    REFUSE,
    Failover,
    Log,
    Publish,
    Reconnect,
    Role,
    State,
    Yield,
)
from zimg.testing import FakeClock

BEAT = 0.5
TIMEOUT = 1.5


def pair_member(role: Role, clock: FakeClock) -> Failover:
    return Failover(role, now=clock(), heartbeat_interval_s=BEAT, failover_timeout_s=TIMEOUT)


def peer(role: Role, state: State) -> dict[str, str]:
    return {"role": role.value, "state": state.value}


def active_primary_and_passive_backup(clock: FakeClock) -> tuple[Failover, Failover]:
    primary, backup = pair_member(Role.PRIMARY, clock), pair_member(Role.BACKUP, clock)
    primary.on_peer(peer(Role.BACKUP, State.STARTING), clock())
    backup.on_peer(peer(Role.PRIMARY, State.ACTIVE), clock())
    assert (primary.state, backup.state) == (State.ACTIVE, State.PASSIVE)
    return primary, backup


def test_both_starting_the_primary_serves_and_the_backup_goes_passive() -> None:
    clock = FakeClock()
    primary, backup = pair_member(Role.PRIMARY, clock), pair_member(Role.BACKUP, clock)
    # Each publishes at once: the first tick is due immediately.
    (p_state,) = [i for i in primary.on_tick(clock()) if isinstance(i, Publish)]
    (b_state,) = [i for i in backup.on_tick(clock()) if isinstance(i, Publish)]
    assert p_state.header == {"role": "primary", "state": "starting"}
    backup.on_peer(p_state.header, clock())
    assert backup.state.value == "starting"  # a backup waits for an active primary
    primary.on_peer(b_state.header, clock())
    assert primary.active
    backup.on_peer(peer(Role.PRIMARY, State.ACTIVE), clock())
    assert backup.state is State.PASSIVE
    assert primary.on_node_request(clock())[0] is ACCEPT
    assert backup.on_node_request(clock())[0] is REFUSE  # the peer is plainly alive


def test_a_passive_backup_takes_over_only_with_a_silent_peer_and_a_node_vote() -> None:
    clock = FakeClock()
    _primary, backup = active_primary_and_passive_backup(clock)
    # The primary dies now. Before the failover timeout a node is not accepted: first refused
    # (the peer was heard a moment ago), then kept waiting (the peer may be dying).
    clock.advance(BEAT)
    assert backup.on_node_request(clock())[0] is REFUSE
    clock.advance(BEAT)
    assert backup.on_node_request(clock())[0] is IGNORE
    assert backup.state is State.PASSIVE
    # The timeout passes with no node: still passive (no vote), and it says so once.
    clock.advance(TIMEOUT)
    logs = [i for i in backup.on_tick(clock()) if isinstance(i, Log)]
    assert any("silent" in log.text for log in logs)
    assert backup.state is State.PASSIVE
    assert not [i for i in backup.on_tick(clock.advance(BEAT)) if isinstance(i, Log)]
    # A node comes: the vote makes it active, and it tells the peer at once.
    vote, out = backup.on_node_request(clock())
    assert vote is ACCEPT
    assert backup.active
    assert any(isinstance(i, Log) and "now active" in i.text for i in out)
    assert backup.became_active_at == clock()
    published = [i for i in backup.on_tick(clock()) if isinstance(i, Publish)]
    assert published[0].header["state"] == "active"


def test_takeover_is_within_the_failover_timeout_plus_one_heartbeat() -> None:
    """A node that repeats its HELLO every heartbeat is taken at most one heartbeat after the
    peer's silence reaches the failover timeout."""
    clock = FakeClock()
    _primary, backup = active_primary_and_passive_backup(clock)
    died = clock()
    while backup.on_node_request(clock())[0] is not ACCEPT:
        clock.advance(BEAT)
        assert clock() - died <= TIMEOUT + BEAT
    assert clock() - died >= TIMEOUT


def test_a_cut_peer_link_without_votes_never_makes_two_actives() -> None:
    clock = FakeClock()
    primary, backup = active_primary_and_passive_backup(clock)
    for _ in range(100):  # 50 s of a cut link: each side hears nothing, nodes stay on primary
        clock.advance(BEAT)
        primary.on_tick(clock())
        backup.on_tick(clock())
        assert primary.on_node_request(clock())[0] is ACCEPT
        assert not (primary.active and backup.active)
    assert backup.state is State.PASSIVE


def test_a_node_cannot_make_a_passive_broker_active_while_the_peer_speaks() -> None:
    clock = FakeClock()
    _primary, backup = active_primary_and_passive_backup(clock)
    for _ in range(1000):  # a node hammering HELLO while the primary keeps publishing
        clock.advance(BEAT / 4)
        if clock() % BEAT < BEAT / 4:
            backup.on_peer(peer(Role.PRIMARY, State.ACTIVE), clock())
        assert backup.on_node_request(clock())[0] is not ACCEPT
    assert backup.state is State.PASSIVE


def test_a_backup_started_alone_never_serves() -> None:
    clock = FakeClock()
    backup = pair_member(Role.BACKUP, clock)
    clock.advance(60)
    backup.on_tick(clock())
    assert backup.on_node_request(clock())[0] is REFUSE
    assert backup.state is State.STARTING


def test_a_primary_started_alone_serves_after_the_failover_timeout() -> None:
    clock = FakeClock()
    primary = pair_member(Role.PRIMARY, clock)
    assert primary.on_node_request(clock())[0] is IGNORE  # the backup may be active
    clock.advance(TIMEOUT)
    assert primary.on_node_request(clock())[0] is ACCEPT


def test_a_restarted_primary_finds_the_backup_active_and_goes_passive() -> None:
    """After a failover the backup serves; the primary restarted (failing back is manual)."""
    clock = FakeClock()
    primary = pair_member(Role.PRIMARY, clock)
    primary.on_peer(peer(Role.BACKUP, State.ACTIVE), clock())
    assert primary.state is State.PASSIVE
    assert primary.on_node_request(clock())[0] is REFUSE


def test_a_passive_broker_takes_over_from_a_restarting_peer() -> None:
    clock = FakeClock()
    _primary, backup = active_primary_and_passive_backup(clock)
    backup.on_peer(peer(Role.PRIMARY, State.STARTING), clock.advance(5))
    assert backup.active


def test_two_actives_make_the_backup_yield_and_the_primary_stay() -> None:
    clock = FakeClock()
    primary, backup = active_primary_and_passive_backup(clock)
    clock.advance(TIMEOUT + 1)  # the link was cut, and a node voted for the backup
    assert backup.on_node_request(clock())[0] is ACCEPT
    out = backup.on_peer(peer(Role.PRIMARY, State.ACTIVE), clock())  # the link healed
    assert any(isinstance(i, Yield) for i in out)
    out = primary.on_peer(peer(Role.BACKUP, State.ACTIVE), clock())
    assert not any(isinstance(i, Yield) for i in out)
    assert primary.active


@pytest.mark.parametrize(
    "header",
    [
        {},
        {"role": "primary"},
        {"role": "backup", "state": "active"},  # our own role: a misconfigured or forged peer
        {"role": "primary", "state": "boss"},
        {"role": 1, "state": "active"},
        {"role": "primary", "state": ["active"]},
    ],
)
def test_malformed_peer_state_is_counted_and_changes_nothing(header: dict[str, object]) -> None:
    clock = FakeClock()
    backup = pair_member(Role.BACKUP, clock)
    out = backup.on_peer(header, clock())
    assert backup.malformed == 1
    assert backup.state is State.STARTING
    assert backup.peer_heard_at is None  # not a sign of life either
    assert [type(i) for i in out] == [Log]
    backup.on_peer(header, clock())
    assert backup.malformed == 2
    assert backup.report(clock())["peer_malformed"] == 2


def test_state_is_published_every_heartbeat() -> None:
    clock = FakeClock()
    primary = pair_member(Role.PRIMARY, clock)
    published = 0
    for _ in range(40):
        published += sum(isinstance(i, Publish) for i in primary.on_tick(clock()))
        clock.advance(BEAT / 4)
    assert published == 10
    assert primary.next_deadline <= clock() + BEAT


def test_a_silent_peer_link_is_reopened_once_per_failover_timeout() -> None:
    """libzmq gives up on a connection after a protocol error: a silent link is reopened."""
    clock = FakeClock()
    _primary, backup = active_primary_and_passive_backup(clock)
    reopened = []
    for _ in range(80):  # 10 s of silence, ticking every quarter beat
        clock.advance(BEAT / 4)
        if any(isinstance(i, Reconnect) for i in backup.on_tick(clock())):
            reopened.append(clock())
    assert 5 <= len(reopened) <= 6  # at 1.5, 3, 4.5, 6, 7.5 and 9 s
    assert all(b - a >= TIMEOUT for a, b in itertools.pairwise(reopened))
    # Heard again: no more reopening.
    backup.on_peer(peer(Role.PRIMARY, State.ACTIVE), clock())
    for _ in range(8):
        clock.advance(BEAT / 4)
        backup.on_peer(peer(Role.PRIMARY, State.ACTIVE), clock())
        assert not any(isinstance(i, Reconnect) for i in backup.on_tick(clock()))
