"""The benchmark's workload: photo-like synthetic JPEGs made at run time, and the job done on each.

Nothing here is committed as data: :func:`make_set` draws every image from a seeded generator
(a smooth colour gradient, cloud-like texture, anti-aliased shapes, sensor-like noise and a
slight blur) and encodes it as JPEG at quality 90, so the same seed gives the same files on the
same OpenCV. Set A is 64 images at 1920x1080, set B 256 at 640x480 (see :data:`SETS`).

The job is the notebook's: read -> decode -> threshold -> label -> encode -> write.
:func:`process_file` does it with exactly the calls a zimg worker and sender make
(:mod:`zimg.images` and :func:`zimg.ops.run_pipeline` with :data:`zimg.ops.DEFAULT_PIPELINE`,
consuming the decoded image as a worker does), so every contender does the same work per
image. It is a module-level function, so ``multiprocessing``, Ray and Dask can ship it to their
workers by reference.

It also gives every process that runs it the malloc settings a zimg worker has
(:func:`zimg._heap.keep_freed_memory`), once. Without them, glibc's heuristics decide how often a
process maps and faults in its image buffers afresh, and that swung a ``Pool`` child's time per
1080p image by 20% (160 or 2,100 page faults per image) with the order in which the job
allocates; the benchmark would have measured that instead of the distribution.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import cv2
import numpy as np

from zimg import images, ops
from zimg._heap import keep_freed_memory

JPEG_QUALITY = 90


@dataclass(frozen=True)
class SetSpec:
    """One image set: a name, how many images and their size."""

    name: str
    count: int
    width: int
    height: int

    def scaled(self, count: int) -> SetSpec:
        """The same set with another image count."""
        return SetSpec(self.name, count, self.width, self.height)


SETS = (SetSpec("A", 64, 1920, 1080), SetSpec("B", 256, 640, 480))


@dataclass(frozen=True)
class Workload:
    """A generated set on disk."""

    spec: SetSpec
    files: list[Path]
    total_bytes: int
    digest: str  # sha256 over every file, in order: the same digest means the same inputs


def synthetic_photo(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A BGR uint8 image with the statistics of a photo more than of a test card."""
    # A smooth gradient between four random corner colours.
    corners = rng.uniform(20, 235, size=(2, 2, 3)).astype(np.float32)
    base = np.asarray(
        cv2.resize(corners, (width, height), interpolation=cv2.INTER_LINEAR), dtype=np.float32
    )
    # Cloud-like texture: coarse random grids upsampled smoothly, at two scales.
    for cells, amplitude in ((8, 40.0), (48, 18.0)):
        grid = rng.normal(0, amplitude, size=(cells * height // width + 2, cells + 2, 3))
        layer = cv2.resize(grid.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
        base += np.asarray(layer, dtype=np.float32)
    img = np.clip(base, 0, 255).astype(np.uint8)
    # Shapes: filled and outlined circles, rectangles, ellipses and polygons, anti-aliased.
    scale = min(width, height)
    for _ in range(int(rng.integers(12, 24))):
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        thickness = -1 if rng.random() < 0.6 else int(rng.integers(1, 6))
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        size = int(rng.integers(scale // 40, scale // 5))
        kind = int(rng.integers(0, 4))
        if kind == 0:
            cv2.circle(img, (x, y), size, colour, thickness, cv2.LINE_AA)
        elif kind == 1:
            cv2.rectangle(img, (x, y), (x + size, y + size // 2), colour, thickness, cv2.LINE_AA)
        elif kind == 2:
            axes = (size, max(1, size // 3))
            angle = float(rng.uniform(0, 180))
            cv2.ellipse(img, (x, y), axes, angle, 0, 360, colour, thickness, cv2.LINE_AA)
        else:
            points = rng.integers(-size, size, size=(5, 2)) + np.array([x, y])
            cv2.fillPoly(img, [points.astype(np.int32)], colour, cv2.LINE_AA)
    # Sensor-like noise, then the slight softness of a lens.
    noisy = img.astype(np.int16) + rng.normal(0, 8, size=img.shape).astype(np.int16)
    img = np.clip(noisy, 0, 255).astype(np.uint8)
    return cv2.GaussianBlur(img, (3, 3), 0.5)


def make_set(spec: SetSpec, directory: Path, *, seed: int = 20240) -> Workload:
    """Write ``spec.count`` JPEGs (quality 90) into ``directory``, deterministically."""
    directory.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    files: list[Path] = []
    total = 0
    for i in range(spec.count):
        rng = np.random.default_rng([seed, ord(spec.name), i])
        image = synthetic_photo(rng, spec.width, spec.height)
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise RuntimeError("OpenCV could not encode a JPEG")
        path = directory / f"{spec.name.lower()}_{i:05d}.jpg"
        data = buf.tobytes()
        path.write_bytes(data)
        digest.update(data)
        files.append(path)
        total += len(data)
    return Workload(spec, files, total, digest.hexdigest()[:16])


def make_tiny_stream(directory: Path, count: int, *, distinct: int = 64) -> list[Path]:
    """``count`` small JPEGs (64x48) for the memory stream: ``distinct`` images, hard-linked."""
    directory.mkdir(parents=True, exist_ok=True)
    originals = []
    for i in range(min(distinct, count)):
        rng = np.random.default_rng([7, i])
        image = synthetic_photo(rng, 64, 48)
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise RuntimeError("OpenCV could not encode a JPEG")
        path = directory / f"t_{i:06d}.jpg"
        path.write_bytes(buf.tobytes())
        originals.append(path)
    files = list(originals)
    for i in range(len(originals), count):
        path = directory / f"t_{i:06d}.jpg"
        try:
            os.link(originals[i % len(originals)], path)
        except OSError:
            path.write_bytes(originals[i % len(originals)].read_bytes())
        files.append(path)
    return files


@cache
def same_heap_as_workers() -> bool:
    """Apply a zimg worker's malloc settings to this process, once (see the module docstring)."""
    return keep_freed_memory()


def process_file(path: str, outdir: str, node: str = "n1") -> str:
    """The job on one file, in this process: read, decode, threshold, label, encode, write.

    Returns:
        The output path (``<outdir>/<stem>_processed<ext>``, as zimg names it).
    """
    same_heap_as_workers()
    data = images.read_file(path)
    image = images.decode(data, name=path)
    out = ops.run_pipeline(image, ops.DEFAULT_PIPELINE, node=node, consume=True)  # as workers do
    target = images.output_path(path, outdir)
    images.write_atomic(target, images.encode(out, Path(path).suffix, name=path))
    return str(target)


def process_files(paths: Sequence[str], outdir: str, node: str = "n1") -> int:
    """:func:`process_file` on each path in turn; returns how many were done."""
    for path in paths:
        process_file(path, outdir, node)
    return len(paths)
