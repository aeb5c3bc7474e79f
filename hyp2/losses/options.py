"""Declared hyper-parameters of the losses: one :class:`Option` per knob, checked in one place.

A loss class lists its options as ``options = (Option(...), ...)``: name, default, a one-line
meaning and the source of the default (paper, official code). That one declaration gives

* the constructor's validation (:meth:`HashLoss.__init__` calls :func:`resolve_options`),
* ``build_loss(name, C, K, seed=..., options={...})`` and the ``--loss_opt KEY=VALUE`` parser
  (:func:`parse_options`),
* the resolved values a run records (``loss.hparams``), from which the same loss is rebuilt,
* ``repr(loss)`` and the option tables of docs/losses.md (a test keeps them in step).

Every error is one line ending in the list of valid keys with their defaults, so a user who
mistyped a key sees what to type instead.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

from ..validate import check_int, check_real

#: the value types an option may have; a value of a run's ``hparams`` is always one of them
KINDS = (bool, int, float, str)


@dataclass(frozen=True)
class Derived:
    """A default computed from the problem size: ``compute(num_classes, num_bits)``.

    ``text`` says how, for help and errors (``"10/K"``). The computed value is what the loss
    records in ``hparams``, so a run rebuilt from them does not depend on how it was derived.
    """

    text: str
    compute: Callable[[int, int], object]


@dataclass(frozen=True)
class Option:
    """One hyper-parameter of a loss.

    Args:
        name: the key of ``options``/``--loss_opt``/``hparams``.
        default: a ``bool``, ``int``, ``float`` or ``str`` (its type is the option's type), or a
            :class:`Derived` default (then the type is ``kind``, ``float`` unless given).
        help: what it does, one short line.
        source: where the default comes from (paper, official code and its flag).
        low, high, open_low, open_high: bounds of a number (closed unless ``open_*``).
        choices: the allowed values of a ``str`` option.
        attr: the attribute of the loss holding the value, when it is not ``name``.
        kind: the type, for a :class:`Derived` default.
    """

    name: str
    default: object
    help: str
    source: str
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    choices: tuple[str, ...] = ()
    attr: str = ""
    kind: type | None = None

    def __post_init__(self) -> None:
        if self.type not in KINDS:
            raise TypeError(f"option {self.name}: type must be one of bool, int, float, str, "
                            f"got {self.type.__name__}")

    @property
    def type(self) -> type:
        if self.kind is not None:
            return self.kind
        return float if isinstance(self.default, Derived) else type(self.default)

    @property
    def shown_default(self) -> str:
        """The default as typed on a command line (``10.0``, ``true``, ``10/K``)."""
        if isinstance(self.default, Derived):
            return self.default.text
        return show(self.default)

    def check(self, owner: str, value: object) -> object:
        """``value`` as this option's type, or ``ValueError`` naming ``owner: name`` (no key list)."""
        kind, name = self.type, self.name
        if kind is bool:
            if not isinstance(value, bool):
                raise ValueError(f"{owner}: {name} must be true or false, got {value!r}")
            return value
        if kind is str:
            if not isinstance(value, str) or (self.choices and value not in self.choices):
                want = f"one of {', '.join(self.choices)}" if self.choices else "a string"
                raise ValueError(f"{owner}: {name} must be {want}, got {value!r}")
            return value
        if kind is int:
            return check_int(owner, name, value, self.low, self.high)
        return check_real(owner, name, value, low=self.low, high=self.high, open_low=self.open_low,
                          open_high=self.open_high)

    def parse(self, owner: str, text: str) -> object:
        """The value of ``KEY=text`` as this option's type (not yet range-checked)."""
        text, kind = text.strip(), self.type
        if kind is bool:
            lowered = text.lower()
            if lowered in ("true", "yes", "on", "1"):
                return True
            if lowered in ("false", "no", "off", "0"):
                return False
            raise ValueError(f"{owner}: option {self.name}={text!r} is not true or false")
        if kind is str:
            return text
        try:
            return kind(text)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise ValueError(f"{owner}: option {self.name}={text!r} is not {what}") from None


def show(value: object) -> str:
    """A value as typed after ``KEY=``: ``true``/``false`` for bools, ``repr`` for numbers
    (exact for floats), the text itself for strings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else repr(value)


def describe(options: Iterable[Option]) -> str:
    """One line listing the keys with their defaults and meanings, or ``none``."""
    return ", ".join(f"{o.name}={o.shown_default} ({o.help})" for o in options) or "none"


def _with_keys(message: str, options: tuple[Option, ...]) -> ValueError:
    return ValueError(f"{message}; valid: {describe(options)}")


def _lookup(owner: str, options: tuple[Option, ...], key: object) -> Option:
    for option in options:
        if option.name == key:
            return option
    raise _with_keys(f"{owner}: unknown option {key!r}", options)


def resolve_options(owner: str, options: tuple[Option, ...], given: Mapping[str, object],
                    num_classes: int, num_bits: int) -> dict[str, object]:
    """Every declared option's value: ``given`` ones checked, the others their (derived) defaults.

    Returns ``{name: value}`` in declaration order. Raises ``ValueError`` (one line, ending in the
    valid keys) on an unknown key, a bad value, or a derived default that cannot be computed
    for these C and K.
    """
    for key in given:
        _lookup(owner, options, key)
    values = {}
    for option in options:
        if option.name in given:
            value = given[option.name]
        elif isinstance(option.default, Derived):
            try:
                value = option.default.compute(num_classes, num_bits)
            except ValueError as e:  # not a wrong key: no list of the valid ones
                raise ValueError(f"{owner}: no default {option.name} ({option.default.text}) for C={num_classes}, "
                                 f"K={num_bits}: {e}; or set {option.name}") from None
        else:
            value = option.default
        try:
            values[option.name] = option.check(owner, value)
        except ValueError as e:
            raise _with_keys(str(e), options) from None
    return values


def parse_options(owner: str, options: tuple[Option, ...], pairs: Iterable[str]) -> dict[str, object]:
    """``["KEY=VALUE", ...]`` as ``{KEY: typed, checked value}``, in the order given.

    Raises ``ValueError`` (one line) on a pair without ``=``, an unknown key, a value that does not
    parse or is out of range, and a key given twice.
    """
    values: dict[str, object] = {}
    for pair in pairs:
        key, sep, text = str(pair).partition("=")
        key = key.strip()
        if not sep or not key:
            raise _with_keys(f"{owner}: loss option {pair!r} is not KEY=VALUE", options)
        option = _lookup(owner, options, key)
        if key in values:
            raise ValueError(f"{owner}: option {key} is given twice ({key}={show(values[key])} and "
                             f"{pair}); give it once")
        try:
            values[key] = option.check(owner, option.parse(owner, text))
        except ValueError as e:
            raise _with_keys(str(e), options) from None
    return values
