"""Argument checks shared by the whole package: one definition of "an integer" and "a finite real".

``bool`` is an ``int`` subclass in Python, but ``True`` bits or classes is always a caller's
mistake, so it is never accepted where a number is expected. NumPy scalars are accepted.
"""
from __future__ import annotations

import math
import numbers


def is_int(x: object) -> bool:
    """True for Python and NumPy integers, False for bool."""
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def is_real(x: object) -> bool:
    """True for Python and NumPy reals (integers included), False for bool."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def check_int(owner: str, name: str, value: object, minimum: int | None = None,
              maximum: int | None = None) -> int:
    """``value`` as an ``int`` in [minimum, maximum]; otherwise ``ValueError`` naming ``owner: name``."""
    ok = is_int(value) and (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
    if not ok:
        if minimum is not None and maximum is not None:
            want = f"an integer in [{minimum}, {maximum}]"
        elif minimum is not None:
            want = f"an integer >= {minimum}"
        elif maximum is not None:
            want = f"an integer <= {maximum}"
        else:
            want = "an integer"
        raise ValueError(f"{owner}: {name} must be {want}, got {value!r}")
    return int(value)


def check_real(owner: str, name: str, value: object, *, low: float | None = None,
               high: float | None = None, open_low: bool = False, open_high: bool = False) -> float:
    """``value`` as a finite ``float`` in [low, high] (an end excluded with ``open_low`` /
    ``open_high``); otherwise ``ValueError`` naming ``owner: name`` and the interval."""
    ok = is_real(value) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if open_low else value >= low
    if ok and high is not None:
        ok = value < high if open_high else value <= high
    if not ok:
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        bracket = "(" if open_low or low is None else "["
        closing = ")" if open_high or high is None else "]"
        raise ValueError(f"{owner}: {name} must be a finite number in "
                         f"{bracket}{lo}, {hi}{closing}, got {value!r}")
    return float(value)
