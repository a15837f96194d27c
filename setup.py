"""Builds the compiled paths, in place next to their Python source:

- the media path: each folder src/sipbridge/media/_c/NAME/ holds the C sources of one
  extension module, sipbridge.media._NAME (headers shared between them in
  src/sipbridge/media/_c/). The Python modules stay the readable reference: sipbridge
  runs without these (with `media_path = "python"`), and the tests compare both on the
  same input.
- the SIP plane and the calls plane's hot modules (`sipbridge._compiled.MODULES`): the
  typed Python modules themselves, compiled to C by mypyc (part of mypy) when it is
  installed. The same source runs interpreted where they are not built, where a
  module's source changed after the build (its hash in the manifest written here
  differs), or with SIPBRIDGE_PURE_PYTHON=1.

Everything else is declared in pyproject.toml."""

import hashlib
import json
import os
import sys
from pathlib import Path

from setuptools import Extension, setup

C_ROOT = Path("src/sipbridge/media/_c")
sys.path.insert(0, "src")
from sipbridge._compiled import MANIFEST, MODULES, source_path  # noqa: E402

extensions = [
    Extension(
        f"sipbridge.media._{folder.name}",
        sources=sorted(str(p) for p in folder.glob("*.c")),
        include_dirs=[str(C_ROOT)],
        depends=sorted(str(p) for p in C_ROOT.rglob("*.h")),
        # IEEE arithmetic as written (no -ffast-math, no FMA contraction): the compiled
        # path must give the Python reference's results bit for bit.
        extra_compile_args=["-O2", "-std=c11", "-ffp-contract=off", "-Wall", "-Wextra"],
    )
    for folder in sorted(C_ROOT.iterdir()) if C_ROOT.is_dir()
    if folder.is_dir() and any(folder.glob("*.c"))
] if C_ROOT.is_dir() else []


# mypyc type-checks what it compiles, in a build environment that may not have the
# runtime dependencies yet (pip builds before it installs them): their types are Any
# there. `mypy --strict` on the whole tree, with them installed, is the tests' job.
MYPY_OPTIONS = ["--config-file", "", "--ignore-missing-imports", "--python-version", "3.11"]


def mypyc_extensions() -> list[Extension]:
    """The modules of MODULES compiled by mypyc, and the manifest of the sources they were
    compiled from; none without mypyc or with SIPBRIDGE_PURE_PYTHON=1."""
    manifest = Path("src") / MANIFEST
    manifest.unlink(missing_ok=True)
    if os.environ.get("SIPBRIDGE_PURE_PYTHON") == "1":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        return []
    paths = [str(Path("src") / source_path(name)) for name in MODULES]
    built = mypycify([*MYPY_OPTIONS, *paths], opt_level="3", group_name="sipbridge_sip")
    manifest.write_text(json.dumps({
        name: hashlib.sha256((Path("src") / source_path(name)).read_bytes()).hexdigest()
        for name in MODULES}, indent=1) + "\n")
    return built


setup(ext_modules=extensions + mypyc_extensions())
