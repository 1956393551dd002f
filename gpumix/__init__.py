"""gpumix as an importable name: `python -m gpumix` runs the `gpumix` command, and `gpumix.__version__` is the
installed distribution's version (the one in pyproject.toml, the only place it is written)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("gpumix")
except PackageNotFoundError:  # a source tree on sys.path without an install: no metadata to read
    __version__ = "0+unknown"
