"""Build the API reference (HTML) from the docstrings with pdoc: ``python docs/build_api.py OUTDIR``.

CI (.ci/run) builds it into a temporary folder on every run, so a broken docstring, a name in
``__all__`` that does not resolve or any other pdoc warning fails the build instead of rotting.
The error tree with each error's exit code, ``retryable`` and hint is the table generated into
``runtime.errors``' docstring from the classes themselves.
"""

from __future__ import annotations

import pkgutil
import sys
import warnings
from pathlib import Path

import pdoc
import pdoc.render
from pdoc import extract

import kis_emulator
import runtime

PACKAGES = (runtime, kis_emulator)


def public_modules() -> list[str]:
    """Every importable module of both packages whose dotted name has no ``_`` part."""
    names = []
    for package in PACKAGES:
        names.append(package.__name__)
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}."):
            if not any(part.startswith("_") for part in info.name.split(".")):
                names.append(info.name)
    return sorted(names)


def specs(modules: list[str]) -> list[str]:
    """``modules`` without those pdoc already reaches from an earlier one (a package whose
    ``__all__`` omits its submodules reaches none of them, so they are named one by one)."""
    chosen: list[str] = []
    covered: set[str] = set()
    for name in modules:
        if name not in covered:
            chosen.append(name)
            covered.update(extract.walk_specs([name]))
    return chosen


def build(output: Path) -> None:
    """Render every public module of both packages into ``output``; any warning is an error."""
    # The package root re-exports its names lazily: resolve them so pdoc sees plain attributes.
    for package in PACKAGES:
        for name in getattr(package, "__all__", []):
            getattr(package, name)
    pdoc.render.configure(docformat="restructuredtext", show_source=False, search=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pdoc.pdoc(*specs(public_modules()), output_directory=output)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python docs/build_api.py OUTDIR")
    build(Path(sys.argv[1]))
    print(f"API reference written to {sys.argv[1]}")
