"""The engine's passes, assembled: sampled bounds, exact top-k, histograms, whole-ranking AP.

A stable top-k (ties in database order) is found in one pass over the database: a per-query
distance cap estimated from a strided database sample (with a safety margin) and a running bound
(``_consumers.TopK``) keep about k candidates per query; a query whose cap fell short (fewer than
k candidates) is redone exactly, with an exact cap (from a histogram, when one is known) or none.
The results never depend on the estimates, only the speed does. Deep rankings (more than
``1 / _SELECT_SHARE`` of the database, or the whole of it) are scored without storing them: a
histogram pass, then :class:`~._consumers.RankAP` (or :class:`~._graded.RankGraded`, which adds the
graded metrics).

Part of :mod:`hyp2.metrics`, the evaluation protocol of HyP² Loss (Xu et al., "HyP² Loss: Beyond
Hypersphere Metric Space for Multi-label Image Retrieval", ACM MM 2022, Sec. 4.1).
"""
from __future__ import annotations

import threading
from typing import Any, Callable

import numpy as np
import torch

from ._consumers import ENTRY_BYTES, Both, Histogram, RankAP, TopK, pick_topk, stable_order
from ._engine import Distances, LabelOperands
from ._graded import RankGraded, label_histogram, shared_counts
from ._inputs import CodeSource, LabelSource
from ._scan import Unit, run_parallel, run_unit, scan
from .options import EngineOptions

_SELECT_SHARE = 8  # rankings deeper than N / 8 are scored by RankAP instead of candidates
_REDUCE_ROWS = 128  # queries whose (rows, k) top-k arrays are scored at once


class Problem:
    """Validated queries and database (and labels), and the engine over them."""

    def __init__(self, query_codes: Any, db_codes: Any, num_bits: int | None, options: EngineOptions):
        queries = CodeSource(query_codes, "query_codes", num_bits)
        db = CodeSource(db_codes, "db_codes", num_bits)
        if queries.num_bits != db.num_bits:
            raise ValueError(f"query codes have {queries.num_bits} bits but database codes have "
                             f"{db.num_bits}; both must have the same K")
        if db.rows == 0:
            raise ValueError("db_codes is empty: the database must hold at least one item")
        if db.num_bits > 2**24:
            raise ValueError(f"codes with {db.num_bits} bits are not supported (max 2**24)")
        device = next((s.device for s in (queries, db) if s.device.type != "cpu"), torch.device("cpu"))
        self.options = options
        self.db = db
        self.eng = Distances(queries, device, options)
        self.num_bits = db.num_bits
        self.labels: LabelSource | None = None
        self.lab_ops: LabelOperands | None = None

    @property
    def num_queries(self) -> int:
        return self.eng.num_queries

    def add_labels(self, query_labels: Any, db_labels: Any) -> None:
        if self.num_queries == 0:
            raise ValueError("query_codes is empty: a mean over no query is undefined")
        ql = LabelSource(query_labels, "query_labels", self.num_queries)
        dl = LabelSource(db_labels, "db_labels", self.db.rows)
        if ql.classes != dl.classes:
            raise ValueError(f"query labels have {ql.classes} classes but database labels have {dl.classes}")
        self.labels = dl
        self.q_masks = ql.masks()
        self.lab_ops = LabelOperands(ql.block(device=self.eng.device), self.eng)
        self._db_masks: np.ndarray | None = None
        self._lock = threading.Lock()

    def db_masks(self) -> np.ndarray:
        """``(N, W)`` int64 label bitmasks of the database (8 bytes per item and 64 classes)."""
        with self._lock:  # built once, by the first worker that needs it
            if self._db_masks is None:
                self._db_masks = self.labels.masks()
        return self._db_masks

    def relevant(self, rows: slice, idx: np.ndarray) -> np.ndarray:
        """``(r, L)`` database indices -> ``(r, L)`` bool relevance to the queries ``rows``."""
        if idx.shape[1] == 0:  # a pass that needs no top-k: no label masks to build
            return np.zeros(idx.shape, dtype=bool)
        masks = self.db_masks()
        q = self.q_masks[rows]
        out = np.zeros(idx.shape, dtype=bool)
        for w in range(q.shape[1]):
            out |= (masks[:, w].take(idx) & q[:, w: w + 1]) != 0
        return out

    def shared(self, rows: slice, idx: np.ndarray) -> np.ndarray:
        """``(r, L)`` database indices -> ``(r, L)`` labels each shares with its query (``rows``)."""
        if idx.shape[1] == 0:
            return np.zeros(idx.shape, dtype=np.uint8)
        return shared_counts(self.q_masks[rows], self.db_masks(), idx)

    def run(self, fn: Callable[[Any], Any], items) -> list:
        """``[fn(x) for x in items]`` on the CPU worker threads (numpy work on per-query arrays)."""
        return run_parallel(fn, list(items), self.options.workers_for(torch.device("cpu")))

    def ideal(self) -> np.ndarray:
        """``(Q, C+1)`` histograms of the shared labels r over the whole database (for IDCG)."""
        return label_histogram(self.q_masks, self.db_masks(), self.labels.classes, run=self.run)

    def histograms(self, with_rel: bool, db: CodeSource | None = None) -> np.ndarray:
        """``(Q, K+1)`` counts per distance, or ``(Q, 2, K+1)`` [irrelevant, relevant] with ``with_rel``,
        over ``db`` (default: the database; a sample of it for the caps)."""
        eng, db = self.eng, db or self.db
        cons = Histogram(eng, self.lab_ops if with_rel else None)
        parts = scan(eng, db, cons, per_query_bytes=16 * cons.bins, labels=self.labels, lab_ops=self.lab_ops,
                     group_fn=lambda rows, results: sum(results))
        return np.concatenate(parts) if parts else cons.finish(cons.start(0))

    def caps_count_all(self, depth: int) -> bool:
        """Whether :meth:`caps` counts every item (a small database is its own sample)."""
        return depth < self.db.rows <= 2 * self.options.sample_size

    def caps(self, depth: int, hist: np.ndarray | None = None) -> np.ndarray:
        """``(Q,)`` distance caps expected to hold each query's top ``depth``: exact for small N,
        or from ``hist`` (the ``(Q, 2, K+1)`` counts of :meth:`histograms`) when given."""
        n, k, opts = self.db.rows, self.num_bits, self.options
        if depth >= n:
            return np.full(self.num_queries, k, dtype=np.int64)
        if hist is not None:
            return thresholds(hist.sum(1), depth)
        if self.caps_count_all(depth):  # the whole database is the sample: exact
            return thresholds(self.histograms(False), depth)
        stride = n // opts.sample_size
        sample = self.db.every(stride)
        mean = depth * sample.rows / n
        need = mean + opts.sample_z * np.sqrt(mean) + 1.0
        return thresholds(self.histograms(False, db=sample), need).clip(max=k)

    def topk(self, depth: int, caps: np.ndarray, reduce: Callable[..., Any], hist_too: bool = False) -> list:
        """``reduce(rows, indices (r, depth), distances (r, depth))`` for every chunk of at most
        ``_REDUCE_ROWS`` queries, in query order (the per-chunk arrays bound the memory).

        With ``hist_too`` the same pass also counts the [irrelevant, relevant] items at each
        distance and ``reduce`` gets them as a fourth argument ``(r, 2, K+1)`` (and rows whose cap
        fell short are redone with the exact cap it gives).
        """
        eng = self.eng
        workers = self.options.workers_for(eng.device)
        # Half the budget for kept candidates, half for compacting them and the final sort.
        budget = max(1, self.options.memory_bytes // (2 * workers * ENTRY_BYTES))
        cons = TopK(eng, depth, caps, budget, self.db.rows)
        per_query = 3 * ENTRY_BYTES * min(depth + 1, self.db.rows)
        if hist_too:
            hist = Histogram(eng, self.lab_ops)
            cons, per_query = Both(hist, cons), per_query + 16 * hist.bins

        def group(rows: slice, results: list) -> list:
            hist = sum(r[0] for r in results) if hist_too else None
            out = []
            for r0, r1, (row, idx, dist) in self._merge([r[1] for r in results] if hist_too else results):
                counts = np.bincount(row, minlength=r1 - r0)
                redo = self._redo(rows.start + r0 + np.flatnonzero(counts < depth), depth,
                                  None if hist is None else hist[r0:r1][counts < depth])
                for c0 in range(0, r1 - r0, _REDUCE_ROWS):
                    c1 = min(c0 + _REDUCE_ROWS, r1 - r0)
                    lo, hi = np.searchsorted(row, [c0, c1])
                    top, top_d, _ = pick_topk(row[lo:hi] - c0, idx[lo:hi], dist[lo:hi], c1 - c0, depth)
                    for i in range(c0, c1):
                        if rows.start + r0 + i in redo:
                            top[i - c0], top_d[i - c0] = redo[rows.start + r0 + i]
                    chunk = slice(rows.start + r0 + c0, rows.start + r0 + c1)
                    out.append(reduce(chunk, top, top_d) if hist is None else
                               reduce(chunk, top, top_d, hist[r0 + c0:r0 + c1]))
            return out

        parts = scan(eng, self.db, cons, per_query_bytes=per_query, split_db=True, labels=self.labels,
                     lab_ops=self.lab_ops, group_fn=group)
        return [x for part in parts for x in part]

    def _merge(self, ranges: list[list]) -> list:
        """One group's per-tile candidates from its database ranges (see TopK.finish), merged into
        one tile. Ranges split the database only for a few queries, so the merge is small."""
        if len(ranges) == 1:
            return ranges[0]
        n_rows = ranges[0][-1][1]
        parts = [(row.astype(np.int64) + r0, idx, dist) for tiles in ranges for r0, _, (row, idx, dist) in tiles]
        row, idx, dist = (np.concatenate(a) for a in zip(*parts))  # ranges in database order
        # A stable sort by (row, distance) keeps the index order.
        order = stable_order(row, dist, n_rows, self.num_bits + 1)
        return [(0, n_rows, (row.take(order), idx.take(order), dist.take(order)))]

    def _redo(self, bad: np.ndarray, depth: int, hist: np.ndarray | None) -> dict:
        """Exact top ``depth`` of the queries ``bad`` whose cap fell short: {query: (idx, dist)}.

        With their histograms the exact cap is known; without, there is none (the running bound
        alone is exact).
        """
        if not len(bad):
            return {}
        caps = thresholds(hist.sum(1), depth) if hist is not None else \
            np.full(len(bad), self.num_bits, dtype=np.int64)
        sub = self.eng.subset(bad)
        cons = TopK(sub, depth, caps, max(1, self.options.memory_bytes // (2 * ENTRY_BYTES)), self.db.rows)
        out = {}
        for r0, r1, cands in run_unit(sub, self.db, cons, Unit(slice(0, len(bad)), 0, self.db.rows)):
            top, top_d, ok = pick_topk(*cands, r1 - r0, depth)
            assert ok.all(), "an exact top-k bound fell short"
            out.update({int(bad[r0 + i]): (top[i], top_d[i]) for i in range(r1 - r0)})
        return out

    def ranking_ap(self, depth: int, hist: np.ndarray | None = None, ideal: np.ndarray | None = None,
                   ) -> np.ndarray:
        """``(Q,)`` AP@depth of every query through :class:`RankAP` (any depth, no stored ranking);
        with ``ideal`` (:meth:`ideal`), ``(Q, 4)`` AP, ACG, NDCG and WAP through :class:`RankGraded`."""
        if hist is None:
            hist = self.histograms(True)
        per_query = 48 * (self.num_bits + 1)
        if ideal is None:
            cons = RankAP(self.eng, self.lab_ops, hist, depth)
        else:
            cons = RankGraded(self.eng, self.lab_ops, hist, depth, ideal)
            per_query += 16 * (self.num_bits + 1)
        parts = scan(self.eng, self.db, cons, per_query_bytes=per_query, split_db=False,
                     labels=self.labels, lab_ops=self.lab_ops, group_fn=lambda rows, results: results[0])
        return np.concatenate(parts)

    def deep(self, depth: int) -> bool:
        """Whether a ranking of ``depth`` is scored by RankAP rather than by top-k candidates."""
        return depth * _SELECT_SHARE > self.db.rows


def thresholds(counts: np.ndarray, need: float | np.ndarray) -> np.ndarray:
    """Smallest distance t whose cumulative count reaches ``need`` (K+1 when none): ``(Q,)``."""
    return (counts.cumsum(1) < need).sum(1).astype(np.int64)
