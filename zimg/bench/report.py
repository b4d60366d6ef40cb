"""Turning the measurements into ratios, the issue's targets and the printed table.

Every ratio is against a figure measured in the same run: contenders against the plain loop's
median run time on the same set, micro-figures against their raw pyzmq counterpart.
``throughput`` ratios use the run alone (start-up and shut-down excluded); ``end to end`` ratios
use start-up + run + shut-down, what a user waits for. :mod:`zimg.bench.page` turns the same
results into the Markdown page and the chart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from zimg.bench._common import Spread
from zimg.bench.contenders import Contender, RunTiming

LOOP = "loop"

# figure, target, for reference (from the issue), and how to read the measurement
TARGETS: tuple[tuple[str, str, str], ...] = (
    (
        "`zimg run`, 2 workers, set A and set B",
        ">= 1.80x",
        "ceiling 1.85x; Pool(2) 1.61-1.78x; Ray 1.29-1.67x; a naive prototype 1.67-1.73x",
    ),
    ("`zimg run`, 1 worker", ">= 0.95x", "overhead of the whole path at most 5 %"),
    ("`zimg run`, 4 workers (oversubscribed)", ">= 0.97x of the 2-worker figure", ""),
    ("start-up to first result", "<= 0.25 s", "Ray 3-4 s, Dask 0.6 s, prototype 0.35 s"),
    (
        "small-message round trip rate through the broker",
        ">= 0.8x `zmq.proxy`",
        "a Python loop managed 0.72x",
    ),
    ("6 MB frame through the broker", ">= 0.95x `zmq.proxy`", ""),
    ("peak RSS, 20,000 vs 1,000 images", "<= 1.2x", ""),
)


def spread(values: Sequence[float | None]) -> dict[str, float] | None:
    """Median, min and max of the values given (None ones left out), rounded; None if none."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    s = Spread.of(present)
    return {"median": round(s.median, 4), "min": round(s.min, 4), "max": round(s.max, 4)}


def summarise(
    contender: Contender, runs: Sequence[RunTiming], loop_run_s: float, images: int
) -> dict[str, Any]:
    """One contender's runs on one set: spreads of every time, and its ratios to the loop."""
    run_s = [r.run_s for r in runs]
    median_run = Spread.of(run_s).median
    return {
        "label": contender.label,
        "family": contender.family,
        "workers": contender.workers,
        "repetitions": len(runs),
        "run_s": spread(run_s),
        "startup_s": spread([r.startup_s for r in runs]),
        "stop_s": spread([r.stop_s for r in runs]),
        "total_s": spread([r.total_s for r in runs]),
        "first_result_s": spread([r.first_result_s for r in runs]),
        "import_s": spread([r.import_s for r in runs]),
        "images_per_s": spread([images / r for r in run_s]),
        "images_per_s_median_run": round(images / median_run, 2),
        "ratio": spread([loop_run_s / r for r in run_s]),
        "ratio_end_to_end": spread([loop_run_s / r.total_s for r in runs]),
        "runs": [asdict(r) for r in runs],
    }


OPTIONAL = ("ray2", "dask2")  # contenders whose failure does not fail the run


def failures(results: dict[str, Any]) -> list[str]:
    """Every part that failed, as ``"where: why"`` (optional peers' names come first)."""
    out = []
    for name, data in results["sets"].items():
        for key, why in data.get("errors", {}).items():
            out.append(f"{key} (set {name}): {why}")
    micro_errors: dict[str, str] = lookup(results, "micro", "errors") or {}
    for key, why in micro_errors.items():
        out.append(f"micro {key}: {why}")
    return out


# ---------------------------------------------------------------------- targets


def lookup(d: Any, *keys: str) -> Any:
    """``d[k1][k2]...``, or None where a key is missing or a value is None."""
    for key in keys:
        if not isinstance(d, dict) or key not in d or d[key] is None:
            return None
        d = d[key]
    return d


def _ratio(results: dict[str, Any], set_name: str, key: str) -> float | None:
    value = lookup(results, "sets", set_name, "contenders", key, "ratio", "median")
    return float(value) if value is not None else None


def fmt(x: float | None, unit: str = "x", digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}{unit}"


def _counts(results: dict[str, Any]) -> str:
    """`` (2,000 vs 500 images)`` when the memory streams were not the issue's 20,000 and 1,000."""
    short = lookup(results, "micro", "memory", "short", "images")
    long = lookup(results, "micro", "memory", "long", "images")
    if short is None or long is None or (short, long) == (1000, 20_000):
        return ""
    return f" ({long:,} vs {short:,} images)"


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets with the measured values beside them (medians, this run)."""
    # `zimg run` as a user runs it: its default payload mode, path.
    a2, b2 = _ratio(results, "A", "zimg-path-2"), _ratio(results, "B", "zimg-path-2")
    a1, b1 = _ratio(results, "A", "zimg-path-1"), _ratio(results, "B", "zimg-path-1")
    a4, b4 = _ratio(results, "A", "zimg-path-4"), _ratio(results, "B", "zimg-path-4")
    a42 = a4 / a2 if a4 is not None and a2 else None
    b42 = b4 / b2 if b4 is not None and b2 else None
    first = lookup(results, "micro", "startup", "first_result_s", "median")
    small = lookup(results, "micro", "forwarding", "ratio_small")
    big = lookup(results, "micro", "forwarding", "ratio_big")
    rss_s = lookup(results, "micro", "memory", "ratio_sender")
    rss_b = lookup(results, "micro", "memory", "ratio_broker")

    def both(x: float | None, y: float | None, limit: float, above: bool) -> bool | None:
        if x is None or y is None:
            return None
        return all((v >= limit) if above else (v <= limit) for v in (x, y))

    # Three decimals, so that a figure just under its threshold does not print as equal to it.
    measured = [
        (f"A {fmt(a2, digits=3)} / B {fmt(b2, digits=3)}", both(a2, b2, 1.80, True)),
        (f"A {fmt(a1, digits=3)} / B {fmt(b1, digits=3)}", both(a1, b1, 0.95, True)),
        (f"A {fmt(a42, digits=3)} / B {fmt(b42, digits=3)}", both(a42, b42, 0.97, True)),
        (fmt(first, " s"), None if first is None else first <= 0.25),
        (fmt(small, digits=3), None if small is None else small >= 0.8),
        (fmt(big, digits=3), None if big is None else big >= 0.95),
        (
            f"sender {fmt(rss_s)} / broker {fmt(rss_b)}{_counts(results)}",
            both(rss_s, rss_b, 1.2, False),
        ),
    ]
    return [
        {"figure": f, "target": t, "reference": ref, "measured": m, "met": met}
        for (f, t, ref), (m, met) in zip(TARGETS, measured, strict=True)
    ]


# ---------------------------------------------------------------------- the table


def rng(s: dict[str, float] | None, digits: int = 2) -> str:
    if s is None:
        return "-"
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"


def _paired_ratio(fwd: dict[str, Any], key: str) -> str:
    """A forwarding ratio: the median of the paired rounds, with their range when recorded."""
    ratio = f"{fwd[f'ratio_{key}']:.2f}x"
    spread = fwd.get(f"ratio_{key}_range")
    return f"{ratio} ({spread[0]:.2f}-{spread[1]:.2f})" if spread else ratio


def _set_lines(name: str, data: dict[str, Any]) -> list[str]:
    spec = data["spec"]
    loop = data["contenders"].get(LOOP)
    lines = [
        f"Set {name}: {spec['count']} JPEGs {spec['width']}x{spec['height']} q90, "
        f"{data['total_bytes'] / 1e6:.1f} MB (sha256 {data['digest']}), "
        f"{data['repetitions']} repetitions, load {data['load_before']} -> {data['load_after']}",
    ]
    if loop is not None:
        per = loop["run_s"]["median"] / spec["count"] * 1000
        lines.append(
            f"  reference: plain loop {loop['run_s']['median']:.3f} s ({per:.2f} ms/image)"
        )
    head = (
        f"  {'contender':38}{'run s':>22}{'img/s':>8}{'x loop':>20}"
        f"{'start-up s':>12}{'stop s':>8}{'x e2e':>7}"
    )
    lines += [head, "  " + "-" * (len(head) - 2)]
    for c in data["contenders"].values():
        lines.append(
            f"  {c['label']:38}{rng(c['run_s'], 3):>22}{c['images_per_s_median_run']:>8.1f}"
            f"{rng(c['ratio']):>20}{fmt(lookup(c, 'startup_s', 'median'), '', 2):>12}"
            f"{fmt(lookup(c, 'stop_s', 'median'), '', 2):>8}"
            f"{fmt(lookup(c, 'ratio_end_to_end', 'median'), '', 2):>7}"
        )
    for key, why in data.get("errors", {}).items():
        lines.append(f"  {key}: FAILED: {why}")
    return lines


def _erlang_rows(z: dict[str, Any], erl: dict[str, Any] | None) -> list[tuple[str, str, str, str]]:
    """The actor figures against Erlang/OTP distribution; one "not installed" row without it."""
    label = "Erlang/OTP distribution"
    if erl is None:  # results from before the Erlang peer
        return []
    if "skipped" in erl:
        why = "not installed" if erl["skipped"].startswith("not installed") else "failed"
        return [(f"actor figures vs {label}", "-", why, "-")]
    rows = []
    for stat in ("p50_us", "p99_us"):
        zv, ev = z["rtt_n1_n2"][stat], erl["rtt"][stat]
        name = f"actor RTT {stat[:3]} n1<->n2 (us) vs {label}"
        rows.append((name, f"{zv:.0f}", f"{ev:.0f}", f"{zv / ev:.2f}x"))
    zv, ev = z["one_way_n1_n2"]["per_s"], erl["one_way"]["per_s"]
    rows.append((f"actor one-way msgs/s vs {label}", f"{zv:,.0f}", f"{ev:,.0f}", f"{zv / ev:.2f}x"))
    return rows


def micro_rows(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(figure, zimg, baseline, ratio) rows for the micro-figures.

    The baselines are raw pyzmq, the Python floor of an actor message (``raw_zmq.floor_rtt``),
    Erlang/OTP distribution (where ``erl`` was installed) and, for memory, the shorter run.
    """
    rows: list[tuple[str, str, str, str]] = []
    act = lookup(results, "micro", "actors")
    if act is not None:
        z, raw = act["zimg"], act["pyzmq"]
        bases = (
            ("direct", "DEALER-ROUTER echo"),
            ("proxy", "echo via zmq.proxy"),
            ("floor", "the Python floor"),  # zimg's codec on the direct path, no runtime
        )
        for base, label in bases:
            if base not in raw:
                continue  # results of a run before the floor was measured
            r = raw[base]
            for stat in ("p50_us", "p99_us"):
                zv, rv = z["rtt_n1_n2"][stat], r["rtt"][stat]
                rows.append(
                    (
                        f"actor RTT {stat[:3]} n1<->n2 (us) vs {label}",
                        f"{zv:.0f}",
                        f"{rv:.0f}",
                        f"{zv / rv:.2f}x",
                    )
                )
            zv, rv = z["one_way_n1_n2"]["per_s"], r["one_way"]["per_s"]
            rows.append(
                (
                    f"actor one-way msgs/s vs {label}",
                    f"{zv:,.0f}",
                    f"{rv:,.0f}",
                    f"{zv / rv:.2f}x",
                )
            )
        rows += _erlang_rows(z, act.get("erlang"))
    fwd = lookup(results, "micro", "forwarding")
    if fwd is not None:
        zb, zp = fwd["zimg_broker"], fwd["zmq_proxy"]
        rows.append(
            (
                f"small round trips/s via broker vs zmq.proxy (window {fwd['window_small']})",
                f"{zb['small_round_trips_per_s']:,.0f}",
                f"{zp['small_round_trips_per_s']:,.0f}",
                _paired_ratio(fwd, "small"),
            )
        )
        rows.append(
            (
                f"6.2 MB frame GB/s via broker vs zmq.proxy (window {fwd['window_big']})",
                f"{zb['big_gb_per_s']:.2f}",
                f"{zp['big_gb_per_s']:.2f}",
                _paired_ratio(fwd, "big"),
            )
        )
    start = lookup(results, "micro", "startup")
    if start is not None:
        rows.append(
            (
                "zimg run start-up to first result (s), library",
                rng(start["first_result_s"]),
                "-",
                "-",
            )
        )
        rows.append(
            ("zimg run cluster ready (s), library", rng(start["cluster_ready_s"]), "-", "-")
        )
        if start.get("cli_wall_s") is not None:
            rows.append(
                ("`zimg run` CLI, 1 image, wall to exit (s)", rng(start["cli_wall_s"]), "-", "-")
            )
    mem = lookup(results, "micro", "memory")
    if mem is not None:
        short, long = mem["short"], mem["long"]
        for who in ("sender", "broker"):
            s, lg = short[f"{who}_peak_kib"], long[f"{who}_peak_kib"]
            rows.append(
                (
                    f"peak RSS {who} (MiB), {long['images']:,} vs {short['images']:,} images",
                    f"{lg / 1024:.1f}" if lg else "n/a",
                    f"{s / 1024:.1f}" if s else "n/a",
                    fmt(mem[f"ratio_{who}"]),
                )
            )
    return rows


def format_table(results: dict[str, Any]) -> str:
    """The printed report."""
    m = results["machine"]
    lines = [
        f"zimg benchmark ({results['mode']}), {m['date']}",
        f"machine: {m['cpu_count']} CPUs ({m['cpus_usable']} usable), {m['cpu_model']}, "
        f"load {m['load_avg_1m']} before the run, {results['load_after']} after",
        f"         {m['platform']}; {m['python']}",
        "         "
        + ", ".join(
            f"{k} {m[k]}"
            for k in ("zimg", "pyzmq", "libzmq", "numpy", "opencv-python-headless", "ray", "dask")
            if k in m
        ),
        f"command: {results['command']}",
        "",
    ]
    for name, data in results["sets"].items():
        lines += [*_set_lines(name, data), ""]
    lines.append(
        "run s: median (min-max) over the repetitions; x loop: the loop's median run time / each"
        " run's (start-up and stop excluded); x e2e: the same with start-up + run + stop."
    )
    for note in results.get("skipped", []):
        lines.append(f"skipped: {note}")
    rows = micro_rows(results)
    if rows:
        head = f"{'micro-figure':68}{'zimg':>14}{'baseline':>14}{'ratio':>20}"
        lines += ["", head, "-" * len(head)]
        lines += [f"{a:68}{b:>14}{c:>14}{d:>20}" for a, b, c, d in rows]
    for key, why in (lookup(results, "micro", "errors") or {}).items():
        lines.append(f"micro-figure {key}: FAILED: {why}")
    lines += ["", "Targets (issue 5), medians of this run:"]
    for t in results["targets"]:
        verdict = {True: "met", False: "NOT met", None: "n/a"}[t["met"]]
        lines.append(f"  {t['figure']:52} {t['target']:32} {t['measured']:28} {verdict}")
    return "\n".join(lines)
