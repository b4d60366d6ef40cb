"""What ``zimg.distribute`` says about inputs that are not image arrays: in the caller's terms,
one record each, and the rest of the images still processed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from zimg.broker import Broker
from zimg.distribute import distribute
from zimg.node import Node
from zimg.worker import Worker

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def node(ipc_url):
    with Broker(ipc_url), Worker(ipc_url, "w1", capacity=2), Node(ipc_url, "main") as main:
        yield main


def run(node, images):
    return sorted(distribute(images, node, pipeline=[], idle_timeout_s=10), key=lambda d: d.index)


def test_none_from_a_failed_imread_is_named_with_its_index(node):
    (done,) = run(node, [None])
    assert done.index == 0
    assert done.image is None
    assert done.error == "image 0 is None (did cv2.imread fail to read a file?)"


@pytest.mark.parametrize("path", ["a.jpg", Path("a.jpg")])
def test_a_path_is_refused_with_the_way_to_read_it(node, path):
    (done,) = run(node, [path])
    assert done.image is None
    assert "image 0 is a path ('a.jpg')" in done.error
    assert "give an image array (numpy), not a path" in done.error
    assert "cv2.imread" in done.error
    assert "zimg send/run_batch" in done.error


def test_other_objects_are_named_by_type_and_the_good_images_still_go(node):
    good = np.full((4, 4), 7, np.uint8)
    results = run(node, [good, [[1, 2]], None, good])
    assert [d.index for d in results] == [0, 1, 2, 3]  # exactly one record per input
    assert results[1].error == "image 1 is a list, not an image array (numpy.ndarray)"
    assert results[2].error is not None
    assert "is None" in results[2].error
    for done in (results[0], results[3]):
        assert done.error is None
        assert done.image is not None
        assert int(done.image[0, 0]) == 7


def test_only_bad_inputs_still_end(node):
    results = run(node, iter([None, "b.png"]))
    assert [d.error is not None for d in results] == [True, True]


def test_run_batch_draws_a_bar_that_ends_full(node, samples, tmp_path, capsys):
    from zimg.batch import BatchOptions, run_batch

    files = sorted(samples.glob("*.jpg"))
    options = BatchOptions(outdir=tmp_path / "out", idle_timeout_s=10)
    report = run_batch(node, files, options, progress=True)
    assert (report.count, report.failed) == (len(files), 0)
    out = capsys.readouterr().out
    assert "run_batch" in out
    assert "100%" in out
