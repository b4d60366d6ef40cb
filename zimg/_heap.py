"""A worker keeps the memory it frees for the next image instead of handing it back to the kernel.

glibc's malloc serves a large block (a decoded image is megabytes) with a fresh ``mmap`` until
it has seen one freed, and trims the heap's free top as soon as it exceeds twice the largest block
seen so far. A worker process that has just started therefore maps, faults in and unmaps its
image buffers many times over before the heuristics settle, and on a machine with more worker
processes than cores every extra process pays that again. Fixing the thresholds keeps blocks up
to 32 MiB on the heap and up to 128 MiB of freed memory for reuse: with 4 workers on 2 cores,
the kernel time per 1080p image fell from 1.6 to 0.9 ms (``docs/decisions.md``).
"""

from __future__ import annotations

import ctypes
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # blocks this large or smaller come from the heap (glibc's maximum)
TRIM_THRESHOLD = 128 << 20  # free memory kept at the top of the heap


def keep_freed_memory() -> bool:
    """Fix glibc's malloc thresholds for this process (see the module docstring).

    Returns:
        True if they were set; False where there is no glibc ``mallopt`` (other C libraries
        and systems keep their own behaviour).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # Setting either stops glibc's own adjustment of both, so set both.
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
