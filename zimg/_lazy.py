"""A module imported when one of its attributes is first used.

``cv2 = LazyModule("cv2")`` lets a module name OpenCV at the top and still import it only if
an op or a codec actually runs: the sender and ``zimg --help`` never pay OpenCV's 30-70 ms.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule:
    """Stands for the module ``name`` until an attribute of it is first read."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attribute: str) -> Any:
        module = self._module
        if module is None:
            module = self._module = importlib.import_module(self._name)
        return getattr(module, attribute)
