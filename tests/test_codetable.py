"""Tests of hyp2.codetable: the shipped table of best known minimum distances and ζ = 1 − 2d/K."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from hyp2 import codetable
from hyp2.codetable import min_distance, zeta

SHARED = Path("/work/shared/codetable.csv")
SHIPPED = Path(codetable.__file__).with_name("codetable.csv")


def _read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------- spot values


def test_known_codes():
    assert min_distance(7, 4) == 3      # Hamming code
    assert min_distance(24, 12) == 8    # extended Golay code
    assert min_distance(23, 12) == 7    # Golay code
    assert min_distance(8, 4) == 4      # extended Hamming code


@pytest.mark.parametrize("bits,classes,expected", [
    (48, 20, 0.0),          # VOC: k = 5, d = 24
    (12, 38, 1 / 3),        # Flickr: k = 6, d = 4
    (36, 21, 1 / 18),       # NUS-WIDE: k = 5, d = 17
])
def test_paper_datasets(bits, classes, expected):
    assert zeta(bits, classes) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("bits", [1, 2, 7, 48, 256])
def test_two_classes_is_repetition_code(bits):
    # C = 2 -> k = 1: the best [K, 1] code is the repetition code, d = K, so ζ = −1
    assert min_distance(bits, 1) == bits
    assert zeta(bits, 2) == -1.0


def test_k_is_integer_ceil_log2():
    # C = 2^k needs exactly k bits of information, C = 2^k + 1 one more
    for k in range(1, 12):
        assert zeta(24, 2 ** k) == 1 - 2 * min_distance(24, k) / 24
        assert zeta(24, 2 ** k + 1) == 1 - 2 * min_distance(24, k + 1) / 24
    # float log2 rounds 2**29 up to 29.000000000000004; the integer path must not
    assert zeta(64, 2 ** 29) == 1 - 2 * min_distance(64, 29) / 64
    assert zeta(8, 2 ** 8) == 1 - 2 * 1 / 8      # k = K = 8: the full space, d = 1


# ---------------------------------------------------------------- the shipped table


def test_shipped_file_is_complete_and_well_formed():
    rows = _read(SHIPPED)
    assert list(rows[0]) == ["n", "k", "d"]
    keys = [(int(r["n"]), int(r["k"])) for r in rows]
    assert len(keys) == len(set(keys)) == 256 * 257 // 2
    assert set(keys) == {(n, k) for n in range(1, 257) for k in range(1, n + 1)}
    for r in rows:
        n, k, d = int(r["n"]), int(r["k"]), int(r["d"])
        assert 1 <= d <= n - k + 1, (n, k, d)        # Singleton bound
        assert min_distance(n, k) == d


@pytest.mark.skipif(not SHARED.exists(), reason="no /work/shared/codetable.csv on this machine")
def test_shipped_file_equals_shared_table():
    shared = _read(SHARED)
    shipped = _read(SHIPPED)
    assert len(shared) == len(shipped)
    for a, b in zip(shared, shipped):
        assert (int(a["n"]), int(a["k"]), int(a["d"])) == (int(b["n"]), int(b["k"]), int(b["d"]))
        n, k = int(a["n"]), int(a["k"])
        # the API's ζ for C = 2^k classes (k bits exactly) matches the shared ζ column
        assert zeta(n, 2 ** k) == pytest.approx(float(a["zeta"]), abs=1e-9), (n, k)


def test_distance_monotone():
    # more information bits at the same length can only shrink the best distance, and one more
    # coordinate (append a zero column) can only keep or grow it
    for n in range(1, 257):
        for k in range(2, n + 1):
            assert min_distance(n, k) <= min_distance(n, k - 1), (n, k)
    for k in range(1, 256):
        for n in range(k + 1, 257):
            assert min_distance(n, k) >= min_distance(n - 1, k), (n, k)


def test_trivial_codes():
    for n in range(1, 257):
        assert min_distance(n, n) == 1                # the whole space
    assert min_distance(8, 7) == 2                    # even-weight (parity) code


def test_table_is_cached():
    min_distance(7, 4)
    hits = codetable._table.cache_info().hits
    zeta(48, 20)
    assert codetable._table.cache_info().hits == hits + 1
    assert codetable._table.cache_info().currsize == 1


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("n,k", [
    (0, 1), (257, 1), (5, 6), (5, 0), (1, 0), (5.0, 2), (5, 2.0), (True, 1), (4, True), ("7", 4),
])
def test_min_distance_rejects(n, k):
    with pytest.raises(ValueError, match=r"1 <= k <= n <= 256"):
        min_distance(n, k)


@pytest.mark.parametrize("bits,classes,match", [
    (0, 2, r"\[1, 256\]"),
    (257, 2, r"\[1, 256\]"),
    (-3, 2, r"\[1, 256\]"),
    (8.0, 2, r"\[1, 256\]"),
    (True, 2, r"\[1, 256\]"),
    ("8", 2, r"\[1, 256\]"),
    (8, 1, r">= 2"),
    (8, 0, r">= 2"),
    (8, -5, r">= 2"),
    (8, 2.0, r">= 2"),
    (8, True, r">= 2"),
    (8, 2 ** 9, r"⌈log₂ 512⌉ = 9 bits, more than K = 8: use K ≥ 9"),
    (8, 2 ** 8 + 1, r"⌈log₂ 257⌉ = 9 bits"),
    (1, 3, r"⌈log₂ 3⌉ = 2 bits"),
])
def test_zeta_rejects(bits, classes, match):
    with pytest.raises(ValueError, match=match):
        zeta(bits, classes)


def test_zeta_values_are_in_range():
    for bits in (1, 2, 12, 16, 24, 32, 36, 48, 64, 128, 256):
        for classes in (2, 3, 20, 21, 38, 80, 81):
            if (classes - 1).bit_length() <= bits:
                z = zeta(bits, classes)
                assert -1.0 <= z < 1.0 and math.isfinite(z)
