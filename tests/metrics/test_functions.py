"""Tests for the public functions of hyp2.metrics against naive reference loops and hand-computed cases."""
from __future__ import annotations

from fractions import Fraction as F

import numpy as np
import pytest
import torch

from hyp2 import metrics as M

from .conftest import Ref, check_all, random_case

# ----------------------------------------------------------------------------------------------
# Hand-computed case
# ----------------------------------------------------------------------------------------------

# K = 4 bits, 5 database items, 3 queries, C = 3 classes.
HAND_DB = np.array([[1, 1, 1, -1],     # d0  labels [1,0,0]
                    [1, 1, 1, 1],      # d1  labels [0,1,0]
                    [-1, -1, 1, 1],    # d2  labels [1,1,0]
                    [1, 1, -1, 1],     # d3  labels [0,0,1]
                    [-1, -1, -1, -1]])  # d4  labels [1,0,1]
HAND_DB_LABELS = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1], [1, 0, 1]])
# q0 is given with exact zeros: sign(0) = +1, so q0 = [+1,+1,+1,+1].
HAND_Q = np.array([[0.0, 0.5, 2.0, -0.0],
                   [-1, -1, -1, -1],
                   [-1, -1, -1, 1]])
HAND_Q_LABELS = np.array([[1, 0, 0],    # relevant: d0, d2, d4 (3 items)
                          [0, 0, 0],    # relevant: none
                          [0, 0, 1]])   # relevant: d3, d4 (2 items)
# Distances: q0 -> [1, 0, 2, 1, 4]; q1 -> [3, 4, 2, 3, 0]; q2 -> [4, 3, 1, 2, 1].
# Stable rankings: q0 -> d1, d0, d3, d2, d4  (d0 before d3: tie at distance 1, database order)
#                  q1 -> d4, d2, d0, d3, d1
#                  q2 -> d2, d4, d3, d1, d0  (d2 before d4: tie at distance 1)
# Relevance in rank order: q0 F T F T T; q1 all F; q2 F T T F F.


def hand(fn, *args, **kw):
    return fn(HAND_Q, HAND_DB, HAND_Q_LABELS, HAND_DB_LABELS, *args, **kw)


def test_hand_ranking():
    idx, dist = M.hamming_ranking(HAND_Q, HAND_DB)
    np.testing.assert_array_equal(idx, [[1, 0, 3, 2, 4], [4, 2, 0, 3, 1], [2, 4, 3, 1, 0]])
    np.testing.assert_array_equal(dist, [[0, 1, 1, 2, 4], [0, 2, 3, 3, 4], [1, 1, 2, 3, 4]])
    np.testing.assert_array_equal(M.hamming_distance(HAND_Q, HAND_DB),
                                  [[1, 0, 2, 1, 4], [3, 4, 2, 3, 0], [4, 3, 1, 2, 1]])


@pytest.mark.parametrize("topk, expected", [
    # AP(q0) = (1/2 + 2/4 + 3/5) / 3 = 8/15; AP(q1) = 0; AP(q2) = (1/2 + 2/3) / 2 = 7/12.
    # mAP = (8/15 + 7/12) / 3 = 67/180. (An unstable sort putting d3 before d0 would give
    # AP(q0) = (1/3 + 2/4 + 3/5) / 3 instead.)
    (None, F(67, 180)),
    (5, F(67, 180)),
    (100, F(67, 180)),  # topk above the database size = the whole database
    # top 3: AP(q0) = (1/2) / 1; AP(q2) = (1/2 + 2/3) / 2 = 7/12 -> (1/2 + 7/12) / 3 = 13/36.
    (3, F(13, 36)),
    # top 1: d1 for q0, d2 for q2, both irrelevant -> 0.
    (1, F(0)),
])
def test_hand_map(topk, expected):
    assert hand(M.mean_average_precision, topk) == pytest.approx(float(expected), abs=1e-15)


def test_hand_precision_recall_at_n():
    # P@N: q0 [0, 1/2, 1/3, 3/5], q1 zeros, q2 [0, 1/2, 2/3, 2/5] -> mean [0, 1/3, 1/3, 1/3].
    assert hand(M.precision_at_n, [1, 2, 3, 5]) == pytest.approx([0, 1 / 3, 1 / 3, 1 / 3])
    # R@N: q0 (3 relevant) [0, 1/3, 1/3, 1]; q1 (none) counts 0; q2 (2 relevant) [0, 1/2, 1, 1]
    # -> mean [0, 5/18, 4/9, 2/3].
    assert hand(M.recall_at_n, [1, 2, 3, 5]) == pytest.approx([0, 5 / 18, 4 / 9, 2 / 3])
    assert hand(M.precision_at_n, 2) == pytest.approx([1 / 3])


def test_hand_pr_curve():
    # Per radius r = 0..4, items at distance <= r:
    # q0: P [0, 1/3, 1/2, 1/2, 3/5], R [0, 1/3, 2/3, 2/3, 1]
    # q1: P zeros (nothing relevant), R zeros (no relevant item: counts 0)
    # q2: P [0 (nothing within 0: counts 0), 1/2, 2/3, 1/2, 2/5], R [0, 1/2, 1, 1, 1]
    curve = hand(M.pr_curve)
    assert curve["radius"] == [0, 1, 2, 3, 4]
    assert curve["precision"] == pytest.approx([0, 5 / 18, 7 / 18, 1 / 3, 1 / 3])
    assert curve["recall"] == pytest.approx([0, 5 / 18, 5 / 9, 5 / 9, 2 / 3])
    assert hand(M.precision_within_radius) == pytest.approx(7 / 18)
    assert hand(M.precision_within_radius, 1) == pytest.approx(5 / 18)
    assert hand(M.precision_within_radius, 99) == pytest.approx(1 / 3)  # radius > K = K


def test_hand_evaluate_all_matches_run_json_shape():
    res = hand(M.evaluate_all, topk=3, ns=(1, 2, 5, 6, 100))
    # Shared labels r in rank order (top 3): q0 0 1 0, q1 0 0 0, q2 0 1 1; over the database q0
    # has r = 1 for three items, q2 for two. ACG@3 = (1/3 + 0 + 2/3) / 3. NDCG@3: q0
    # (1/log2 3) / (1 + 1/log2 3 + 1/2), q1 0 (IDCG 0), q2 (1/log2 3 + 1/2) / (1 + 1/log2 3).
    # WAP@3 = mAP@3 (r <= 1 here). Tie-aware AP@3: q0's tie d0/d3 at ranks 2-3 gives 1/2 or 1/3
    # (mean 5/12); q2's tie d2/d4 at ranks 1-2 gives 7/12 or 5/6 (mean 17/24) -> (5/12 + 17/24) / 3.
    inv = 1 / np.log2(3)
    ndcg = (inv / (1.5 + inv) + (inv + 0.5) / (1 + inv)) / 3
    assert res == {
        "map": pytest.approx(13 / 36),
        "topk": 3,
        "acg": pytest.approx(1 / 3),
        "ndcg": pytest.approx(ndcg),
        "weighted_map": pytest.approx(13 / 36),
        "tie_aware_map": pytest.approx(3 / 8),
        "precision_at_n": {"n": [1, 2, 5], "precision": pytest.approx([0, 1 / 3, 1 / 3])},
        "recall_at_n": {"n": [1, 2, 5], "recall": pytest.approx([0, 5 / 18, 2 / 3])},
        "pr_curve": {"radius": [0, 1, 2, 3, 4],
                     "precision": pytest.approx([0, 5 / 18, 7 / 18, 1 / 3, 1 / 3]),
                     "recall": pytest.approx([0, 5 / 18, 5 / 9, 5 / 9, 2 / 3])},
        "precision_radius2": pytest.approx(7 / 18),
    }
    assert hand(M.evaluate_all)["topk"] == 5  # None: the whole database
    assert hand(M.evaluate_all)["precision_at_n"]["n"] == []  # default ns all exceed 5 items


# ----------------------------------------------------------------------------------------------
# Random cases against the reference
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k_bits", [8, 12, 13, 36, 100, 127, 128, 129, 255, 256, 300])
def test_random_against_reference(k_bits):
    rng = np.random.default_rng(k_bits)
    q, d, ql, dl = random_case(rng, 9, 157, k_bits, dup=k_bits in (8, 13, 255))
    ref = Ref(q, d, ql, dl)
    check_all(q, d, ql, dl, ref, chunk_size=4)  # 9 queries: chunks of 4, 4, 1


# ----------------------------------------------------------------------------------------------
# Input forms
# ----------------------------------------------------------------------------------------------


def test_binarize_zero_is_plus_one():
    codes = np.array([[0.0, -0.0, -1e-9, 3.0], [-2.0, 1e-9, 0.0, -1.0]])
    expected = torch.tensor([[1, 1, -1, 1], [-1, 1, 1, -1]], dtype=torch.int8)
    assert torch.equal(M.binarize(codes), expected)
    assert torch.equal(M.binarize(torch.from_numpy(codes)), expected)
    assert torch.equal(M.binarize(np.array([[True, False]])),
                       torch.tensor([[1, -1]], dtype=torch.int8))


def test_real_numpy_torch_and_bool_inputs_agree():
    rng = np.random.default_rng(2)
    q = rng.normal(size=(6, 20)).astype(np.float32)
    d = rng.normal(size=(80, 20)).astype(np.float32)
    q[:, 3] = 0.0  # exact zeros count as +1
    d[::2, 5] = 0.0
    ql = (rng.random((6, 4)) < 0.4).astype(np.int64)
    dl = (rng.random((80, 4)) < 0.4).astype(np.int64)
    ref = Ref(q, d, ql, dl)
    expected = ref.map(10)
    forms = [
        (q, d, ql, dl),
        (torch.from_numpy(q), torch.from_numpy(d), torch.from_numpy(ql), torch.from_numpy(dl)),
        (M.binarize(q), M.binarize(d).numpy(), ql.astype(bool), torch.from_numpy(dl).float()),
        (q >= 0, torch.from_numpy(d >= 0), ql, dl),
        (q.astype(np.float64), np.asfortranarray(d), ql, dl[:, :].astype(np.uint8)),
        (q.astype(">f4"), d.astype(np.float16), ql, dl),
    ]
    for args in forms:
        assert M.mean_average_precision(*args, topk=10) == pytest.approx(expected, abs=1e-12)


def test_pack_codes_layout_and_roundtrip():
    codes = np.array([[1, -1, -1, -1, -1, -1, -1, 1, 1], [-1] * 8 + [1]])
    packed = M.pack_codes(codes)  # numpy.packbits order, bit 1 for +1, zero padding
    np.testing.assert_array_equal(packed, np.array([[0b10000001, 0b10000000], [0, 0b10000000]],
                                                   dtype=np.uint8))
    assert packed.dtype == np.uint8
    rng = np.random.default_rng(4)
    for k_bits in (1, 8, 12, 13, 64):
        c = rng.normal(size=(5, k_bits))
        p = M.pack_codes(c)
        assert p.shape == (5, (k_bits + 7) // 8)
        np.testing.assert_array_equal(M.unpack_codes(p, k_bits), M.binarize(c).numpy())
        np.testing.assert_array_equal(M.unpack_codes(torch.from_numpy(p), k_bits),
                                      M.binarize(c).numpy())


@pytest.mark.parametrize("k_bits", [12, 48])
def test_packed_inputs(k_bits):
    rng = np.random.default_rng(k_bits)
    q, d, ql, dl = random_case(rng, 5, 64, k_bits, dup=True)
    qp, dp = M.pack_codes(q), M.pack_codes(d)
    check_all(qp, dp, ql, dl, Ref(q, d, ql, dl), num_bits=k_bits, topks=(None, 9))
    assert M.mean_average_precision(torch.from_numpy(qp), dp, ql, dl, 9, num_bits=k_bits) == \
        pytest.approx(Ref(q, d, ql, dl).map(9), abs=1e-12)


def test_inputs_not_mutated():
    rng = np.random.default_rng(8)
    q, d, ql, dl = random_case(rng, 4, 50, 12)
    q[0, 0] = 0.0
    tensors = [torch.from_numpy(q.copy()), torch.from_numpy(d.copy()),
               torch.from_numpy(ql.copy()), torch.from_numpy(dl.copy())]
    arrays = [q.copy(), d.copy(), ql.copy(), dl.copy()]
    for args in (arrays, tensors):
        before = [a.clone() if isinstance(a, torch.Tensor) else a.copy() for a in args]
        M.evaluate_all(*args, topk=5, ns=(1, 2))
        M.mean_average_precision(*args, topk=5)
        M.precision_at_n(*args, [3])
        M.recall_at_n(*args, [3])
        M.hamming_ranking(args[0], args[1], 5)
        M.binarize(args[0])
        M.pack_codes(args[0])
        for a, b in zip(args, before):
            assert (torch.equal(a, b) if isinstance(a, torch.Tensor) else np.array_equal(a, b))
    packed = M.pack_codes(q)
    kept = packed.copy()
    M.mean_average_precision(packed, M.pack_codes(d), ql, dl, 5, num_bits=12)
    np.testing.assert_array_equal(packed, kept)


def test_read_only_numpy_inputs_are_fine():
    rng = np.random.default_rng(12)
    q, d, ql, dl = random_case(rng, 3, 30, 8)
    for a in (q, d, ql, dl):
        a.setflags(write=False)
    assert M.mean_average_precision(q, d, ql, dl, 5) == pytest.approx(Ref(q, d, ql, dl).map(5))


# ----------------------------------------------------------------------------------------------
# Degenerate inputs and errors
# ----------------------------------------------------------------------------------------------


def test_empty_query_set():
    d = np.ones((4, 8))
    idx, dist = M.hamming_ranking(np.ones((0, 8)), d, 3)
    assert idx.shape == (0, 3) and dist.shape == (0, 3)
    assert M.hamming_distance(np.ones((0, 8)), d).shape == (0, 4)
    with pytest.raises(ValueError, match="query_codes is empty"):
        M.mean_average_precision(np.ones((0, 8)), d, np.ones((0, 2)), np.ones((4, 2)))
    with pytest.raises(ValueError, match="query_codes is empty"):
        M.evaluate_all(np.ones((0, 8)), d, np.ones((0, 2)), np.ones((4, 2)))


def test_empty_database():
    with pytest.raises(ValueError, match="db_codes is empty"):
        M.hamming_ranking(np.ones((2, 8)), np.ones((0, 8)))
    with pytest.raises(ValueError, match="db_codes is empty"):
        M.mean_average_precision(np.ones((2, 8)), np.ones((0, 8)), np.ones((2, 2)), np.ones((0, 2)))


def test_single_item_database_and_no_labels():
    q, d = np.array([[1, -1, 1]]), np.array([[1, 1, 1]])
    assert M.mean_average_precision(q, d, np.array([[1]]), np.array([[1]])) == 1.0
    # C = 0 classes: nothing is ever relevant.
    assert M.mean_average_precision(q, d, np.zeros((1, 0)), np.zeros((1, 0))) == 0.0


@pytest.mark.parametrize("call, match", [
    (lambda: M.hamming_distance(np.ones((2, 8)), np.ones((3, 9))), "same K"),
    (lambda: M.hamming_distance(np.ones(8), np.ones((3, 8))), "2-D"),
    (lambda: M.hamming_distance(np.ones((2, 0)), np.ones((3, 0))), "zero bits"),
    (lambda: M.hamming_distance(np.ones((2, 8), np.uint8), np.ones((3, 8), np.uint8)), "num_bits"),
    (lambda: M.hamming_distance(np.ones((2, 2), np.uint8), np.ones((3, 1), np.uint8), num_bits=12),
     "bytes per row"),
    (lambda: M.hamming_distance(np.ones((2, 2)), np.ones((3, 2)), num_bits=12), "uint8"),
    (lambda: M.hamming_distance(np.ones((2, 2), np.uint8), np.ones((3, 2), np.uint8), num_bits=0),
     "num_bits"),
    (lambda: M.hamming_distance(np.full((2, 4), np.nan), np.ones((3, 4))), "NaN"),
    (lambda: M.hamming_distance([[1, 1]], np.ones((3, 2))), "numpy"),
    (lambda: M.hamming_ranking(np.ones((2, 4)), np.ones((3, 4)), 0), "topk"),
    (lambda: M.hamming_ranking(np.ones((2, 4)), np.ones((3, 4)), -2), "topk"),
    (lambda: M.hamming_ranking(np.ones((2, 4)), np.ones((3, 4)), 2.5), "topk"),
    (lambda: M.hamming_ranking(np.ones((2, 4)), np.ones((3, 4)), True), "topk"),
    (lambda: M.hamming_ranking(np.ones((2, 4)), np.ones((3, 4)), chunk_size=0), "chunk_size"),
    (lambda: M.mean_average_precision(np.ones((2, 4)), np.ones((3, 4)), np.ones((2, 2)),
                                      np.ones((4, 2))), "3 codes"),
    (lambda: M.mean_average_precision(np.ones((2, 4)), np.ones((3, 4)), np.ones((2, 2)),
                                      np.ones((3, 3))), "classes"),
    (lambda: M.mean_average_precision(np.ones((2, 4)), np.ones((3, 4)), np.ones((2, 2)),
                                      np.full((3, 2), 2.0)), "0/1"),
    (lambda: M.mean_average_precision(np.ones((2, 4)), np.ones((3, 4)), np.ones(2),
                                      np.ones((3, 2))), "2-D"),
    (lambda: M.precision_at_n(np.ones((2, 4)), np.ones((3, 4)), np.ones((2, 2)), np.ones((3, 2)),
                              [4]), "exceeds the database size"),
    (lambda: M.recall_at_n(np.ones((2, 4)), np.ones((3, 4)), np.ones((2, 2)), np.ones((3, 2)),
                           [0]), "positive"),
    (lambda: M.evaluate_all(np.ones((2, 4)), np.ones((3, 4)), np.ones((2, 2)), np.ones((3, 2)),
                            ns=[1.5]), "positive"),
    (lambda: M.precision_within_radius(np.ones((2, 4)), np.ones((3, 4)), np.ones((2, 2)),
                                       np.ones((3, 2)), -1), "radius"),
])
def test_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("k_bits", [12, 48, 130])
def test_cuda_codes_give_the_cpu_results(k_bits):
    # When the codes are CUDA tensors the metrics run there (float16 matmul): the same numbers.
    g = torch.Generator().manual_seed(k_bits)
    q = torch.randn(70, k_bits, generator=g)
    d = torch.randn(3001, k_bits, generator=g)
    d[1000:1500] = d[:500]  # exact duplicates: ties
    ql = (torch.rand(70, 9, generator=g) < 0.3).float()
    dl = (torch.rand(3001, 9, generator=g) < 0.3).float()
    cpu = M.evaluate_all(q, d, ql, dl, topk=1000)
    gpu = M.evaluate_all(q.cuda(), d.cuda(), ql.cuda(), dl.cuda(), topk=1000)
    assert gpu["map"] == pytest.approx(cpu["map"], abs=1e-9)
    for section, key in (("precision_at_n", "precision"), ("recall_at_n", "recall"),
                         ("pr_curve", "precision"), ("pr_curve", "recall")):
        assert gpu[section][key] == pytest.approx(cpu[section][key], abs=1e-9)
    idx_cpu, dist_cpu = M.hamming_ranking(q, d, topk=500)
    idx_gpu, dist_gpu = M.hamming_ranking(q.cuda(), d.cuda(), topk=500)
    assert np.array_equal(np.asarray(idx_cpu), np.asarray(torch.as_tensor(idx_gpu).cpu()))
    assert np.array_equal(np.asarray(dist_cpu), np.asarray(torch.as_tensor(dist_gpu).cpu()))
