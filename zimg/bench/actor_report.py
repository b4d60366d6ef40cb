"""The table and the JSON of :mod:`zimg.bench.actors`: each zimg figure beside its baselines."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from zimg.bench._common import Timings
from zimg.bench.actor_figures import Config, ErlangResults, RawResults, Rtt, ZimgResults


def erlang_json(erl: ErlangResults | str) -> dict[str, Any]:
    """The Erlang figures as a JSON-ready dict, or ``{"skipped": why}``."""
    return asdict(erl) if isinstance(erl, ErlangResults) else {"skipped": erl}


# ---------------------------------------------------------------------- report


Row = tuple[str, float, tuple[float | None, ...], str]  # label, zimg, one base per column, format
_PATHS = ("direct", "proxy", "floor")  # the pyzmq paths, in the table's order of columns


def _rows(
    z: ZimgResults,
    raw: dict[str, RawResults],
    erl: ErlangResults | None,
    lanes: bool = False,
) -> list[Row | str]:
    """The table's rows; the bases are pyzmq direct, pyzmq proxy, the Python floor (if
    measured) and Erlang (if given). ``lanes``: the rows of a run on lanes (what lanes change:
    messages between nodes)."""
    paths = [raw[name] for name in _PATHS if name in raw]
    rows: list[Row | str] = []
    on = ", on lanes" if lanes else ""
    blocks = [
        (f"RTT n1 <-> n2 (actors, 2 workers{on})", z.rtt_n1_n2, True, True),
        (f"RTT main <-> n1 (main node, echo{on})", z.rtt_main_n1, True, False),
    ]
    if not lanes:
        blocks.append(("RTT n1 <-> n1 (same node: no socket)", z.rtt_same_node, False, False))
    for label, rtt, compare, with_erl in blocks:
        rtts: list[Rtt | None] = [b.rtt for b in paths] if compare else [None] * len(paths)
        if erl is not None:
            rtts.append(erl.rtt if with_erl else None)
        rows.append(label)
        for stat, fmt in (("p50_us", ".1f"), ("p99_us", ".1f"), ("mean_us", ".1f")):
            name = f"  {stat.removesuffix('_us')} (us)"
            bases = tuple(None if b is None else getattr(b, stat) for b in rtts)
            rows.append((name, getattr(rtt, stat), bases, fmt))
        per_s = tuple(None if b is None else b.per_s for b in rtts)
        rows.append(("  round trips/s", rtt.per_s, per_s, ",.0f"))
    rows.append(f"One-way n1 -> n2 (counting sink{on})")
    rates = [b.one_way.per_s for b in paths] + ([erl.one_way.per_s] if erl is not None else [])
    rows.append(("  messages/s", z.one_way_n1_n2.per_s, tuple(rates), ",.0f"))
    none = (None,) * len(rates)
    for label, cpu_us in (
        ("  sending node's CPU per message (us)", z.one_way_sender_cpu_us),
        ("  receiving node's CPU per message (us)", z.one_way_receiver_cpu_us),
    ):
        if cpu_us is not None:
            rows.append((label, cpu_us, none, ".1f"))
    if lanes:
        return rows
    rows.append("Spawn on n1 (zimg.behaviours:echo)")
    s = z.spawn
    rows.append(("  spawn -> first reply, median (ms)", s.first_reply_median_ms, none, ".2f"))
    rows.append(("  spawn -> first reply, min (ms)", s.first_reply_min_ms, none, ".2f"))
    rows.append(("  spawn -> first reply, max (ms)", s.first_reply_max_ms, none, ".2f"))
    rows.append(("  spawn() call alone, median (ms)", s.spawn_call_median_ms, none, ".2f"))
    return rows


def format_table(
    cfg: Config,
    machine: dict[str, Any],
    z: ZimgResults,
    raw: dict[str, RawResults],
    erl: ErlangResults | str,
    lanes: ZimgResults | None = None,
) -> str:
    """The printed report; ``erl`` is the Erlang figures or why there are none; ``lanes``
    the zimg figures of a second cluster whose nodes use lanes, if it was run."""
    m = machine
    lines = [
        f"zimg actor benchmark, {m['date']}",
        f"machine: {m['cpu_count']} CPUs ({m['cpus_usable']} usable), {m['cpu_model']}, "
        f"load {m['load_avg_1m']} before the run",
        f"         {m['platform']}",
        f"         {m['python']}, pyzmq {m['pyzmq']}, libzmq {m['libzmq']}, "
        f"msgpack {m['msgpack']}, numpy {m['numpy']}, zimg {m['zimg']}"
        + (f", Erlang/OTP {erl.otp}" if isinstance(erl, ErlangResults) else ""),
        f"sizes:   {cfg.rounds} round trips (+{cfg.warmup_rounds} warm-up), "
        f"{cfg.messages} one-way messages (+{cfg.warmup_messages}), "
        f"{cfg.spawns} spawns (+{cfg.warmup_spawns})",
        f"         message bytes on the wire, zimg = raw payload: RTT request {cfg.rtt_bytes} B, "
        f"one-way {cfg.one_way_bytes} B (zimg: 1 lead frame, raw: 1 frame); transport ipc://",
        "",
    ]
    # (heading, width) of each base's column, then its ratio column
    columns = [("pyzmq direct", 14, "zimg/dir"), ("pyzmq proxy", 13, "zimg/prx")]
    if "floor" in raw:
        columns.append(("py floor", 12, "zimg/flr"))
    if isinstance(erl, ErlangResults):
        columns.append(("erlang", 12, "zimg/erl"))
    head = f"{'':38}{'zimg':>12}" + "".join(f"{c:>{w}}{r:>10}" for c, w, r in columns)
    lines += [head, "-" * len(head)]
    erl_or_none = erl if isinstance(erl, ErlangResults) else None
    rows = _rows(z, raw, erl_or_none)
    if lanes is not None:
        rows += _rows(lanes, raw, erl_or_none, lanes=True)
    for row in rows:
        if isinstance(row, str):
            lines.append(row)
            continue
        label, value, bases, fmt = row
        text = f"{label:38}{value:>12{fmt}}"
        for base, (_, width, _) in zip(bases, columns, strict=True):
            if base is None:
                text += f"{'-':>{width}}{'-':>10}"
            else:
                text += f"{base:>{width}{fmt}}{value / base:>9.2f}x"
        lines.append(text)
    lines += [
        "-" * len(head),
        "ratio = zimg / baseline: above 1 is slower for latencies, below 1 is slower for rates.",
        "pyzmq direct: DEALER (this process) <-> ROUTER echo (child process).",
        "pyzmq proxy:  DEALER <-> zmq.proxy ROUTER|DEALER (child) <-> DEALER echo (child).",
    ]
    if "floor" in raw:
        lines.append(
            "py floor:     pyzmq direct with zimg's messages, encoded (wire.encode_send) and"
            " decoded (wire.decode_common) at each end, one thread each: the least Python an"
            " actor message needs."
        )
    lines += [
        "zimg n1<->n2: actor thread -> I/O thread -> broker thread (main process) -> I/O thread"
        " -> actor, each way.",
    ]
    if lanes is not None:
        lines.append(
            "on lanes:     actor thread -> the peer's lane socket -> I/O thread -> actor, each way"
            " (tcp://127.0.0.1)."
        )
    if isinstance(erl, ErlangResults):
        lines += [
            "erlang:       driver process on one BEAM node <-> echo process on another,"
            " distribution over TCP loopback;",
            f"              terms of {erl.rtt_bytes} B (RTT) and {erl.one_way_bytes} B (one-way)"
            " in the external format.",
        ]
    else:
        lines.append(f"erlang:       {erl}")
    return "\n".join(lines)


def _ratios_to(z: ZimgResults, base: RawResults, name: str, prefix: str = "") -> dict[str, float]:
    """zimg's message figures over one raw pyzmq baseline's, keyed ``[prefix]figure.stat/name``."""
    ratios: dict[str, float] = {}
    for figure, rtt in (("rtt_n1_n2", z.rtt_n1_n2), ("rtt_main_n1", z.rtt_main_n1)):
        for stat in ("p50_us", "p99_us", "mean_us", "per_s"):
            key = f"{prefix}{figure}.{stat}/{name}"
            ratios[key] = round(getattr(rtt, stat) / getattr(base.rtt, stat), 4)
    ratio = z.one_way_n1_n2.per_s / base.one_way.per_s
    ratios[f"{prefix}one_way.per_s/{name}"] = round(ratio, 4)
    return ratios


def to_json(
    cfg: Config,
    machine: dict[str, Any],
    z: ZimgResults,
    raw: dict[str, RawResults],
    timings: Timings,
    erl: ErlangResults | str,
    lanes: ZimgResults | None = None,
) -> dict[str, Any]:
    """Every figure, as a JSON-ready dict (``"erlang": {"skipped": why}`` without Erlang)."""
    ratios: dict[str, float] = {}
    for base_name, base in raw.items():
        ratios.update(_ratios_to(z, base, base_name))
        if lanes is not None:
            ratios.update(_ratios_to(lanes, base, base_name, "lanes."))
    if isinstance(erl, ErlangResults):
        for stat in ("p50_us", "p99_us", "mean_us", "per_s"):
            ratio = getattr(z.rtt_n1_n2, stat) / getattr(erl.rtt, stat)
            ratios[f"rtt_n1_n2.{stat}/erlang"] = round(ratio, 4)
        ratios["one_way.per_s/erlang"] = round(z.one_way_n1_n2.per_s / erl.one_way.per_s, 4)
    return {
        "machine": machine,
        "config": asdict(cfg),
        "zimg": asdict(z),
        "zimg_lanes": asdict(lanes) if lanes is not None else None,
        "pyzmq": {name: asdict(r) for name, r in raw.items()},
        "erlang": erlang_json(erl),
        "ratios": ratios,
        "phases_s": timings.phases,
    }
