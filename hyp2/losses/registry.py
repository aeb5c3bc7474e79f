"""The loss registry (``--loss``): :data:`LOSSES`, each entry a :class:`LossSpec` (class,
description, declared options).

A loss registers itself with the class decorator ``@LOSSES.register(name, description)``. Every
module of ``hyp2.losses`` not starting with ``_`` is imported on first use of the registry, so a
new loss in the package is one new file; a loss elsewhere registers when its module is imported
(``--plugin``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from ..registry import Registry
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

    def parse(self, pairs) -> dict[str, object]:
        """``--loss_opt`` strings ``["KEY=VALUE", ...]`` as ``{KEY: typed, checked value}`` for the
        keys given (``build`` fills in the rest); ``ValueError`` in one line on a pair without
        ``=``, an unknown key, a value that does not parse or is out of range, a key given twice."""
        return parse_options(self.name, self.options, pairs)


def _spec(name: str, cls: object, description: str) -> LossSpec:
    if not (isinstance(cls, type) and issubclass(cls, HashLoss)):
        raise TypeError(f"loss {name!r}: expected a HashLoss subclass, got {cls!r}")
    keys = [o.name for o in cls.options]
    bad = sorted({k for k in keys if keys.count(k) > 1 or k in _RESERVED})
    if bad:
        raise ValueError(f"loss {name!r}: option names must be unique and not one of "
                         f"{', '.join(_RESERVED)}; got {', '.join(bad)}")
    options = {o.name for o in cls.options}
    unknown = sorted(w for w in cls.weights.values() if isinstance(w, str) and w not in options)
    if unknown:
        raise ValueError(f"loss {name!r}: weights name options it does not declare: {', '.join(unknown)}")
    cls.name = name
    return LossSpec(name, cls, description)


#: every loss, by its ``--loss`` name
LOSSES: Registry[LossSpec] = Registry("loss", _spec, package=__package__, plural="losses")


def build_loss(name: str, num_classes: int, num_bits: int, *, seed: int = 0,
               options: Mapping[str, object] | None = None) -> HashLoss:
    """Build the loss registered as ``name`` for C = ``num_classes``, K = ``num_bits``.

    Args:
        seed: seeds what the loss draws at construction (proxies, codes).
        options: values of the loss's declared options (``LOSSES.get(name).options``); the others
            take their defaults. ``options=loss.hparams`` rebuilds ``loss``.

    Raises:
        ValueError: one line: an unknown loss (naming the known ones), an unknown option or a bad
            value (listing the valid options with their defaults).
    """
    return LOSSES.get(name).build(num_classes, num_bits, seed=seed, options=options)
