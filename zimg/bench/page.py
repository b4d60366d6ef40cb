"""The Markdown page (``docs/performance.md``) and the PNG chart, from the results of a run.

The page says how to reproduce the run, on what machine, and gives every table with the issue's
targets beside the measured values; it embeds the printed table too. The chart (throughput
against worker processes, one panel per set) needs matplotlib, the ``bench`` extra, and is
skipped without it.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any

from zimg.bench.report import LOOP, fmt, lookup, micro_rows, rng


def to_markdown(results: dict[str, Any], table: str) -> str:
    """``docs/performance.md``: how to reproduce, the machine, the tables and the targets."""
    m = results["machine"]
    versions = ", ".join(
        f"{k} {m[k]}"
        for k in (
            "zimg",
            "pyzmq",
            "libzmq",
            "msgpack",
            "numpy",
            "opencv-python-headless",
            "ray",
            "dask",
            "distributed",
        )
        if k in m
    )
    out = [
        "# Performance",
        "",
        "`just bench` (`python -m zimg.bench`) runs every contender side by side on the same",
        "generated JPEGs, several times each, and reports each one's median and min-max as a",
        "ratio to a plain single-process loop measured in the same run. Machines differ and this",
        "one is shared, so read the ratios, not the seconds. This page is rewritten by each full",
        "run; `--quick` and `--smoke` runs leave it alone.",
        "",
        "## How to reproduce",
        "",
        "```sh",
        "pip install -e '.[dev,bench,peers]'   # matplotlib for the chart; Ray and Dask as peers",
        results["command"],
        "```",
        "",
        f"Latest run ({results['mode']}): "
        f"{m['date']}{_source(m)}, {results['phases_s'].get('total', 0):.0f} s wall. The chart"
        " of throughput"
        " against workers is written beside `results.json` (`bench/throughput.png`, not"
        " committed).",
        "",
        "## Machine",
        "",
        f"- {m['cpu_count']} CPUs ({m['cpus_usable']} usable), {m['cpu_model']}",
        f"- {m['platform']}, {m['python']}",
        f"- {versions}",
        f"- load average {m['load_avg_1m']} before the run, {results['load_after']} after "
        "(the machine is shared: other processes ran during the measurements)",
        "",
        "## Workload",
        "",
        "Photo-like synthetic JPEGs (gradients, texture, shapes, noise; quality 90), generated",
        "deterministically at run time in a temporary folder (`zimg/bench/workload.py`). The job",
        "is the notebook's: read → decode → threshold → label → encode → write, with the same",
        "calls in every contender (`zimg.images` and `zimg.ops.run_pipeline` with the default",
        "pipeline, which thresholds the decoded image in place, as a zimg worker does).",
        "",
        "## Results",
        "",
    ]
    for name, data in results["sets"].items():
        spec = data["spec"]
        loop = data["contenders"].get(LOOP)
        out += [
            f"### Set {name}: {spec['count']} images at {spec['width']}x{spec['height']}",
            "",
            f"{data['total_bytes'] / 1e6:.1f} MB of JPEG, {data['repetitions']} repetitions; "
            + (
                f"the plain loop takes {loop['run_s']['median']:.3f} s "
                f"({loop['run_s']['median'] / spec['count'] * 1000:.2f} ms per image)."
                if loop
                else ""
            ),
            "",
            "| contender | run s, median (min-max) | images/s | x loop, throughput "
            "| start-up s | stop s | x loop, end to end |",
            "|---|---|---|---|---|---|---|",
        ]
        for c in data["contenders"].values():
            out.append(
                f"| {c['label']} | {rng(c['run_s'], 3)} | {c['images_per_s_median_run']:.1f} "
                f"| **{rng(c['ratio'])}** | {fmt(lookup(c, 'startup_s', 'median'), '', 2)} "
                f"| {fmt(lookup(c, 'stop_s', 'median'), '', 2)} "
                f"| {rng(c['ratio_end_to_end'])} |"
            )
        for key, why in data.get("errors", {}).items():
            out.append(f"\n{key} failed: {why}")
        out.append("")
    out += [
        "Throughput ratio: the loop's median run time over each run's, start-up and shut-down",
        "excluded; end to end: over start-up + run + shut-down. Start-up is from nothing to ready",
        "to take work (zimg: broker and workers joined; Ray and Dask: a no-op task back from",
        "each CPU, their import time excluded). Ray and Dask run in a fresh interpreter each time.",
        "A zimg worker runs `capacity` jobs at once on threads (default 2) and OpenCV releases the",
        "GIL while it decodes and encodes, so even `zimg run` with 1 worker can use both cores.",
        "The `2 plain loops` row is the ceiling this machine offered during the run: below 1.85x,",
        "other processes were using the CPUs too.",
        "",
    ]
    for note in results.get("skipped", []):
        out.append(f"- skipped: {note}")
    rows = micro_rows(results)
    if rows:
        out += [
            "",
            "## Micro-figures",
            "",
            "Each zimg figure beside its baseline, measured in the same run: raw pyzmq and, where",
            "`erl` is installed, Erlang/OTP distribution between two BEAM nodes over loopback",
            "(Debian/Ubuntu: `apt-get install erlang-base`; without it the Erlang row says",
            "`not installed`). Latency ratios above 1 and rate ratios below 1 mean zimg is slower.",
            "",
            "| figure | zimg | baseline | ratio |",
            "|---|---|---|---|",
        ]
        out += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
        out.append("")
    for key, why in (lookup(results, "micro", "errors") or {}).items():
        out += [f"micro-figure {key} failed: {why}", ""]
    out += [
        "## Targets (issue 5)",
        "",
        "Medians, ratios to the single loop in the same run, on this 2-core machine.",
        "",
        "| figure | target | measured | met | for reference |",
        "|---|---|---|---|---|",
    ]
    for t in results["targets"]:
        verdict = {True: "yes", False: "**no**", None: "n/a"}[t["met"]]
        out.append(
            f"| {t['figure']} | {t['target']} | {t['measured']} | {verdict} | {t['reference']} |"
        )
    out += [
        "",
        "Why zimg is as fast as it is, what was measured on the way, and the profiles behind the",
        "targets that are not met: [performance-notes.md](performance-notes.md).",
        "",
        "## The printed table",
        "",
        "```text",
        table,
        "```",
        "",
    ]
    return "\n".join(out)


# ---------------------------------------------------------------------- chart


def write_chart(results: dict[str, Any], path: Path) -> bool:
    """Throughput against workers, one panel per set; False if matplotlib is not installed."""
    if importlib.util.find_spec("matplotlib") is None:
        return False
    matplotlib: Any = importlib.import_module("matplotlib")
    matplotlib.use("Agg")
    plt: Any = importlib.import_module("matplotlib.pyplot")
    sets = results["sets"]
    fig, axes = plt.subplots(1, len(sets), figsize=(6.5 * len(sets), 4.8), squeeze=False)
    for ax, (name, data) in zip(axes[0], sets.items(), strict=True):
        families: dict[str, list[dict[str, Any]]] = {}
        for c in data["contenders"].values():
            families.setdefault(c["family"], []).append(c)
        for family, members in families.items():
            members.sort(key=lambda c: c["workers"])
            xs = [c["workers"] for c in members]
            ys = [c["images_per_s"]["median"] for c in members]
            lo = [y - c["images_per_s"]["min"] for y, c in zip(ys, members, strict=True)]
            hi = [c["images_per_s"]["max"] - y for y, c in zip(ys, members, strict=True)]
            if family == "plain loop":
                ax.axhline(ys[0], color="grey", linestyle="--", label=f"{family} (1.00)")
                continue
            ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=family)
        spec = data["spec"]
        ax.set_title(f"set {name}: {spec['count']} x {spec['width']}x{spec['height']}")
        ax.set_xlabel("worker processes")
        ax.set_ylabel("images/s (median, min-max)")
        ax.set_xticks([1, 2, 4])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right", framealpha=0.6)
    fig.suptitle(f"zimg benchmark, {results['machine']['date']} ({results['mode']})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _source(machine: dict[str, Any]) -> str:
    """ ", commit abc1234" when the run knew the code's commit."""
    source = machine.get("source")
    return f", commit `{source}`" if source else ""


def keep_other_sections(generated: str, previous: str | None) -> str:
    """``generated`` with every ``## `` section of ``previous`` that it lacks appended, in their
    order: sections written by other benchmarks (``zimg.bench.scale``'s, for one) survive a run
    of this one."""
    if not previous:
        return generated
    titles = {line for line in generated.splitlines() if line.startswith("## ")}
    kept: list[str] = []
    keeping = False
    for line in previous.splitlines():
        if line.startswith("## "):
            keeping = line not in titles
        if keeping:
            kept.append(line)
    if not kept:
        return generated
    return generated.rstrip("\n") + "\n\n" + "\n".join(kept).rstrip("\n") + "\n"
