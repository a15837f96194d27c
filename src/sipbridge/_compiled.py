"""The modules that setup.py compiles with mypyc, and the import hook that runs a
compiled module only while it matches its source.

Python imports an extension module before the source beside it, so a compiled module
whose source was edited after the build would run the old code. At build time setup.py
records each source's SHA-256 (`MANIFEST`); `install()` (from `sipbridge/__init__.py`)
compares them once, and when any differs, when no manifest is there, or with
SIPBRIDGE_PURE_PYTHON=1, imports every one of these modules from its source: all or
none, so compiled and interpreted code never mix. `compiled()` says which it is."""

from __future__ import annotations

import hashlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

# The SIP plane (parsing, the UA core, its transactions and dialogs) and the calls plane's
# per-message work: typed throughout (bench/README.md, "The SIP and calls planes compiled
# by mypyc", has what compiling them saves).
MODULES = (
    "sipbridge.sip.message",
    "sipbridge.sip.headers",
    "sipbridge.sip.uri",
    "sipbridge.sip.tokens",
    "sipbridge.sip.sdp",
    "sipbridge.sip.address",
    "sipbridge.sip.transaction",
    "sipbridge.sip.dialog",
    "sipbridge.sip.ua",
    "sipbridge.calls.sipids",
    "sipbridge.calls.events",
    "sipbridge.calls.manager",
    "sipbridge.calls.sinks",
)
MANIFEST = "sipbridge/_compiled.json"  # under the source root (src/)
_ROOT = Path(__file__).resolve().parent.parent


def source_path(module: str) -> str:
    """A module's source file, relative to the source root."""
    return module.replace(".", "/") + ".py"


def _why_pure() -> str:
    """Why the compiled modules are not to be used ("" when they are)."""
    if os.environ.get("SIPBRIDGE_PURE_PYTHON") == "1":
        return "SIPBRIDGE_PURE_PYTHON=1"
    try:
        built = json.loads((_ROOT / MANIFEST).read_text())
    except (OSError, ValueError):
        return "not built"
    for name in MODULES:
        try:
            digest = hashlib.sha256((_ROOT / source_path(name)).read_bytes()).hexdigest()
        except OSError:
            return f"no source for {name}"
        if built.get(name) != digest:
            return f"{source_path(name)} changed since it was compiled (run scripts/setup.sh)"
    return ""


class _SourceFirst(importlib.abc.MetaPathFinder):
    """Finds the modules of MODULES as their .py source, never as the extension."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MODULES:
            return None
        return importlib.util.spec_from_file_location(fullname, _ROOT / source_path(fullname))


WHY_PURE = ""  # set by install(): why the modules run from source ("" compiled or none)


def install() -> None:
    """Make the modules run from their source when the compiled ones are not to be used."""
    global WHY_PURE
    WHY_PURE = _why_pure()
    if WHY_PURE and not any(isinstance(f, _SourceFirst) for f in sys.meta_path):
        sys.meta_path.insert(0, _SourceFirst())


def compiled() -> bool:
    """Whether the modules of MODULES run compiled (every one is an extension)."""
    loaded = [importlib.import_module(name) for name in MODULES]
    return all(not (m.__file__ or "").endswith(".py") for m in loaded)
