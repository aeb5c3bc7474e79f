"""Graded multi-label metrics (ACG, NDCG, WAP) and tie-aware mAP against naive loops written
plainly here (a full stable sort, python sums), hand-computed cases, and every order of the ties."""
from __future__ import annotations

import itertools
import math
from fractions import Fraction as F

import numpy as np
import pytest
import torch

from hyp2 import metrics as M
from hyp2.metrics import EngineOptions

from .conftest import random_case, ref_ap, ref_distances, ref_orders

# ----------------------------------------------------------------------------------------------
# Naive references
# ----------------------------------------------------------------------------------------------


class Naive:
    """Every graded metric the slow and obvious way: r[q][j] = labels shared by query q and item j."""

    def __init__(self, q, d, ql, dl):
        self.dist = ref_distances(q, d)
        self.orders = ref_orders(self.dist)
        ql, dl = np.asarray(ql), np.asarray(dl)
        self.r = [[sum(1 for c in range(ql.shape[1]) if ql[i, c] > 0 and dl[j, c] > 0) for j in range(len(dl))]
                  for i in range(len(ql))]
        self.n = len(dl)

    def k(self, topk):
        return self.n if topk is None else min(topk, self.n)

    def acg(self, topk):
        k = self.k(topk)
        return float(np.mean([sum(r[j] for j in o[:k]) / k for o, r in zip(self.orders, self.r)]))

    def ndcg(self, topk):
        k, out = self.k(topk), []
        for o, r in zip(self.orders, self.r):
            top = max(r)  # gains scaled by 2^-top (NDCG unchanged) keep 2^r representable
            dcg = sum(F(2**r[j] - 1, 2**top) / math.log2(i + 1) for i, j in enumerate(o[:k], start=1))
            ideal = sorted(r, reverse=True)[:k]
            idcg = sum(F(2**x - 1, 2**top) / math.log2(i + 1) for i, x in enumerate(ideal, start=1))
            out.append(dcg / idcg if idcg else 0.0)
        return float(np.mean(out))

    def wap(self, topk):
        k, out = self.k(topk), []
        for o, r in zip(self.orders, self.r):
            total, count, gained = 0.0, 0, 0
            for i, j in enumerate(o[:k], start=1):
                gained += r[j]  # sum of r over ranks 1..i
                if r[j] > 0:
                    total += gained / i  # ACG@i
                    count += 1
            out.append(total / count if count else 0.0)
        return float(np.mean(out))

    def map(self, topk):
        k = self.k(topk)
        return float(np.mean([ref_ap(o, [x > 0 for x in r], k) for o, r in zip(self.orders, self.r)]))


def ap_fraction(order, rel, k):
    hits, total = 0, F(0)
    for i, j in enumerate(order[:k], start=1):
        if rel[j]:
            hits += 1
            total += F(hits, i)
    return total / hits if hits else F(0)


def tie_orders(dist_row):
    """Every ranking of the database that sorts by distance, whatever the order within ties."""
    groups = [[j for j in range(len(dist_row)) if dist_row[j] == v] for v in sorted(set(dist_row))]
    for perms in itertools.product(*(itertools.permutations(g) for g in groups)):
        yield [j for p in perms for j in p]


def tie_aps(naive, query, k):
    """AP@k of one query under every tie order (exact fractions)."""
    rel = [x > 0 for x in naive.r[query]]
    return [ap_fraction(o, rel, k) for o in tie_orders(naive.dist[query])]


def check_graded(q, d, ql, dl, naive, topks, **kw):
    """graded_metrics and evaluate_all at every topk, the single-metric functions at the first
    and the last (they share graded_metrics' code)."""
    for i, topk in enumerate(topks):
        expected = {"map": naive.map(topk), "acg": naive.acg(topk), "ndcg": naive.ndcg(topk),
                    "weighted_map": naive.wap(topk)}
        got = M.graded_metrics(q, d, ql, dl, topk, **kw)
        assert got == {**{key: pytest.approx(v, abs=1e-12) for key, v in expected.items()}, "topk": naive.k(topk)}
        res = M.evaluate_all(q, d, ql, dl, topk, ns=(1, 5), **kw)
        assert {key: res[key] for key in expected} == {key: pytest.approx(v, abs=1e-12) for key, v in expected.items()}
        if i in (0, len(topks) - 1):
            assert M.acg(q, d, ql, dl, topk, **kw) == pytest.approx(expected["acg"], abs=1e-12)
            assert M.ndcg(q, d, ql, dl, topk, **kw) == pytest.approx(expected["ndcg"], abs=1e-12)
            assert M.weighted_map(q, d, ql, dl, topk, **kw) == pytest.approx(expected["weighted_map"], abs=1e-12)


def multilabel_case(seed, n_q, n_db, k_bits, n_cls=6):
    """Random codes with many ties and labels sharing up to several classes; query 0 has no label
    and query 1 only a class no database item has (neither has a relevant item)."""
    rng = np.random.default_rng(seed)
    q, d, ql, dl = random_case(rng, n_q, n_db, k_bits, n_cls=n_cls, dup=True, density=0.45)
    dl[:, -1] = 0
    ql[1] = 0
    ql[1, -1] = 1
    return q, d, ql, dl


# ----------------------------------------------------------------------------------------------
# Hand-computed case
# ----------------------------------------------------------------------------------------------

# K = 2 bits; the query [+1, +1] has labels [1, 1, 0].
HAND_DB = np.array([[1, 1], [-1, 1], [1, -1], [-1, -1]])      # distances 0, 1, 1, 2
HAND_DB_LABELS = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 1, 1]])  # r = 1, 2, 0, 1
HAND_Q, HAND_Q_LABELS = np.array([[1, 1]]), np.array([[1, 1, 0]])
# Stable ranking d0 d1 d2 d3, r = 1 2 0 1; the database sorted by r: 2 1 1 0.
L3, L5 = math.log2(3), math.log2(5)


@pytest.mark.parametrize("topk, acg, ndcg, wap, ap", [
    (1, 1, 1 / 3, 1, 1),  # DCG 1, IDCG 3
    (2, 3 / 2, (1 + 3 / L3) / (3 + 1 / L3), (1 + 3 / 2) / 2, 1),
    (3, 1, (1 + 3 / L3) / (3 + 1 / L3 + 1 / 2), (1 + 3 / 2) / 2, 1),
    # ranks 1, 2, 4 relevant: ACG@1 = 1, ACG@2 = 3/2, ACG@4 = 1; AP = (1 + 1 + 3/4) / 3
    (None, 1, (1 + 3 / L3 + 1 / L5) / (3 + 1 / L3 + 1 / 2), 7 / 6, 11 / 12),
])
def test_hand_graded(topk, acg, ndcg, wap, ap):
    got = M.graded_metrics(HAND_Q, HAND_DB, HAND_Q_LABELS, HAND_DB_LABELS, topk)
    assert got == {"map": pytest.approx(ap), "acg": pytest.approx(acg), "ndcg": pytest.approx(ndcg),
                   "weighted_map": pytest.approx(wap), "topk": 4 if topk is None else topk}


@pytest.mark.parametrize("topk, expected", [
    # d1 (relevant) and d2 (not) tie at distance 1: ranks 1 2 4 relevant (AP 11/12) or 1 3 4 (29/36).
    (None, F(31, 36)),
    (3, F(11, 12)),  # top 3: AP 1 or (1 + 2/3) / 2
    (2, F(1)),  # top 2: d0 and either, AP 1 both ways
])
def test_hand_tie_aware(topk, expected):
    assert M.tie_aware_map(HAND_Q, HAND_DB, HAND_Q_LABELS, HAND_DB_LABELS, topk) == pytest.approx(float(expected))


def test_query_without_any_shared_label_scores_zero():
    ql = np.zeros((1, 3))
    for fn in (M.acg, M.ndcg, M.weighted_map, M.tie_aware_map):
        assert fn(HAND_Q, HAND_DB, ql, HAND_DB_LABELS) == 0.0


# ----------------------------------------------------------------------------------------------
# Random cases against the naive loops
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k_bits", [8, 10, 12])
def test_random_against_naive(k_bits):
    q, d, ql, dl = multilabel_case(k_bits, 9, 211, k_bits)
    naive = Naive(q, d, ql, dl)
    assert max(max(r) for r in naive.r) >= 3  # graded: items share up to several labels
    # 1, a few, the largest top-k kept as candidates (k <= N/8), deep ones, N, above N, None
    check_graded(q, d, ql, dl, naive, (1, 7, 26, 27, 150, 211, 300, None), chunk_size=4)


@pytest.mark.parametrize("topk", [7, 40, None])
def test_evaluate_all_map_is_bit_identical_to_mean_average_precision(topk):
    # Training reports mean_average_precision and --test evaluate_all's "map": the same bits,
    # whatever the graded metrics computed beside it (300 queries: several chunks of queries).
    q, d, ql, dl = multilabel_case(4, 300, 250, 9)
    assert M.evaluate_all(q, d, ql, dl, topk)["map"] == M.mean_average_precision(q, d, ql, dl, topk)


def test_single_label_wap_is_map():
    # One label per item: r is 0 or 1, ACG@k is precision@k and WAP@k is mAP@k.
    rng = np.random.default_rng(3)
    q, d, _, _ = random_case(rng, 8, 160, 9, dup=True)
    ql = np.eye(4)[rng.integers(0, 4, 8)]
    dl = np.eye(4)[rng.integers(0, 4, 160)]
    naive = Naive(q, d, ql, dl)
    assert {x for r in naive.r for x in r} == {0, 1}
    check_graded(q, d, ql, dl, naive, (1, 10, 60, None))
    for topk in (1, 10, 60, None):
        assert M.weighted_map(q, d, ql, dl, topk) == pytest.approx(M.mean_average_precision(q, d, ql, dl, topk),
                                                                   abs=1e-12)
    assert M.acg(q, d, ql, dl, 10) == pytest.approx(M.precision_at_n(q, d, ql, dl, [10])[0], abs=1e-12)


@pytest.mark.parametrize("n_cls, backend", [(300, "numpy"), (300, "torch"), (1100, "numpy")])
def test_many_shared_labels(n_cls, backend):
    # Counts above 256 (inexact in bfloat16) and gains 2^r beyond float64's range (r > 1023).
    rng = np.random.default_rng(n_cls)
    q, d, _, _ = random_case(rng, 3, 40, 6, dup=True)
    ql = (rng.random((3, n_cls)) < 0.97).astype(np.float32)
    dl = (rng.random((40, n_cls)) < 0.97).astype(np.float32)
    dl[::3] = 0
    naive = Naive(q, d, ql, dl)
    assert max(max(r) for r in naive.r) > (1023 if n_cls > 1023 else 256)
    check_graded(q, d, ql, dl, naive, (3, None), options=EngineOptions(backend=backend))


# ----------------------------------------------------------------------------------------------
# Tie-aware mAP
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_tie_aware_is_the_mean_over_every_tie_order(seed):
    # Tiny databases with 3-bit codes: every order of every tie group is enumerated.
    rng = np.random.default_rng(seed)
    q, d, ql, dl = random_case(rng, 4, 7, 3, n_cls=3, dup=seed % 2 == 1, density=0.4)
    naive = Naive(q, d, ql, dl)
    moved = False
    for topk in (*range(1, 8), None):
        k = naive.k(topk)
        per_query = [tie_aps(naive, i, k) for i in range(4)]
        moved |= any(min(aps) < max(aps) for aps in per_query)
        expected = float(sum(sum(aps) / len(aps) for aps in per_query) / 4)
        assert M.tie_aware_map(q, d, ql, dl, topk) == pytest.approx(expected, abs=1e-14)
        assert M.evaluate_all(q, d, ql, dl, topk, ns=())["tie_aware_map"] == pytest.approx(expected, abs=1e-14)
        for i, aps in enumerate(per_query):  # each query's value lies within its tie orders' range
            one = M.tie_aware_map(q[i:i + 1], d, ql[i:i + 1], dl, topk)
            assert float(min(aps)) - 1e-14 <= one <= float(max(aps)) + 1e-14
    assert moved  # the tie order changes AP somewhere: the expectation is not trivially AP


def test_tie_aware_between_worst_and_best_tie_order():
    # Whole ranking: relevant items first within each tie is the best order, last the worst.
    q, d, ql, dl = multilabel_case(21, 12, 300, 8)
    naive = Naive(q, d, ql, dl)
    for i in range(12):
        rel = [x > 0 for x in naive.r[i]]
        best = sorted(range(300), key=lambda j: (naive.dist[i][j], not rel[j]))
        worst = sorted(range(300), key=lambda j: (naive.dist[i][j], rel[j]))
        value = M.tie_aware_map(q[i:i + 1], d, ql[i:i + 1], dl)
        assert ref_ap(worst, rel, 300) - 1e-12 <= value <= ref_ap(best, rel, 300) + 1e-12
        if ref_ap(worst, rel, 300) < ref_ap(best, rel, 300):
            assert ref_ap(worst, rel, 300) < value < ref_ap(best, rel, 300)


def test_tie_aware_ignores_the_database_order():
    # Reordering the database changes the stable mAP (ties break differently), never the tie-aware one.
    q, d, ql, dl = multilabel_case(5, 10, 200, 8)
    perm = np.random.default_rng(0).permutation(200)
    for topk in (20, None):
        assert M.mean_average_precision(q, d[perm], ql, dl[perm], topk) != M.mean_average_precision(q, d, ql, dl, topk)
        assert M.tie_aware_map(q, d[perm], ql, dl[perm], topk) == M.tie_aware_map(q, d, ql, dl, topk)


def test_tie_aware_without_ties_is_map():
    # Distances 0..12 once each: a single order, so tie-aware mAP is mAP.
    q = np.ones((1, 12))
    d = np.array([[-1] * i + [1] * (12 - i) for i in range(13)])
    ql, dl = np.array([[1, 1]]), np.random.default_rng(1).integers(0, 2, (13, 2))
    for topk in (1, 5, None):
        assert M.tie_aware_map(q, d, ql, dl, topk) == pytest.approx(M.mean_average_precision(q, d, ql, dl, topk),
                                                                    abs=1e-15)


def test_harmonic_differences_are_accurate():
    # Σ_{j=1}^{n} 1/(s+j) keeps a small relative error when n << s (the closed form needs it).
    from hyp2.metrics._ties import harmonic_diff

    for s in (0, 1, 7, 14, 15, 16, 40, 10**4, 10**7, 10**9):
        for n in (1, 2, 3, 15, 16, 17, 100, 5000):
            expected = math.fsum(1 / (s + j) for j in range(1, n + 1))
            assert harmonic_diff(s, n) == pytest.approx(expected, rel=4e-15)
    assert harmonic_diff(5, 0) == 0.0


# ----------------------------------------------------------------------------------------------
# Engine settings, input forms, errors
# ----------------------------------------------------------------------------------------------

SETTINGS = [
    EngineOptions(block_items=17, query_rows=3),
    EngineOptions(workers=1, memory_bytes=1),
    EngineOptions(workers=3, block_items=50),
    EngineOptions(backend="torch", block_items=33),
    EngineOptions(backend="torch", compute_dtype=torch.float16),
    EngineOptions(backend="numpy", compute_dtype=torch.float16),
    EngineOptions(compute_dtype=torch.float32, group_bits=4),
    EngineOptions(sample_size=64, sample_z=-30.0),  # sampled caps that fall short, redone exactly
]


@pytest.mark.parametrize("options", SETTINGS)
def test_engine_settings_give_identical_values(options):
    q, d, ql, dl = multilabel_case(7, 11, 400, 10)
    for topk in (9, 50):  # top-k candidates: every setting gives the same bits
        assert M.graded_metrics(q, d, ql, dl, topk, options=options) == M.graded_metrics(q, d, ql, dl, topk)
        assert M.tie_aware_map(q, d, ql, dl, topk, options=options) == M.tie_aware_map(q, d, ql, dl, topk)
        got, base = (M.evaluate_all(q, d, ql, dl, topk, ns=(5,), options=o) for o in (options, None))
        assert {key: got[key] for key in ("map", "acg", "ndcg", "weighted_map", "tie_aware_map")} == \
            {key: base[key] for key in ("map", "acg", "ndcg", "weighted_map", "tie_aware_map")}
    # Deep rankings add per-block sums in block order: equal to the last bits or so.
    for topk in (200, None):
        base = M.graded_metrics(q, d, ql, dl, topk)
        got = M.graded_metrics(q, d, ql, dl, topk, options=options)
        assert got == {key: pytest.approx(v, abs=1e-13) for key, v in base.items()}
        assert M.tie_aware_map(q, d, ql, dl, topk, options=options) == M.tie_aware_map(q, d, ql, dl, topk)


def test_packed_and_torch_inputs_not_modified():
    q, d, ql, dl = multilabel_case(8, 6, 90, 12)
    base = M.graded_metrics(q, d, ql, dl, 10)
    qp, dp = M.pack_codes(q), M.pack_codes(d)
    assert M.graded_metrics(qp, dp, ql, dl, 10, num_bits=12) == base
    tensors = [torch.from_numpy(a.copy()) for a in (q, d, ql, dl)]
    kept = [t.clone() for t in tensors]
    assert M.graded_metrics(*tensors, 10) == base
    for fn in (M.acg, M.ndcg, M.weighted_map, M.tie_aware_map, M.evaluate_all):
        fn(*tensors, 10)
        fn(*tensors, None)
    assert all(torch.equal(a, b) for a, b in zip(tensors, kept))


@pytest.mark.parametrize("fn", [M.acg, M.ndcg, M.weighted_map, M.tie_aware_map, M.graded_metrics])
def test_errors(fn):
    q, d, ql, dl = np.ones((2, 4)), np.ones((3, 4)), np.ones((2, 2)), np.ones((3, 2))
    with pytest.raises(ValueError, match="topk"):
        fn(q, d, ql, dl, 0)
    with pytest.raises(ValueError, match="query_codes is empty"):
        fn(q[:0], d, ql[:0], dl)
    with pytest.raises(ValueError, match="db_codes is empty"):
        fn(q, d[:0], ql, dl[:0])
    with pytest.raises(ValueError, match="classes"):
        fn(q, d, ql, np.ones((3, 3)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_codes_give_the_cpu_values():
    q, d, ql, dl = multilabel_case(9, 70, 3001, 12)
    cuda = [torch.from_numpy(a).cuda() for a in (q, d, ql, dl)]
    for topk in (100, 1000, None):
        assert M.graded_metrics(*cuda, topk) == {key: pytest.approx(v, abs=1e-12)
                                                 for key, v in M.graded_metrics(q, d, ql, dl, topk).items()}
        assert M.tie_aware_map(*cuda, topk) == pytest.approx(M.tie_aware_map(q, d, ql, dl, topk), abs=1e-12)


@pytest.mark.parametrize("numpy_has_bitwise_count", [True, False])
def test_popcount_of_label_masks(monkeypatch, numpy_has_bitwise_count):
    # Label bitmasks use all 64 bits (negative int64 included); numpy < 2 has no bitwise_count.
    from hyp2.metrics._graded import popcount

    if not numpy_has_bitwise_count:
        monkeypatch.delattr(np, "bitwise_count", raising=False)
    x = np.random.default_rng(0).integers(-2**63, 2**63 - 1, (7, 5), dtype=np.int64, endpoint=True)
    x[0, :3] = [-1, 0, -2**63]
    expected = [[bin(int(v) & (2**64 - 1)).count("1") for v in row] for row in x]
    np.testing.assert_array_equal(popcount(x), expected)
    np.testing.assert_array_equal(popcount(x[:, ::2]), np.array(expected)[:, ::2])  # strided input
