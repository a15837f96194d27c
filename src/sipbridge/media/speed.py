"""Which implementation carries the media hot path: the compiled one (C extension modules
built from src/sipbridge/media/_c by the project's set-up), or the Python reference.

`media_path` says which: "compiled" needs every module built (a gateway refuses to start
without them, naming what is missing), "python" never uses them, "auto" uses them when
all are built and says so in the log when not. The Python modules stay the reference:
the tests run both on the same packets and require the same output bit for bit.
"""

from __future__ import annotations

import functools
import importlib
from types import ModuleType

PATHS = ("auto", "compiled", "python")

# The extension modules of the compiled path, sipbridge.media._NAME each.
MODULES: tuple[str, ...] = ("kernels", "jitter", "rtpio")


class MediaPathError(ValueError):
    """`media_path = "compiled"` with a module not built (or not importable)."""


@functools.cache
def load(name: str) -> ModuleType | None:
    """The compiled module sipbridge.media._NAME, or None when it is not built (looked up
    once: sessions, codecs and resamplers ask at every call's start)."""
    try:
        return importlib.import_module(f"sipbridge.media._{name}")
    except ImportError:
        return None


def require(name: str) -> ModuleType:
    """The compiled module sipbridge.media._NAME; MediaPathError when it is not built."""
    module = load(name)
    if module is None:
        raise MediaPathError(f"sipbridge.media._{name} is not built: run scripts/setup.sh")
    return module


def missing() -> list[str]:
    """The compiled path's modules that are not built."""
    return [name for name in MODULES if load(name) is None]


def use_compiled(path: str) -> bool:
    """Whether calls take the compiled path, for the configured `media_path`."""
    if path not in PATHS:
        raise ValueError(f"media_path must be one of {', '.join(PATHS)}")
    if path == "python":
        return False
    absent = missing()
    if absent and path == "compiled":
        names = ", ".join(f"sipbridge.media._{n}" for n in absent)
        raise MediaPathError(
            f"media_path = \"compiled\" but {names} not built: run scripts/setup.sh "
            "(it needs gcc and the Python headers)")
    return not absent
