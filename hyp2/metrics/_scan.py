"""The database scan: queries in groups, the database streamed in blocks in database order.

Each work unit is one group of queries against one range of the database. It walks the range
block by block (building each block's matmul operands once for the whole group) and, inside a
block, the group's queries tile by tile, feeding every tile to a consumer (``_consumers``). The
memory is bounded whatever N: a block's operands, one tile's work arrays per worker and the
consumers' per-query state (the top-k candidates, sized from ``EngineOptions.memory_bytes``).
Units run in worker threads (numpy and torch release the GIL in the heavy steps). Queries are
split among the workers; when there are too few queries for that, the database is split into
ranges instead, for the consumers whose results merge across ranges.

Part of :mod:`hyp2.metrics`, the evaluation protocol of HyP² Loss (Xu et al., "HyP² Loss: Beyond
Hypersphere Metric Space for Multi-label Image Retrieval", ACM MM 2022, Sec. 4.1).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ._engine import Distances, LabelOperands, Scratch
from ._inputs import CodeSource, LabelSource

_MIN_GROUP_ROWS = 64  # fewer queries than this per worker: split the database instead


@dataclass(frozen=True)
class Unit:
    """Queries ``rows`` (a slice of the engine's queries) against database rows ``lo:hi``."""

    rows: slice
    lo: int
    hi: int


def _even(n: int, parts: int, align: int = 1) -> list[tuple[int, int]]:
    edges = sorted({min(n, -(-round(i * n / parts) // align) * align) for i in range(parts + 1)} | {0, n})
    return [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def plan(eng: Distances, n_db: int, per_query_bytes: int, split_db: bool) -> list[list[Unit]]:
    """Work units, grouped by query group (the units of one group cover the database in order)."""
    opts, dev = eng.options, eng.device
    workers = opts.workers_for(dev)
    n_q = eng.num_queries
    max_rows = max(1, opts.memory_bytes // (workers * max(1, per_query_bytes)))
    groups = max(-(-n_q // max_rows), 1)
    ranges = [(0, n_db)]
    if workers > 1 and n_q < workers * _MIN_GROUP_ROWS and split_db:
        ranges = _even(n_db, workers, opts.block_for(dev))
    elif workers > 1:
        groups = max(groups, min(workers, -(-n_q // _MIN_GROUP_ROWS)))
    return [[Unit(slice(a, b), lo, hi) for lo, hi in ranges] for a, b in _even(n_q, groups)]


def run_unit(eng: Distances, db: CodeSource, consumer, unit: Unit, labels: LabelSource | None = None,
             lab_ops: LabelOperands | None = None) -> Any:
    """Feed every tile of ``unit`` to ``consumer``, in database order; its finished result."""
    opts, dev = eng.options, eng.device
    block, rows = opts.block_for(dev), opts.rows_for(dev)
    q0, q1 = unit.rows.start, unit.rows.stop
    scratch = Scratch(dev)
    state = consumer.start(q1 - q0, q0)
    for b0 in range(unit.lo, unit.hi, block):
        b1 = min(b0 + block, unit.hi)
        ops = eng.block(db, b0, b1) if consumer.needs_keys else None
        lop = lab_ops.block(labels, b0, b1) if consumer.needs_rel else None
        for t0 in range(q0, q1, rows):
            tile = slice(t0, min(t0 + rows, q1))
            keys = eng.keys(tile, ops, scratch) if ops is not None else None
            rel = lab_ops.relevant(tile, lop, scratch) if lop is not None else None
            consumer.tile(state, t0 - q0, tile.stop - q0, b0, keys, rel, scratch)
    return consumer.finish(state)


def run_parallel(fn: Callable[[Any], Any], items: list, workers: int) -> list:
    """``[fn(x) for x in items]``, with up to ``workers`` running at once.

    Each worker thread runs torch single-threaded: the workers already use the cores, and torch's
    own intra-op threads would wait on each other at every small op (several times slower on a
    loaded machine). With OpenMP builds the setting is per thread; the process-wide default that
    new threads start from is restored before returning.
    """
    if workers <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    saved = torch.get_num_threads()

    def single_threaded(x: Any) -> Any:
        torch.set_num_threads(1)
        return fn(x)

    try:
        with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
            return list(pool.map(single_threaded, items))
    finally:
        torch.set_num_threads(saved)


def scan(eng: Distances, db: CodeSource, consumer, *, per_query_bytes: int = 0, split_db: bool = True,
         labels: LabelSource | None = None, lab_ops: LabelOperands | None = None,
         group_fn: Callable[[slice, list], Any] | None = None) -> list:
    """Run ``consumer`` over every query against the whole database.

    Returns one entry per query group, in query order: ``group_fn(rows, results)`` where
    ``results`` are the finished results of the group's database ranges in database order
    (default: the results list itself). ``group_fn`` runs in the worker thread.
    """
    groups = plan(eng, db.rows, per_query_bytes, split_db)
    workers = eng.options.workers_for(eng.device)
    finish = group_fn or (lambda rows, results: results)
    if len(groups) == 1 and len(groups[0]) > 1:  # few queries: the ranges run in parallel
        units = groups[0]
        results = run_parallel(lambda u: run_unit(eng, db, consumer, u, labels, lab_ops), units, workers)
        return [finish(units[0].rows, results)]

    def one_group(units: list[Unit]) -> Any:
        return finish(units[0].rows, [run_unit(eng, db, consumer, u, labels, lab_ops) for u in units])

    return run_parallel(one_group, groups, workers)
