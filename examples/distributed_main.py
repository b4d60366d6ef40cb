"""The Elixir notebook, step by step, on an embedded zimg cluster.

What it shows:

  a. start a local cluster of worker nodes and list them (Erlang's ``Node.list``);
  b. process one image on our own node, with an actor;
  c. process one image on worker ``n1`` (a remote spawn, linked);
  d. process 32 images on ``n1``: one actor per image, results collected by selective receive;
  e. process 32 images round-robin over every worker, at most ``--window`` in flight (the
     notebook's Flow);
  f. the same 32 images through ``zimg.distribute`` (the job path: windowed, redelivered);
  g. save the results as ``<name>_processed.jpg`` and a 4-column grid;
  h. compare the timings, and check every result against the same ops run in this process.

Run it from the repository root::

    python examples/distributed_main.py                # outputs go to a new temporary directory
    python examples/distributed_main.py --out out/ --workers 2

It exits 0 when every result is pixel-exact, 1 otherwise.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

import zimg
from zimg import images, ops
from zimg.grid import make_grid

PROCESS_IMAGE = "zimg.behaviours:process_image"  # one image in, one result out, then exit
IMAGE_SERVER = "zimg.behaviours:image_server"  # the same for every image, until "stop"
COPIES = 32
TIMEOUT_S = 30.0  # no receive in this example waits longer than this

Result = tuple[str, np.ndarray[Any, Any]]  # (the node that answered, the processed image)


def is_result(message: Any) -> bool:
    """The pattern of ``("result", node_name, image)``, the reply of the image behaviours."""
    return isinstance(message, tuple) and len(message) == 3 and message[0] == "result"


def process_on(node: zimg.Node, where: str, image: np.ndarray[Any, Any], *, link: bool) -> Result:
    """Spawn the notebook's worker actor on node ``where``, send it an image, await the result."""
    pid = node.spawn(where, PROCESS_IMAGE, link=link)
    node.send(pid, ("img", node.self(), image))
    _, name, out = node.receive(is_result, timeout=TIMEOUT_S)
    return name, out


def many_on_one(node: zimg.Node, where: str, inputs: list[np.ndarray[Any, Any]]) -> list[Result]:
    """One actor per image, all on ``where``; then collect one result per actor.

    The results carry no index, but the copies are identical, so any order will do. The
    selective receive takes only results from ``where`` and leaves anything else queued.
    """
    pids = [node.spawn(where, PROCESS_IMAGE) for _ in inputs]
    for pid, image in zip(pids, inputs, strict=True):
        node.send(pid, ("img", node.self(), image))
    results = []
    for _ in pids:
        _, name, out = node.receive(lambda m: is_result(m) and m[1] == where, timeout=TIMEOUT_S)
        results.append((name, out))
    return results


def round_robin(
    node: zimg.Node, workers: list[str], inputs: list[np.ndarray[Any, Any]], window: int
) -> list[Result]:
    """Image ``i`` goes to ``workers[i % len(workers)]``; at most ``window`` are in flight.

    Each worker runs one long-lived ``image_server``. Messages between two processes arrive in
    the order they were sent, so the n-th result from a worker answers the n-th image we sent
    it: a queue of indices per worker is enough to put every result back in its place.
    """
    servers = {w: node.spawn(w, IMAGE_SERVER, link=True) for w in workers}
    sent_to: dict[str, deque[int]] = {w: deque() for w in workers}
    results: list[Result | None] = [None] * len(inputs)
    next_index = 0
    for _ in inputs:
        # Top the window up, then wait for any one result (demand-driven, like Flow).
        while next_index < len(inputs) and sum(map(len, sent_to.values())) < window:
            worker = workers[next_index % len(workers)]
            node.send(servers[worker], ("img", node.self(), inputs[next_index]))
            sent_to[worker].append(next_index)
            next_index += 1
        _, name, out = node.receive(is_result, timeout=TIMEOUT_S)
        results[sent_to[name].popleft()] = (name, out)
    for pid in servers.values():
        node.send(pid, "stop")  # a normal exit: the links do not bring us down
    return [r for r in results if r is not None]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="where to save results (default: a temp dir)")
    parser.add_argument("--workers", type=int, default=4, help="worker nodes (default 4)")
    parser.add_argument("--window", type=int, default=8, help="images in flight in step e")
    args = parser.parse_args()
    out_dir: Path = args.out or Path(tempfile.mkdtemp(prefix="zimg-example-"))
    out_dir.mkdir(parents=True, exist_ok=True)

    # The input: the sample cat, decoded once, and 32 in-memory copies of it.
    image = images.load(str(resources.files("zimg") / "samples" / "chelsea.jpg"))
    inputs = [image.copy() for _ in range(COPIES)]
    names = [f"chelsea_{i + 1:02d}" for i in range(COPIES)]
    print(f"input: chelsea.jpg, {image.shape[1]}x{image.shape[0]}, {COPIES} copies in memory")

    # The reference: the same ops in this process, labelled with the answering node's name.
    references: dict[str, np.ndarray[Any, Any]] = {}
    problems: list[str] = []

    def verify(step: str, results: list[Result], expected: int) -> None:
        if len(results) != expected:
            problems.append(f"step {step}: {len(results)} results, expected {expected}")
        for name, out in results:
            if name not in references:
                references[name] = ops.run_pipeline(image, ops.DEFAULT_PIPELINE, node=name)
            if not np.array_equal(out, references[name]):
                problems.append(f"step {step}: the result from {name} differs from the reference")

    timings: list[tuple[str, str, int, float]] = []

    @contextmanager
    def timed(step: str, what: str, count: int) -> Iterator[None]:
        started = time.perf_counter()
        yield
        timings.append((step, what, count, time.perf_counter() - started))

    # a. A broker (a thread here) and N worker processes named n1..nN. `node` is our own node,
    #    named "main"; its main process is this thread, so it can spawn, send and receive.
    print(f"\na. starting a local cluster of {args.workers} workers")
    with zimg.local_cluster(workers=args.workers) as node:
        print(f"   we are {node.name!r}; node.nodes() = {node.nodes()}")
        if node.nodes() != node.workers:
            problems.append(f"step a: nodes() is {node.nodes()}, expected {node.workers}")

        # b. Spawning on our own name runs the actor on a thread of this process: no network.
        print("\nb. one image on our own node")
        with timed("b", "own node, 1 image", 1):
            name, out = process_on(node, node.name, image, link=False)
        print(f"   {name!r} answered with a {out.shape[1]}x{out.shape[0]} image")
        verify("b", [(name, out)], 1)

        # c. The same on worker n1. link=True: had the actor crashed, so would we.
        print("\nc. one image on worker n1 (linked)")
        with timed("c", "n1, 1 image", 1):
            name, out = process_on(node, "n1", image, link=True)
        print(f"   {name!r} answered")
        verify("c", [(name, out)], 1)

        # d. 32 actors on n1, one image each.
        print(f"\nd. {COPIES} images on worker n1, one actor each")
        with timed("d", f"n1, {COPIES} images", COPIES):
            results = many_on_one(node, "n1", inputs)
        print(f"   {len(results)} results, all from {sorted({n for n, _ in results})}")
        verify("d", results, COPIES)

        # e. Round-robin over every worker, bounded like the notebook's Flow.
        print(f"\ne. {COPIES} images round-robin over {node.workers}, {args.window} in flight")
        with timed("e", f"{len(node.workers)} workers, round-robin", COPIES):
            flow = round_robin(node, node.workers, inputs, args.window)
        per_node = {w: sum(n == w for n, _ in flow) for w in node.workers}
        print(f"   results per node: {per_node}")
        verify("e", flow, COPIES)
        # Image i went to workers[i % N], so each worker must have answered exactly its share.
        share = {w: len(range(i, COPIES, len(node.workers))) for i, w in enumerate(node.workers)}
        if per_node != share:
            problems.append(f"step e: results per node {per_node}, expected {share}")

        # f. The job path: no actors, the broker hands raw arrays to workers with free credit.
        print(f"\nf. {COPIES} images with zimg.distribute(images, node)")
        with timed("f", "zimg.distribute", COPIES):
            done = list(zimg.distribute(inputs, node, idle_timeout_s=TIMEOUT_S))
        problems += [f"step f: image {p.index} failed: {p.error}" for p in done if p.error]
        jobs = [(p.node, p.image) for p in done if p.node is not None and p.image is not None]
        print(f"   {len(done)} results from {sorted({n for n, _ in jobs})}")
        print("   (the broker starts at most one job per CPU of a machine at once; the other")
        print("   workers stand by: see 'CPU slots' in docs/decisions.md)")
        verify("f", jobs, COPIES)

    # g. Save step e's results under the notebook's names, and a grid of all of them.
    print(f"\ng. saving to {out_dir}")
    for name, (_, out) in zip(names, flow, strict=True):
        path = images.output_path(f"{name}.jpg", out_dir)  # chelsea_01_processed.jpg ...
        images.write_atomic(path, images.encode(out, ".jpg"))
    grid_path = out_dir / "grid.jpg"
    images.write_atomic(grid_path, images.encode(make_grid([o for _, o in flow]), ".jpg"))
    first = images.output_path(f"{names[0]}.jpg", out_dir).name
    print(f"   {len(flow)} files like {first}, and {grid_path.name}")

    # h. The timings, then the verdict. Every result was compared above with the same ops run
    #    here with the answering node's name: distribution must not change a single pixel.
    print("\nh. timings")
    print(f"   {'step':<5}{'what':<28}{'images':>7}{'seconds':>10}{'ms/image':>10}")
    for step, what, count, seconds in timings:
        print(f"   {step:<5}{what:<28}{count:>7}{seconds:>10.3f}{seconds * 1000 / count:>10.1f}")
    if problems:
        print("\nFAILED:")
        for problem in problems:
            print(f"   {problem}")
        return 1
    print(f"\nall {len(timings)} steps pixel-exact against the in-process reference: OK")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
