"""One registry class behind every ``--dataset``, ``--backbone``, ``--loss`` and metric choice.

A :class:`Registry` maps names to entries (a dataset's builder, a backbone's recipe, a loss class,
a metric function, each wrapped in its kind's entry type with a one-line description). Entries are
added with :meth:`Registry.register`, as a decorator or a call::

    @LOSSES.register("my_loss", "what it does")
    class MyLoss(HashLoss): ...

    BACKBONES.register("resnet18", "ResNet-18", tvm.resnet18, attach=replace_fc, ...)

The package that owns a registry fills it: every module of that package not starting with ``_`` is
imported on first use (a new built-in entry is one new file). Those come first, before any entry of
a ``--plugin``, so a plugin that reuses a built-in name is told so in one line. A lookup miss is a
:class:`~hyp2.errors.UserError` naming the known choices.
"""
from __future__ import annotations

import sys
from typing import Callable, Generic, Iterator, TypeVar

from .errors import UserError

T = TypeVar("T")


class UnknownName(UserError, ValueError):
    """A name no registry entry has. A :class:`UserError` (one line for users) that is also the
    ``ValueError`` a Python caller expects from a bad argument."""


class Registry(Generic[T]):
    """Named entries of one kind, in registration order.

    Args:
        kind: what an entry is, for messages ("dataset", "loss").
        make: ``make(name, obj, description, **fields) -> entry``: wraps what is registered into the
            entry type of this kind (e.g. a loss class into a ``LossSpec``).
        package: the package whose modules register the built-in entries (imported on first use).
        plural: ``kind`` in the plural, when it is not ``kind + "s"``.
    """

    def __init__(self, kind: str, make: Callable[..., T], package: str | None = None, plural: str | None = None):
        self.kind, self._make, self._package = kind, make, package
        self.plural = plural or f"{kind}s"
        self._entries: dict[str, T] = {}
        self._loaded = package is None
        self._loading = False

    def _load(self) -> None:
        if self._loaded or self._loading:
            return
        from ._plugins import import_submodules

        self._loading = True
        try:
            import_submodules(self._package)
            self._loaded = True
        finally:
            self._loading = False

    def register(self, name: str, description: str, obj: object = None, **fields):
        """Add ``make(name, obj, description, **fields)`` under ``name``.

        Called with ``obj``, registers it and returns it; without, returns a decorator that does so
        (and returns the decorated object unchanged).

        Raises:
            ValueError: ``name`` is empty or already registered (a built-in's or another plugin's).
        """
        if obj is not None and self._script_copy(obj):
            return obj  # its imported copy registered it already
        if obj is None:
            def deco(target):
                self.register(name, description, target, **fields)
                return target
            return deco
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} needs a non-empty name, got {name!r}")
        if not self._is_builtin(obj):
            self._load()  # built-in entries first: a plugin cannot take their names
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered; choose another name")
        self._entries[name] = self._make(name, obj, description, **fields)
        return obj

    def _script_copy(self, obj: object) -> bool:
        """``obj`` is defined in a module of this package run as a script (``python -m
        hyp2.data.flickr prepare``), whose imported copy holds the real entry."""
        if getattr(obj, "__module__", None) != "__main__" or self._package is None:
            return False
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        return spec is not None and spec.name.startswith(self._package + ".")

    def _is_builtin(self, obj: object) -> bool:
        return self._package is not None and getattr(obj, "__module__", "").startswith(self._package + ".")

    def get(self, name: str) -> T:
        """The entry of ``name``; :class:`UnknownName` (a one-line ``UserError``) naming the known
        ones otherwise."""
        self._load()
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UnknownName(f"unknown {self.kind} {name!r}; known {self.plural}: "
                              f"{', '.join(self._entries) or 'none'}") from None

    def names(self) -> list[str]:
        """Every registered name, in registration order."""
        self._load()
        return list(self._entries)

    def describe(self) -> str:
        """``name: description; ...`` of every entry, for ``--help``."""
        return "; ".join(f"{n}: {getattr(self.get(n), 'description', '')}" for n in self.names())

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests that register entries of their own clean up with it)."""
        self._entries.pop(name, None)
