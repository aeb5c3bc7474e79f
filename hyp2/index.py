"""Exact top-k Hamming search over packed binary codes: the index behind ``hyp2.search``.

Retrieval as in HyP² Loss (Xu et al., "HyP² Loss: Beyond Hypersphere Metric Space for Multi-label
Image Retrieval", ACM MM 2022, Sec. 4.1): a K-bit code is the sign of the network's K outputs (0
counts as +1) and the database is ranked by Hamming distance to the query's code.

**Tie rule.** Ascending Hamming distance; items at equal distance in database order (the smaller
index first). This is the ranking :func:`hyp2.metrics.hamming_ranking` and the evaluation use, and
it does not depend on whether faiss is installed.

**Engines.** With faiss installed (``pip install faiss-cpu``; ``use_faiss=None`` uses it when it
imports), an ``IndexBinaryFlat`` finds each query's k nearest items, exactly, in its own order of
ties. Only the boundary tie group can differ from the tie rule: every item closer than the k-th
distance T is in faiss's answer, but faiss may keep other items at distance T than the first ones
in database order. Asking for k + 1 neighbours shows which queries are affected (the (k+1)-th is
at T too); for those, a range search lists every item at distance at most T, and a stable sort by
(distance, index) keeps the first k. Without faiss, :func:`hyp2.metrics.hamming_ranking` (exact,
stable, one pass over the database) answers. Both give identical results.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .metrics import hamming_ranking, pack_codes
from .validate import check_int

__all__ = ["CodeIndex", "Hit"]


@dataclass(frozen=True)
class Hit:
    """One retrieved database item: its id (its index when the index has no ids), Hamming
    distance, label names, and whether it shares a label with the query (None when the query's
    labels are unknown, e.g. an uploaded image)."""

    id: str
    distance: int
    labels: tuple[str, ...]
    relevant: bool | None


def _import_faiss(use_faiss: bool | None):
    """The faiss module, or None; ``use_faiss=True`` without faiss is a ValueError."""
    if use_faiss is False:
        return None
    try:
        import faiss
    except ImportError:
        if use_faiss:
            raise ValueError("use_faiss=True but faiss is not installed; pip install faiss-cpu, "
                             "or pass use_faiss=None to search without it") from None
        return None
    return faiss


class CodeIndex:
    """Packed K-bit codes with exact top-k Hamming search (tie rule: the module docstring).

    Args:
        codes: ``(N, ceil(num_bits / 8))`` uint8 packed codes (numpy or torch), in
            :func:`hyp2.metrics.pack_codes` layout; N >= 1. Not copied when already a contiguous
            uint8 numpy array.
        num_bits: K.
        ids: optional N item identifiers (None: items are known by their index). labels:
            optional ``(N, C)`` 0/1 labels. classes: optional C class names. meta: optional
            metadata dict.
        use_faiss: None uses faiss when it imports; True requires it; False never uses it.

    Raises:
        ValueError: codes of the wrong dtype or shape, an empty database, or inconsistent
            ids / labels / classes.
    """

    def __init__(self, codes: Any, num_bits: int, *, ids: Sequence[str] | None = None,
                 labels: Any = None, classes: Sequence[str] | None = None,
                 meta: dict[str, Any] | None = None, use_faiss: bool | None = None):
        self.num_bits = check_int("CodeIndex", "num_bits", num_bits, minimum=1)
        self.nbytes = (self.num_bits + 7) // 8
        arr = codes.detach().cpu().numpy() if isinstance(codes, torch.Tensor) else np.asarray(codes)
        if arr.dtype != np.uint8 or arr.ndim != 2 or arr.shape[1] != self.nbytes:
            raise ValueError(f"codes must be packed uint8 of shape (N, ceil({self.num_bits}/8)) = (N, "
                             f"{self.nbytes}), got {arr.dtype} {arr.shape}; pack ±1 codes with "
                             f"hyp2.metrics.pack_codes")
        if arr.shape[0] == 0:
            raise ValueError("codes is empty: the index needs at least one database item")
        self.codes = np.ascontiguousarray(arr)
        n = len(self.codes)
        self.ids = None if ids is None else np.asarray(ids)  # None: items are known by their index
        if self.ids is not None and self.ids.shape != (n,):
            raise ValueError(f"{len(self.ids)} ids for {n} codes")
        self.labels = None if labels is None else np.asarray(labels)
        if self.labels is not None and (self.labels.ndim != 2 or len(self.labels) != n):
            raise ValueError(f"labels must be (N={n}, C), got shape {self.labels.shape}")
        self.classes = tuple(str(c) for c in classes) if classes is not None else None
        if self.classes is not None and self.labels is not None and len(self.classes) != self.labels.shape[1]:
            raise ValueError(f"{len(self.classes)} classes for labels with {self.labels.shape[1]} columns")
        self.meta = dict(meta or {})
        self._faiss = _import_faiss(use_faiss)
        self._faiss_index = None

    @classmethod
    def from_database(cls, db, use_faiss: bool | None = None) -> "CodeIndex":
        """An index over a :class:`hyp2.codes.CodeDatabase` (its codes, ids, labels, classes, meta)."""
        return cls(db.codes, db.num_bits, ids=db.ids, labels=db.labels, classes=db.classes, meta=db.meta,
                   use_faiss=use_faiss)

    @classmethod
    def load(cls, path: str | Path, use_faiss: bool | None = None) -> "CodeIndex":
        """An index over a codes file written by ``--export_codes`` (read by :func:`hyp2.codes.load_codes`;
        a missing or broken file is a :class:`hyp2.errors.UserError`)."""
        from .codes import load_codes

        return cls.from_database(load_codes(path), use_faiss=use_faiss)

    def __len__(self) -> int:
        return len(self.codes)

    @property
    def uses_faiss(self) -> bool:
        return self._faiss is not None

    def search(self, codes: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest database items of each query, exactly, ties in database order.

        Args:
            codes: ``(Q, K)`` ±1 / real (sign, 0 -> +1) / bool codes, torch or numpy, or
                ``(Q, ceil(K/8))`` uint8 packed codes.
            k: results per query (a positive int); at most N are returned.
        Returns:
            ``(indices, distances)``: ``(Q, min(k, N))`` int64 database indices in rank order and
            their ``(Q, min(k, N))`` int32 Hamming distances.
        Raises:
            ValueError: a bad k, or codes of another width than the index's.
        """
        depth = min(check_int("CodeIndex.search", "k", k, minimum=1), len(self))
        packed = self._pack(codes)
        if len(packed) == 0:
            return np.zeros((0, depth), np.int64), np.zeros((0, depth), np.int32)
        if self._faiss is None:
            return hamming_ranking(packed, self.codes, depth, num_bits=self.num_bits)
        return self._search_faiss(packed, depth)

    def hits(self, codes: Any, k: int, query_labels: Any = None) -> list[tuple[Hit, ...]]:
        """:meth:`search`, each result as a :class:`Hit` (id, distance, label names); with the
        queries' ``(Q, C)`` 0/1 ``query_labels``, each hit also says whether it is relevant. The one
        ranking behind ``hyp2.search``, the search page and the galleries."""
        indices, dists = self.search(codes, k)
        if query_labels is None or self.labels is None:
            relevant = np.full(indices.shape, None, dtype=object)
        else:
            relevant = (self.labels.astype(bool)[indices]
                        & np.asarray(query_labels).astype(bool)[:, None, :]).any(axis=2)
        return [tuple(Hit(self._id(j), int(d), self._label_names(j), None if ok is None else bool(ok))
                      for j, d, ok in zip(indices[r], dists[r], relevant[r])) for r in range(len(indices))]

    def _id(self, j: int) -> str:
        return str(self.ids[j]) if self.ids is not None else str(int(j))

    def _label_names(self, j: int) -> tuple[str, ...]:
        if self.labels is None:
            return ()
        columns = np.flatnonzero(self.labels[j])
        return tuple(self.classes[c] for c in columns) if self.classes is not None else tuple(map(str, columns))

    def _pack(self, codes: Any) -> np.ndarray:
        """Query codes -> ``(Q, nbytes)`` packed uint8, checking the width."""
        dtype = codes.dtype if isinstance(codes, (np.ndarray, torch.Tensor)) else None
        if dtype in (np.uint8, torch.uint8):
            packed = codes.detach().cpu().numpy() if isinstance(codes, torch.Tensor) else codes
            if packed.ndim != 2 or packed.shape[1] != self.nbytes:
                raise ValueError(f"packed query codes must be (Q, {self.nbytes}) uint8 for {self.num_bits}-bit "
                                 f"codes, got shape {packed.shape}; pass ±1, real or bool codes unpacked")
            if self.num_bits % 8 and (packed[:, -1] & ((1 << (8 - self.num_bits % 8)) - 1)).any():
                raise ValueError("packed query codes have bits set past bit K in their last byte")
            return np.ascontiguousarray(packed)
        shape = tuple(codes.shape) if hasattr(codes, "shape") else np.shape(codes)
        if len(shape) != 2 or shape[1] != self.num_bits:
            raise ValueError(f"query codes must be (Q, K={self.num_bits}), got shape {shape}")
        return pack_codes(codes)

    def _faiss_flat(self):
        if self._faiss_index is None:
            # faiss counts every bit of the last byte: the padding bits past K must be 0 on both
            # sides. Queries are checked (_pack); database rows are cleared here, on a copy.
            codes, pad = self.codes, (1 << (-self.num_bits % 8)) - 1
            if pad and (codes[:, -1] & pad).any():
                codes = codes.copy()
                codes[:, -1] &= 0xFF ^ pad
            index = self._faiss.IndexBinaryFlat(8 * self.nbytes)
            index.add(codes)
            self._faiss_index = index
        return self._faiss_index

    def _search_faiss(self, packed: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        """faiss's k nearest, with each query's boundary tie group put in database order."""
        index = self._faiss_flat()
        n = len(self)
        dist, idx = index.search(packed, min(depth + 1, n))
        out_i, out_d = idx[:, :depth].astype(np.int64), dist[:, :depth].astype(np.int32)
        # Unambiguous rows (the (k+1)-th item is farther, or there is none): only the order of the
        # k items needs fixing.
        order = np.lexsort((out_i, out_d), axis=-1)  # depth >= 1: search checks k and N
        out_i, out_d = np.take_along_axis(out_i, order, 1), np.take_along_axis(out_d, order, 1)
        if depth < n:
            t = out_d[:, -1]
            for radius in np.unique(t[dist[:, depth] == t]):
                rows = np.flatnonzero((dist[:, depth] == t) & (t == radius))
                out_i[rows], out_d[rows] = self._first_within(index, packed[rows], int(radius), depth)
        return out_i, out_d

    @staticmethod
    def _first_within(index, packed: np.ndarray, radius: int, depth: int) -> tuple[np.ndarray, np.ndarray]:
        """Stable top ``depth`` among every item at distance <= ``radius`` (faiss range search)."""
        lims, dist, idx = index.range_search(packed, radius + 1)  # faiss returns distance < radius + 1
        out_i = np.empty((len(packed), depth), np.int64)
        out_d = np.empty((len(packed), depth), np.int32)
        for r in range(len(packed)):
            d, i = dist[lims[r]:lims[r + 1]].astype(np.int64), idx[lims[r]:lims[r + 1]].astype(np.int64)
            top = np.lexsort((i, d))[:depth]
            out_i[r], out_d[r] = i[top], d[top]
        return out_i, out_d
