"""Tie-aware average precision: the expectation of AP over every order of the tied items.

He, Cakir, Bargal and Sclaroff, "Hashing as Tie-Aware Learning to Rank", CVPR 2018: a Hamming
ranking has large groups of items at equal distance, and AP depends on how each group is
ordered. Averaged over all orders of every group (each equally likely), AP no longer depends on
any tie-breaking rule, and it is a function of the per-distance counts alone.

For one query let a distance group hold n items, m of them relevant, with s items and R_b
relevant items at smaller distances. In a uniformly random order of the group, position j
(1..n) holds a relevant item with probability m/n, and given that, each of the other m − 1
relevant items is in one of the j − 1 earlier positions with probability (j − 1)/(n − 1). The
group's expected sum of precision at its relevant items is therefore

    E = (m/n) Σ_{j=1}^{n} (R_b + 1 + (j − 1)(m − 1)/(n − 1)) / (s + j)
      = (m/n) [(R_b + 1) ΔH + (m − 1)/(n − 1) · T],

with ΔH = Σ_{j=1}^{n} 1/(s + j) = H(s + n) − H(s) and T = Σ_{j=1}^{n} (j − 1)/(s + j) = n − (s + 1) ΔH
(the second term is 0 when n = 1). Over the whole ranking the number of relevant items R is the
same in every order, so the expected AP is Σ E / R.

At a depth k that cuts a group (t of its n positions ranked within k) the number of relevant
items within k is R_b + X, X hypergeometric (t draws from n items of which m are relevant). Given
X = x the x relevant items are spread uniformly over the t positions, so with C the sum of E over
the earlier groups, the expected AP@k is Σ_x P(X = x) (C + G(x)) / (R_b + x), where G(x) is the
formula above with (t, x) in place of (n, m). (At the depth of the whole database no group is
cut and this is He et al.'s tie-aware AP.)

ΔH is computed with a small *relative* error, so that (s + 1) ΔH, which nearly cancels n when
n ≪ s, leaves T accurate: the few terms below 16 are summed directly, the rest is
ψ(y) − ψ(x) from the asymptotic series of the digamma function, with its leading differences
(log(y/x), 1/(2x) − 1/(2y)) taken in forms that do not cancel.

Part of :mod:`hyp2.metrics`, the evaluation protocol of HyP² Loss (Xu et al., "HyP² Loss: Beyond
Hypersphere Metric Space for Multi-label Image Retrieval", ACM MM 2022, Sec. 4.1).
"""
from __future__ import annotations

import numpy as np

from ._consumers import divide_or_zero

_DIRECT = 16  # harmonic terms 1/j with j below this are summed one by one
# B_2k / (2k) for k = 1..7: ψ(x) ~ log x − 1/(2x) − Σ_k B_2k / (2k x^2k); at x >= 16 the next
# term is below 1e-19 of the sum.
_BERNOULLI = (1 / 12, -1 / 120, 1 / 252, -1 / 240, 1 / 132, -691 / 32760, 1 / 12)
_MIXTURE_CELLS = 1 << 20  # (query, x) cells of the hypergeometric sums at once (~8 float64 arrays)


def harmonic_diff(s, n) -> np.ndarray:
    """Σ_{j=1}^{n} 1/(s + j) for non-negative integers ``s``, ``n`` (arrays, broadcast): float64,
    with a relative error of a few ulps whatever s and n."""
    s, n = np.broadcast_arrays(np.asarray(s, np.float64), np.asarray(n, np.float64))
    out = np.zeros(s.shape)
    for j in range(1, _DIRECT):
        out += ((s < j) & (j <= s + n)) / j
    x = np.maximum(s + 1, _DIRECT)  # the rest: Σ_{j=x}^{y-1} 1/j = ψ(y) − ψ(x)
    y = s + n + 1
    span = np.maximum(y - x, 0)
    rest = np.log1p(span / x) + span / (2 * x * y)
    for k, b in enumerate(_BERNOULLI, start=1):
        rest -= b * (y ** (-2 * k) - x ** (-2 * k))
    return out + np.where(span > 0, rest, 0.0)


def _group_sum(s, n, m, rb) -> np.ndarray:
    """Expected sum of precision at the relevant items of a randomly ordered group of ``n`` items
    (``m`` relevant) after ``s`` items (``rb`` relevant): ``E`` of the module docstring."""
    dh = harmonic_diff(s, n)
    tail = n - (s + 1) * dh  # Σ_{j=1}^{n} (j − 1)/(s + j)
    return divide_or_zero(m, n) * ((rb + 1) * dh + divide_or_zero(np.maximum(m - 1, 0), n - 1) * tail)


def tie_aware_ap(hist: np.ndarray, depth: int, run=map) -> np.ndarray:
    """Expected AP@depth of each query over all orders of the items at equal distance.

    Args:
        hist: ``(Q, 2, K+1)`` [irrelevant, relevant] items at each distance (the whole database).
        depth: k, 1 <= k <= N.
        run: ``run(fn, items)`` -> results in order (e.g. worker threads).
    Returns:
        ``(Q,)`` float64 (0 for a query with no relevant item within k in any order).
    """
    n_all = hist.sum(1).astype(np.int64)
    rel = hist[:, 1].astype(np.int64)
    before = n_all.cumsum(1) - n_all
    rel_before = rel.cumsum(1) - rel
    full = _group_sum(before, n_all, rel, rel_before)
    # The group holding rank k, and what precedes it.
    g = (n_all.cumsum(1) < depth).sum(1)[:, None]
    s, n, m, rb = (np.take_along_axis(a, g, 1)[:, 0] for a in (before, n_all, rel, rel_before))
    c = np.take_along_axis(full.cumsum(1) - full, g, 1)[:, 0]
    return _cut_expectation(s, n, m, rb, c, depth - s, run)


def _cut_expectation(s, n, m, rb, c, t, run) -> np.ndarray:
    """Σ_x P(X = x) (c + G(x)) / (rb + x) for each query, X hypergeometric (t of n items, m
    relevant), G the group sum of (t, x); queries in batches of at most :data:`_MIXTURE_CELLS`
    (query, x) cells."""
    lo = np.maximum(0, t - (n - m))
    hi = np.minimum(m, t)
    dh = harmonic_diff(s, t)
    # G(x) = x (a + b (x − 1)): the group formula with (t, x) for (n, m)
    a = (rb + 1) * dh / t
    b = divide_or_zero(t - (s + 1) * dh, t * (t - 1.0))
    cols = np.stack([lo, hi, c, rb, a, b, n - m - t, m, t], axis=1).astype(np.float64)
    order = np.argsort(hi - lo, kind="stable")  # ascending widths: batches of similar widths pad little
    widths = (hi - lo + 1)[order]
    batches, start = [], 0
    while start < len(order):
        # the batch's width is its last (largest) one
        stop = start + max(1, int(np.searchsorted(np.arange(1, len(order) - start + 1) * widths[start:],
                                                  _MIXTURE_CELLS, side="right")))
        batches.append((order[start:stop], int(widths[stop - 1])))
        start = stop
    out = np.empty(len(s))
    for (rows, _), values in zip(batches, run(lambda batch: _mixture(cols[batch[0]], batch[1]), batches)):
        out[rows] = values
    return out


def _mixture(cols: np.ndarray, width: int) -> np.ndarray:
    """:func:`_cut_expectation` for one batch: ``cols`` ``(r, 9)`` float64 per query (lo, hi, c,
    rb, a, b, n − m − t, m, t)."""
    lo, hi, c, rb, a, b, rest, m, t = (cols[:, i: i + 1] for i in range(9))
    x = lo + np.arange(width)
    # log P(X = x) up to a constant, from the exact ratios P(x+1)/P(x). At x = hi the ratio is 0
    # (m − x or t − x is), so every x past the support gets weight exp(−inf) = 0.
    xs = x[:, :-1]
    ratio = (m - xs) * (t - xs)
    ratio /= (xs + 1) * (rest + xs + 1)
    np.maximum(ratio, 0.0, out=ratio)
    logp = np.empty_like(x)
    logp[:, 0] = 0.0
    with np.errstate(divide="ignore"):
        np.cumsum(np.log(ratio, out=ratio), axis=1, out=logp[:, 1:])
    logp -= logp.max(1, keepdims=True)
    w = np.exp(logp, out=logp)
    value = (x - 1) * b
    value += a
    value *= x
    value += c
    value /= np.maximum(rb + x, 1.0)  # rb + x = 0 only where c and G(x) are 0
    return np.einsum("ij,ij->i", w, value) / w.sum(1)
