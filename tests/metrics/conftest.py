"""Naive references for the metrics tests: python loops over queries and a stable sorted() by
(distance, index), the slow and obvious way. Test modules import them with ``from .conftest import``."""
from __future__ import annotations

import numpy as np
import pytest

from hyp2 import metrics as M

# ----------------------------------------------------------------------------------------------
# Naive references: python loops over queries, a stable sorted() by (distance, index).
# ----------------------------------------------------------------------------------------------


def ref_bits(codes) -> np.ndarray:
    return np.asarray(codes, dtype=np.float64) >= 0  # sign with 0 -> +1


def ref_distances(q, d) -> list[list[int]]:
    qb, db = ref_bits(q), ref_bits(d)
    return [[int(np.count_nonzero(qb[i] != db[j])) for j in range(len(db))] for i in range(len(qb))]


def ref_orders(dist: list[list[int]]) -> list[list[int]]:
    return [sorted(range(len(row)), key=lambda j: (row[j], j)) for row in dist]


def ref_relevance(ql, dl) -> list[list[bool]]:
    ql, dl = np.asarray(ql), np.asarray(dl)
    return [[bool(np.any((ql[i] > 0) & (dl[j] > 0))) for j in range(len(dl))]
            for i in range(len(ql))]


def ref_ap(order: list[int], rel: list[bool], k: int) -> float:
    hits, total = 0, 0.0
    for r, j in enumerate(order[:k], start=1):
        if rel[j]:
            hits += 1
            total += hits / r
    return total / hits if hits else 0.0


class Ref:
    """Every metric, the slow and obvious way."""

    def __init__(self, q, d, ql, dl):
        self.dist = ref_distances(q, d)
        self.orders = ref_orders(self.dist)
        self.rel = ref_relevance(ql, dl)
        self.n = len(self.dist[0])
        self.k_bits = np.asarray(q).shape[1]

    def map(self, topk):
        k = self.n if topk is None else min(topk, self.n)
        return float(np.mean([ref_ap(o, r, k) for o, r in zip(self.orders, self.rel)]))

    def p_at(self, ns):
        return [float(np.mean([sum(r[j] for j in o[:n]) / n
                               for o, r in zip(self.orders, self.rel)])) for n in ns]

    def r_at(self, ns):
        out = []
        for n in ns:
            vals = []
            for o, r in zip(self.orders, self.rel):
                total = sum(r)
                vals.append(sum(r[j] for j in o[:n]) / total if total else 0.0)
            out.append(float(np.mean(vals)))
        return out

    def curve(self):
        prec, rec = [], []
        for radius in range(self.k_bits + 1):
            ps, rs = [], []
            for dist, r in zip(self.dist, self.rel):
                within = [j for j in range(self.n) if dist[j] <= radius]
                good = sum(r[j] for j in within)
                ps.append(good / len(within) if within else 0.0)
                rs.append(good / sum(r) if sum(r) else 0.0)
            prec.append(float(np.mean(ps)))
            rec.append(float(np.mean(rs)))
        return prec, rec


def random_case(rng, n_q, n_db, k_bits, n_cls=5, *, dup=False, density=0.3):
    q = rng.choice([-1.0, 1.0], size=(n_q, k_bits))
    d = rng.choice([-1.0, 1.0], size=(n_db, k_bits))
    if dup:  # many exact duplicates -> large tie groups at every distance
        d = d[rng.integers(0, max(2, n_db // 10), n_db)]
        q[: n_q // 2] = d[rng.integers(0, n_db, n_q // 2)]
    ql = (rng.random((n_q, n_cls)) < density).astype(np.float32)
    dl = (rng.random((n_db, n_cls)) < density).astype(np.float32)
    ql[0] = 0  # a query with no relevant item at all
    return q, d, ql, dl


def check_all(q, d, ql, dl, ref: Ref, *, chunk_size=None, num_bits=None, topks=(None, 1, 7), options=None):
    """Every public metric against the reference."""
    kw = dict(chunk_size=chunk_size, num_bits=num_bits, options=options)
    n = ref.n
    np.testing.assert_array_equal(M.hamming_distance(q, d, **kw), np.array(ref.dist))
    for topk in (*topks, n + 5):
        idx, dist = M.hamming_ranking(q, d, topk, **kw)
        k = n if topk is None else min(topk, n)
        np.testing.assert_array_equal(idx, np.array([o[:k] for o in ref.orders]))
        np.testing.assert_array_equal(dist, np.take_along_axis(np.array(ref.dist), idx, 1))
        assert M.mean_average_precision(q, d, ql, dl, topk, **kw) == pytest.approx(ref.map(topk),
                                                                                    abs=1e-12)
    ns = sorted({1, 2, min(5, n), n})
    assert M.precision_at_n(q, d, ql, dl, ns, **kw) == pytest.approx(ref.p_at(ns), abs=1e-12)
    assert M.recall_at_n(q, d, ql, dl, ns, **kw) == pytest.approx(ref.r_at(ns), abs=1e-12)
    prec, rec = ref.curve()
    curve = M.pr_curve(q, d, ql, dl, **kw)
    assert curve["radius"] == list(range(ref.k_bits + 1))
    assert curve["precision"] == pytest.approx(prec, abs=1e-12)
    assert curve["recall"] == pytest.approx(rec, abs=1e-12)
    assert M.precision_within_radius(q, d, ql, dl, 2, **kw) == pytest.approx(
        prec[min(2, ref.k_bits)], abs=1e-12)
    res = M.evaluate_all(q, d, ql, dl, topk=7, ns=(1, 3, n, n + 1), **kw)
    assert res["map"] == pytest.approx(ref.map(7), abs=1e-12)
    assert res["topk"] == min(7, n)
    assert res["precision_at_n"]["n"] == [1, 3, n] and res["recall_at_n"]["n"] == [1, 3, n]
    assert res["precision_at_n"]["precision"] == pytest.approx(ref.p_at([1, 3, n]), abs=1e-12)
    assert res["recall_at_n"]["recall"] == pytest.approx(ref.r_at([1, 3, n]), abs=1e-12)
    assert res["pr_curve"]["precision"] == pytest.approx(prec, abs=1e-12)
    assert res["pr_curve"]["recall"] == pytest.approx(rec, abs=1e-12)
    assert res["precision_radius2"] == pytest.approx(prec[min(2, ref.k_bits)], abs=1e-12)
