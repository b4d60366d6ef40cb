"""The Erlang/OTP peer of :mod:`zimg.bench.actors`: two BEAM nodes on loopback, where ``erl`` is.

The Erlang side is ``zimg_bench_peer.erl`` beside this file, compiled with ``erlc`` into a
temporary directory at run time. Two nodes are started with unique names and a random cookie,
distribution over ``127.0.0.1`` on a free port and no ``epmd`` (``-start_epmd false
-erl_epmd_port PORT``; the driver does not listen, ``-dist_listen false``), so nothing outlives
the run and parallel runs do not meet:

- the echo node: ``erl -name zimg_echo_<token>@127.0.0.1 ... -run zimg_bench_peer serve MS``,
  which halts when the driver's node goes, at its deadline, or when it is stopped from here;
- the driver: ``erl -name zimg_drive_<token>@127.0.0.1 ... -run zimg_bench_peer drive ...``,
  which spawns the echo process on the echo node, measures, prints one line and halts.

The line (``zimg-erlang-peer key=value ...``) is parsed by :func:`parse_line`. Both processes
are killed if they overrun, and reaped on every way out. Debian and Ubuntu ship ``erl`` and
``erlc`` in ``erlang-base``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from zimg.bench._common import BenchError

SOURCE = Path(__file__).with_name("zimg_bench_peer.erl")
LINE_TAG = "zimg-erlang-peer"
NOT_INSTALLED = "not installed (no erl on PATH; Debian/Ubuntu: apt-get install erlang-base)"
STOP_GRACE_S = 3.0


@dataclass(frozen=True)
class PeerOutput:
    """What the driver node measured."""

    otp: str  # the OTP release, "25"
    samples_us: npt.NDArray[np.float64]  # each timed round trip
    rtt_total_s: float  # wall time of the timed round trips
    messages: int
    one_way_s: float  # first one-way send to the sink's reply
    rtt_bytes: int  # term_to_binary size of the request term, for reference
    one_way_bytes: int  # of a one-way term


def missing() -> str | None:
    """Why the peer cannot run here (``erl`` or ``erlc`` missing), or None if it can."""
    if shutil.which("erl") is None or shutil.which("erlc") is None:
        return NOT_INSTALLED
    return None


def parse_line(text: str) -> PeerOutput:
    """The driver's result line, found in its whole stdout.

    Raises:
        BenchError: no result line, or a field missing or malformed.
    """
    line = next((ln for ln in text.splitlines() if ln.startswith(LINE_TAG + " ")), None)
    if line is None:
        raise BenchError(f"the Erlang driver printed no {LINE_TAG!r} line: {text[-500:]!r}")
    fields = dict(item.partition("=")[::2] for item in line.split()[1:])
    try:
        samples = np.array([int(s) for s in fields["samples_ns"].split(",")], dtype=np.float64)
        out = PeerOutput(
            otp=fields["otp"],
            samples_us=samples / 1e3,
            rtt_total_s=int(fields["rtt_total_ns"]) / 1e9,
            messages=int(fields["messages"]),
            one_way_s=int(fields["one_way_ns"]) / 1e9,
            rtt_bytes=int(fields["rtt_bytes"]),
            one_way_bytes=int(fields["one_way_bytes"]),
        )
    except (KeyError, ValueError) as exc:
        raise BenchError(f"malformed Erlang result line ({exc!r}): {line[:300]!r}") from None
    rounds = int(fields.get("rounds", -1))
    if len(samples) != rounds or out.rtt_total_s <= 0 or out.one_way_s <= 0:
        raise BenchError(f"inconsistent Erlang result line: {line[:300]!r}")
    return out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate (a BEAM halts on SIGTERM), then kill; always reaped."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()


def run_peer(
    rounds: int,
    warmup_rounds: int,
    messages: int,
    warmup_messages: int,
    tmp: Path,
    timeout_s: float,
) -> PeerOutput:
    """Compile the peer into ``tmp``, run both nodes, and return the driver's figures.

    Raises:
        BenchError: ``erl`` or ``erlc`` missing, compilation failed, a node failed or overran
            ``timeout_s``.
    """
    why = missing()
    if why is not None:
        raise BenchError(f"Erlang peer: {why}")
    ebin = tmp / "erlang-ebin"
    ebin.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(
            ["erlc", "-o", str(ebin), str(SOURCE)],
            capture_output=True,
            text=True,
            timeout=min(60.0, timeout_s),
            check=True,
        )
    except subprocess.CalledProcessError as exc:
        raise BenchError(f"erlc failed: {exc.stderr.strip()[-1000:]}") from None
    except subprocess.TimeoutExpired:
        raise BenchError("erlc overran its timeout") from None
    token = secrets.token_hex(6)
    echo_node = f"zimg_echo_{token}@127.0.0.1"
    common = [
        "erl",
        "-noinput",
        "-pa",
        str(ebin),
        "-setcookie",
        secrets.token_hex(16),
        "-start_epmd",
        "false",
        "-erl_epmd_port",
        str(_free_port()),
        "-kernel",
        "inet_dist_use_interface",
        "{127,0,0,1}",
    ]
    env = {**os.environ, "ERL_CRASH_DUMP_SECONDS": "0"}  # no erl_crash.dump left behind
    deadline_ms = str(int((timeout_s + 10) * 1000))  # the echo node halts by itself then
    echo_log = tmp / f"erlang-echo-{token}.log"
    with echo_log.open("wb") as log:
        echo = subprocess.Popen(
            [*common, "-name", echo_node, "-run", "zimg_bench_peer", "serve", deadline_ms],
            stdin=subprocess.DEVNULL,
            stdout=log,
            env=env,
            stderr=subprocess.STDOUT,
        )
    try:
        drive = [*common, "-name", f"zimg_drive_{token}@127.0.0.1", "-dist_listen", "false"]
        drive += ["-run", "zimg_bench_peer", "drive", echo_node]
        drive += [str(n) for n in (rounds, warmup_rounds, messages, warmup_messages)]
        try:
            done = subprocess.run(
                drive,
                stdin=subprocess.DEVNULL,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise BenchError(
                f"the Erlang driver overran {timeout_s:.0f} s and was killed"
            ) from None
        if done.returncode != 0:
            _stop(echo)
            echo_says = echo_log.read_text(errors="replace").strip()[-1000:]
            raise BenchError(
                f"the Erlang driver exited {done.returncode}: {done.stderr.strip()[-1000:]}"
                f"{done.stdout.strip()[-1000:]}\necho node: {echo_says}"
            )
        return parse_line(done.stdout)
    finally:
        _stop(echo)
