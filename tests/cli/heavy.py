"""What a ``zimg`` command leaves imported, run in a fresh interpreter."""

from __future__ import annotations

import ast
import subprocess
import sys

HEAVY = ("cv2", "numpy", "zmq", "rich", "starlette", "uvicorn")


def heavy_modules_after(*args: str, modules: tuple[str, ...] = HEAVY) -> list[str]:
    """The heavy modules (OpenCV, NumPy, pyzmq, rich; or ``modules``) that ``zimg ARGS``
    imported, through the console script's entry point, in a new process."""
    code = (
        "import sys\n"
        "from zimg.cli import main\n"
        f"sys.argv = ['zimg', *{list(args)!r}]\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(sorted(m for m in {modules!r} if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    loaded: list[str] = ast.literal_eval(result.stdout.strip().splitlines()[-1])
    return loaded
