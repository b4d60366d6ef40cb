"""What two nodes say about a lane, and the bounds both hold to (``zimg._lanes``).

The LANE ops that travel through the broker, the frames a lane carries besides messages, and the
limits: how many lanes, how much a lane holds before its switch, how much goes on it before the
peer says it has the switch.
"""

from __future__ import annotations

ASK, ACCEPT, REFUSE, READY, SWITCH, CLOSE = "ask", "accept", "refuse", "ready", "switch", "close"
SWITCHED = "switched"  # B has A's switch: A may send on the lane beyond SWITCH_WINDOW
BROKEN = "broken"  # A's lane to B lost its connection while both stayed joined: both end it
TOKEN_BYTES = 16
KEY_CHARS = 40  # a CURVE public key in z85
HI = b"HI"  # the first frame on a lane: its peer answers READY through the broker
BYE = b"BYE"  # the last frame on a lane of a node that leaves
# Lanes a node holds each way; beyond that, actor messages go through the broker.
MAX_LANES = 256
# What B holds of a lane before its switch arrives through the broker.
MAX_HELD = 10_000
# What A sends on a lane before B says (through the broker) that it has the switch; the rest
# waits in A's queue. Below MAX_HELD: a sender faster than the broker path never makes B drop.
SWITCH_WINDOW = MAX_HELD // 2
# A lane pings its peer every LANE_PING_MS, and drops a connection silent for LANE_PING_TIMEOUT_MS.
LANE_PING_MS = 1000
LANE_PING_TIMEOUT_MS = 3000
# How long a lane whose connection dropped waits for the peer's NODEDOWN (a peer that left closes
# its lane socket just before it leaves the broker) before it is declared broken.
BREAK_GRACE_S = 2.0
