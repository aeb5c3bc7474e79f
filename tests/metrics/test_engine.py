"""The metrics engine's rarely taken paths, forced through EngineOptions: every setting must give
the reference's exact results (the options change the speed and the memory, never a number)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hyp2 import metrics as M
from hyp2.metrics import EngineOptions
from hyp2.metrics._consumers import TopK, pick_topk, stable_order
from hyp2.metrics._engine import Scratch
from hyp2.metrics._flows import Problem
from hyp2.metrics._scan import plan

from .conftest import Ref, check_all, random_case, ref_ap


@pytest.mark.parametrize("k_bits", [4, 8])
def test_heavy_ties_small_blocks(k_bits):
    # Few bits: every distance level is a large tie group, and with blocks of 16 items the
    # running top-k bound and the tie order are carried from block to block.
    rng = np.random.default_rng(100 + k_bits)
    q, d, ql, dl = random_case(rng, 12, 301, k_bits)
    opts = EngineOptions(block_items=16, query_rows=5)
    check_all(q, d, ql, dl, Ref(q, d, ql, dl), topks=(None, 1, 20, 150), options=opts)


def test_running_bound_keeps_few_candidates():
    # With no cap at all (caps = K), the running bound alone must stop collecting: after the first
    # `depth` items of a row at most as far, only closer ones are kept.
    rng = np.random.default_rng(1)
    q, d, _, _ = random_case(rng, 6, 4000, 6)
    opts = EngineOptions(block_items=50, query_rows=6, workers=1)
    prob = Problem(q, d, None, opts)
    depth = 20
    cons = TopK(prob.eng, depth, np.full(6, 6, dtype=np.int64), budget_entries=10**9, n_db=4000)
    st, scratch = cons.start(6), Scratch(prob.eng.device)
    for b0 in range(0, 4000, 50):
        keys = prob.eng.keys(slice(0, 6), prob.eng.block(prob.db, b0, b0 + 50), scratch)
        cons.tile(st, 0, 6, b0, keys, None, scratch)
    assert st.size < 1000  # a bound that never tightened would keep all 24,000
    [(r0, r1, (row, idx, dist))] = cons.finish(st)
    assert (r0, r1) == (0, 6)
    expected = Ref(q, d, np.zeros((6, 1)), np.zeros((4000, 1))).orders
    for r in range(6):
        np.testing.assert_array_equal(idx[row == r][:depth], expected[r][:depth])


def test_tiles_without_candidates():
    # Caps of -1 keep nothing: the tiles with no candidate come out empty, before and after one
    # with candidates, and pick_topk marks their rows as short (not ok).
    rng = np.random.default_rng(2)
    q, d, _, _ = random_case(rng, 6, 50, 6)
    prob = Problem(q, d, None, EngineOptions(workers=1))
    cons = TopK(prob.eng, 3, np.array([-1, -1, 6, 6, -1, -1]), budget_entries=10**9, n_db=50)
    st, scratch = cons.start(6), Scratch(prob.eng.device)
    for t0 in (0, 2, 4):
        keys = prob.eng.keys(slice(t0, t0 + 2), prob.eng.block(prob.db, 0, 50), scratch)
        cons.tile(st, t0, t0 + 2, 0, keys, None, scratch)
    tiles = cons.finish(st)
    assert [(r0, r1) for r0, r1, _ in tiles] == [(0, 2), (2, 4), (4, 6)]
    assert [len(cands[0]) > 0 for _, _, cands in tiles] == [False, True, False]
    expected = Ref(q, d, np.zeros((6, 1)), np.zeros((50, 1))).orders
    for r0, r1, cands in tiles:
        top, top_d, ok = pick_topk(*cands, r1 - r0, 3)
        assert top.shape == top_d.shape == (2, 3)
        assert ok.tolist() == [r0 == 2, r0 == 2]
    np.testing.assert_array_equal(pick_topk(*tiles[1][2], 2, 3)[0], [expected[2][:3], expected[3][:3]])


@pytest.mark.parametrize("n_rows, k1", [(4, 5), (300, 300), (70_000, 3)])
def test_stable_order_is_by_row_then_distance(n_rows, k1):
    # One 16-bit radix key when rows x (K+1) fits in 16 bits; else a distance sort, then a row sort
    # (rows as uint16 up to 2**16 rows, as they are); equal entries keep their order.
    rng = np.random.default_rng(n_rows)
    row = rng.integers(0, n_rows, 3000).astype(np.uint16 if n_rows <= 2**16 else np.int64)
    dist = rng.integers(0, k1, 3000).astype(np.int16)
    expected = sorted(range(3000), key=lambda i: (row[i], dist[i]))  # sorted() is stable
    np.testing.assert_array_equal(stable_order(row, dist, n_rows, k1), expected)


def test_sampled_caps_that_fall_short_are_redone_exactly():
    # A database larger than 2 * sample_size uses sampled distance caps; a negative margin makes
    # many of them too small, which must be detected and redone exactly.
    rng = np.random.default_rng(3)
    q, d, ql, dl = random_case(rng, 11, 1200, 10, dup=True)
    ref = Ref(q, d, ql, dl)
    for z in (4.0, -30.0):
        opts = EngineOptions(sample_size=64, sample_z=z, query_rows=3, block_items=100)
        for topk in (1, 50, 140):
            caps = Problem(q, d, None, opts).caps(topk)
            true = [sorted(row)[topk - 1] for row in ref.dist]
            assert (caps < true).any() == (z < 0)  # the short caps really happen
            idx, _ = M.hamming_ranking(q, d, topk, options=opts)
            np.testing.assert_array_equal(idx, np.array([o[:topk] for o in ref.orders]))
            assert M.mean_average_precision(q, d, ql, dl, topk, options=opts) == pytest.approx(
                ref.map(topk), abs=1e-12)
        ns = [1, 50, 140]
        assert M.precision_at_n(q, d, ql, dl, ns, options=opts) == pytest.approx(ref.p_at(ns), abs=1e-12)
        assert M.recall_at_n(q, d, ql, dl, ns, options=opts) == pytest.approx(ref.r_at(ns), abs=1e-12)
        res = M.evaluate_all(q, d, ql, dl, topk=140, ns=ns, options=opts)  # redone with exact caps
        assert res["map"] == pytest.approx(ref.map(140), abs=1e-12)
        assert res["precision_at_n"]["precision"] == pytest.approx(ref.p_at(ns), abs=1e-12)
        # Two queries, three workers: database ranges whose short candidates merge, then redone.
        split = EngineOptions(sample_size=64, sample_z=z, block_items=100, workers=3)
        idx, _ = M.hamming_ranking(q[:2], d, 140, options=split)
        np.testing.assert_array_equal(idx, np.array([o[:140] for o in ref.orders[:2]]))


@pytest.mark.parametrize("block", [None, 17])
def test_torch_backend_on_cpu(block):
    # The torch per-pair code (the one GPUs run) gives the same results on the CPU.
    rng = np.random.default_rng(11)
    q, d, ql, dl = random_case(rng, 7, 203, 13, dup=True)
    opts = EngineOptions(backend="torch", block_items=block)
    check_all(q, d, ql, dl, Ref(q, d, ql, dl), chunk_size=3, topks=(None, 1, 7, 30), options=opts)


@pytest.mark.parametrize("k_bits, group_bits", [(12, None), (200, None), (1100, None), (13, 4), (200, 64)])
@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_float32_float16_and_bit_groups(k_bits, group_bits, backend, dtype):
    # CPUs without bfloat16 compute in float32 and GPUs in float16 (its groups hold up to 1,024
    # bits: 1,100 bits take two); small bit groups sum integer group distances.
    rng = np.random.default_rng(5)
    q, d, ql, dl = random_case(rng, 5, 120, k_bits, dup=True)
    ref = Ref(q, d, ql, dl)
    opts = EngineOptions(compute_dtype=dtype, group_bits=group_bits, backend=backend)
    check_all(q, d, ql, dl, ref, chunk_size=2, options=opts)
    if group_bits and dtype == torch.float32:  # the same small groups in the default dtype (bfloat16)
        check_all(q, d, ql, dl, ref, options=EngineOptions(group_bits=group_bits, backend=backend))


def test_tiny_budget_single_worker():
    # A budget of one byte: one query per group, candidates compacted after every tile.
    rng = np.random.default_rng(9)
    q, d, ql, dl = random_case(rng, 5, 77, 9)
    opts = EngineOptions(memory_bytes=1, workers=1, block_items=25, query_rows=1)
    check_all(q, d, ql, dl, Ref(q, d, ql, dl), options=opts)


def test_few_queries_split_the_database():
    # Fewer queries than workers need: the database is split into ranges whose candidates merge.
    rng = np.random.default_rng(10)
    q, d, ql, dl = random_case(rng, 3, 157, 8, dup=True)
    opts = EngineOptions(workers=3, block_items=8)
    assert len(plan(Problem(q, d, None, opts).eng, 157, 0, split_db=True)[0]) == 3
    check_all(q, d, ql, dl, Ref(q, d, ql, dl), topks=(None, 1, 7, 19), options=opts)


def test_plan_bounds_the_rows_of_a_group():
    rng = np.random.default_rng(12)
    q, d, _, _ = random_case(rng, 300, 50, 8)
    eng = Problem(q, d, None, EngineOptions(workers=2, memory_bytes=2 * 1000)).eng
    groups = plan(eng, 50, per_query_bytes=100, split_db=True)  # 1000 bytes per worker: 10 rows
    rows = [g[0].rows for g in groups]
    assert all(r.stop - r.start <= 10 for r in rows)
    assert [r.start for r in rows] == sorted(r.start for r in rows) and rows[-1].stop == 300
    assert all(len(g) == 1 and (g[0].lo, g[0].hi) == (0, 50) for g in groups)
    one = Problem(q, d, None, EngineOptions(workers=2)).eng
    assert len(plan(one, 50, per_query_bytes=100, split_db=True)) == 2  # one group per worker


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_whole_ranking_ap_at_any_depth(backend):
    # RankAP (used for deep rankings) scores any depth exactly, ties across the depth included.
    rng = np.random.default_rng(13)
    q, d, ql, dl = random_case(rng, 9, 140, 6, dup=True)
    ref = Ref(q, d, ql, dl)
    prob = Problem(q, d, None, EngineOptions(backend=backend, block_items=9, query_rows=4))
    prob.add_labels(ql, dl)
    for depth in (1, 5, 37, 139, 140):
        aps = prob.ranking_ap(depth)
        expected = [ref_ap(o, r, depth) for o, r in zip(ref.orders, ref.rel)]
        np.testing.assert_allclose(aps, expected, atol=1e-12)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_evaluate_all_whole_database(backend):
    rng = np.random.default_rng(14)
    q, d, ql, dl = random_case(rng, 8, 90, 10, dup=True)
    ref = Ref(q, d, ql, dl)
    res = M.evaluate_all(q, d, ql, dl, topk=None, ns=(1, 3, 90), options=EngineOptions(backend=backend))
    assert res["map"] == pytest.approx(ref.map(None), abs=1e-12)
    assert res["topk"] == 90
    assert res["precision_at_n"]["precision"] == pytest.approx(ref.p_at([1, 3, 90]), abs=1e-12)
    assert res["recall_at_n"]["recall"] == pytest.approx(ref.r_at([1, 3, 90]), abs=1e-12)
    no_ns = M.evaluate_all(q, d, ql, dl, topk=None, ns=(), options=EngineOptions(backend=backend))
    assert no_ns["map"] == pytest.approx(ref.map(None), abs=1e-12)
    assert no_ns["pr_curve"] == res["pr_curve"]


@pytest.mark.parametrize("kwargs, match", [
    (dict(backend="cuda"), "backend"),
    (dict(compute_dtype=torch.int8), "compute_dtype"),
    (dict(group_bits=0), "group_bits"),
    (dict(block_items=1.5), "block_items"),
    (dict(query_rows=True), "query_rows"),
    (dict(sample_size=0), "sample_size"),
    (dict(sample_z=float("nan")), "sample_z"),
    (dict(memory_bytes=-1), "memory_bytes"),
    (dict(workers=0), "workers"),
])
def test_options_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EngineOptions(**kwargs)


def test_options_must_be_engine_options():
    with pytest.raises(ValueError, match="EngineOptions"):
        M.hamming_ranking(np.ones((2, 4)), np.ones((3, 4)), 2, options={"workers": 1})


def test_tiles_of_more_than_65536_queries():
    # Rows within a tile are stored as uint16: a chunk_size above 2**16 must still work (the tile
    # is capped), here with one worker so that the 70,000 queries form a single group.
    rng = np.random.default_rng(15)
    q = rng.choice(np.array([-1, 1], np.int8), (70_000, 5))
    d = rng.choice(np.array([-1, 1], np.int8), (40, 5))
    ql, dl = np.eye(70_000, 3, dtype=np.uint8), np.eye(40, 3, dtype=np.uint8)
    ql[np.arange(70_000) % 3 == 1, 1] = 1
    opts = EngineOptions(workers=1)
    dist = (q[:, None, :] != d[None, :, :]).sum(2)  # (Q, N) by broadcasting
    order = np.argsort(dist, axis=1, kind="stable")[:, :3]
    idx, got = M.hamming_ranking(q, d, 3, chunk_size=70_000, options=opts)
    np.testing.assert_array_equal(idx, order)
    np.testing.assert_array_equal(got, np.take_along_axis(dist, order, 1))
    rel = (ql[:, None, :] & dl[order]).any(2)  # (Q, 3) relevance in rank order
    hits = np.cumsum(rel, 1)
    ap = np.where(hits[:, -1] > 0, (hits / np.arange(1, 4) * rel).sum(1) / np.maximum(hits[:, -1], 1), 0.0)
    assert M.mean_average_precision(q, d, ql, dl, 3, chunk_size=70_000, options=opts) == pytest.approx(
        ap.mean(), abs=1e-12)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_whole_ranking_with_distances_above_int16(backend):
    # K = 40,000 bits: distances past 32,767 must not wrap in the whole-ranking AP's sort keys.
    rng = np.random.default_rng(16)
    q, d, ql, dl = random_case(rng, 3, 11, 40_000)
    d[0], d[5], d[7] = -q[1], -q[1], q[2]  # distance 40,000 (a tie) and 0
    ref = Ref(q, d, ql, dl)
    assert max(max(row) for row in ref.dist) > 2**15
    opts = EngineOptions(backend=backend, compute_dtype=torch.float32)
    for topk in (None, 4):  # 4 of 11 items: deep, scored by the whole-ranking AP too
        assert M.mean_average_precision(q, d, ql, dl, topk, options=opts) == pytest.approx(ref.map(topk), abs=1e-12)
