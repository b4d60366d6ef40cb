"""User ops and behaviours that fault-test workers load with ``--import tests/fault/slow_ops.py``.

- ``sleepy``: sleeps ``ms`` milliseconds and returns its input unchanged, so the reference output
  (threshold, then label) still holds when it ends a pipeline; it keeps jobs in flight long
  enough to kill or freeze a worker that holds some. With ``mark``, it first creates the file
  ``<mark>-<pid>``, so that a test knows which worker process has started a job.
- ``poison``: ends the whole worker process (``os._exit(1)``) when pixel (0, 0) of the image is
  the marker ``POISON_BGR``; otherwise returns its input unchanged.
- ``fault.trap_and_report``: an actor that traps exits, optionally links to ``target``, says it
  is ready, then reports the first ``EXIT`` message it gets.
"""

from __future__ import annotations

import os
import time

import numpy as np

import zimg

POISON_BGR = (1, 2, 3)


@zimg.op("sleepy")
def sleepy(image: np.ndarray, *, ms: float = 50, mark: str = "") -> np.ndarray:
    if mark:
        with open(f"{mark}-{os.getpid()}", "a"):
            pass
    time.sleep(ms / 1000)
    return image


@zimg.op("poison")
def poison(image: np.ndarray) -> np.ndarray:
    if image.ndim == 3 and image.shape[2] >= 3 and tuple(image[0, 0, :3]) == POISON_BGR:
        os._exit(1)  # a crash no handler can catch: the job must be redelivered elsewhere
    return image


@zimg.behaviour("fault.trap_and_report")
def trap_and_report(ctx, notify, target=None):
    ctx.trap_exit = True
    if target is not None:
        ctx.link(target)
    ctx.send(notify, ("ready", ctx.node_name, ctx.self()))
    exit_message = ctx.receive(lambda m: isinstance(m, tuple) and m[0] == "EXIT")
    ctx.send(notify, ("exit", ctx.node_name, exit_message))
