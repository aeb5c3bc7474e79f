"""The loss registry (``--loss``): names, descriptions and declared options of every loss.

A loss registers itself with the class decorator :func:`register_loss`. Every module of
``hyp2.losses`` not starting with ``_`` is imported on first use of the registry, so a new loss
in the package is one new file; a loss elsewhere registers when its module is imported.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

from .._plugins import import_submodules
from ..validate import check_int
from .base import HashLoss
from .options import Option, parse_options, resolve_options

#: names no option may take: they are build_loss's own arguments
_RESERVED = ("num_classes", "num_bits", "seed")


@dataclass(frozen=True)
class LossSpec:
    """Registry entry: the loss class, a one-line description and (through the class) its options."""

    name: str
    cls: type[HashLoss]
    description: str

    @property
    def options(self) -> tuple[Option, ...]:
        return self.cls.options

    def build(self, num_classes: int, num_bits: int, *, seed: int = 0,
              options: Mapping[str, object] | None = None) -> HashLoss:
        """The loss for C classes and K bits, ``options`` over the declared defaults."""
        if options is None:
            options = {}
        if not isinstance(options, Mapping):
            raise TypeError(f"{self.name}: options must be a mapping of option names to values, "
                            f"got {type(options).__name__}")
        check_int(self.name, "num_classes", num_classes, 1)
        check_int(self.name, "num_bits", num_bits, 1)
        # derived defaults (ζ from the code table, α = 10/K) are resolved here, so a loss class
        # that takes one positionally (HyP2Loss's zeta) is built like any other
        values = resolve_options(self.name, self.options, options, num_classes, num_bits)
        return self.cls(num_classes, num_bits, seed=seed, **values)

    def parse(self, pairs: Iterable[str]) -> dict[str, object]:
        """``["KEY=VALUE", ...]`` as a typed, checked options mapping (see :func:`parse_loss_options`)."""
        return parse_options(self.name, self.options, pairs)


_LOSSES: dict[str, LossSpec] = {}


def register_loss(name: str, description: str):
    """Class decorator registering a :class:`HashLoss` subclass under ``name``.

    The class's ``options`` become the loss's options; its ``name`` attribute is set to ``name``.
    """

    def deco(cls):
        if not (isinstance(cls, type) and issubclass(cls, HashLoss)):
            raise TypeError(f"register_loss({name!r}): expected a HashLoss subclass, got {cls!r}")
        if name in _LOSSES:
            raise ValueError(f"loss {name!r} is registered twice")
        keys = [o.name for o in cls.options]
        bad = sorted({k for k in keys if keys.count(k) > 1 or k in _RESERVED})
        if bad:
            raise ValueError(f"loss {name!r}: option names must be unique and not one of "
                             f"{', '.join(_RESERVED)}; got {', '.join(bad)}")
        cls.name = name
        _LOSSES[name] = LossSpec(name, cls, description)
        return cls

    return deco


def _registered() -> dict[str, LossSpec]:
    """Every registered loss, once the package's own loss modules are imported."""
    import_submodules(__package__)
    return _LOSSES


def loss_names() -> list[str]:
    """The registered loss names, sorted."""
    return sorted(_registered())


def loss_spec(name: str) -> LossSpec:
    """The registry entry of ``name``; ``ValueError`` naming the known losses if there is none."""
    specs = _registered()
    if name not in specs:
        raise ValueError(f"unknown loss {name!r}; known losses: {', '.join(sorted(specs))}")
    return specs[name]


def parse_loss_options(name: str, pairs: Iterable[str]) -> dict[str, object]:
    """``--loss_opt`` strings ``["KEY=VALUE", ...]`` as typed, checked options of loss ``name``.

    Returns ``{KEY: value}`` for the keys given (``build_loss`` fills in the rest). Raises
    ``ValueError`` in one line on an unknown loss, a pair without ``=``, an unknown key, a value
    that does not parse or is out of range, or a key given twice.
    """
    return loss_spec(name).parse(pairs)


def build_loss(name: str, num_classes: int, num_bits: int, *, seed: int = 0,
               options: Mapping[str, object] | None = None) -> HashLoss:
    """Build the loss registered as ``name`` for C = ``num_classes``, K = ``num_bits``.

    Args:
        seed: seeds what the loss draws at construction (proxies, codes).
        options: values of the loss's declared options (``loss_spec(name).options``); the others
            take their defaults. ``options=loss.hparams`` rebuilds ``loss``.

    Raises:
        ValueError: one line: an unknown loss (naming the known ones), an unknown option or a bad
            value (listing the valid options with their defaults).
    """
    return loss_spec(name).build(num_classes, num_bits, seed=seed, options=options)
