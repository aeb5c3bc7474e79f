"""The HyP² threshold ζ from the best known binary linear codes.

Xu et al., "HyP² Loss: Beyond Hypersphere Metric Space for Multi-label Image Retrieval", ACM MM
2022, bound how far apart C class proxies can sit on the K-bit hypercube: K-bit codes for C
classes are at best a binary code of length K with C codewords, and the paper takes the best
known *linear* [K, k] code with k = ⌈log₂ C⌉ information bits (2^k ≥ C codewords). If its minimum
Hamming distance is d, two of its codes have cosine at least 1 − 2d/K (for ±1 vectors,
cos = 1 − 2·hamming/K), so the proxy loss only pushes a sample's cosine to a negative class's
proxy below

    ζ = 1 − 2·d / K.

The distances d are M. Grassl's tables of bounds on the minimum distance of linear codes
(http://www.codetables.de), which the official code reads from ``codetable.xlsx`` (row K,
column ⌈log₂ C⌉). This package ships the lower bounds for 1 ≤ k ≤ n ≤ 256 as ``codetable.csv``
(columns ``n,k,d``) beside this module; it is read on first use and cached.
"""
from __future__ import annotations

import csv
import functools
import io
from importlib import resources

from .validate import is_int

#: largest code length (hash bits) in the shipped table
MAX_BITS = 256


@functools.lru_cache(maxsize=1)
def _table() -> dict[tuple[int, int], int]:
    """``{(n, k): d}`` for every 1 ≤ k ≤ n ≤ 256, read once from the package's ``codetable.csv``."""
    text = resources.files(__package__).joinpath("codetable.csv").read_text(encoding="utf-8")
    table: dict[tuple[int, int], int] = {}
    for row in csv.DictReader(io.StringIO(text)):
        table[int(row["n"]), int(row["k"])] = int(row["d"])
    return table


def min_distance(n: int, k: int) -> int:
    """Best known minimum distance d of a binary linear [n, k] code (Grassl's lower bound).

    Valid for integers 1 ≤ k ≤ n ≤ 256; anything else raises ``ValueError``.
    """
    if not (is_int(n) and is_int(k) and 1 <= k <= n <= MAX_BITS):
        raise ValueError(f"min_distance needs integers 1 <= k <= n <= {MAX_BITS}, "
                         f"got n={n!r}, k={k!r}")
    return _table()[n, k]


def zeta(num_bits: int, num_classes: int) -> float:
    """The HyP² threshold ζ = 1 − 2·d/K for K = ``num_bits`` bits and C = ``num_classes`` classes.

    d is :func:`min_distance` (K, ⌈log₂ C⌉). Valid for integers 1 ≤ K ≤ 256 and C ≥ 2 with
    ⌈log₂ C⌉ ≤ K (so that C distinct K-bit codes exist); anything else raises ``ValueError``.
    Examples: 20 classes at 48 bits gives 0; 38 classes at 12 bits gives 1/3.
    """
    if not is_int(num_bits) or not 1 <= num_bits <= MAX_BITS:
        raise ValueError(f"zeta needs an integer number of bits in [1, {MAX_BITS}], "
                         f"got num_bits={num_bits!r}")
    if not is_int(num_classes) or num_classes < 2:
        raise ValueError(f"zeta needs an integer number of classes >= 2, "
                         f"got num_classes={num_classes!r}")
    # ⌈log₂ C⌉ in exact integer arithmetic: float math.log(C, 2) rounds up past some powers of
    # two (2**29 gives 29.000000000000004), which would pick the wrong column
    k = (num_classes - 1).bit_length()
    if k > num_bits:
        raise ValueError(f"{num_classes} classes need codes of at least ⌈log₂ {num_classes}⌉ = {k} bits, more than "
                         f"K = {num_bits}: use K ≥ {k}")
    return 1.0 - 2.0 * min_distance(num_bits, k) / num_bits
