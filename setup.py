"""Builds the compiled media path: each folder src/sipbridge/media/_c/NAME/ holds the C
sources of one extension module, sipbridge.media._NAME (headers shared between them in
src/sipbridge/media/_c/). Everything else is declared in pyproject.toml.

The Python modules stay the readable reference: sipbridge runs without these (with
`media_path = "python"`), and the tests compare both on the same input."""

from pathlib import Path

from setuptools import Extension, setup

C_ROOT = Path("src/sipbridge/media/_c")

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

setup(ext_modules=extensions)
