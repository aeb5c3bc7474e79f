"""Graded multi-label metrics and tie-aware mAP (conventions: the :mod:`hyp2.metrics` docstring).

mAP counts an item sharing three labels with the query the same as one sharing one. The
multi-label hashing literature reports graded metrics beside it, introduced with DSRH (Zhao et
al., "Deep Semantic Ranking Based Hashing for Multi-Label Image Retrieval", CVPR 2015): ACG,
NDCG and weighted mAP (WAP), all functions of r(q, i), the number of labels shared by the query
and the item at rank i (definitions: :mod:`._graded`). Separately, Hamming rankings have large
ties and AP depends on how they are broken; the tie-aware AP of He et al. ("Hashing as Tie-Aware
Learning to Rank", CVPR 2018) is its expectation over every order of the tied items, which no
tie-breaking rule can move (closed form: :mod:`._ties`).

Like every metric here they rank by ascending Hamming distance with ties in database order
(except the tie-aware AP, which averages over the tie orders), take ``topk=None`` for the whole
database, stream the database, never modify their inputs, run on the codes' device, and take
``num_bits=``, ``chunk_size=`` and ``options=`` as the other metrics do. Their values are in
``docs/evaluation.md``'s table of definitions, with the formulas.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ._flows import Problem
from ._graded import graded_terms
from ._inputs import check_topk
from ._ties import tie_aware_ap
from .functions import _problem
from .options import EngineOptions

__all__ = ["acg", "ndcg", "weighted_map", "tie_aware_map", "graded_metrics"]


def _graded(prob: Problem, k: int, with_ndcg: bool = True) -> np.ndarray:
    """``(4,)`` means over queries of AP, ACG, NDCG and WAP at k, from one top-k pass (or, for a
    deep k, a histogram pass and a ranking pass). Without ``with_ndcg`` NDCG is left 0 and the
    histograms of shared labels it needs are not counted."""
    classes = prob.labels.classes
    ideal = prob.ideal() if with_ndcg else np.zeros((prob.num_queries, classes + 1), np.int64)
    if prob.deep(k):
        return prob.ranking_ap(k, ideal=ideal).sum(0) / prob.num_queries

    def per_query(rows: slice, idx: np.ndarray, _: np.ndarray) -> np.ndarray:
        return graded_terms(prob.shared(rows, idx), ideal[rows])

    # One sum over the per-query values, in query order: the same bits whatever the chunking.
    return np.concatenate(prob.topk(k, prob.caps(k), per_query)).sum(0) / prob.num_queries


def graded_metrics(query_codes: Any, db_codes: Any, query_labels: Any, db_labels: Any,
                   topk: int | None = None, *, num_bits: int | None = None, chunk_size: int | None = None,
                   options: EngineOptions | None = None) -> dict[str, Any]:
    """mAP, ACG, NDCG and WAP at topk from one pass over the database.

    Args:
        query_codes: ``(Q, K)`` codes. db_codes: ``(N, K)`` codes.
        query_labels: ``(Q, C)`` 0/1. db_labels: ``(N, C)`` 0/1.
        topk: ranking depth k (None: the whole database).
    Returns:
        ``{"map", "acg", "ndcg", "weighted_map": float, "topk": k}``, ``k = min(topk, N)``: the
        values of :func:`~hyp2.metrics.mean_average_precision`, :func:`acg`, :func:`ndcg` and
        :func:`weighted_map`.
    """
    prob = _problem(query_codes, db_codes, num_bits, chunk_size, options, query_labels, db_labels)
    k = check_topk(topk, prob.db.rows)
    ap, acg_k, ndcg_k, wap = (float(v) for v in _graded(prob, k))
    return {"map": ap, "acg": acg_k, "ndcg": ndcg_k, "weighted_map": wap, "topk": k}


def _one(index: int, with_ndcg: bool, query_codes, db_codes, query_labels, db_labels, topk, num_bits, chunk_size,
         options) -> float:
    prob = _problem(query_codes, db_codes, num_bits, chunk_size, options, query_labels, db_labels)
    return float(_graded(prob, check_topk(topk, prob.db.rows), with_ndcg)[index])


def acg(query_codes: Any, db_codes: Any, query_labels: Any, db_labels: Any, topk: int | None = None, *,
        num_bits: int | None = None, chunk_size: int | None = None, options: EngineOptions | None = None) -> float:
    """Average cumulative gain: mean over queries of ACG@k = (1/k) Σ_{i≤k} r(q, i) (DSRH, CVPR 2015).

    r(q, i) is the number of labels the query shares with the item at rank i; ``k = min(topk, N)``.
    Arguments as :func:`graded_metrics`.
    """
    return _one(1, False, query_codes, db_codes, query_labels, db_labels, topk, num_bits, chunk_size, options)


def ndcg(query_codes: Any, db_codes: Any, query_labels: Any, db_labels: Any, topk: int | None = None, *,
         num_bits: int | None = None, chunk_size: int | None = None, options: EngineOptions | None = None) -> float:
    """Normalized discounted cumulative gain: mean over queries of NDCG@k (DSRH, CVPR 2015).

    DCG@k = Σ_{i≤k} (2^r(q,i) − 1) / log2(i + 1); NDCG@k = DCG@k / IDCG@k, IDCG@k the DCG@k of the
    whole database sorted by r descending (the best possible top k); a query whose IDCG is 0 (no
    item shares a label with it) counts 0. Arguments as :func:`graded_metrics`.
    """
    return _one(2, True, query_codes, db_codes, query_labels, db_labels, topk, num_bits, chunk_size, options)


def weighted_map(query_codes: Any, db_codes: Any, query_labels: Any, db_labels: Any, topk: int | None = None, *,
                 num_bits: int | None = None, chunk_size: int | None = None,
                 options: EngineOptions | None = None) -> float:
    """Weighted mAP, WAP@k (DSRH, CVPR 2015): mean over queries of the mean of ACG@i over the ranks
    i <= k holding an item that shares a label with the query (0 when there is none).

    With single-label data (r in {0, 1}) ACG@i is precision@i and WAP@k is mAP@k. Arguments as
    :func:`graded_metrics`.
    """
    return _one(3, False, query_codes, db_codes, query_labels, db_labels, topk, num_bits, chunk_size, options)


def tie_aware_map(query_codes: Any, db_codes: Any, query_labels: Any, db_labels: Any, topk: int | None = None,
                  *, num_bits: int | None = None, chunk_size: int | None = None,
                  options: EngineOptions | None = None) -> float:
    """Tie-aware mAP (He et al., "Hashing as Tie-Aware Learning to Rank", CVPR 2018): the mean over
    queries of the expected AP over every order of the items at equal Hamming distance (relevant:
    at least one shared label), in closed form.

    With ``topk=None`` (the default) it is He et al.'s tie-aware AP of the whole ranking; with a
    depth k it is the expectation of AP@k as :func:`~hyp2.metrics.mean_average_precision` defines it
    (normalised by the relevant items within k, which then varies with the order of the group that
    rank k cuts). It lies between the AP of the worst and of the best order of the ties, and no
    tie-breaking rule changes it. One counting pass over the database. Arguments as
    :func:`graded_metrics`.
    """
    prob = _problem(query_codes, db_codes, num_bits, chunk_size, options, query_labels, db_labels)
    k = check_topk(topk, prob.db.rows)
    return float(tie_aware_ap(prob.histograms(True), k, run=prob.run).sum() / prob.num_queries)
