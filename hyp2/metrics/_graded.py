"""Graded multi-label metrics: ACG, NDCG and weighted mAP of a Hamming ranking.

They come from Zhao et al., "Deep Semantic Ranking Based Hashing for Multi-Label Image
Retrieval" (DSRH), CVPR 2015. Here r(q, i) is the number of labels that the query and the item
at rank i share (not only whether they share one):

* ACG@k = (1/k) Σ_{i≤k} r(q, i);
* NDCG@k = DCG@k / IDCG@k, DCG@k = Σ_{i≤k} (2^r(q,i) − 1) / log2(i + 1), IDCG@k the DCG of the
  whole database sorted by r, descending (a query whose IDCG is 0 scores 0);
* WAP@k = Σ_{i≤k, r(q,i)>0} ACG@i / #{i ≤ k : r(q, i) > 0} (0 for a query with none).

The shared counts of a stored top-k come from the label bitmasks (a popcount of the AND). IDCG
needs each query's histogram of r over the whole database; it depends on the query's labels and
on the database's label sets only, not on the codes, so it is counted over the *distinct* label
sets of the database (a few thousand for NUS-WIDE) rather than over every pair. Gains are
scaled by 2^−M, M the query's largest r in the database, which leaves NDCG unchanged and keeps
2^r finite for any number of classes. Deep rankings are scored without storing them by
:class:`RankGraded`, which extends :class:`~._consumers.RankAP` with the shared counts.

Part of :mod:`hyp2.metrics`, the evaluation protocol of HyP² Loss (Xu et al., "HyP² Loss: Beyond
Hypersphere Metric Space for Multi-label Image Retrieval", ACM MM 2022, Sec. 4.1).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ._consumers import RankAP, divide_or_zero
from ._engine import Distances, LabelOperands

_POP8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
_PAIRS = 1 << 21  # (query label set, database label set) pairs counted at once
_DISCOUNT_BLOCK = 1 << 20  # positions whose discounts are summed at once


def popcount(x: np.ndarray) -> np.ndarray:
    """Set bits of each element of an int64 array: a uint8 array of the same shape."""
    u = np.ascontiguousarray(x).view(np.uint64)
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(u)
    return _POP8[u.view(np.uint8)].reshape(*u.shape, 8).sum(-1, dtype=np.uint8)


def shared_counts(q_masks: np.ndarray, db_masks: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Labels shared by each query and each listed item.

    Args:
        q_masks: ``(c, W)`` int64 label bitmasks of the queries. db_masks: ``(N, W)`` of the
            database. idx: ``(c, L)`` database indices.
    Returns:
        ``(c, L)`` uint8 counts (int32 beyond 192 classes).
    """
    width = q_masks.shape[1]
    out = np.zeros(idx.shape, dtype=np.uint8 if width <= 3 else np.int32)
    for w in range(width):
        out += popcount(db_masks[:, w].take(idx) & q_masks[:, w: w + 1])
    return out


def _unique_rows(masks: np.ndarray, **kw) -> tuple:
    if masks.shape[1] == 1:  # one word: a 1-D unique, much faster than the row-wise one
        out = np.unique(masks[:, 0], **kw)
        return (out[0][:, None], *out[1:])
    return np.unique(masks, axis=0, **kw)


def label_histogram(q_masks: np.ndarray, db_masks: np.ndarray, classes: int, run=map) -> np.ndarray:
    """Each query's histogram of r (labels shared with a database item) over the whole database.

    Args:
        q_masks: ``(Q, W)`` int64 label bitmasks. db_masks: ``(N, W)``. classes: C.
        run: ``run(fn, items)`` -> results in order (e.g. worker threads).
    Returns:
        ``(Q, C+1)`` int64: ``[q, r]`` is the number of database items sharing r labels with q.
    """
    sets, weights = _unique_rows(db_masks, return_counts=True)
    q_sets, inverse = _unique_rows(q_masks, return_inverse=True)
    bins = classes + 1
    rows = max(1, _PAIRS // len(sets))

    def part(lo: int) -> np.ndarray:
        q = q_sets[lo: lo + rows]
        r = np.zeros((len(q), len(sets)), dtype=np.int64)
        for w in range(sets.shape[1]):
            r += popcount(q[:, w, None] & sets[None, :, w])
        r += (np.arange(len(q)) * bins)[:, None]
        w8 = np.broadcast_to(weights, r.shape).reshape(-1)
        return np.bincount(r.reshape(-1), weights=w8, minlength=len(q) * bins).reshape(len(q), bins)

    hist = np.concatenate(list(run(part, range(0, len(q_sets), rows))))
    return np.rint(hist).astype(np.int64)[np.asarray(inverse).reshape(-1)]  # integer sums below 2**53: exact


def gain_table(ideal: np.ndarray) -> np.ndarray:
    """``(Q, C+1)`` gains (2^r − 1) · 2^−M for r = 0..C, M each query's largest r in ``ideal``
    (the ``(Q, C+1)`` histogram of :func:`label_histogram`); r = 0 gains exactly 0."""
    levels = np.arange(ideal.shape[1])
    top = np.where(ideal > 0, levels, 0).max(1, initial=0)[:, None]
    return np.exp2(np.minimum(levels - top, 0)) - np.exp2(-top.astype(np.float64))


def discount_sums(pos: np.ndarray) -> np.ndarray:
    """D(p) = Σ_{i=1}^{p} 1 / log2(i + 1) for every p of a non-negative int array (float64, same
    shape), summed in blocks of positions: the memory does not grow with max(p)."""
    uniq, inverse = np.unique(pos, return_inverse=True)
    vals, total = np.zeros(len(uniq)), 0.0
    top = int(uniq[-1]) if len(uniq) else 0
    for lo in range(0, top, _DISCOUNT_BLOCK):  # positions lo+1 .. hi
        hi = min(lo + _DISCOUNT_BLOCK, top)
        cum = total + np.cumsum(1.0 / np.log2(np.arange(lo + 2, hi + 2, dtype=np.float64)))
        a, b = np.searchsorted(uniq, [lo + 1, hi + 1])
        vals[a:b] = cum[uniq[a:b] - lo - 1]
        total = float(cum[-1])
    return vals[np.asarray(inverse).reshape(-1)].reshape(np.shape(pos))


def ideal_dcg(ideal: np.ndarray, depth: int, gains: np.ndarray) -> np.ndarray:
    """``(Q,)`` IDCG@depth (scaled as ``gains``, the :func:`gain_table`): the database sorted by r,
    descending, fills ranks 1..depth level by level."""
    desc = ideal[:, ::-1]
    end = np.minimum(desc.cumsum(1), depth)
    start = np.minimum(desc.cumsum(1) - desc, depth)
    return (gains[:, ::-1] * (discount_sums(end) - discount_sums(start))).sum(1)


def average_precision(rel: np.ndarray) -> np.ndarray:
    """``(c, L)`` bool relevance in rank order -> ``(c,)`` float64 AP (0 with no relevant item)."""
    cum = np.cumsum(rel, axis=1, dtype=np.int64)
    prec = cum / np.arange(1, rel.shape[1] + 1)  # precision@r at every rank r
    prec *= rel
    hits = prec.sum(1)
    n_rel = cum[:, -1] if rel.shape[1] else np.zeros(len(rel), np.int64)
    return divide_or_zero(hits, n_rel)


def graded_terms(counts: np.ndarray, ideal: np.ndarray) -> np.ndarray:
    """Per-query AP, ACG, NDCG and WAP at k of stored rankings.

    Args:
        counts: ``(c, k)`` shared-label counts r in rank order (the top k of each query).
        ideal: ``(c, C+1)`` histograms of r over the whole database (:func:`label_histogram`).
    Returns:
        ``(c, 4)`` float64: AP@k (relevant: r > 0), ACG@k, NDCG@k, WAP@k of each query.
    """
    c, k = counts.shape
    rel = counts > 0
    ap = average_precision(rel)  # the very values mean_average_precision sums
    w = rel / np.arange(1, k + 1)  # [r_i > 0] / i
    n_rel = np.count_nonzero(rel, axis=1)
    cum = np.cumsum(counts, axis=1, dtype=np.int32 if k * (ideal.shape[1] - 1) < 2**31 else np.int64)
    # Row dot products by einsum: per-row sums, whatever c, and no BLAS threads.
    wap = divide_or_zero(np.einsum("ij,ij->i", cum, w), n_rel)  # Σ ACG@i over relevant i / their number
    gains = gain_table(ideal)
    key = counts.astype(np.intp)
    key += (np.arange(c) * gains.shape[1])[:, None]
    dcg = np.einsum("ij,j->i", gains.reshape(-1).take(key), 1.0 / np.log2(np.arange(2, k + 2)))
    ndcg = divide_or_zero(dcg, ideal_dcg(ideal, k, gains))
    return np.stack([ap, cum[:, -1] / k, ndcg, wap], axis=1)


def _segment_sums(values: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Sums of consecutive segments of ``values`` of the given ``sizes`` (which add up to its
    length; empty segments sum to 0): an array like ``sizes``, of ``values``' dtype."""
    out = np.zeros(len(sizes), dtype=values.dtype)
    filled = sizes > 0
    if filled.any():
        out[filled] = np.add.reduceat(values, (np.cumsum(sizes) - sizes)[filled])
    return out


class RankGraded(RankAP):
    """AP, ACG, NDCG and WAP at ``depth`` of every query from the ranks of its relevant items, as
    :class:`~._consumers.RankAP` finds them (no ranking stored).

    WAP needs, for each relevant item, the sum of r over the items ranked up to it: the items at
    the same distance in earlier blocks and in its block are counted as the pass goes; the items
    at smaller distances are known only at the end, so each term ``S / rank`` is split into that
    part, added then from the per-distance sums of ``1 / rank``, and the rest, added at once.

    Args:
        hist: ``(Q, 2, K+1)`` [irrelevant, relevant] counts per distance. depth: k.
        ideal: ``(Q, C+1)`` histograms of r over the whole database.
    """

    wants_counts = True

    def __init__(self, eng: Distances, lab_ops: LabelOperands, hist: np.ndarray, depth: int, ideal: np.ndarray):
        super().__init__(eng, lab_ops, hist, depth)
        self.gains = gain_table(ideal)
        self.idcg = ideal_dcg(ideal, depth, self.gains)
        # 1 / log2(rank + 1) by rank (index 0 unused), when the depth is small enough for a table
        self.discount = None
        if depth <= _DISCOUNT_BLOCK:
            self.discount = np.concatenate([[0.0], 1.0 / np.log2(np.arange(2, depth + 2, dtype=np.float64))])

    def start(self, n_rows: int, first_row: int = 0) -> dict[str, Any]:
        st = super().start(n_rows, first_row)
        k1 = self.eng.num_bits + 1
        st.update(acg=np.zeros(n_rows), dcg=np.zeros(n_rows), wap=np.zeros(n_rows),
                  rsum=np.zeros((n_rows, k1), np.int64), inv=np.zeros((n_rows, k1)))
        return st

    def _more(self, st, r0: int, r1: int, qi, flat, rank, keep, rcnt, counts) -> None:
        # The relevant items come grouped by row and, within a row, by distance (in rank order):
        # per-row and per-(row, distance) sums are segment sums.
        r, k1 = r1 - r0, self.eng.num_bits + 1
        rsum = st["rsum"][r0:r1]
        per_pair, per_row = rcnt.reshape(-1), rcnt.sum(1)
        block = _segment_sums(counts, per_pair)  # this block's sum of r per (row, distance)
        # Sum of r over the items at the item's distance ranked up to it (itself included): earlier
        # blocks' (rsum), then a running sum over this block's items less the sums of the
        # (row, distance) pairs before its own.
        upto = (rsum.reshape(-1) - (np.cumsum(block) - block)).take(flat) + np.cumsum(counts)
        g0 = st["rows"].start + r0
        gain = self.gains[g0:g0 + r].reshape(-1).take(qi * self.gains.shape[1] + counts)
        inv = 1.0 / rank
        if self.discount is not None:  # ranks past the depth (clipped) are dropped by keep below
            dcg = gain * self.discount.take(rank, mode="clip")
        else:
            dcg = gain / np.log2(rank + 1.0)
        if keep is not None:  # else every item is ranked within the depth: ACG comes from rsum
            inv *= keep
            dcg *= keep
            st["acg"][r0:r1] += _segment_sums(counts * keep, per_row)
        st["dcg"][r0:r1] += _segment_sums(dcg, per_row)
        st["wap"][r0:r1] += _segment_sums(upto * inv, per_row)
        st["inv"][r0:r1] += _segment_sums(inv, per_pair).reshape(r, k1)
        rsum += block.reshape(r, k1)

    def finish(self, st: dict[str, Any]) -> np.ndarray:
        """``(r, 4)`` AP, ACG, NDCG and WAP at the depth of each query."""
        ap = super().finish(st)
        below = st["rsum"].cumsum(1) - st["rsum"]  # sum of r over the items at smaller distances
        wap = divide_or_zero(st["wap"] + (below * st["inv"]).sum(1), st["hits"])
        ndcg = divide_or_zero(st["dcg"], self.idcg[st["rows"]])
        acg = st["acg"] if self.depth < self.n_db else st["rsum"].sum(1)
        return np.stack([ap, acg / self.depth, ndcg, wap], axis=1)
