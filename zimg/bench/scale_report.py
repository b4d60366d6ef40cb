"""The scale harness's report: the Markdown table, the frozen check's line, and the issue's
targets judged against a run."""

from __future__ import annotations

from collections.abc import Sequence

from zimg.bench.scale_frozen import Frozen
from zimg.bench.scale_runs import Row

NODES_ANSWER_S = 2.0  # the target for NODES right after a mass kill


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def table(rows: Sequence[Row]) -> str:
    head = (
        "| N | placement | µs/job | x N=10 | idle CPU % | µs per node-s | KiB per node | jobs/s "
        "| mass kill: survived | NODES after kill, ms (first / worst) | to 0 nodes, s |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        survived = {None: "-", True: "yes", False: "**no**"}[r.survived]
        nodes = f"{_f(r.nodes_first_ms)} / {_f(r.nodes_worst_ms)}"
        if r.nodes_unanswered:
            nodes += f" ({r.nodes_unanswered} unanswered)"
        if r.joined < r.n:
            lines.append(
                f"| {r.n:,} | {r.placement} | at most {r.joined:,} of {r.n:,} joined | | | | | "
                f"| {survived} | {nodes} | {_f(r.to_zero_s, 2)} |"
            )
            continue
        lines.append(
            f"| {r.n:,} | {r.placement} | {_f(r.us_per_job)} | {_f(r.ratio, 2)} "
            f"| {_f(r.idle_cpu_pct, 2)} | {_f(r.us_per_node_s)} | {_f(r.kib_per_node)} "
            f"| {_f(r.jobs_per_s, 0)} | {survived} | {nodes} | {_f(r.to_zero_s, 2)} |"
        )
    return "\n".join(lines)


def frozen_line(f: Frozen) -> str:
    dead = {None: "unknown", True: "**yes**", False: "no"}[f.healthy_declared_dead]
    text = (
        f"Frozen check: {f.frozen:,} nodes SIGSTOPped for {_f(f.frozen_s)} s (dropped after "
        f"{_f(f.dropped_s)} s, `nodes_down` +{f.nodes_down}), 3 healthy nodes in another process: "
        f"healthy declared dead: {dead}; after SIGCONT all re-joined in {_f(f.rejoined_s)} s; "
        f"broker survived: {'yes' if f.survived else '**no**'}."
    )
    if f.notes:
        text += " Notes: " + "; ".join(f.notes)
    return text


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def targets(rows: Sequence[Row], frozen: Frozen | None) -> list[str]:
    """The issue's targets against this run, judged at the largest N measured (10,000 in a
    full run)."""
    out = []
    if rows:
        top = max(r.n for r in rows)
        for r in (r for r in rows if r.n == top):
            where = f"N={top:,} ({r.placement})"
            if r.joined < r.n:
                out.append(
                    f"{where}: only {r.joined:,} nodes joined, so per-job, idle and memory "
                    "figures were not measured — NOT met"
                )
            if r.ratio is not None:
                out.append(
                    f"µs/job at {where} <= 1.5 x N={min(b.n for b in rows)}: "
                    f"{r.ratio:.2f} x — {_verdict(r.ratio <= 1.5)}"
                )
            if r.idle_cpu_pct is not None and r.us_per_node_s is not None:
                ok = r.idle_cpu_pct <= 5.0 and r.us_per_node_s <= 5.0
                out.append(
                    f"idle CPU at {where} <= 5 % of a core and <= 5 µs per node-s: "
                    f"{r.idle_cpu_pct:.2f} %, {r.us_per_node_s:.1f} µs — {_verdict(ok)}"
                )
            if r.kib_per_node is not None:
                out.append(
                    f"RSS at {where} <= 20 KiB per idle node: {r.kib_per_node:.1f} KiB — "
                    f"{_verdict(r.kib_per_node <= 20.0)}"
                )
            if r.survived is not None:
                worst = r.nodes_worst_ms
                ok = bool(r.survived) and worst is not None and worst <= 1000 * NODES_ANSWER_S
                out.append(
                    f"SIGKILL of {r.killed:,} nodes at once ({r.placement}): the broker "
                    f"{'survived' if r.survived else 'DIED'}, NODES answered within "
                    f"{_f(worst)} ms at worst (<= 2 s) — {_verdict(ok)}"
                )
    if frozen is not None:
        ok = frozen.healthy_declared_dead is False
        out.append(
            f"{frozen.frozen:,} nodes frozen past the liveness bound, none of 3 healthy ones "
            f"declared dead — {_verdict(ok)}"
        )
    return out
