"""What the database scan computes on each (query tile, database block): the per-pair work.

Each consumer keeps per-query state for one group of queries and is fed, block after block in
database order, the ``(r, B)`` distance keys (and, when it asks, the 0/1 relevance) of a tile. The
per-pair steps have a numpy form (CPU) and a torch form (GPU; runnable on a CPU through
``EngineOptions(backend="torch")``); the per-query and per-candidate steps are numpy.

* :class:`Histogram` counts the items at each distance (and relevance): the radius metrics, the
  exact top-k thresholds and the ranks of the whole-ranking AP come from these counts.
* :class:`TopK` keeps each query's stable top ``depth`` (distance, then database index) with a
  running bound: an item is kept only while fewer than ``depth`` items at most as far have been
  seen before it (those precede it in the ranking, so it can never be in the top ``depth``). The
  bound starts at a cap (from a database sample, or K); candidates are compacted to the first
  ``depth`` of each query when they outgrow the memory budget.
* :class:`RankAP` sums AP terms over the whole ranking (or a deep top-k) without storing it: with
  the full histogram known, an item's rank is (items closer than it) + (its position among the
  items at its distance, in database order), found by a stable counting sort of each block row.
* :class:`Dense` writes distances; :class:`RelevantCount` counts relevant items.

Part of :mod:`hyp2.metrics`, the evaluation protocol of HyP² Loss (Xu et al., "HyP² Loss: Beyond
Hypersphere Metric Space for Multi-label Image Retrieval", ACM MM 2022, Sec. 4.1).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ._engine import Distances, LabelOperands, Scratch, int_dtype

ENTRY_BYTES = 16  # a stored top-k candidate: row 4 + index 4 (8 past 2**31 items) + distance 2 B
_RANK_ROWS = 32  # query rows per RankAP step on numpy (keeps its per-item arrays in the cache)


def divide_or_zero(num: Any, den: Any) -> np.ndarray:
    """``num / den`` as float64 (broadcast), 0 where ``den`` is 0: a ratio over nothing counts 0."""
    out = np.zeros(np.broadcast_shapes(np.shape(num), np.shape(den)))
    return np.divide(num, den, out=out, where=np.asarray(den) > 0)


def _row_offsets(n: int, width: int, like: torch.Tensor) -> torch.Tensor:
    return torch.arange(n, device=like.device, dtype=torch.int64).mul_(width).unsqueeze(1)


def _bincount_rows(keys: Any, bins: int, numpy: bool) -> np.ndarray:
    """``(r, B)`` integer keys in ``[0, bins)`` -> ``(r, bins)`` int64 counts of each row."""
    if numpy:
        return np.stack([np.bincount(row, minlength=bins) for row in keys]) if len(keys) else \
            np.zeros((0, bins), np.int64)
    flat = keys.to(torch.int64) + _row_offsets(keys.shape[0], bins, keys)
    return torch.bincount(flat.view(-1), minlength=keys.shape[0] * bins).view(-1, bins).cpu().numpy()


class Histogram:
    """Counts per query of the items at each distance: ``(r, K+1)``, or ``(r, 2, K+1)`` of
    [irrelevant, relevant] items when ``with_rel``."""

    needs_keys = True

    def __init__(self, eng: Distances, lab_ops: LabelOperands | None = None):
        self.eng = eng
        self.lab_ops = lab_ops
        with_rel = lab_ops is not None
        self.needs_rel = with_rel
        self.bins = (eng.num_bits + 1) * (2 if with_rel else 1)

    def start(self, n_rows: int, first_row: int = 0) -> np.ndarray:
        return np.zeros((n_rows, self.bins), dtype=np.int64)

    def hist_keys(self, keys: torch.Tensor, rel: torch.Tensor | None, scratch: Scratch) -> Any:
        """``(r, B)`` integer keys ``distance + (K+1) * relevant`` (numpy or torch, as the engine)."""
        eng, k1 = self.eng, self.eng.num_bits + 1
        kdt = int_dtype(self.bins - 1, signed=True)  # signed: numpy adds int8 relevance terms to it
        out = eng.decode(keys, out=scratch.get("hist", tuple(keys.shape), kdt))
        if rel is None:
            return out.numpy() if eng.numpy else out
        pos = self.lab_ops.positive(rel)
        if not eng.numpy:
            return out.add_(pos, alpha=k1)
        key = out.numpy()
        if k1 < 128:  # int8 products: the cheapest numpy form
            key += np.multiply(pos.view(np.int8), np.int8(k1), out=scratch.get("rel8", pos.shape, torch.int8).numpy())
        else:
            key += pos * key.dtype.type(k1)
        return key

    def tile(self, st: np.ndarray, r0: int, r1: int, b0: int, keys, rel, scratch: Scratch) -> None:
        st[r0:r1] += _bincount_rows(self.hist_keys(keys, rel, scratch), self.bins, self.eng.numpy)

    def finish(self, st: np.ndarray) -> np.ndarray:
        return st if not self.needs_rel else st.reshape(len(st), 2, -1)


def stable_order(row: np.ndarray, dist: np.ndarray, n_rows: int, k1: int) -> np.ndarray:
    """Permutation sorting entries by (row, distance), equal entries kept in their order (radix)."""
    if n_rows * k1 <= 2**16:
        key = row.astype(np.uint16) * np.uint16(k1)
        key += dist.astype(np.uint16)
        return np.argsort(key, kind="stable")
    first = np.argsort(dist, kind="stable")  # LSD: distance, then row, both stable
    rows = row[first]
    return first[np.argsort(rows.astype(np.uint16) if n_rows <= 2**16 else rows, kind="stable")]


class _Candidates:
    """One query group's top-k state. Candidates are kept per query tile, block after block, as
    (row within the tile: uint16, database index, distance) arrays."""

    def __init__(self, lim: np.ndarray, k1: int, budget: int):
        self.lim = lim  # (r,) int64: items at distance <= lim[i] are still kept for row i
        self.counts = np.zeros((len(lim), k1), dtype=np.int64)  # kept items per distance
        self.parts: dict[int, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}  # tile start -> parts
        self.ends: dict[int, int] = {}  # tile start -> tile end
        self.sorted: set[int] = set()  # tiles whose single part is sorted and compacted
        self.size = 0
        self.budget = budget


class TopK:
    """Stable top-``depth`` of each query (see the module docstring)."""

    needs_keys = True
    needs_rel = False

    def __init__(self, eng: Distances, depth: int, caps: np.ndarray, budget_entries: int, n_db: int):
        self.eng = eng
        self.depth = depth
        self.caps = caps  # (Q,) int64 per query of the engine
        self.budget = budget_entries  # candidates kept before compacting
        self.idx_dtype = np.int32 if n_db < 2**31 else np.int64
        self.dist_dtype = torch.empty(0, dtype=int_dtype(eng.num_bits)).numpy().dtype

    def start(self, n_rows: int, first_row: int = 0) -> _Candidates:
        return _Candidates(self.caps[first_row:first_row + n_rows].copy(), self.eng.num_bits + 1, self.budget)

    def tile(self, st: _Candidates, r0: int, r1: int, b0: int, keys, rel, scratch: Scratch) -> None:
        eng = self.eng
        enc = eng.encode(st.lim[r0:r1])
        width = keys.shape[1]
        if eng.numpy:
            kn = keys.numpy()
            mask = scratch.get("mask", tuple(keys.shape), torch.bool).numpy()
            np.less_equal(kn, enc.numpy()[:, None], out=mask)
            flat = np.flatnonzero(mask)
            dist = eng.decode(torch.from_numpy(kn.reshape(-1).take(flat))).numpy()
        else:
            flat_t = torch.nonzero((keys <= enc.unsqueeze(1)).view(-1)).squeeze(1)
            dist = eng.decode(keys.reshape(-1)[flat_t]).cpu().numpy()
            flat = flat_t.cpu().numpy()
        if flat.size:  # flat is ascending: row by row (a repeat is cheaper than a division)
            per_row = np.diff(np.searchsorted(flat, np.arange(r1 - r0 + 1) * width))
            row = np.repeat(np.arange(r1 - r0, dtype=np.uint16), per_row)
            idx = (flat - np.repeat(np.arange(r1 - r0) * width - b0, per_row)).astype(self.idx_dtype)
            self._add(st, row, idx, dist.astype(self.dist_dtype), r0, r1)

    def _add(self, st: _Candidates, row, idx, dist, r0: int, r1: int) -> None:
        k1 = self.eng.num_bits + 1
        st.parts.setdefault(r0, []).append((row, idx, dist))
        st.ends[r0] = r1
        st.sorted.discard(r0)
        st.size += len(row)
        counts = st.counts[r0:r1]
        counts += np.bincount(row.astype(np.int64) * k1 + dist, minlength=(r1 - r0) * k1).reshape(-1, k1)
        # The depth-th nearest distance T seen so far: later items need a distance < T.
        t = (counts.cumsum(1) < self.depth).sum(1)
        np.minimum(st.lim[r0:r1], t - 1, out=st.lim[r0:r1])
        if st.size > st.budget:
            for first in list(st.parts):
                self._compact(st, first, keep=True)
            st.budget = max(st.budget, 2 * st.size)  # never compact again for a few entries

    def _compact(self, st: _Candidates, r0: int, keep: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sort the tile's candidates by (row, distance, index), keeping each row's first
        ``depth`` when ``keep`` (when finishing, :func:`pick_topk` reads only those anyway)."""
        parts = st.parts.pop(r0)
        if r0 in st.sorted:
            st.parts[r0] = parts
            return parts[0]
        row, idx, dist = (np.concatenate(a) for a in zip(*parts)) if len(parts) > 1 else parts[0]
        del parts
        order = stable_order(row, dist, st.ends[r0] - r0, self.eng.num_bits + 1)
        row, idx, dist = row.take(order), idx.take(order), dist.take(order)
        del order
        if keep:
            starts = np.searchsorted(row, np.arange(st.ends[r0] - r0))
            kept = np.arange(len(row)) - starts[row] < self.depth
            st.size -= len(row) - int(kept.sum())
            row, idx, dist = row[kept], idx[kept], dist[kept]
        st.parts[r0] = [(row, idx, dist)]
        st.sorted.add(r0)
        return row, idx, dist

    def finish(self, st: _Candidates) -> list[tuple[int, int, tuple[np.ndarray, np.ndarray, np.ndarray]]]:
        """Per query tile ``(first row, end row, (row within the tile, index, distance))``, sorted by
        (row, distance, index): every row's first ``depth`` candidates come first. Tiles are sorted
        one at a time, each replacing its parts, so the peak memory stays near the candidates'."""
        out, done = [], 0
        empty = (np.zeros(0, np.uint16), np.zeros(0, self.idx_dtype), np.zeros(0, self.dist_dtype))
        for r0 in sorted(st.parts):
            if r0 > done:  # rows without any candidate (their cap fell short everywhere)
                out.append((done, r0, empty))
            out.append((r0, st.ends[r0], self._compact(st, r0, keep=False)))
            del st.parts[r0]
            done = st.ends[r0]
        if done < len(st.lim):
            out.append((done, len(st.lim), empty))
        return out


def pick_topk(row: np.ndarray, idx: np.ndarray, dist: np.ndarray, n_rows: int, depth: int,
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted candidates -> ``(n_rows, depth)`` indices and distances, and ok ``(n_rows,)``: rows
    with fewer than ``depth`` candidates are not ok and hold junk."""
    counts = np.bincount(row, minlength=n_rows)
    starts = np.cumsum(counts) - counts
    take = starts[:, None] + np.arange(depth)
    np.minimum(take, max(len(row) - 1, 0), out=take)
    if not len(row):
        return np.zeros((n_rows, depth), np.int64), np.zeros((n_rows, depth), np.int32), counts >= depth
    return idx.take(take).astype(np.int64, copy=False), dist.take(take).astype(np.int32), counts >= depth


class RankAP:
    """Sum of AP terms of every relevant item ranked within ``depth``, given the full histogram.

    Args:
        hist: ``(Q, 2, K+1)`` [irrelevant, relevant] counts per distance of every query.
        depth: ranking depth k.
    """

    needs_keys = True
    needs_rel = True
    wants_counts = False  # a subclass setting it gets each relevant item's shared labels in _more

    def __init__(self, eng: Distances, lab_ops: LabelOperands, hist: np.ndarray, depth: int):
        self.eng = eng
        self.lab_ops = lab_ops
        total = hist.sum(1)
        cum = total.cumsum(1)
        self.below_all = cum - total  # items closer than each distance
        self.below_rel = hist[:, 1].cumsum(1) - hist[:, 1]
        self.depth = depth
        self.n_db = int(cum[0, -1]) if len(cum) else 0

    def start(self, n_rows: int, first_row: int = 0) -> dict[str, Any]:
        k1 = self.eng.num_bits + 1
        sl = slice(first_row, first_row + n_rows)
        return {"rows": sl, "seen_all": np.zeros((n_rows, k1), np.int64),
                "seen_rel": np.zeros((n_rows, k1), np.int64),
                "ap": np.zeros(n_rows), "hits": np.zeros(n_rows, np.int64)}

    def tile(self, st: dict[str, Any], r0: int, r1: int, b0: int, keys, rel, scratch: Scratch) -> None:
        # Sub-tiles of a few rows keep the per-item arrays in the CPU cache.
        step = _RANK_ROWS if self.eng.numpy else r1 - r0
        for s0 in range(r0, r1, step):
            s1 = min(s0 + step, r1)
            self._rows(st, s0, s1, keys[s0 - r0:s1 - r0], rel[s0 - r0:s1 - r0], scratch)

    def _rows(self, st: dict[str, Any], r0: int, r1: int, keys, rel, scratch: Scratch) -> None:
        eng = self.eng
        k1, r, width = eng.num_bits + 1, r1 - r0, keys.shape[1]
        # uint8 distances up to K = 255: numpy's stable sort of 8-bit keys is a one-pass counting sort.
        d = eng.decode(keys, out=scratch.get("dist", tuple(keys.shape), int_dtype(k1 - 1)))
        relb = self.lab_ops.positive(rel)
        if eng.numpy:
            d = d.numpy()
            order = np.argsort(d, axis=1, kind="stable")  # each row's ranking within the block
            order += (np.arange(r) * width)[:, None]
            p = np.flatnonzero(relb.reshape(-1).take(order.reshape(-1)))  # ranked positions of relevant items
            src = order.reshape(-1).take(p)  # their flat positions in the tile
            dd = d.reshape(-1).take(src)
            cnt = _bincount_rows(d, k1, True)
        else:
            ranked, order = torch.sort(d, dim=1, stable=True)
            pt = torch.nonzero(relb.gather(1, order).view(-1)).squeeze(1)
            dd = ranked.view(-1)[pt].cpu().numpy()
            cnt = _bincount_rows(d, k1, False)
            p = pt.cpu().numpy()
            src = (order + _row_offsets(r, width, order)).view(-1)[pt] if self.wants_counts else None
        # shared-label counts of the relevant items, in the same order
        counts = self.lab_ops.values(rel, src) if self.wants_counts else None
        self._terms(st, r0, r1, width, dd, p, cnt, counts)

    def _terms(self, st, r0: int, r1: int, width: int, dd: np.ndarray, p: np.ndarray, cnt: np.ndarray,
               counts: np.ndarray | None) -> None:
        """AP terms of the relevant items of rows ``r0:r1`` of a block: ``dd`` their distances,
        ``p`` their flat positions in the rows' rankings within the block (ascending), ``cnt``
        the ``(r, K+1)`` counts of the block's items at each distance, ``counts`` their shared
        labels when :attr:`wants_counts` (then passed on to :meth:`_more`)."""
        k1, r = self.eng.num_bits + 1, r1 - r0
        g = slice(st["rows"].start + r0, st["rows"].start + r1)
        seen_all, seen_rel = st["seen_all"][r0:r1], st["seen_rel"][r0:r1]
        per_row = np.diff(np.searchsorted(p, np.arange(r + 1) * width))  # p is ascending
        qi = np.repeat(np.arange(r), per_row)
        flat = qi * k1 + dd
        rcnt = np.bincount(flat, minlength=r * k1).reshape(r, k1)
        rows = np.arange(r)[:, None]
        # rank = items closer (whole database) + items at the same distance in earlier blocks
        #        + the item's position among this block's items at that distance (1-based);
        # hits likewise with relevant items. Position in the block row: p - row * width; rank of
        # the relevant item among the row's relevant ones: its index j in p - the row's first.
        base_rank = self.below_all[g] + seen_all - (cnt.cumsum(1) - cnt) + 1 - rows * width
        first = np.cumsum(per_row) - per_row
        base_hits = self.below_rel[g] + seen_rel - (rcnt.cumsum(1) - rcnt) + 1 - first[:, None]
        rank = base_rank.reshape(-1).take(flat) + p
        hits = base_hits.reshape(-1).take(flat) + np.arange(len(p))
        terms = hits / rank
        keep = None
        if self.depth < self.n_db:  # only the items ranked within the depth count
            keep = rank <= self.depth
            terms *= keep
            per_row = np.bincount(qi, weights=keep, minlength=r).astype(np.int64)
        st["ap"][r0:r1] += np.bincount(qi, weights=terms, minlength=r)
        st["hits"][r0:r1] += per_row
        if counts is not None:
            self._more(st, r0, r1, qi, flat, rank, keep, rcnt, counts)
        seen_all += cnt
        seen_rel += rcnt

    def _more(self, st, r0: int, r1: int, qi, flat, rank, keep, rcnt, counts) -> None:
        """Further per-item terms (a subclass's): ``qi`` row, ``flat`` row * (K+1) + distance,
        ``rank`` and ``counts`` of each relevant item, ``keep`` whether it is within the depth
        (None: all are), ``rcnt`` the ``(r, K+1)`` relevant items of the block at each distance."""

    def finish(self, st: dict[str, Any]) -> np.ndarray:
        """``(r,)`` AP of each query (0 when no relevant item is ranked within the depth)."""
        hits = st["hits"]
        return divide_or_zero(st["ap"], hits)


class Dense:
    """Writes every distance into ``out`` ``(Q, N)`` int32 (for small inputs)."""

    needs_keys = True
    needs_rel = False

    def __init__(self, eng: Distances, out: np.ndarray):
        self.eng, self.out = eng, out

    def start(self, n_rows: int, first_row: int = 0) -> int:
        return first_row

    def tile(self, first_row: int, r0: int, r1: int, b0: int, keys, rel, scratch: Scratch) -> None:
        self.out[first_row + r0:first_row + r1, b0:b0 + keys.shape[1]] = self.eng.decode(keys).cpu().numpy()

    def finish(self, st: int) -> None:
        return None


class RelevantCount:
    """Relevant database items of each query: ``(r,)`` int64 (no distances needed)."""

    needs_keys = False
    needs_rel = True

    def __init__(self, lab_ops: LabelOperands):
        self.lab_ops = lab_ops

    def start(self, n_rows: int, first_row: int = 0) -> np.ndarray:
        return np.zeros(n_rows, np.int64)

    def tile(self, st: np.ndarray, r0: int, r1: int, b0: int, keys, rel, scratch: Scratch) -> None:
        pos = self.lab_ops.positive(rel)
        st[r0:r1] += pos.sum(1) if isinstance(pos, np.ndarray) else pos.sum(1).cpu().numpy()

    def finish(self, st: np.ndarray) -> np.ndarray:
        return st


class Both:
    """Two consumers fed the same tiles (one pass for :func:`evaluate_all`)."""

    needs_keys = True

    def __init__(self, first, second):
        self.parts = (first, second)
        self.needs_rel = first.needs_rel or second.needs_rel

    def start(self, n_rows: int, first_row: int = 0) -> tuple:
        return tuple(p.start(n_rows, first_row) for p in self.parts)

    def tile(self, st: tuple, r0: int, r1: int, b0: int, keys, rel, scratch: Scratch) -> None:
        for p, s in zip(self.parts, st):
            p.tile(s, r0, r1, b0, keys, rel if p.needs_rel else None, scratch)

    def finish(self, st: tuple) -> tuple:
        return tuple(p.finish(s) for p, s in zip(self.parts, st))
