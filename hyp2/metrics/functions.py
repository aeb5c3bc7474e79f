"""The public metrics (conventions and protocol: the :mod:`hyp2.metrics` docstring).

Every function takes ``num_bits=`` (bit-packed codes), ``chunk_size=`` (queries per matmul tile;
default from the options) and ``options=`` (:class:`~hyp2.metrics.options.EngineOptions`: how the
engine computes; never what). Scores are python floats or lists of floats.

Part of :mod:`hyp2.metrics`, the evaluation protocol of HyP² Loss (Xu et al., "HyP² Loss: Beyond
Hypersphere Metric Space for Multi-label Image Retrieval", ACM MM 2022, Sec. 4.1).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

import numpy as np
import torch

from ..validate import check_int
from ._consumers import Dense, RelevantCount, divide_or_zero
from ._flows import Problem
from ._graded import average_precision, graded_terms
from ._inputs import CodeSource, check_chunk, check_ns, check_topk, signs
from ._scan import scan
from ._ties import tie_aware_ap
from .options import DEFAULT_OPTIONS, EngineOptions

__all__ = [
    "binarize",
    "signs",
    "pack_codes",
    "unpack_codes",
    "hamming_distance",
    "hamming_ranking",
    "mean_average_precision",
    "precision_at_n",
    "recall_at_n",
    "pr_curve",
    "precision_within_radius",
    "evaluate_all",
    "DEFAULT_NS",
]

DEFAULT_NS: tuple[int, ...] = tuple(range(100, 1001, 100))


def _problem(query_codes, db_codes, num_bits, chunk_size, options, query_labels=None, db_labels=None,
             ) -> Problem:
    opts = options or DEFAULT_OPTIONS
    if not isinstance(opts, EngineOptions):
        raise ValueError(f"options must be a hyp2.metrics.EngineOptions, got {type(opts).__name__}")
    chunk = check_chunk(chunk_size)
    if chunk is not None:
        opts = replace(opts, query_rows=chunk)
    prob = Problem(query_codes, db_codes, num_bits, opts)
    if query_labels is not None:
        prob.add_labels(query_labels, db_labels)
    return prob


def binarize(codes: Any) -> torch.Tensor:
    """Sign of real-valued codes with 0 -> +1.

    Args:
        codes: ``(N, K)`` torch tensor or numpy array of reals (or bool bits, True = +1).
    Returns:
        ``(N, K)`` ``torch.int8`` tensor of ±1, on the input's device (CPU for numpy input).
    """
    return signs(CodeSource(codes, "codes").bits())


def pack_codes(codes: Any) -> np.ndarray:
    """Pack codes to bits: ``(N, K)`` ±1 / real / bool codes -> ``(N, ceil(K/8))`` uint8.

    Same layout as ``np.packbits(bits, axis=1)`` with bit 1 for +1 (the first code bit is the most
    significant bit of byte 0; the last byte is zero-padded).
    """
    return np.packbits(CodeSource(codes, "codes").bits().cpu().numpy(), axis=1)


def unpack_codes(packed: Any, num_bits: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`: ``(N, ceil(num_bits/8))`` uint8 -> ``(N, num_bits)`` int8 ±1."""
    bits = CodeSource(packed, "packed", num_bits=num_bits).bits().cpu().numpy()
    return bits.astype(np.int8) * 2 - 1


def hamming_distance(query_codes: Any, db_codes: Any, *, num_bits: int | None = None,
                     chunk_size: int | None = None, options: EngineOptions | None = None) -> np.ndarray:
    """All pairwise Hamming distances (meant for small inputs and tests).

    Args:
        query_codes: ``(Q, K)`` codes. db_codes: ``(N, K)`` codes.
    Returns:
        ``(Q, N)`` int32 numpy array; ``[i, j]`` is the number of bits where the codes differ.
    """
    prob = _problem(query_codes, db_codes, num_bits, chunk_size, options)
    out = np.empty((prob.num_queries, prob.db.rows), dtype=np.int32)
    if prob.num_queries:
        scan(prob.eng, prob.db, Dense(prob.eng, out))
    return out


def hamming_ranking(query_codes: Any, db_codes: Any, topk: int | None = None, *,
                    num_bits: int | None = None, chunk_size: int | None = None,
                    options: EngineOptions | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Stable Hamming ranking of the database for each query.

    Returns:
        ``(indices, distances)``: ``(Q, k)`` int64 database indices in rank order (ties in
        database order) and their ``(Q, k)`` int32 distances, ``k = min(topk, N)``.
    """
    prob = _problem(query_codes, db_codes, num_bits, chunk_size, options)
    depth = check_topk(topk, prob.db.rows)
    indices = np.empty((prob.num_queries, depth), dtype=np.int64)
    dists = np.empty((prob.num_queries, depth), dtype=np.int32)
    if prob.num_queries == 0:
        return indices, dists

    def store(rows: slice, idx: np.ndarray, dist: np.ndarray) -> None:
        indices[rows] = idx
        dists[rows] = dist

    prob.topk(depth, prob.caps(depth), store)
    return indices, dists


def mean_average_precision(query_codes: Any, db_codes: Any, query_labels: Any, db_labels: Any,
                           topk: int | None = None, *, num_bits: int | None = None,
                           chunk_size: int | None = None, options: EngineOptions | None = None) -> float:
    """mAP@topk of Hamming ranking (HyP² Loss, ACM MM 2022, Sec. 4.1).

    AP of a query = (1 / R_k) * sum, over the ranks r <= k holding a relevant item, of
    precision@r, where R_k is the number of relevant items among the top k (AP = 0 when R_k = 0);
    mAP is the mean over queries, with ``k = min(topk, N)`` (``topk=None``: the whole database).

    Args:
        query_codes: ``(Q, K)`` codes. db_codes: ``(N, K)`` codes.
        query_labels: ``(Q, C)`` 0/1. db_labels: ``(N, C)`` 0/1.
        topk: ranking depth k. num_bits: K, for bit-packed codes. chunk_size: queries per matmul
            tile. options: engine options (speed and memory only).
    """
    prob = _problem(query_codes, db_codes, num_bits, chunk_size, options, query_labels, db_labels)
    depth = check_topk(topk, prob.db.rows)
    if prob.deep(depth):
        return float(prob.ranking_ap(depth).sum() / prob.num_queries)

    def ap_sum(rows: slice, idx: np.ndarray, _: np.ndarray) -> float:
        return float(average_precision(prob.relevant(rows, idx)).sum())

    return sum(prob.topk(depth, prob.caps(depth), ap_sum)) / prob.num_queries


def _precision_recall_at(rel: np.ndarray, total: np.ndarray | None, ns: list[int],
                         ) -> tuple[np.ndarray, np.ndarray | None]:
    """Sums over queries of precision@N and recall@N: ``(len(ns),)`` float64 each; recall only
    when ``total`` (each query's relevant items in the database) is given, else None."""
    hits = np.cumsum(rel, axis=1, dtype=np.int64)[:, np.asarray(ns, dtype=np.int64) - 1]
    prec = (hits / np.asarray(ns, dtype=np.float64)).sum(0)
    if total is None:
        return prec, None
    return prec, divide_or_zero(hits, total[:, None]).sum(0)


def _at_n(query_codes, db_codes, query_labels, db_labels, ns, num_bits, chunk_size, options, recall: bool,
          ) -> np.ndarray:
    """Mean precision@N, or recall@N with ``recall``, over queries (float64, aligned with ``ns``)."""
    prob = _problem(query_codes, db_codes, num_bits, chunk_size, options, query_labels, db_labels)
    ns_list = check_ns(ns, prob.db.rows, drop_large=False)
    if not ns_list:
        return np.zeros(0)
    totals = None  # relevant items of each query in the whole database: a pass only recall needs
    if recall:
        totals = np.concatenate(scan(prob.eng, prob.db, RelevantCount(prob.lab_ops), labels=prob.labels,
                                     lab_ops=prob.lab_ops, group_fn=lambda rows, results: sum(results)))
    depth = max(ns_list)

    def sums(rows: slice, idx: np.ndarray, _: np.ndarray) -> np.ndarray:
        prec, rec = _precision_recall_at(prob.relevant(rows, idx), None if totals is None else totals[rows], ns_list)
        return rec if recall else prec

    return sum(prob.topk(depth, prob.caps(depth), sums)) / prob.num_queries


def precision_at_n(query_codes: Any, db_codes: Any, query_labels: Any, db_labels: Any,
                   ns: int | Sequence[int] = DEFAULT_NS, *, num_bits: int | None = None,
                   chunk_size: int | None = None, options: EngineOptions | None = None) -> list[float]:
    """Mean over queries of (relevant items among the top N) / N, for each N in ``ns``.

    Every N must satisfy 1 <= N <= database size (``ValueError`` otherwise).
    """
    prec = _at_n(query_codes, db_codes, query_labels, db_labels, ns, num_bits, chunk_size, options, recall=False)
    return [float(p) for p in prec]


def recall_at_n(query_codes: Any, db_codes: Any, query_labels: Any, db_labels: Any,
                ns: int | Sequence[int] = DEFAULT_NS, *, num_bits: int | None = None,
                chunk_size: int | None = None, options: EngineOptions | None = None) -> list[float]:
    """Mean over queries of (relevant items among the top N) / (relevant items in the database).

    A query with no relevant item in the whole database counts 0 (it stays in the mean).
    Every N must satisfy 1 <= N <= database size (``ValueError`` otherwise).
    """
    rec = _at_n(query_codes, db_codes, query_labels, db_labels, ns, num_bits, chunk_size, options, recall=True)
    return [float(r) for r in rec]


def _curve_terms(hist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(c, 2, K+1)`` counts -> per-query ``(c, K+1)`` precision and recall within radius r."""
    cum = hist.cumsum(2).astype(np.float64)
    relevant = cum[:, 1]
    retrieved = cum[:, 0] + relevant
    total = relevant[:, -1:]
    prec = divide_or_zero(relevant, retrieved)
    rec = divide_or_zero(relevant, total)
    return prec, rec


def pr_curve(query_codes: Any, db_codes: Any, query_labels: Any, db_labels: Any, *,
             num_bits: int | None = None, chunk_size: int | None = None,
             options: EngineOptions | None = None) -> dict[str, list]:
    """Precision and recall of the items within Hamming radius r, for r = 0..K.

    For each r and query: precision = relevant / retrieved among the items at distance <= r
    (0 when no item is within r), recall = relevant items within r / relevant items in the
    database (0 when the query has no relevant item); both are averaged over queries.

    Returns:
        ``{"radius": [0, ..., K], "precision": [K+1 floats], "recall": [K+1 floats]}``.
    """
    prob = _problem(query_codes, db_codes, num_bits, chunk_size, options, query_labels, db_labels)
    prec, rec = _curve_terms(prob.histograms(True))
    return {"radius": list(range(prob.num_bits + 1)), "precision": prec.mean(0).tolist(),
            "recall": rec.mean(0).tolist()}


def precision_within_radius(query_codes: Any, db_codes: Any, query_labels: Any, db_labels: Any,
                            radius: int = 2, *, num_bits: int | None = None, chunk_size: int | None = None,
                            options: EngineOptions | None = None) -> float:
    """Mean over queries of the precision of the items within Hamming distance <= ``radius``.

    A query with no item within the radius counts precision 0 (the common convention; it keeps
    every query in the mean). A radius above K is the same as K.
    """
    radius = check_int("precision_within_radius", "radius", radius, minimum=0)
    curve = pr_curve(query_codes, db_codes, query_labels, db_labels, num_bits=num_bits,
                     chunk_size=chunk_size, options=options)
    return curve["precision"][min(radius, len(curve["precision"]) - 1)]


def evaluate_all(query_codes: Any, db_codes: Any, query_labels: Any, db_labels: Any,
                 topk: int | None = None, ns: Sequence[int] = DEFAULT_NS, *,
                 num_bits: int | None = None, chunk_size: int | None = None,
                 options: EngineOptions | None = None) -> dict[str, Any]:
    """Every metric from one pass over a large database (two up to 2 * ``sample_size`` items:
    counting, then top-k with exact caps; a deep mAP depth adds one).

    Returns the ``test`` section of the run JSON (docs/run-json.md) without ``codes_sample``::

        {"map": float, "topk": k,
         "acg": float, "ndcg": float, "weighted_map": float, "tie_aware_map": float,
         "precision_at_n": {"n": [...], "precision": [...]},
         "recall_at_n": {"n": [...], "recall": [...]},
         "pr_curve": {"radius": [0..K], "precision": [...], "recall": [...]},
         "precision_radius2": float}

    ``topk`` reports the depth used, ``min(topk, N)``; ``map``, ``acg``, ``ndcg``, ``weighted_map``
    and ``tie_aware_map`` are all at that depth (:mod:`hyp2.metrics.multilabel` defines the last
    four); ``n`` keeps only the N <= database size.
    """
    prob = _problem(query_codes, db_codes, num_bits, chunk_size, options, query_labels, db_labels)
    k = check_topk(topk, prob.db.rows)
    ns_list = check_ns(ns, prob.db.rows, drop_large=True)
    deep = prob.deep(k)
    depth = max(ns_list, default=0) if deep else max([k, *ns_list])
    k1 = prob.num_bits + 1
    ideal = prob.ideal()  # histograms of shared labels over the database, for IDCG (no code pass)

    def sums(rows: slice, idx: np.ndarray, _: np.ndarray, hist: np.ndarray) -> tuple:
        prec, rec = _curve_terms(hist)
        counts = prob.shared(rows, idx)
        rel = counts > 0
        pn, rn = _precision_recall_at(rel, hist[:, 1].sum(1), ns_list)
        # AP, ACG, NDCG, WAP of each query (for a deep k, from the ranking pass below); mAP is
        # summed chunk by chunk, as mean_average_precision sums it: the same bits as training's mAP.
        per_query = np.zeros((len(rel), 4)) if deep else graded_terms(counts[:, :k], ideal[rows])
        return per_query, prec.sum(0), rec.sum(0), pn, rn, hist, float(np.ascontiguousarray(per_query[:, 0]).sum())

    if depth and not prob.caps_count_all(depth):  # one pass: top-k and histograms
        parts = prob.topk(depth, prob.caps(depth), sums, hist_too=True)
    elif depth:  # exact caps would count every item anyway: count once, with relevance
        hist = prob.histograms(True)
        parts = prob.topk(depth, prob.caps(depth, hist), lambda rows, idx, dist: sums(rows, idx, dist, hist[rows]))
    else:  # no top-k needed: the histogram pass alone
        hist = prob.histograms(True)
        parts = [sums(slice(0, prob.num_queries), np.zeros((prob.num_queries, 0), np.int64), None, hist)]
    nq = prob.num_queries
    c_prec, c_rec, p_at, r_at, ap_sum = (sum(p[i] for p in parts) for i in (1, 2, 3, 4, 6))
    # The graded metrics' per-query values are summed once, in query order: the same bits whatever the chunks.
    per_query, hist = (np.concatenate([p[i] for p in parts]) for i in (0, 5))
    if deep:
        per_query = prob.ranking_ap(k, hist, ideal)
        ap_sum = np.ascontiguousarray(per_query[:, 0]).sum()
    ap_k = float(ap_sum / nq)
    _, acg_k, ndcg_k, wap_k = (float(v) for v in per_query.sum(0) / nq)
    tie = float(tie_aware_ap(hist, k, run=prob.run).sum() / nq)
    curve_p = (c_prec / nq).tolist()
    return {
        "map": ap_k,
        "topk": k,
        "acg": acg_k,
        "ndcg": ndcg_k,
        "weighted_map": wap_k,
        "tie_aware_map": tie,
        "precision_at_n": {"n": ns_list, "precision": (p_at / nq).tolist()},
        "recall_at_n": {"n": ns_list, "recall": (r_at / nq).tolist()},
        "pr_curve": {"radius": list(range(k1)), "precision": curve_p, "recall": (c_rec / nq).tolist()},
        "precision_radius2": curve_p[min(2, prob.num_bits)],
    }
