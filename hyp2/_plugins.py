"""Registries fill themselves: every public module of a package is imported once, on first use."""
from __future__ import annotations

import functools
import importlib
import pkgutil


@functools.lru_cache(maxsize=None)
def import_submodules(package: str) -> None:
    """Import every module of ``package`` whose name does not start with ``_`` (once)."""
    pkg = importlib.import_module(package)
    for mod in pkgutil.iter_modules(pkg.__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{package}.{mod.name}")
