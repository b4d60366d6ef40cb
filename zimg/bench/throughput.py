"""The job path's fixed cost per image (issue 18): one real ``zimg send`` and one real broker
feeding simulated workers that answer at once.

``python -m zimg.bench.throughput`` (``just throughput``) measures, in one run:

- **zimg send**: a real ``python -m zimg send`` of N small JPEGs (320x240, about 12 KB each)
  through a real ``python -m zimg broker`` to W instant workers (``zimg.bench.simnodes``: they
  echo each payload back): images per second end to end, and the sender's CPU per image with its
  start-up subtracted (the same command on one image, measured beside it);
- **the broker**: its CPU per job during that run, and the jobs per second it sustains for a
  light client that keeps many small JOBs in flight (``zimg.bench.scale.LightClient``, which
  costs little per job, as the proxy benchmark's client does), with its CPU per job;
- **the Python floor**: the same light client and workers against
  :mod:`zimg.bench.floor_broker`, a Python ROUTER loop that makes the broker loop's socket calls
  and keeps no other books: a floor for a Python broker that makes those calls, so that the
  broker's CPU per job above it is its bookkeeping;
- **zmq.proxy**: small-message round trips per second through a ``zmq.proxy`` process on the
  same machine (``zimg.bench.micro``), the ceiling of any Python forwarding loop; a job is two
  forwards (JOB and RESULT), as a round trip is;
- **start-up**: ``zimg --help``, and ``zimg send`` of one image to the running cluster, wall.

The sender's package is compiled to bytecode first, as an installed one is. The cluster
listens on ``ipc://`` by default, as the ``zmq.proxy`` path does (``--tcp`` for
loopback TCP).

The images (and the outputs) live in a temporary folder on ``/dev/shm`` (tmpfs) where there
is one, so that the figures are zimg's costs, not the disk's: on this page's machine, ext4
spends 0.3 ms of CPU creating a small file and 0.5 ms renaming it, more than the whole target
per image. They are deleted afterwards; nothing is written to the repository. Figures are
medians of ``--repeat`` runs taken in turns. ``--sender-path DIR`` runs the sender from another
checkout (``git worktree add DIR REV``), to compare it with this one in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import zmq

from zimg.bench import micro
from zimg.bench._common import Timings
from zimg.bench.broker_process import process_cpu_s
from zimg.bench.scale import BrokerProcess, LightClient, NodesProbe
from zimg.bench.simnodes import SimProcess
from zimg.testing import free_tcp_url

SIZE = (240, 320)  # rows, columns: a 320x240 image
SEND = [sys.executable, "-m", "zimg", "send"]


def progress(text: str) -> None:
    print(f"[throughput] {text}", file=sys.stderr, flush=True)


def make_images(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` distinct 320x240 JPEGs of about 12 KB (a smooth picture with some grain)."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows, cols = SIZE
    y, x = np.mgrid[0:rows, 0:cols]
    paths = []
    bases = []
    for k in range(16):  # a few different pictures; each file differs by its noise
        base = np.stack(
            [(x * (k + 1) + y) % 256, (y * 2 + k * 16) % 256, (x + y * (k % 3)) % 256], axis=-1
        )
        bases.append(base.astype(np.float32))
    for i in range(count):
        noise = rng.normal(0, 6, (rows, cols, 3)).astype(np.float32)
        image = np.clip(bases[i % len(bases)] + noise, 0, 255).astype(np.uint8)
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
        if not ok:
            raise RuntimeError("cannot encode a test image")
        path = folder / f"img{i:05d}.jpg"
        path.write_bytes(data.tobytes())
        paths.append(path)
    return paths


@dataclass
class SendRun:
    images: int
    wall_s: float
    cpu_s: float  # the sender process's user + system time
    broker_cpu_s: float
    jobs: int  # JOBs the broker dispatched for it


def _run_send(
    files: list[Path], url: str, outdir: Path, broker: BrokerProcess, env: dict[str, str]
) -> SendRun:
    """One ``zimg send`` of ``files``; its wall and CPU time, and the broker's CPU for it."""
    shutil.rmtree(outdir, ignore_errors=True)
    probe = NodesProbe(url, zmq.Context.instance())
    try:
        before = probe.ask(10.0)[0]["stats"]
    finally:
        probe.close()
    broker_before = broker.cpu_s()
    cmd = [*SEND, "--broker", url, "-o", str(outdir), "--name", "bench", *map(str, files)]
    started = time.perf_counter()
    cwd = env.get("ZIMG_SENDER_CWD")  # python -m finds zimg in its working folder first
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=cwd
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"zimg send failed ({proc.returncode}):\n{stderr[-2000:]}")
    broker_cpu = broker.cpu_s() - broker_before
    probe = NodesProbe(url, zmq.Context.instance())
    try:
        after = probe.ask(10.0)[0]["stats"]
    finally:
        probe.close()
    jobs = after["jobs_dispatched"] - before["jobs_dispatched"]
    return SendRun(len(files), wall, usage.ru_utime + usage.ru_stime, broker_cpu, jobs)


def _wall(cmd: list[str], reps: int) -> float:
    """The median wall time of ``cmd`` over ``reps`` runs."""
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _compile(sender_path: Path | None) -> None:
    """Compile the sender's zimg to bytecode, as ``pip install`` does: a checkout run with
    PYTHONDONTWRITEBYTECODE (or read-only) would otherwise compile every module at every start,
    about 0.09 s of a ``zimg send`` on this page's machine."""
    package = (sender_path / "zimg") if sender_path is not None else Path(__file__).parents[1]
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(package)],
        check=False,
        stdout=subprocess.DEVNULL,
    )


@contextmanager
def _cluster(workdir: Path, workers: int, tcp: bool) -> Iterator[tuple[str, BrokerProcess, int]]:
    """A broker and ``workers`` instant simulated workers; yields the url, the broker, and the
    simulated workers' process id."""
    # ipc by default, as the zmq.proxy figure beside it is measured (micro.run_forwarding).
    url = free_tcp_url() if tcp else f"ipc://{workdir}/broker.sock"
    broker = BrokerProcess(url, "--log-level", "warning", log=workdir / "broker.log")
    sims: list[SimProcess] = []
    try:
        probe = NodesProbe(url, zmq.Context.instance())
        try:
            probe.wait_count(0, 15.0)  # the broker answers
        finally:
            probe.close()
        sims.append(SimProcess(url, workers, "--prefix", "w", log=workdir / "sims.log"))
        for sim in sims:
            sim.wait_ready(60.0)
        yield url, broker, sims[0].proc.pid
    finally:
        for sim in sims:
            sim.proc.kill()
            sim.proc.wait()
        broker.stop()


@dataclass
class LightFigures:
    """The light client's runs against one broker: medians of jobs/s and of the CPU per job
    (µs) of the broker, of this process (the light client and its libzmq thread) and of the
    simulated workers. On two cores the three share the machine, so the drivers' cost bounds
    the jobs/s too."""

    jobs_per_s: float
    broker_us: float
    client_us: float
    workers_us: float


def _light(url: str, broker_pid: int, workers_pid: int, jobs: int, repeat: int) -> LightFigures:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    client = LightClient(url, context)
    try:
        client.join()
        client.run(min(2000, jobs))  # warm-up
        runs: list[tuple[float, float, float, float]] = []
        for _ in range(repeat):
            pids = (broker_pid, workers_pid)
            before = (*map(process_cpu_s, pids), time.process_time())
            light = client.run(jobs, window=256)
            after = (*map(process_cpu_s, pids), time.process_time())
            done = max(1, light.jobs)
            broker_s, workers_s, client_s = (
                (b - a) / done * 1e6 for a, b in zip(before, after, strict=True)
            )
            runs.append((light.jobs / light.wall_s, broker_s, client_s, workers_s))
        client.leave()
    finally:
        context.destroy(linger=0)
    medians = (statistics.median(run[i] for run in runs) for i in range(4))
    return LightFigures(*medians)


@contextmanager
def _floor_cluster(workdir: Path, workers: int, tcp: bool) -> Iterator[tuple[str, int, int]]:
    """:mod:`zimg.bench.floor_broker` and ``workers`` instant simulated workers; yields the url
    and the two processes' ids."""
    url = free_tcp_url() if tcp else f"ipc://{workdir}/floor.sock"
    floor = subprocess.Popen(
        [sys.executable, "-m", "zimg.bench.floor_broker", "--bind", url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    sims = None
    try:
        sims = SimProcess(url, workers, "--prefix", "f", log=workdir / "floor-sims.log")
        sims.wait_ready(60.0)
        yield url, floor.pid, sims.proc.pid
    finally:
        for proc in (sims.proc if sims is not None else None, floor):
            if proc is not None:
                proc.kill()
                proc.wait()


@dataclass
class Figures:
    images: int
    workers: int
    send_images_per_s: float
    send_cpu_ms_per_image: float
    send_one_wall_s: float
    broker_us_per_job_send: float
    images_per_job: float
    broker_jobs_per_s: float
    broker_us_per_job_light: float
    client_us_per_job_light: float
    workers_us_per_job_light: float
    floor_jobs_per_s: float
    floor_us_per_job: float
    proxy_round_trips_per_s: float
    help_wall_s: float

    @property
    def broker_us_per_image_send(self) -> float:
        """What the broker spends per image of a real ``zimg send`` (it groups small images)."""
        return self.broker_us_per_job_send / max(1.0, self.images_per_job)

    @property
    def broker_vs_proxy(self) -> float:
        return self.broker_jobs_per_s / self.proxy_round_trips_per_s


def measure(
    images: int,
    workers: int,
    repeat: int,
    light_jobs: int,
    workdir: Path,
    *,
    quick: bool = False,
    sender_path: Path | None = None,
    tcp: bool = False,
) -> Figures:
    files = make_images(workdir / "in", images)
    env = dict(os.environ)
    if sender_path is not None:
        env["ZIMG_SENDER_CWD"] = str(sender_path)
    timings = Timings()
    _compile(sender_path)
    progress(f"{images} images of {SIZE[1]}x{SIZE[0]} in {workdir / 'in'}")
    with _cluster(workdir, workers, tcp) as (url, broker, workers_pid):
        runs: list[SendRun] = []
        ones: list[SendRun] = []
        for i in range(repeat):  # in turns: one image (start-up), then all of them
            progress(f"round {i + 1}/{repeat}: zimg send of 1 image, then of {images}")
            ones.append(_run_send(files[:1], url, workdir / "out1", broker, env))
            runs.append(_run_send(files, url, workdir / "out", broker, env))
        progress("the light client: broker jobs/s")
        light = _light(url, broker.pid, workers_pid, light_jobs, repeat)
    with _floor_cluster(workdir, workers, tcp) as (url, floor_pid, workers_pid):
        progress("the light client: the Python floor's jobs/s")
        floor = _light(url, floor_pid, workers_pid, light_jobs, repeat)
    progress("zmq.proxy beside it")
    rounds, trips = (1, 3000) if quick else (3, 20_000)
    forwarding = micro.run_forwarding(
        micro.ForwardConfig(small_round_trips=trips, big_messages=4, rounds=rounds),
        Path(tempfile.mkdtemp(prefix="zt-", dir="/tmp")),
        timings,
    )
    proxy_rate = forwarding["zmq_proxy"]["small_round_trips_per_s"]
    progress("start-up: zimg --help")
    help_wall = _wall([sys.executable, "-m", "zimg", "--help"], 2 if quick else 5)

    def per_image(run: SendRun, one: SendRun) -> float:
        return (run.cpu_s - one.cpu_s) / (run.images - 1)

    send = statistics.median(r.images / r.wall_s for r in runs)
    cpu_ms = statistics.median(per_image(r, o) for r, o in zip(runs, ones, strict=True)) * 1000
    broker_us = statistics.median(r.broker_cpu_s / max(1, r.jobs) for r in runs) * 1e6
    per_job = statistics.median(r.images / max(1, r.jobs) for r in runs)
    return Figures(
        images=images,
        workers=workers,
        send_images_per_s=send,
        send_cpu_ms_per_image=cpu_ms,
        send_one_wall_s=statistics.median(o.wall_s for o in ones),
        broker_us_per_job_send=broker_us,
        images_per_job=per_job,
        broker_jobs_per_s=light.jobs_per_s,
        broker_us_per_job_light=light.broker_us,
        client_us_per_job_light=light.client_us,
        workers_us_per_job_light=light.workers_us,
        floor_jobs_per_s=floor.jobs_per_s,
        floor_us_per_job=floor.broker_us,
        proxy_round_trips_per_s=proxy_rate,
        help_wall_s=help_wall,
    )


def table(f: Figures, command: str) -> str:
    rows = [
        ("`zimg send`, instant workers", f"{f.send_images_per_s:,.0f} images/s", ">= 5,000"),
        ("sender CPU per image, start-up off", f"{f.send_cpu_ms_per_image:.3f} ms", "<= 0.2"),
        ("images per job (zimg send's grouping)", f"{f.images_per_job:.1f}", ""),
        ("broker CPU per job, during zimg send", f"{f.broker_us_per_job_send:.0f} µs", ""),
        ("broker CPU per image, during zimg send", f"{f.broker_us_per_image_send:.0f} µs", ""),
        ("broker, light client: jobs/s", f"{f.broker_jobs_per_s:,.0f}", ">= 20,000"),
        ("broker, light client: CPU per job", f"{f.broker_us_per_job_light:.0f} µs", "<= 40"),
        ("Python floor (floor_broker), light client: jobs/s", f"{f.floor_jobs_per_s:,.0f}", ""),
        ("Python floor: CPU per job", f"{f.floor_us_per_job:.0f} µs", ""),
        ("light client's own CPU per job", f"{f.client_us_per_job_light:.0f} µs", ""),
        ("simulated workers' CPU per job", f"{f.workers_us_per_job_light:.0f} µs", ""),
        ("zmq.proxy beside it: round trips/s", f"{f.proxy_round_trips_per_s:,.0f}", ""),
        ("broker jobs/s / zmq.proxy round trips/s", f"{f.broker_vs_proxy:.2f}x", ">= 0.25x"),
        ("`zimg --help`, wall", f"{f.help_wall_s:.3f} s", "<= 0.15"),
        ("`zimg send` of 1 image to a cluster, wall", f"{f.send_one_wall_s:.3f} s", "<= 0.35"),
    ]  # fmt: skip
    lines = [
        f"Throughput: {command} ({f.images} images, {f.workers} instant workers)",
        "",
        "| figure | measured | target |",
        "|---|---|---|",
        *(f"| {a} | {b} | {c} |" for a, b, c in rows),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zimg.bench.throughput", description=__doc__)
    parser.add_argument("--images", type=int, help="images per zimg send (4,000)")
    parser.add_argument("--workers", type=int, default=4, help="instant simulated workers")
    parser.add_argument("--repeat", type=int, help="zimg send runs, median (3)")
    parser.add_argument("--light-jobs", type=int, help="jobs of the light client (20,000)")
    parser.add_argument("--quick", action="store_true", help="400 images, 1 run, 2,000 jobs")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    parser.add_argument(
        "--sender-path", type=Path, help="run zimg send from this checkout (as its cwd)"
    )
    parser.add_argument(
        "--tcp", action="store_true", help="the cluster on loopback TCP (default: ipc)"
    )
    args = parser.parse_args(argv)
    quick = (400, 1, 2000) if args.quick else (4000, 3, 20_000)
    args.images = args.images or quick[0]
    args.repeat = args.repeat or quick[1]
    args.light_jobs = args.light_jobs or quick[2]
    command = "python -m zimg.bench.throughput" + (" --quick" if args.quick else "")
    if args.sender_path is not None:
        command += f" --sender-path {args.sender_path}"
    if args.tcp:
        command += " --tcp"
    shm = Path("/dev/shm")
    base = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="zimg-throughput-", dir=base) as tmp:
        figures = measure(
            args.images,
            args.workers,
            args.repeat,
            args.light_jobs,
            Path(tmp),
            quick=args.quick,
            sender_path=args.sender_path,
            tcp=args.tcp,
        )
    print(table(figures, command))
    if args.json is not None:
        args.json.write_text(json.dumps({**asdict(figures), "command": command}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
