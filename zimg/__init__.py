"""zimg: distributed image processing (and any numpy work) over ZeroMQ, with Erlang-style nodes.

Layout: ``wire`` (pure codec) and ``protocol`` (constants) underlie everything; ``_broker_state``
is the broker's pure logic and ``broker`` its ROUTER loop; ``node`` is a node's DEALER link;
``worker`` runs jobs; ``distribute`` and ``batch`` are the client side of the job path; ``ops`` and
``images`` are the image work; ``cluster`` starts embedded clusters; ``cli`` is the command line.
"""

import sys
import types
from typing import TYPE_CHECKING, Any

# Where each public name lives. They are imported when first used (PEP 562), so that
# `zimg --help`, `zimg nodes` and a client that sends files do not load OpenCV, nor a node's
# actors what the job path alone needs. (The shipped behaviours are registered by zimg.node,
# which every process hosting actors imports.)
_EXPORTS = {
    "ANY": "zimg._actor",
    "ActorLimits": "zimg._actor",
    "ExitSignal": "zimg._actor",
    "Process": "zimg._actor",
    "BrokerConfig": "zimg._broker_state",
    "AffinityError": "zimg._errors",
    "BrokenError": "zimg._errors",
    "ClosedError": "zimg._errors",
    "ClusterError": "zimg._errors",
    "ClusterStartError": "zimg._errors",
    "FetchError": "zimg._errors",
    "ImageError": "zimg._errors",
    "InputError": "zimg._errors",
    "KeyFileError": "zimg._errors",
    "NameTakenError": "zimg._errors",
    "OpError": "zimg._errors",
    "RejectedError": "zimg._errors",
    "SpawnError": "zimg._errors",
    "WireError": "zimg._errors",
    "ZimgError": "zimg._errors",
    "ZimgTimeout": "zimg._errors",
    "behaviour": "zimg._registry",
    "registered_behaviours": "zimg._registry",
    "BatchOptions": "zimg.batch",
    "BatchReport": "zimg.batch",
    "run_batch": "zimg.batch",
    "Broker": "zimg.broker",
    "LocalCluster": "zimg.cluster",
    "local_cluster": "zimg.cluster",
    "Connection": "zimg.connection",
    "query_nodes": "zimg.nodes_query",
    "JobClient": "zimg.distribute",
    "JobRouter": "zimg.distribute",
    "Processed": "zimg.distribute",
    "Node": "zimg.node",
    "connect": "zimg.node",
    "DEFAULT_PIPELINE": "zimg.ops",
    "OpSpec": "zimg.ops",
    "op": "zimg.ops",
    "parse_op": "zimg.ops",
    "Pid": "zimg.wire",
    "Ref": "zimg.wire",
    "Worker": "zimg.worker",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'zimg' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


class _Package(types.ModuleType):
    """zimg itself. ``zimg.distribute`` is a function and a submodule's name: importing the
    submodule makes the import system bind it on the package, which would hide the function;
    this keeps the function there, as the eager import of old did."""

    @property
    def distribute(self) -> Any:
        from zimg.distribute import distribute

        return distribute

    @distribute.setter
    def distribute(self, value: Any) -> None:
        pass  # the submodule, bound by the import system: zimg.distribute stays the function


sys.modules[__name__].__class__ = _Package

if TYPE_CHECKING:
    from zimg._actor import ANY, ActorLimits, ExitSignal, Process
    from zimg._broker_state import BrokerConfig
    from zimg._errors import (
        AffinityError,
        BrokenError,
        ClosedError,
        ClusterError,
        ClusterStartError,
        FetchError,
        ImageError,
        InputError,
        KeyFileError,
        NameTakenError,
        OpError,
        RejectedError,
        SpawnError,
        WireError,
        ZimgError,
        ZimgTimeout,
    )
    from zimg._registry import behaviour, registered_behaviours
    from zimg.batch import BatchOptions, BatchReport, run_batch
    from zimg.broker import Broker
    from zimg.cluster import LocalCluster, local_cluster
    from zimg.connection import Connection
    from zimg.distribute import JobClient, JobRouter, Processed, distribute
    from zimg.node import Node, connect
    from zimg.nodes_query import query_nodes
    from zimg.ops import DEFAULT_PIPELINE, OpSpec, op, parse_op
    from zimg.wire import Pid, Ref
    from zimg.worker import Worker

__all__ = [
    "ANY",
    "DEFAULT_PIPELINE",
    "ActorLimits",
    "AffinityError",
    "BatchOptions",
    "BatchReport",
    "BrokenError",
    "Broker",
    "BrokerConfig",
    "ClosedError",
    "ClusterError",
    "ClusterStartError",
    "Connection",
    "ExitSignal",
    "FetchError",
    "ImageError",
    "InputError",
    "JobClient",
    "JobRouter",
    "KeyFileError",
    "LocalCluster",
    "NameTakenError",
    "Node",
    "OpError",
    "OpSpec",
    "Pid",
    "Process",
    "Processed",
    "Ref",
    "RejectedError",
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
