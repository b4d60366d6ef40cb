"""zimg: distributed image processing (and any numpy work) over ZeroMQ, with Erlang-style nodes.

Layout: ``wire`` (pure codec) and ``protocol`` (constants) underlie everything; ``_broker_state``
is the broker's pure logic and ``broker`` its ROUTER loop; ``node`` is a node's DEALER link;
``worker`` runs jobs; ``distribute`` and ``batch`` are the client side of the job path; ``ops`` and
``images`` are the image work; ``cluster`` starts embedded clusters; ``cli`` is the command line.
"""

from zimg import behaviours as behaviours  # registers the shipped behaviours
from zimg._actor import ANY, ActorLimits, ExitSignal, Process
from zimg._broker_state import BrokerConfig
from zimg._errors import (
    ActorDeadError,
    BrokenError,
    ClosedError,
    FetchError,
    ImageError,
    OpError,
    RejectedError,
    RemoteError,
    SpawnError,
    WireError,
    ZimgError,
    ZimgTimeout,
)
from zimg._registry import behaviour, registered_behaviours
from zimg.batch import BatchOptions, BatchReport, run_batch
from zimg.broker import Broker
from zimg.cluster import LocalCluster, local_cluster
from zimg.connection import Connection, query_nodes
from zimg.distribute import JobClient, Processed, distribute
from zimg.node import Node, connect
from zimg.ops import DEFAULT_PIPELINE, OpSpec, op, parse_op
from zimg.wire import Pid, Ref
from zimg.worker import Worker

__all__ = [
    "ANY",
    "DEFAULT_PIPELINE",
    "ActorDeadError",
    "ActorLimits",
    "BatchOptions",
    "BatchReport",
    "BrokenError",
    "Broker",
    "BrokerConfig",
    "ClosedError",
    "Connection",
    "ExitSignal",
    "FetchError",
    "ImageError",
    "JobClient",
    "LocalCluster",
    "Node",
    "OpError",
    "OpSpec",
    "Pid",
    "Process",
    "Processed",
    "Ref",
    "RejectedError",
    "RemoteError",
    "SpawnError",
    "WireError",
    "Worker",
    "ZimgError",
    "ZimgTimeout",
    "behaviour",
    "connect",
    "distribute",
    "local_cluster",
    "op",
    "parse_op",
    "query_nodes",
    "registered_behaviours",
    "run_batch",
]
