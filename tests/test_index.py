"""Tests for hyp2.index.CodeIndex against a naive reference loop, with and without faiss."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from hyp2.index import CodeIndex
from hyp2.metrics import pack_codes
from hyp2.codes import export_codes

try:
    import faiss  # noqa: F401
    HAVE_FAISS = True
except ImportError:
    HAVE_FAISS = False

ENGINES = [False, pytest.param(True, marks=pytest.mark.skipif(not HAVE_FAISS, reason="faiss is not installed"))]


def reference(q_bits: np.ndarray, db_bits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Naive top-k: Hamming distances by loops, then sorted() by (distance, index)."""
    idx, dist = [], []
    for q in q_bits:
        d = [int(np.count_nonzero(q != b)) for b in db_bits]
        order = sorted(range(len(d)), key=lambda j: (d[j], j))[:k]
        idx.append(order)
        dist.append([d[j] for j in order])
    return np.array(idx, dtype=np.int64).reshape(len(q_bits), -1), np.array(dist, np.int32).reshape(len(q_bits), -1)


def tied_case(seed: int, n_q: int, n_db: int, bits: int):
    """±1 codes with many exact duplicates in the database: large tie groups at every distance."""
    rng = np.random.default_rng(seed)
    base = rng.choice(np.array([-1, 1], np.int8), size=(max(2, n_db // 8), bits))
    db = base[rng.integers(0, len(base), n_db)]
    q = rng.choice(np.array([-1, 1], np.int8), size=(n_q, bits))
    q[: n_q // 2] = db[rng.integers(0, n_db, n_q // 2)]
    return q, db


@pytest.mark.parametrize("use_faiss", ENGINES)
@pytest.mark.parametrize("bits", [8, 12, 48])
def test_search_matches_reference_with_ties(use_faiss, bits):
    q, db = tied_case(bits, 17, 400, bits)
    index = CodeIndex(pack_codes(db), bits, use_faiss=use_faiss)
    assert index.uses_faiss == use_faiss
    for k in (1, 5, 37, 399, 400):
        idx, dist = index.search(q, k)
        ref_i, ref_d = reference(q > 0, db > 0, k)
        np.testing.assert_array_equal(idx, ref_i)
        np.testing.assert_array_equal(dist, ref_d)
        assert idx.dtype == np.int64 and dist.dtype == np.int32


class ContraryFaiss:
    """A stand-in for the faiss module whose IndexBinaryFlat answers exactly, as faiss promises,
    but breaks ties the other way (the last items in database order first) and returns range
    search results unordered: the tie order faiss does not promise."""

    class IndexBinaryFlat:
        def __init__(self, dim: int):
            self.codes = np.zeros((0, dim // 8), np.uint8)

        def add(self, codes):
            self.codes = np.concatenate([self.codes, codes])

        def _dist(self, q):
            return np.unpackbits(q[:, None, :] ^ self.codes[None], axis=2).sum(2)

        def search(self, q, k):
            d = self._dist(q)
            order = np.lexsort((-np.arange(d.shape[1])[None].repeat(len(q), 0), d), axis=-1)[:, :k]
            return np.take_along_axis(d, order, 1).astype(np.int32), order.astype(np.int64)

        def range_search(self, q, radius):
            d = self._dist(q)
            hits = [np.random.default_rng(0).permutation(np.flatnonzero(row < radius)) for row in d]
            lims = np.concatenate([[0], np.cumsum([len(h) for h in hits])])
            idx = np.concatenate(hits).astype(np.int64)
            return lims, np.concatenate([row[h] for row, h in zip(d, hits)]).astype(np.float32), idx


def test_faiss_tie_order_is_not_trusted(monkeypatch):
    # Any exact answer faiss may give (here: ties the other way round) ends in database order.
    monkeypatch.setitem(sys.modules, "faiss", ContraryFaiss)
    q, db = tied_case(12, 17, 400, 12)
    index = CodeIndex(pack_codes(db), 12, use_faiss=True)
    raw = ContraryFaiss.IndexBinaryFlat(16)
    raw.add(pack_codes(db))
    for k in (1, 5, 37):
        ref_i, ref_d = reference(q > 0, db > 0, k)
        assert any(set(a) != set(b) for a, b in zip(raw.search(pack_codes(q), k)[1], ref_i))
        idx, dist = index.search(q, k)
        np.testing.assert_array_equal(idx, ref_i)
        np.testing.assert_array_equal(dist, ref_d)


@pytest.mark.parametrize("engine", ["contrary", *ENGINES])
def test_padding_bits_of_the_database_are_ignored(monkeypatch, engine):
    # Bits past K in the last byte of a database row are not part of the code: hamming_ranking
    # drops them, and faiss (which counts whole bytes) must not see them either.
    if engine == "contrary":
        monkeypatch.setitem(sys.modules, "faiss", ContraryFaiss)
    q, db = tied_case(10, 9, 120, 10)
    packed = pack_codes(db)
    packed[::3, -1] |= 0b00111111  # the 6 padding bits of 10-bit codes, set on every third row
    kept = packed.copy()
    index = CodeIndex(packed, 10, use_faiss=engine is not False)
    for k in (1, 7, 119):
        idx, dist = index.search(q, k)
        ref_i, ref_d = reference(q > 0, db > 0, k)
        np.testing.assert_array_equal(idx, ref_i)
        np.testing.assert_array_equal(dist, ref_d)
    np.testing.assert_array_equal(packed, kept)  # the caller's codes are left as they were


@pytest.mark.parametrize("use_faiss", ENGINES)
def test_query_forms_agree(use_faiss):
    rng = np.random.default_rng(3)
    db = rng.normal(size=(120, 20)).astype(np.float32)
    q = rng.normal(size=(6, 20)).astype(np.float32)
    q[:, 2] = 0.0  # sign(0) = +1
    index = CodeIndex(torch.from_numpy(pack_codes(db)), 20, use_faiss=use_faiss)
    expected = reference(q >= 0, db >= 0, 9)
    for form in (q, torch.from_numpy(q), q >= 0, np.where(q >= 0, 1, -1).astype(np.int8), pack_codes(q),
                 torch.from_numpy(pack_codes(q))):
        idx, dist = index.search(form, 9)
        np.testing.assert_array_equal(idx, expected[0])
        np.testing.assert_array_equal(dist, expected[1])


@pytest.mark.parametrize("use_faiss", ENGINES)
def test_degenerate_cases(use_faiss):
    db = np.array([[1, -1, 1, 1, -1, -1, 1, 1, 1, -1]], np.int8)
    one = CodeIndex(pack_codes(db), 10, use_faiss=use_faiss)
    assert one.ids is None and one.labels is None and one.classes is None and one.meta == {}
    idx, dist = one.search(np.array([[1] * 10]), 5)  # k > N: N results
    assert idx.tolist() == [[0]] and dist.tolist() == [[4]]
    idx, dist = one.search(np.zeros((0, 10)), 3)  # no query
    assert idx.shape == (0, 1) and dist.shape == (0, 1)
    q, dbs = tied_case(1, 4, 30, 16)
    idx, _ = CodeIndex(pack_codes(dbs), 16, use_faiss=use_faiss).search(q, 50)
    np.testing.assert_array_equal(idx, reference(q > 0, dbs > 0, 30)[0])


@pytest.mark.parametrize("call, match", [
    (lambda ix: ix.search(np.ones((2, 9)), 3), "K=10"),
    (lambda ix: ix.search(np.ones((2, 3), np.uint8), 3), r"\(Q, 2\)"),
    (lambda ix: ix.search(np.full((2, 2), 255, np.uint8), 3), "past bit K"),
    (lambda ix: ix.search(np.ones((2, 10)), 0), "k must"),
    (lambda ix: ix.search(np.ones((2, 10)), 2.0), "k must"),
    (lambda ix: ix.search(np.ones(10), 1), "K=10"),
])
def test_search_errors(call, match):
    index = CodeIndex(pack_codes(np.ones((3, 10))), 10, use_faiss=False)
    with pytest.raises(ValueError, match=match):
        call(index)


@pytest.mark.parametrize("kwargs, match", [
    (dict(codes=np.ones((3, 2), np.int8), num_bits=10), "packed uint8"),
    (dict(codes=np.ones((3, 3), np.uint8), num_bits=10), r"\(N, 2\)"),
    (dict(codes=np.ones((0, 2), np.uint8), num_bits=10), "empty"),
    (dict(codes=np.ones((3, 2), np.uint8), num_bits=0), "num_bits"),
    (dict(codes=np.ones((3, 2), np.uint8), num_bits=10, ids=["a"]), "ids"),
    (dict(codes=np.ones((3, 2), np.uint8), num_bits=10, labels=np.ones((2, 4))), "labels"),
    (dict(codes=np.ones((3, 2), np.uint8), num_bits=10, labels=np.ones((3, 4)), classes=["x"]), "classes"),
])
def test_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CodeIndex(**kwargs)


def test_use_faiss_true_without_faiss(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss now raises ImportError
    with pytest.raises(ValueError, match="faiss is not installed"):
        CodeIndex(np.ones((3, 2), np.uint8), 10, use_faiss=True)
    assert not CodeIndex(np.ones((3, 2), np.uint8), 10).uses_faiss  # auto: searches without it


def test_load_exported_codes(tmp_path):
    rng = np.random.default_rng(5)
    outputs = rng.normal(size=(40, 12)).astype(np.float32)
    labels = (rng.random((40, 3)) < 0.5).astype(np.uint8)
    ids = [f"img{i}.jpg" for i in range(40)]
    path = tmp_path / "run_codes.npz"
    export_codes(path, outputs, labels, ids, 12, ["a", "b", "c"], {"dataset": "demo"})
    index = CodeIndex.load(path)
    assert len(index) == 40 and index.num_bits == 12 and index.classes == ("a", "b", "c")
    assert index.meta == {"dataset": "demo"} and index.ids[7] == "img7.jpg"
    np.testing.assert_array_equal(index.labels, labels)
    idx, dist = index.search(outputs[[7, 3]], 4)
    np.testing.assert_array_equal(idx, reference(outputs[[7, 3]] >= 0, outputs >= 0, 4)[0])
    assert dist[0, 0] == 0 and idx[0, 0] == 7  # an item finds itself first (ties: the earlier one)
