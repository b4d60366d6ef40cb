"""A process and its calls: what a behaviour gets as ``ctx``, and a ``Node`` as its main process.

Exit signals follow Erlang: when a process ends with a reason other than ``normal``, every linked
process ends too, unless it traps exits, in which case it gets ``("EXIT", pid, reason)``. Python
cannot stop a thread from outside, so a process notices a signal at its next ``receive``, ``send``,
``spawn``, ``link`` or ``monitor`` (a waiting ``receive`` is woken at once); it then unwinds with
:class:`ExitSignal`, a ``BaseException`` that ``except Exception`` does not swallow.

Everything a peer can make a node hold is bounded (:class:`ActorLimits`): processes per node,
links and monitors per process, messages and bytes per mailbox and bytes in all mailboxes. A
request beyond a bound is refused as Erlang refuses one beyond a resource limit: a spawn with
:class:`SpawnError`, a link or monitor with reason ``system_limit``, a message by dropping it.
"""

from __future__ import annotations

import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from zimg import protocol
from zimg._errors import ZimgTimeout
from zimg._mailbox import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_MESSAGES,
    DEFAULT_NODE_MAX_BYTES,
    ByteBudget,
    Leader,
    Mailbox,
    Match,
)
from zimg._transport import Transport
from zimg.wire import Pid, Ref

ANY = "*"
KILL = "kill"
SHUTDOWN = "shutdown"
SYSTEM_LIMIT = protocol.SYSTEM_LIMIT
DEFAULT_SPAWN_TIMEOUT_S = 10.0

Address = Pid | tuple[str, str]


@dataclass(frozen=True, slots=True)
class ActorLimits:
    """What one node's actors may hold at once. A request beyond a bound is refused.

    The defaults are far above what a program does on purpose, and low enough that a peer
    flooding a node cannot take its memory or its threads (``docs/actors.md``, "Bounds").

    Attributes:
        max_processes: live processes per node, the main process not counted. A spawn beyond it
            raises (or answers) :class:`SpawnError`. Each process is a thread.
        max_links: links one process holds. A link beyond it ends with reason ``system_limit``.
        max_monitors: monitors one process holds, and monitors held on it (each bound apart).
            A monitor beyond it gives ``("DOWN", ref, pid, "system_limit")``.
        max_remote_refs: links and monitors (either way) between this node's processes and
            other nodes, all processes together. A link or monitor another node asks for beyond
            it is refused with ``system_limit`` (this node's own requests are only counted).
        mailbox_messages: messages in one mailbox; more are dropped and counted.
        mailbox_bytes: bytes of network messages in one mailbox; more are dropped and counted.
        node_mailbox_bytes: bytes of network messages in all the node's mailboxes together.
    """

    max_processes: int = 1000
    max_links: int = 10_000
    max_monitors: int = 10_000
    max_remote_refs: int = 100_000
    mailbox_messages: int = DEFAULT_MAX_MESSAGES
    mailbox_bytes: int = DEFAULT_MAX_BYTES
    node_mailbox_bytes: int = DEFAULT_NODE_MAX_BYTES

    def __post_init__(self) -> None:
        for name in (
            "max_processes",
            "max_links",
            "max_monitors",
            "max_remote_refs",
            "mailbox_messages",
            "mailbox_bytes",
            "node_mailbox_bytes",
        ):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"ActorLimits.{name} must be an int >= 1, got {value!r}")


DEFAULT_ACTOR_LIMITS = ActorLimits()


class ExitSignal(BaseException):  # named after what it is, like SystemExit
    """Ends the process it is raised in with ``reason`` (``ctx.exit(reason)``, or a signal)."""

    def __init__(self, reason: Any) -> None:
        super().__init__(reason)
        self.reason = reason


class _Signalled(Exception):  # internal: carries "check the signal" out of a lock
    pass


def error_reason(exc: BaseException) -> tuple[str, str, str, str]:
    """The exit reason of a process that raised: ``("error", type, message, traceback)``."""
    text = "".join(traceback.format_exception(exc))
    return ("error", type(exc).__name__, str(exc), text)


class ProcessCalls(ABC):
    """The calls of a process, made by the process this object speaks for.

    One definition serves both: a :class:`Process` speaks for itself (a behaviour's ``ctx``), a
    :class:`~zimg.node.Node` for its main process (the calling script). So their signatures and
    docstrings cannot drift apart (``tests/unit/test_actor_api.py``).
    """

    __slots__ = ()

    @property
    @abstractmethod
    def _proc(self) -> Process:
        """The process that makes the calls."""

    def self(self) -> Pid:
        """This process's pid."""
        return self._proc.pid

    def send(self, to: Address, message: Any) -> None:
        """Send ``message`` to a pid or a ``(registered name, node)`` pair; never blocks on it."""
        proc = self._proc
        proc.check()
        proc.runtime.send(to, message)

    def receive(self, match: Match | None = None, timeout: float | None = None) -> Any:
        """The first message in arrival order that ``match`` accepts; others stay in place.

        Args:
            match: a predicate (None accepts anything); one that raises counts as no match.
            timeout: seconds; 0 polls; None waits forever.

        Raises:
            ZimgTimeout: nothing matched in time (also a ``TimeoutError``).
            ExitSignal: an exit signal arrived (the process must end).
        """
        proc = self._proc
        try:
            return proc.mailbox.receive(match, timeout, check=proc._check_flag)
        except _Signalled:
            proc._die()
            raise  # unreachable: _die raises

    def spawn(
        self,
        node: str,
        behaviour: str,
        *args: Any,
        link: bool = False,
        monitor: bool = False,
        timeout: float = DEFAULT_SPAWN_TIMEOUT_S,
        kwargs: dict[str, Any] | None = None,
    ) -> Pid:
        """Run the registered ``behaviour`` on ``node`` (a name, or ``ANY``) with ``args``.

        ``kwargs`` are keyword arguments for the behaviour (they travel as a map).

        ``link=True`` links the new process to this one before it runs. ``monitor=True`` monitors
        it (the ``DOWN`` message carries its pid); use :meth:`spawn_monitor` to get the ref.

        Raises:
            SpawnError: the node refused (unknown behaviour, node not connected...).
            ZimgTimeout: no answer within ``timeout``.
        """
        pid, _ = self.spawn_monitor(
            node, behaviour, *args, link=link, monitor=monitor, timeout=timeout, kwargs=kwargs
        )
        return pid

    def spawn_monitor(
        self,
        node: str,
        behaviour: str,
        *args: Any,
        link: bool = False,
        monitor: bool = True,
        timeout: float = DEFAULT_SPAWN_TIMEOUT_S,
        kwargs: dict[str, Any] | None = None,
    ) -> tuple[Pid, Ref]:
        """Like :meth:`spawn`, monitoring by default; returns ``(pid, ref)``."""
        proc = self._proc
        proc.check()
        return proc.runtime.spawn(
            proc, node, behaviour, list(args), dict(kwargs or {}), link, monitor, timeout
        )

    def link(self, pid: Pid) -> None:
        """Link this process and ``pid`` (both ways). A dead pid sends back ``noproc``."""
        proc = self._proc
        proc.check()
        proc.runtime.link(proc, pid)

    def unlink(self, pid: Pid) -> None:
        """Remove the link with ``pid``, both ways."""
        proc = self._proc
        proc.runtime.unlink(proc, pid)

    def monitor(self, pid: Pid) -> Ref:
        """Monitor ``pid``: one ``("DOWN", ref, pid, reason)`` message when it ends."""
        proc = self._proc
        proc.check()
        return proc.runtime.monitor(proc, pid)

    def demonitor(self, ref: Ref, *, flush: bool = False) -> None:
        """Drop a monitor; with ``flush``, also remove its ``DOWN`` if already delivered."""
        proc = self._proc
        proc.runtime.demonitor(proc, ref)
        if flush:
            while True:
                try:
                    proc.mailbox.receive(lambda m: m[0] == "DOWN" and m[1] == ref, 0)
                except ZimgTimeout:
                    break

    def exit(self, *args: Any) -> None:
        """``exit(reason)`` ends this process; ``exit(pid, reason)`` sends ``pid`` an exit signal.

        ``exit(pid, "kill")`` cannot be trapped; the target ends with reason ``killed``.
        ``exit(reason)`` raises :class:`ExitSignal`; in a node's main process, its links and
        monitors are told ``reason`` and the node gets a new main process (as on any signal).
        """
        proc = self._proc
        if len(args) == 1:
            if proc is proc.runtime.main:
                proc.runtime.replace_main(args[0])
            raise ExitSignal(args[0])
        if len(args) != 2 or not isinstance(args[0], Pid):
            raise TypeError("use exit(reason) or exit(pid, reason)")
        proc.runtime.exit_signal(proc.pid, args[0], args[1], link=False)

    def register(self, name: str) -> None:
        """Register this process under ``name`` on its node until it ends.

        Raises:
            NameTakenError: another live process on this node holds ``name``.
        """
        proc = self._proc
        proc.runtime.register(proc, name)

    def unregister(self, name: str) -> None:
        """Release a name this process registered."""
        proc = self._proc
        proc.runtime.unregister(proc, name)

    def whereis(self, name: str) -> Pid | None:
        """The pid registered under ``name`` on this node, or None."""
        return self._proc.runtime.whereis(name)

    def nodes(self) -> list[str]:
        """The names of the other nodes connected to the broker, sorted (Erlang's ``nodes()``).

        A round trip to the broker (its node table, every page of it).
        """
        return self._proc.runtime.list_nodes()

    def make_ref(self) -> Ref:
        """A reference unique across the cluster."""
        return self._proc.runtime.make_ref()

    def monitor_node(self, name: str) -> None:
        """Get ``("nodedown", name)`` once when that node goes down (at once if it is not up)."""
        proc = self._proc
        proc.runtime.monitor_node(proc, name)


class Process(ProcessCalls):
    """An actor: a pid, a mailbox, links and monitors. Behaviours get one as ``ctx``.

    Attributes:
        pid: this process's :class:`~zimg.wire.Pid`.
        trap_exit: when True, exit signals from links arrive as ``("EXIT", pid, reason)``
            messages instead of ending the process (``kill`` still ends it).
        alive: False once the process has ended.
        exit_reason: the reason it ended with (None while it runs).
    """

    def __init__(self, runtime: RuntimeHost, pid: Pid) -> None:
        self.runtime = runtime
        self.pid = pid
        limits = runtime.limits
        self.mailbox = Mailbox(limits.mailbox_messages, limits.mailbox_bytes, runtime.budget)
        self.mailbox.lead = runtime.lead
        self.links: set[Pid] = set()
        self.monitors: dict[Ref, Pid] = {}  # monitors this process holds, by ref
        self.monitored_by: dict[Ref, Pid] = {}  # monitors held on this process, by ref
        self.names: set[str] = set()
        self.node_watches: dict[str, int] = {}  # monitor_node names, and how many times each
        self.spawned = False  # counts against max_processes (the main process does not)
        self.trap_exit = False
        self.alive = True
        self.exit_reason: Any = None
        self._signal: Any = None  # the reason of an exit signal not yet acted on
        self._signalled = False

    @property
    def _proc(self) -> Process:
        return self

    @property
    def node_name(self) -> str:
        """The name of the node this process runs on."""
        return self.runtime.name

    def check(self) -> None:
        """Raise :class:`ExitSignal` if an exit signal has arrived for this process."""
        if self._signalled:
            self._die()

    def _check_flag(self) -> None:
        if self._signalled:
            raise _Signalled

    def _die(self) -> None:
        """End with the pending signal's reason. The main process of a node ends for real (its
        links and monitors are told) and the node gets a new main process, as Erlang's shell
        does."""
        if self is self.runtime.main:
            self.runtime.replace_main(self._signal)
        raise ExitSignal(self._signal)

    def kill(self, reason: Any) -> None:
        """Mark this process to end with ``reason`` and wake it if it is waiting."""
        self._signal = reason
        self._signalled = True
        self.mailbox.interrupt()

    def __repr__(self) -> str:
        return f"<Process {self.pid!r}>"


class RuntimeHost(Protocol):
    """The actor runtime (``zimg._actor.ActorRuntime``) as the parts it holds see it: a
    :class:`Process`, ``Signals``, ``SpawnCalls`` and ``RemoteNodes`` each keep their runtime and
    call back into it. Typed by this protocol, not by the class, they sit below the runtime,
    which builds them, with no import running back up; the class conforms (mypy checks it
    where it hands itself to them)."""

    connection: Transport
    name: str
    report: Callable[[], dict[str, Any]]
    limits: ActorLimits
    budget: ByteBudget
    lead: Leader | None
    refused_links: int
    refused_monitors: int
    main: Process

    def _new_process(self, *, spawned: bool = False) -> Process: ...
    def _local(self, pid: Pid) -> Process | None: ...
    def _is_local(self, pid: Pid) -> bool: ...
    def _log_refusal(self, count: int, text: str) -> None: ...
    def _dropped(self, proc: Process) -> None: ...
    def list_nodes(self) -> list[str]: ...
    def make_ref(self) -> Ref: ...
    def replace_main(self, reason: Any) -> None: ...
    def sweep_watches(self) -> None: ...
    def send(self, to: Address, message: Any) -> None: ...
    def spawn(
        self,
        caller: Process,
        node: str,
        behaviour: str,
        args: list[Any],
        kwargs: dict[str, Any],
        link: bool,
        monitor: bool,
        timeout: float,
    ) -> tuple[Pid, Ref]: ...
    def link(self, proc: Process, pid: Pid) -> None: ...
    def unlink(self, proc: Process, pid: Pid) -> None: ...
    def monitor(self, proc: Process, pid: Pid) -> Ref: ...
    def demonitor(self, proc: Process, ref: Ref) -> None: ...
    def exit_signal(self, sender: Pid, to: Pid, reason: Any, *, link: bool) -> None: ...
    def exited(self, proc: Process, reason: Any) -> None: ...
    def monitor_node(self, proc: Process, name: str) -> None: ...
    def register(self, proc: Process, name: str) -> None: ...
    def unregister(self, proc: Process, name: str) -> None: ...
    def whereis(self, name: str) -> Pid | None: ...


def _is(term: Any, atom: str) -> bool:
    """``term == atom`` for any wire term (an array compared with ``==`` gives an array)."""
    return type(term) is str and term == atom
