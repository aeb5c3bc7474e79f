"""Exact, fast retrieval metrics for Hamming ranking of binary hash codes.

The evaluation protocol is the one of HyP² Loss (Xu et al., "HyP² Loss: Beyond Hypersphere Metric
Space for Multi-label Image Retrieval", ACM MM 2022, Sec. 4.1): the sign of each network output is a
K-bit code, the database is ranked by Hamming distance to each query, and a database item is
relevant to a query when the two share at least one label. The reported metric is mAP@topk (the
official code uses topk = 5000 on NUS-WIDE, 1000 on MIRFLICKR-25K, the whole database on VOC).
Precision@N, recall@N, the precision-recall curve over Hamming radii and the precision within
Hamming radius 2 follow the usual deep-hashing protocol (e.g. Cao et al., "HashNet: Deep Learning
to Hash by Continuation", ICCV 2017, experiments section).

Conventions (all functions):

* Codes are ``(N, K)`` arrays (torch tensors or numpy arrays) of ±1 values or of reals taken by
  sign, where ``0`` (and ``-0.0``) maps to ``+1`` (``np.sign`` would give 0; we never do).
  ``bool`` arrays are bits (True is +1). Unsigned-integer arrays are rejected unless ``num_bits``
  is given, in which case both code arrays must be bit-packed ``uint8`` of shape
  ``(N, ceil(num_bits / 8))`` in :func:`numpy.packbits` order (first code bit is the most
  significant bit of byte 0; bit 1 is +1), as produced by :func:`pack_codes`.
* Labels are ``(N, C)`` arrays of 0/1 (or bool). Relevance: at least one shared label.
* Ranking: ascending Hamming distance, ties broken by database order (a stable sort). The official
  code ranks with an unstable ``np.argsort``; we deliberately do not copy that.
* ``topk=None`` means the whole database; a ``topk`` above the database size means the whole
  database; ``topk < 1`` raises ``ValueError``.
* Empty database: ``ValueError`` everywhere. Empty query set: ``ValueError`` for the metrics (a
  mean over no query is undefined); :func:`hamming_distance` / :func:`hamming_ranking` return
  empty ``(0, ·)`` arrays.
* Inputs are never modified. Metric values are python floats (or lists of floats). When a code
  array is a CUDA tensor the computation runs on that device.

How it is exact and fast. With bits ``q, b ∈ {0,1}^K`` the Hamming distance is
``d = q · (1 - 2b) + |b|``: one matrix product of the query bits, augmented with a column of ones,
against the database matrix ``[(1 - 2b); |b|]``. With the bits split into groups of at most 128,
every operand and every partial sum is an integer of magnitude at most 256, so the product is exact
in bfloat16 (CPU) or float16 (GPU) whatever the accumulation order; group distances are summed in
integers. Distances are non-negative, and the bits of a non-negative float read as a signed
integer of the same width are monotonic in its value, so the product's output *is* the sort key,
with no conversion pass. The top-k of a query is found without sorting the database: a per-query
distance threshold (estimated from a strided database sample with a safety margin, checked exactly,
and recomputed from the exact histogram for the rare rows where it falls short) selects the few
items within it; a stable sort of those by (query, distance) — a radix sort of 16-bit keys —
yields the ranking, ties in database order. Relevance of the top-k comes from label bitmasks; the
radius metrics need every item's relevance, which is a 0/1 label-matrix product (a sum of
non-negative terms is zero only when it is exactly zero, so ``> 0`` is exact in any precision),
folded with the distance into one histogram key. Query chunks are sized from N to bound memory and
run in parallel threads on the CPU (numpy releases the GIL). ``docs/evaluation.md`` has the
measurements.
"""
from __future__ import annotations

import threading
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from .validate import is_int

__all__ = [
    "binarize",
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
]

DEFAULT_NS: tuple[int, ...] = tuple(range(100, 1001, 100))

# Bits per matmul group: every partial sum stays an integer of magnitude <= 2 * 128 = 256, exactly
# representable in bfloat16/float16 whatever the accumulation order (see module docstring).
_GROUP_BITS = 128
# Database items sampled to estimate each query's top-k distance threshold.
_SAMPLE_SIZE = 16384
# Safety margin of the sampled threshold, in standard deviations of the sampled count.
_SAMPLE_Z = 2.0
# Bound the columns of a query's boundary tie group when it needs less than this share of it.
_SHORT_FRAC = 0.9
# Budget for the per-chunk dense work arrays ((chunk, N) distances, masks, histogram keys) and for
# the compacted candidate entries; together they bound the peak extra memory (~0.5 GB).
_DENSE_BYTES = 256 * 2**20
_ENTRY_BYTES = 256 * 2**20
_BYTES_PER_DENSE = 10  # matmul out 2-4 B (+2 B group sum) + mask 1 B + histogram key 2-4 B + 1 B
_BYTES_PER_ENTRY = 64  # candidates: flat index, key, order, distance; top-k: indices, relevance
_MAX_CHUNK = 256
# Query chunks processed concurrently on the CPU (numpy releases the GIL in the heavy steps).
_MAX_WORKERS = 4
# CPU selection and histograms run on numpy; tests set False to run the torch (GPU) code on the CPU.
_NUMPY_ON_CPU = True


# ----------------------------------------------------------------------------------------------
# Code and label normalisation
# ----------------------------------------------------------------------------------------------


def _is_tensor(x: Any) -> bool:
    return isinstance(x, torch.Tensor)


def _to_tensor(x: Any, name: str) -> torch.Tensor:
    """A torch view of ``x`` (no copy for numpy / torch input); never written to."""
    if _is_tensor(x):
        return x.detach()
    if isinstance(x, np.ndarray):
        if x.dtype == object:
            raise ValueError(f"{name}: object arrays are not supported; pass a numeric array")
        if x.dtype.byteorder == ">":
            x = x.astype(x.dtype.newbyteorder("="))
        with warnings.catch_warnings():
            # torch warns about read-only arrays because tensors could write to them; we never do.
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(np.ascontiguousarray(x))
    raise ValueError(f"{name}: expected a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def _unpack_tensor(packed: torch.Tensor, num_bits: int, name: str) -> torch.Tensor:
    """(N, ceil(num_bits/8)) uint8 -> (N, num_bits) bool, numpy.packbits (big-endian) bit order."""
    if packed.dtype != torch.uint8:
        raise ValueError(f"{name}: packed codes must be uint8, got {packed.dtype}")
    if packed.dim() != 2:
        raise ValueError(f"{name}: packed codes must be 2-D (N, ceil(num_bits/8)), got shape "
                         f"{tuple(packed.shape)}")
    nbytes = (num_bits + 7) // 8
    if packed.shape[1] != nbytes:
        raise ValueError(f"{name}: packed codes have {packed.shape[1]} bytes per row but "
                         f"num_bits={num_bits} needs ceil({num_bits}/8)={nbytes}")
    shifts = torch.arange(7, -1, -1, device=packed.device, dtype=torch.uint8)
    bits = (packed.unsqueeze(-1) >> shifts).bitwise_and_(1).bool()
    return bits.reshape(packed.shape[0], nbytes * 8)[:, :num_bits]


def _as_bits(codes: Any, name: str, num_bits: int | None = None) -> torch.Tensor:
    """Codes -> (N, K) bool tensor on the codes' device, True for +1 (value >= 0)."""
    t = _to_tensor(codes, name)
    if num_bits is not None:
        if not is_int(num_bits) or num_bits < 1:
            raise ValueError(f"num_bits must be a positive int, got {num_bits!r}")
        return _unpack_tensor(t, int(num_bits), name)
    if t.dim() != 2:
        raise ValueError(f"{name}: codes must be 2-D (N, K), got shape {tuple(t.shape)}")
    if t.shape[1] < 1:
        raise ValueError(f"{name}: codes have zero bits (shape {tuple(t.shape)})")
    if t.dtype == torch.bool:
        return t
    if t.dtype in (torch.uint8, torch.uint16, torch.uint32, torch.uint64):
        raise ValueError(f"{name}: unsigned {t.dtype} codes are ambiguous; pass num_bits=K for "
                         f"bit-packed codes, or ±1 / real codes as a signed or float array")
    if t.is_complex():
        raise ValueError(f"{name}: complex codes are not supported")
    if t.is_floating_point() and t.numel() and bool(torch.isnan(t).any()):
        raise ValueError(f"{name}: codes contain NaN, whose sign is undefined")
    return t >= 0


def binarize(codes: Any) -> torch.Tensor:
    """Sign of real-valued codes with 0 -> +1.

    Args:
        codes: ``(N, K)`` torch tensor or numpy array of reals (or bool bits, True = +1).
    Returns:
        ``(N, K)`` ``torch.int8`` tensor of ±1, on the input's device (CPU for numpy input).
    """
    bits = _as_bits(codes, "codes")
    return bits.to(torch.int8) * 2 - 1


def pack_codes(codes: Any) -> np.ndarray:
    """Pack codes to bits: ``(N, K)`` ±1 / real / bool codes -> ``(N, ceil(K/8))`` uint8.

    Same layout as ``np.packbits(bits, axis=1)`` with bit 1 for +1 (the first code bit is the most
    significant bit of byte 0; the last byte is zero-padded).
    """
    bits = _as_bits(codes, "codes").cpu().numpy()
    return np.packbits(bits, axis=1)


def unpack_codes(packed: Any, num_bits: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`: ``(N, ceil(num_bits/8))`` uint8 -> ``(N, num_bits)`` int8 ±1.
    """
    bits = _as_bits(packed, "packed", num_bits=num_bits).cpu().numpy()
    return bits.astype(np.int8) * 2 - 1


def _label_bits(labels: Any, name: str, n_rows: int) -> np.ndarray:
    """Validate ``(N, C)`` 0/1 labels -> ``(N, C)`` bool numpy array."""
    t = _to_tensor(labels, name)
    if t.dim() != 2:
        raise ValueError(f"{name}: labels must be 2-D (N, C), got shape {tuple(t.shape)}")
    if t.shape[0] != n_rows:
        raise ValueError(f"{name}: {t.shape[0]} label rows but {n_rows} codes")
    if t.dtype != torch.bool:
        if t.is_complex():
            raise ValueError(f"{name}: complex labels are not supported")
        if t.numel() and not bool(((t == 0) | (t == 1)).all()):
            raise ValueError(f"{name}: labels must be 0/1 (multi-hot), found other values")
    return (t != 0).cpu().numpy()


def _label_masks(bits: np.ndarray) -> np.ndarray:
    """``(N, C)`` bool labels -> ``(N, W)`` int64 bitmasks, ``W = max(1, ceil(C / 64))``."""
    packed = np.packbits(bits, axis=1)  # (N, ceil(C/8))
    width = max(1, -(-packed.shape[1] // 8)) * 8
    padded = np.zeros((packed.shape[0], width), dtype=np.uint8)
    padded[:, : packed.shape[1]] = packed
    return padded.view(np.int64)


def _check_topk(topk: int | None, n_db: int) -> int:
    if topk is None:
        return n_db
    if not is_int(topk):
        raise ValueError(f"topk must be a positive int or None (whole database), got {topk!r}")
    if topk < 1:
        raise ValueError(f"topk must be >= 1 (or None for the whole database), got {topk}")
    return min(int(topk), n_db)


def _check_ns(ns: int | Sequence[int], n_db: int, *, drop_large: bool) -> list[int]:
    ns_list = [ns] if isinstance(ns, (int, np.integer)) else list(ns)
    out = []
    for n in ns_list:
        if not is_int(n) or n < 1:
            raise ValueError(f"ns must hold positive ints, got {n!r}")
        if n > n_db:
            if drop_large:
                continue
            raise ValueError(f"N={n} exceeds the database size {n_db}; pass N <= {n_db}")
        out.append(int(n))
    return out


def _check_chunk(chunk_size: int | None) -> int | None:
    if chunk_size is None:
        return None
    if not is_int(chunk_size) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    return int(chunk_size)


# ----------------------------------------------------------------------------------------------
# Distance engine
# ----------------------------------------------------------------------------------------------


def _compute_dtype(device: torch.device) -> torch.dtype:
    """The fastest exact dtype for the distance and label products on ``device``."""
    if device.type != "cpu":
        return torch.float16
    try:
        if torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return torch.bfloat16
    except (AttributeError, RuntimeError):
        pass
    return torch.float32


_INT_VIEW = {torch.bfloat16: torch.int16, torch.float16: torch.int16, torch.float32: torch.int32}
# Every integer up to this magnitude is exactly representable in the dtype.
_EXACT_INT = {torch.bfloat16: 2**8, torch.float16: 2**11, torch.float32: 2**24}


def _db_operand(bits: torch.Tensor, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(N, G)`` bool bits -> ``(G+1, N)`` matmul operand ``[(1 - 2b)^T; |b|]`` in ``dtype``."""
    if device.type == "cpu":
        b = bits.numpy()
        op = np.empty((b.shape[1] + 1, b.shape[0]), dtype=np.int16)
        np.subtract(1, 2 * b.T.view(np.int8), out=op[:-1], dtype=np.int16)
        np.sum(b, axis=1, out=op[-1], dtype=np.int16)
        return torch.from_numpy(op).to(dtype)
    bt = bits.to(device).T.to(dtype)
    return torch.cat([1 - 2 * bt, bt.sum(0, keepdim=True)])


class _Engine:
    """Exact Hamming distances of query rows against the whole database, as monotone int keys.

    :meth:`keys` returns a ``(c, N)`` integer tensor whose order is the distance order: for
    K <= 128 it is the matmul output (non-negative integer-valued floats) reinterpreted as ints of
    the same width, with no conversion pass; for larger K it is the integer sum of the distances of
    the bit groups. :meth:`decode` maps keys to distances, :meth:`encode` distances to keys.
    Work buffers are per thread, so chunks may run in parallel threads.
    """

    def __init__(self, qbits: torch.Tensor, dbbits: torch.Tensor, device: torch.device):
        self.device = device
        self.num_queries, self.num_bits = qbits.shape
        self.num_db = dbbits.shape[0]
        self.dtype = _compute_dtype(device)
        k = self.num_bits
        n_groups = -(-k // _GROUP_BITS)
        edges = [round(i * k / n_groups) for i in range(n_groups + 1)]
        self.q_ops: list[torch.Tensor] = []
        self.db_ops: list[torch.Tensor] = []
        for lo, hi in zip(edges[:-1], edges[1:]):
            # d = [q, 1] . [(1 - 2b); |b|]  (module docstring)
            q_op = torch.ones((qbits.shape[0], hi - lo + 1), dtype=self.dtype, device=device)
            q_op[:, :-1] = qbits[:, lo:hi].to(device)
            self.q_ops.append(q_op)
            self.db_ops.append(_db_operand(dbbits[:, lo:hi], self.dtype, device))
        self.single = n_groups == 1
        self.key_dtype = _INT_VIEW[self.dtype] if self.single else (
            torch.int16 if k < 2**15 else torch.int32)
        self._local = threading.local()

    def db_subset(self, cols: slice) -> "_Engine":
        """The same engine over database columns ``cols`` (a contiguous copy; for sampling)."""
        sub = object.__new__(_Engine)
        sub.__dict__.update(self.__dict__)
        sub.db_ops = [op[:, cols].contiguous() for op in self.db_ops]
        sub.num_db = sub.db_ops[0].shape[1]
        sub._local = threading.local()
        return sub

    def scratch(self, name: str, rows: int, dtype: torch.dtype) -> torch.Tensor:
        """This thread's reused ``(rows, N)`` work buffer (a fresh large allocation would
        page-fault on every chunk)."""
        bufs = self._local.__dict__
        buf = bufs.get(name)
        if buf is None or buf.shape[0] < rows or buf.dtype != dtype:
            buf = torch.empty((rows, self.num_db), dtype=dtype, device=self.device)
            bufs[name] = buf
        return buf[:rows]

    def keys(self, rows: slice) -> torch.Tensor:
        """``(c, N)`` distance keys of query ``rows``: a view of this thread's buffer."""
        q_first = self.q_ops[0][rows]
        out = self.scratch("mm", q_first.shape[0], self.dtype)
        if self.single:
            torch.mm(q_first, self.db_ops[0], out=out)
            return out.view(self.key_dtype)
        acc = self.scratch("acc", q_first.shape[0], self.key_dtype)
        for g, (q_op, db_op) in enumerate(zip(self.q_ops, self.db_ops)):
            torch.mm(q_op[rows], db_op, out=out)
            if g == 0:
                acc.copy_(out)
            else:
                acc.add_(out.to(self.key_dtype))
        return acc

    def decode(self, keys: torch.Tensor, dtype: torch.dtype = torch.int32,
               out: torch.Tensor | None = None) -> torch.Tensor:
        """Keys (any shape) -> a new tensor (or ``out``) of integer distances."""
        src = keys.view(self.dtype) if self.single else keys
        if out is None:
            return src.to(dtype, copy=True)
        return out.copy_(src)

    def encode(self, dist: torch.Tensor) -> torch.Tensor:
        """Int distances (any shape) -> keys comparable with :meth:`keys` output."""
        if self.single:
            return dist.to(self.dtype).view(self.key_dtype)
        return dist.to(self.key_dtype)


def _prepare(query_codes: Any, db_codes: Any, num_bits: int | None) -> _Engine:
    qbits = _as_bits(query_codes, "query_codes", num_bits)
    dbbits = _as_bits(db_codes, "db_codes", num_bits)
    if qbits.shape[1] != dbbits.shape[1]:
        raise ValueError(f"query codes have {qbits.shape[1]} bits but database codes have "
                         f"{dbbits.shape[1]}; both must have the same K")
    if dbbits.shape[0] == 0:
        raise ValueError("db_codes is empty: the database must hold at least one item")
    if qbits.shape[1] > 2**24:
        raise ValueError(f"codes with {qbits.shape[1]} bits are not supported (max 2**24)")
    device = next((b.device for b in (qbits, dbbits) if b.device.type != "cpu"),
                  torch.device("cpu"))
    return _Engine(qbits, dbbits, device)


# ----------------------------------------------------------------------------------------------
# Chunking and parallel execution
# ----------------------------------------------------------------------------------------------


def _workers(device: torch.device) -> int:
    """Chunks processed concurrently: CPU threads (numpy releases the GIL), one on a GPU."""
    if device.type != "cpu":
        return 1
    return max(1, min(_MAX_WORKERS, torch.get_num_threads()))


def _dense_rows(n_db: int, workers: int = 1) -> int:
    """Query rows per chunk allowed by the dense ``(c, N)`` work-array budget."""
    return max(1, min(_MAX_CHUNK, _DENSE_BYTES // (workers * _BYTES_PER_DENSE * n_db)))


def _fixed_chunks(n_queries: int, rows: int) -> list[slice]:
    return [slice(s, min(s + rows, n_queries)) for s in range(0, n_queries, rows)]


def _adaptive_chunks(est_entries: np.ndarray, n_db: int, chunk_size: int | None,
                     workers: int) -> list[slice]:
    """Query slices whose dense arrays and estimated candidate entries fit the memory budget."""
    if chunk_size is not None:
        return _fixed_chunks(len(est_entries), chunk_size)
    max_rows = _dense_rows(n_db, workers)
    max_entries = _ENTRY_BYTES // (workers * _BYTES_PER_ENTRY)
    chunks, start, acc = [], 0, 0
    for i, e in enumerate(est_entries.tolist()):
        if i > start and (i - start >= max_rows or acc + e > max_entries):
            chunks.append(slice(start, i))
            start, acc = i, 0
        acc += e
    if start < len(est_entries):
        chunks.append(slice(start, len(est_entries)))
    return chunks


def _run_chunks(fn: Callable[[slice], Any], chunks: list[slice], workers: int) -> Iterator[Any]:
    """``map(fn, chunks)`` in order, with at most ``workers`` chunks in flight."""
    if workers <= 1 or len(chunks) <= 1:
        yield from map(fn, chunks)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque = deque()
        for sl in chunks:
            pending.append(pool.submit(fn, sl))
            if len(pending) >= workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _flatnonzero(mask: torch.Tensor) -> torch.Tensor:
    """Ascending flat positions of the True entries of a bool tensor -> int64 1-D."""
    if mask.device.type == "cpu" and _NUMPY_ON_CPU:
        return torch.from_numpy(np.flatnonzero(mask.numpy()))
    return torch.nonzero(mask.reshape(-1)).squeeze(1)


# ----------------------------------------------------------------------------------------------
# Histograms and thresholds
# ----------------------------------------------------------------------------------------------


def _row_histograms(eng: _Engine, keys: torch.Tensor,
                    rel: torch.Tensor | None = None) -> torch.Tensor:
    """Per-row counts of each distance: ``(c, N)`` distance keys -> ``(c, K+1)`` int64.

    With ``rel`` (``(c, N)`` 0/1 in the compute dtype, from :meth:`_Labels.relevant_dense`;
    overwritten) returns ``(c, 2, K+1)``: counts of [irrelevant, relevant] items.
    """
    c, k = keys.shape[0], eng.num_bits
    bins = (k + 1) * (1 if rel is None else 2)
    kdt = torch.int16 if bins < 2**15 else torch.int32
    out = eng.scratch("hist", c, kdt)
    if rel is None:
        key = eng.decode(keys, out=out)
    elif eng.single and bins <= _EXACT_INT[eng.dtype]:
        # key = distance + (K+1) * relevant, computed in the float dtype (exact: <= 2K+1).
        key = out.copy_(torch.add(keys.view(eng.dtype), rel, alpha=k + 1, out=rel))
    else:
        key = eng.decode(keys, out=out)
        key.add_(rel.to(kdt), alpha=k + 1)
    if key.device.type == "cpu" and _NUMPY_ON_CPU:
        # Row by row: numpy's bincount is fastest on cache-sized int arrays.
        kn = key.numpy()
        counts = torch.from_numpy(np.stack([np.bincount(r, minlength=bins) for r in kn])
                                  if c else np.zeros((0, bins), np.int64))
    else:
        key = key.to(torch.int64).add_(torch.arange(c, device=key.device).mul_(bins)[:, None])
        counts = torch.bincount(key.view(-1), minlength=c * bins).view(c, bins)
    return counts if rel is None else counts.view(c, 2, k + 1)


def _thresholds(cum_counts: torch.Tensor, need: float | torch.Tensor, num_bits: int,
                ) -> torch.Tensor:
    """Smallest distance t with ``cum_counts[:, t] >= need`` (clamped to K): ``(c,)`` int64."""
    if isinstance(need, torch.Tensor):
        need = need.unsqueeze(1)
    return (cum_counts < need).sum(1).clamp_(max=num_bits)


def _sampled_thresholds(eng: _Engine, depth: int,
                        ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Per-query selection bounds expected to hold the top ``depth``, for all queries.

    The top ``depth`` of a query is every item closer than some distance ``t`` plus the first
    ``rem`` items at distance ``t`` in database order. From a strided database sample (the whole
    database when N < 2 * _SAMPLE_SIZE, where everything below is exact) we estimate ``t`` and a
    column ``p`` before which the first ``rem`` items at distance ``t`` lie, both with a safety
    margin; selecting the items at distance < t anywhere and at distance t before column p then
    usually holds the top ``depth`` — :func:`_select` checks, and the caller recomputes the rare
    rows that fall short. The column bound matters when the tie group at ``t`` is much larger
    than ``rem`` (few bits, or trained codes with many duplicates).

    Returns thresholds ``(Q,)`` int64, column bounds ``(Q,)`` int64 (N: no bound) and the
    estimated number of selected items ``(Q,)`` (for sizing chunks).
    """
    n, k = eng.num_db, eng.num_bits
    stride = max(1, n // _SAMPLE_SIZE)
    sample = eng if stride == 1 else eng.db_subset(slice(None, None, stride))
    scale = n / sample.num_db
    z = 0.0 if stride == 1 else _SAMPLE_Z
    slack = 0.0 if stride == 1 else 1.0

    def upper(count: torch.Tensor) -> torch.Tensor:  # a count plus its sampling margin
        return count + z * count.clamp(min=0).sqrt() + slack

    need = upper(torch.tensor(depth / scale, dtype=torch.float64)).item()
    thr = torch.empty(eng.num_queries, dtype=torch.int64, device=eng.device)
    cols = torch.empty(eng.num_queries, dtype=torch.int64, device=eng.device)
    est = np.empty(eng.num_queries, dtype=np.int64)

    def run(sl: slice) -> None:
        keys = sample.keys(sl)
        hist = _row_histograms(sample, keys)
        cum = hist.cumsum(1)
        t = _thresholds(cum, need, k)
        at = hist.gather(1, t.unsqueeze(1)).squeeze(1).to(torch.float64)  # sample items at t
        below = cum.gather(1, t.unsqueeze(1)).squeeze(1).to(torch.float64) - at
        # rem in sample units, pessimistic: few items below t, and a margin on the tie count.
        rem = upper(depth / scale - (below - z * below.sqrt()).clamp(min=0))
        p = torch.full_like(t, n)
        short = torch.nonzero(rem < _SHORT_FRAC * at).squeeze(1)  # a bound pays off
        if short.numel():
            # Sample column of the ceil(rem)-th tie: the bound is the database column after it.
            ties = keys.index_select(0, short) == sample.encode(t[short]).unsqueeze(1)
            flat = _flatnonzero(ties)
            starts = torch.arange(short.numel() + 1, device=eng.device) * sample.num_db
            bounds = torch.searchsorted(flat, starts)
            nth = rem[short].ceil().to(torch.int64).clamp_(min=1)
            found = bounds.diff() >= nth
            pos = (bounds[:-1] + nth - 1).clamp_(0, max(0, flat.numel() - 1))
            col = flat[pos] - starts[:-1] if flat.numel() else torch.zeros_like(pos)
            p[short] = torch.where(found, (col + 1) * stride, n).clamp_(max=n)
        thr[sl], cols[sl] = t, p
        est[sl] = ((below + torch.minimum(at, rem)) * scale).cpu().numpy()

    workers = _workers(eng.device)
    rows = min(_dense_rows(sample.num_db, workers), -(-eng.num_queries // workers))
    for _ in _run_chunks(run, _fixed_chunks(eng.num_queries, max(1, rows)), workers):
        pass
    return thr, cols, est


# ----------------------------------------------------------------------------------------------
# Stable top-L selection
# ----------------------------------------------------------------------------------------------


def _select_numpy(eng: _Engine, keys: torch.Tensor, thr: torch.Tensor, depth: int,
                  cols: torch.Tensor | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CPU version of :func:`_select` on numpy (its nonzero and 16-bit radix sort are fastest)."""
    c, n = keys.shape
    k = eng.num_bits
    kn = keys.numpy()
    mask = eng.scratch("mask", c, torch.bool).numpy()
    enc = eng.encode(thr.cpu()).numpy()
    np.less_equal(kn, enc[:, None], out=mask)
    if cols is not None:  # beyond its column bound a row keeps only distances < threshold
        for r, p in enumerate(cols.tolist()):
            if p < n:
                np.less(kn[r, p:], enc[r], out=mask[r, p:])
    flat = np.flatnonzero(mask)  # ascending: row-major (query, database index) order
    row_starts = np.arange(c + 1, dtype=np.int64) * n
    bounds = np.searchsorted(flat, row_starts)
    counts = np.diff(bounds)
    ok = counts >= depth
    if flat.size == 0:
        return np.zeros((c, depth), np.int64), np.zeros((c, depth), np.int32), ok
    dist = eng.decode(torch.from_numpy(kn.reshape(-1).take(flat))).numpy()
    # Sort key (query, distance); the stable sort keeps database order within ties. numpy's
    # stable sort of 16-bit integers is a radix sort: O(M).
    kdt = np.uint16 if c * (k + 1) <= 2**16 else np.int64
    skey = np.repeat(np.arange(c, dtype=kdt), counts)
    skey *= kdt(k + 1)
    skey += dist.astype(kdt, copy=False)
    order = np.argsort(skey, kind="stable")
    del skey
    take = bounds[:-1, None] + np.arange(depth)
    np.minimum(take, flat.size - 1, out=take)  # rows that are not ok read junk, never overflow
    sel = order.take(take)
    idx = flat.take(sel)
    idx -= row_starts[:-1, None]
    np.clip(idx, 0, n - 1, out=idx)
    return idx, dist.take(sel), ok


def _select_torch(eng: _Engine, keys: torch.Tensor, thr: torch.Tensor, depth: int,
                  cols: torch.Tensor | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Device (CUDA) version of :func:`_select` in torch ops; same results as the numpy one."""
    c, n = keys.shape
    dev = keys.device
    k = eng.num_bits
    enc = eng.encode(thr).unsqueeze(1)
    if cols is None:
        mask = keys <= enc
    else:  # keys < enc + 1 is keys <= enc (integer keys; bit patterns of integer floats)
        mask = keys < enc + (torch.arange(n, device=dev) < cols.unsqueeze(1))
    flat = torch.nonzero(mask.view(-1)).squeeze(1)
    del mask
    row_starts = torch.arange(c + 1, device=dev, dtype=torch.int64) * n
    bounds = torch.searchsorted(flat, row_starts)
    counts = bounds.diff()
    ok = (counts >= depth).cpu().numpy()
    if flat.numel() == 0:
        return np.zeros((c, depth), np.int64), np.zeros((c, depth), np.int32), ok
    dist = eng.decode(keys.reshape(-1)[flat])
    skey = torch.repeat_interleave(torch.arange(c, device=dev, dtype=torch.int64), counts,
                                   output_size=flat.numel())
    skey.mul_(k + 1).add_(dist)
    order = torch.sort(skey, stable=True).indices
    del skey
    take = (bounds[:-1].unsqueeze(1) + torch.arange(depth, device=dev)).clamp_(max=flat.numel() - 1)
    sel = order[take]
    idx = (flat[sel] - row_starts[:-1].unsqueeze(1)).clamp_(0, n - 1)
    return idx.cpu().numpy(), dist[sel].cpu().numpy(), ok


def _select(eng: _Engine, keys: torch.Tensor, thr: torch.Tensor, depth: int,
            cols: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stable top-``depth`` of each row of ``keys`` among its selected items.

    Row r selects the items at distance < thr[r], and those at distance == thr[r] in columns
    < cols[r] (all columns when ``cols`` is None). When at least ``depth`` items are selected they
    hold the row's top ``depth``: every item closer than thr[r] is selected, and the items at
    thr[r] are taken in database order.

    Args:
        keys: ``(c, N)`` distance keys from :meth:`_Engine.keys`. thr, cols: ``(c,)`` int64.
    Returns:
        indices ``(c, depth)`` int64 and distances ``(c, depth)`` int32 (numpy), ranked by
        (distance, database index), and ok ``(c,)`` bool: rows with fewer than ``depth`` selected
        items are not ok and their results are junk.
    """
    if keys.device.type == "cpu" and _NUMPY_ON_CPU:
        return _select_numpy(eng, keys, thr, depth, cols)
    return _select_torch(eng, keys, thr, depth, cols)


def _topk_chunks(eng: _Engine, depth: int, chunk_size: int | None,
                 finish: Callable[[slice, np.ndarray, np.ndarray], Any]) -> Iterator[Any]:
    """For each query chunk, ``finish(slice, indices (c, depth) int64, distances (c, depth)
    int32)`` of the stable ranking, run in the worker; yields its results in chunk order."""
    n, k = eng.num_db, eng.num_bits
    if eng.num_queries == 0:
        return
    if depth >= n:  # the whole database: every item is within distance K
        thr = torch.full((eng.num_queries,), k, dtype=torch.int64, device=eng.device)
        cols = torch.full_like(thr, n)
        est = np.full(eng.num_queries, n, dtype=np.int64)
    else:
        thr, cols, est = _sampled_thresholds(eng, depth)
    workers = _workers(eng.device)

    def run(sl: slice) -> Any:
        keys = eng.keys(sl)
        idx, dist, ok = _select(eng, keys, thr[sl], depth, cols[sl])
        if not ok.all():
            # The sampled bounds fell short for these rows: redo them with the exact threshold.
            bad = torch.from_numpy(np.flatnonzero(~ok)).to(eng.device)
            bkeys = keys.index_select(0, bad)
            cum = _row_histograms(eng, bkeys).cumsum_(1)
            bidx, bdist, bok = _select(eng, bkeys, _thresholds(cum, float(depth), k), depth)
            assert bok.all()
            idx[~ok] = bidx
            dist[~ok] = bdist
        return finish(sl, idx, dist)

    yield from _run_chunks(run, _adaptive_chunks(est, n, chunk_size, workers), workers)


# ----------------------------------------------------------------------------------------------
# Relevance
# ----------------------------------------------------------------------------------------------


@dataclass
class _Labels:
    query: np.ndarray  # (Q, W) int64 label bitmasks
    db_words: list[np.ndarray]  # W arrays (N,) int64: word w of every database bitmask
    q_op: torch.Tensor  # (Q, C) 0/1 in the engine's compute dtype, on its device
    db_op: torch.Tensor  # (C, N) 0/1, idem

    def relevant(self, q_rows: slice, db_idx: np.ndarray) -> np.ndarray:
        """``(c, L)`` database indices -> ``(c, L)`` bool relevance to queries ``q_rows``."""
        q = self.query[q_rows]
        out = (self.db_words[0].take(db_idx) & q[:, :1]) != 0
        for w in range(1, len(self.db_words)):
            out |= (self.db_words[w].take(db_idx) & q[:, w: w + 1]) != 0
        return out

    def relevant_dense(self, eng: _Engine, q_rows: slice) -> torch.Tensor:
        """``(c, N)`` relevance as 0/1 in the compute dtype: a view of this thread's buffer.

        The product of the 0/1 label matrices counts shared labels; a sum of non-negative terms
        rounds to zero only when it is zero, so ``> 0`` is exact in any precision, and clamping
        to 1 yields exactly 0/1.
        """
        q = self.q_op[q_rows]
        out = eng.scratch("labels", q.shape[0], self.q_op.dtype)
        return torch.mm(q, self.db_op, out=out).clamp_(max=1)

    def total_relevant(self, eng: _Engine, q_rows: slice) -> np.ndarray:
        """``(c,)`` int64: the number of relevant database items of each query."""
        rel = self.relevant_dense(eng, q_rows)
        return rel.sum(1, dtype=torch.float64).round().to(torch.int64).cpu().numpy()


def _prepare_labels(query_labels: Any, db_labels: Any, eng: _Engine) -> _Labels:
    qb = _label_bits(query_labels, "query_labels", eng.num_queries)
    db = _label_bits(db_labels, "db_labels", eng.num_db)
    if qb.shape[1] != db.shape[1]:
        raise ValueError(f"query labels have {qb.shape[1]} classes but database labels have "
                         f"{db.shape[1]}")
    dm = _label_masks(db)
    dev, dt = eng.device, eng.dtype
    return _Labels(_label_masks(qb), [np.ascontiguousarray(dm[:, w]) for w in range(dm.shape[1])],
                   torch.from_numpy(qb).to(dev).to(dt),
                   torch.from_numpy(np.ascontiguousarray(db.T)).to(dev).to(dt))


def _prepare_all(query_codes, db_codes, query_labels, db_labels, num_bits,
                 ) -> tuple[_Engine, _Labels]:
    eng = _prepare(query_codes, db_codes, num_bits)
    if eng.num_queries == 0:
        raise ValueError("query_codes is empty: a mean over no query is undefined")
    return eng, _prepare_labels(query_labels, db_labels, eng)


def _average_precision(rel: np.ndarray) -> np.ndarray:
    """``(c, L)`` bool relevance in rank order -> ``(c,)`` float64 AP (0 with no relevant item)."""
    cum = np.cumsum(rel, axis=1, dtype=np.int64)
    prec = cum / np.arange(1, rel.shape[1] + 1)  # precision@r at every rank r
    prec *= rel
    hits = prec.sum(1)
    n_rel = cum[:, -1]
    return np.divide(hits, n_rel, out=np.zeros_like(hits), where=n_rel > 0)


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------


def hamming_distance(query_codes: Any, db_codes: Any, *, num_bits: int | None = None,
                     chunk_size: int | None = None) -> np.ndarray:
    """All pairwise Hamming distances (meant for small inputs and tests).

    Args:
        query_codes: ``(Q, K)`` codes. db_codes: ``(N, K)`` codes.
    Returns:
        ``(Q, N)`` int32 numpy array; ``[i, j]`` is the number of bits where the codes differ.
    """
    eng = _prepare(query_codes, db_codes, num_bits)
    rows = _check_chunk(chunk_size) or _dense_rows(eng.num_db)
    out = np.empty((eng.num_queries, eng.num_db), dtype=np.int32)
    for sl in _fixed_chunks(eng.num_queries, rows):
        out[sl] = eng.decode(eng.keys(sl)).cpu().numpy()
    return out


def hamming_ranking(query_codes: Any, db_codes: Any, topk: int | None = None, *,
                    num_bits: int | None = None, chunk_size: int | None = None,
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Stable Hamming ranking of the database for each query.

    Returns:
        ``(indices, distances)``: ``(Q, k)`` int64 database indices in rank order (ties in
        database order) and their ``(Q, k)`` int32 distances, ``k = min(topk, N)``.
    """
    eng = _prepare(query_codes, db_codes, num_bits)
    depth = _check_topk(topk, eng.num_db)
    chunk_size = _check_chunk(chunk_size)
    indices = np.empty((eng.num_queries, depth), dtype=np.int64)
    dists = np.empty((eng.num_queries, depth), dtype=np.int32)

    def store(sl: slice, idx: np.ndarray, dist: np.ndarray) -> None:
        indices[sl] = idx
        dists[sl] = dist

    for _ in _topk_chunks(eng, depth, chunk_size, store):
        pass
    return indices, dists


def mean_average_precision(query_codes: Any, db_codes: Any, query_labels: Any, db_labels: Any,
                           topk: int | None = None, *, num_bits: int | None = None,
                           chunk_size: int | None = None) -> float:
    """mAP@topk of Hamming ranking (HyP² Loss, ACM MM 2022, Sec. 4.1).

    AP of a query = (1 / R_k) * sum, over the ranks r <= k holding a relevant item, of
    precision@r, where R_k is the number of relevant items among the top k (AP = 0 when R_k = 0);
    mAP is the mean over queries, with ``k = min(topk, N)`` (``topk=None``: the whole database).

    Args:
        query_codes: ``(Q, K)`` codes. db_codes: ``(N, K)`` codes.
        query_labels: ``(Q, C)`` 0/1. db_labels: ``(N, C)`` 0/1.
        topk: ranking depth k. num_bits: K, for bit-packed codes. chunk_size: queries per chunk
            (default: chosen from N to bound memory).
    """
    eng, labels = _prepare_all(query_codes, db_codes, query_labels, db_labels, num_bits)
    depth = _check_topk(topk, eng.num_db)
    def ap_sum(sl: slice, idx: np.ndarray, _: np.ndarray) -> float:
        return float(_average_precision(labels.relevant(sl, idx)).sum())

    return sum(_topk_chunks(eng, depth, _check_chunk(chunk_size), ap_sum)) / eng.num_queries


def _precision_recall_at(rel: np.ndarray, total: np.ndarray, ns: list[int],
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Per-chunk sums over queries of precision@N and recall@N: ``(len(ns),)`` float64 each."""
    hits = np.cumsum(rel, axis=1, dtype=np.int64)[:, np.asarray(ns, dtype=np.int64) - 1]
    prec = (hits / np.asarray(ns, dtype=np.float64)).sum(0)
    tot = total.astype(np.float64)[:, None]
    rec = np.divide(hits, tot, out=np.zeros(hits.shape), where=tot > 0).sum(0)
    return prec, rec


def _at_n(query_codes, db_codes, query_labels, db_labels, ns, num_bits, chunk_size,
          ) -> tuple[np.ndarray, np.ndarray]:
    """Mean precision@N and recall@N over queries (float64 arrays aligned with ``ns``)."""
    eng, labels = _prepare_all(query_codes, db_codes, query_labels, db_labels, num_bits)
    ns_list = _check_ns(ns, eng.num_db, drop_large=False)
    chunk_size = _check_chunk(chunk_size)
    prec = np.zeros(len(ns_list))
    rec = np.zeros(len(ns_list))
    if not ns_list:
        return prec, rec
    def sums(sl: slice, idx: np.ndarray, _: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _precision_recall_at(labels.relevant(sl, idx), labels.total_relevant(eng, sl),
                                    ns_list)

    for p, r in _topk_chunks(eng, max(ns_list), chunk_size, sums):
        prec += p
        rec += r
    return prec / eng.num_queries, rec / eng.num_queries


def precision_at_n(query_codes: Any, db_codes: Any, query_labels: Any, db_labels: Any,
                   ns: int | Sequence[int] = DEFAULT_NS, *, num_bits: int | None = None,
                   chunk_size: int | None = None) -> list[float]:
    """Mean over queries of (relevant items among the top N) / N, for each N in ``ns``.

    Every N must satisfy 1 <= N <= database size (``ValueError`` otherwise).
    """
    prec, _ = _at_n(query_codes, db_codes, query_labels, db_labels, ns, num_bits, chunk_size)
    return [float(p) for p in prec]


def recall_at_n(query_codes: Any, db_codes: Any, query_labels: Any, db_labels: Any,
                ns: int | Sequence[int] = DEFAULT_NS, *, num_bits: int | None = None,
                chunk_size: int | None = None) -> list[float]:
    """Mean over queries of (relevant items among the top N) / (relevant items in the database).

    A query with no relevant item in the whole database counts 0 (it stays in the mean).
    Every N must satisfy 1 <= N <= database size (``ValueError`` otherwise).
    """
    _, rec = _at_n(query_codes, db_codes, query_labels, db_labels, ns, num_bits, chunk_size)
    return [float(r) for r in rec]


def _radius_sweep(eng: _Engine, labels: _Labels, chunk_size: int | None, depth: int,
                  finish: Callable[[slice, torch.Tensor, np.ndarray | None], Any],
                  ) -> Iterator[Any]:
    """One pass over the database per query chunk, for the radius metrics (and the ranking).

    For each chunk calls ``finish(slice, counts, rel)`` in the worker and yields its results in
    chunk order: ``counts`` ``(c, 2, K+1)`` int64 of [irrelevant, relevant] items at each
    distance, ``rel`` the ``(c, depth)`` bool relevance of the stable top-``depth`` (None when
    ``depth`` is 0). The chunk's distances serve both: the exact histogram gives exact top-k
    thresholds, so no sampling is needed.
    """
    k = eng.num_bits
    workers = _workers(eng.device)

    def run(sl: slice) -> Any:
        keys = eng.keys(sl)
        hist = _row_histograms(eng, keys, labels.relevant_dense(eng, sl))
        if not depth:
            return finish(sl, hist, None)
        thr = _thresholds(hist.sum(1).cumsum_(1), float(depth), k)
        idx, _, ok = _select(eng, keys, thr, depth)
        assert ok.all()
        return finish(sl, hist, labels.relevant(sl, idx))

    # Candidates per query: the top ``depth`` plus its boundary tie group (~2 * depth).
    est = np.full(eng.num_queries, min(eng.num_db, 2 * depth))
    yield from _run_chunks(run, _adaptive_chunks(est, eng.num_db, chunk_size, workers), workers)


def _curve_terms(hist: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """``(c, 2, K+1)`` counts -> per-query ``(c, K+1)`` precision and recall within radius r."""
    cum = hist.cumsum(2).cpu().numpy().astype(np.float64)
    relevant = cum[:, 1]
    retrieved = cum[:, 0] + relevant
    total = relevant[:, -1:]
    prec = np.divide(relevant, retrieved, out=np.zeros(relevant.shape), where=retrieved > 0)
    rec = np.divide(relevant, total, out=np.zeros(relevant.shape), where=total > 0)
    return prec, rec


def pr_curve(query_codes: Any, db_codes: Any, query_labels: Any, db_labels: Any, *,
             num_bits: int | None = None, chunk_size: int | None = None) -> dict[str, list]:
    """Precision and recall of the items within Hamming radius r, for r = 0..K.

    For each r and query: precision = relevant / retrieved among the items at distance <= r
    (0 when no item is within r), recall = relevant items within r / relevant items in the
    database (0 when the query has no relevant item); both are averaged over queries.

    Returns:
        ``{"radius": [0, ..., K], "precision": [K+1 floats], "recall": [K+1 floats]}``.
    """
    eng, labels = _prepare_all(query_codes, db_codes, query_labels, db_labels, num_bits)
    prec = np.zeros(eng.num_bits + 1)
    rec = np.zeros(eng.num_bits + 1)

    def sums(_: slice, hist: torch.Tensor, __: None) -> tuple[np.ndarray, np.ndarray]:
        p, r = _curve_terms(hist)
        return p.sum(0), r.sum(0)

    for p, r in _radius_sweep(eng, labels, _check_chunk(chunk_size), 0, sums):
        prec += p
        rec += r
    nq = eng.num_queries
    return {"radius": list(range(eng.num_bits + 1)),
            "precision": (prec / nq).tolist(), "recall": (rec / nq).tolist()}


def precision_within_radius(query_codes: Any, db_codes: Any, query_labels: Any, db_labels: Any,
                            radius: int = 2, *, num_bits: int | None = None,
                            chunk_size: int | None = None) -> float:
    """Mean over queries of the precision of the items within Hamming distance <= ``radius``.

    A query with no item within the radius counts precision 0 (the common convention; it keeps
    every query in the mean). A radius above K is the same as K.
    """
    if not is_int(radius) or radius < 0:
        raise ValueError(f"radius must be a non-negative int, got {radius!r}")
    curve = pr_curve(query_codes, db_codes, query_labels, db_labels, num_bits=num_bits,
                     chunk_size=chunk_size)
    return curve["precision"][min(int(radius), len(curve["precision"]) - 1)]


def evaluate_all(query_codes: Any, db_codes: Any, query_labels: Any, db_labels: Any,
                 topk: int | None = None, ns: Sequence[int] = DEFAULT_NS, *,
                 num_bits: int | None = None, chunk_size: int | None = None) -> dict[str, Any]:
    """Every metric from one pass over the database per query chunk.

    Returns the ``test`` section of the run JSON (docs/run-json.md) without ``codes_sample``::

        {"map": float, "topk": k,
         "precision_at_n": {"n": [...], "precision": [...]},
         "recall_at_n": {"n": [...], "recall": [...]},
         "pr_curve": {"radius": [0..K], "precision": [...], "recall": [...]},
         "precision_radius2": float}

    ``topk`` reports the depth used, ``min(topk, N)``; ``n`` keeps only the N <= database size.
    """
    eng, labels = _prepare_all(query_codes, db_codes, query_labels, db_labels, num_bits)
    k = _check_topk(topk, eng.num_db)
    ns_list = _check_ns(ns, eng.num_db, drop_large=True)
    depth = max([k, *ns_list])
    ap_sum = 0.0
    p_at = np.zeros(len(ns_list))
    r_at = np.zeros(len(ns_list))
    c_prec = np.zeros(eng.num_bits + 1)
    c_rec = np.zeros(eng.num_bits + 1)
    def sums(_: slice, hist: torch.Tensor, rel: np.ndarray) -> tuple:
        p, r = _curve_terms(hist)
        pn, rn = _precision_recall_at(rel, hist[:, 1].sum(1).cpu().numpy(), ns_list)
        return float(_average_precision(rel[:, :k]).sum()), p.sum(0), r.sum(0), pn, rn

    for ap, p, r, pn, rn in _radius_sweep(eng, labels, _check_chunk(chunk_size), depth, sums):
        ap_sum += ap
        c_prec += p
        c_rec += r
        p_at += pn
        r_at += rn
    nq = eng.num_queries
    curve_p = (c_prec / nq).tolist()
    return {
        "map": ap_sum / nq,
        "topk": k,
        "precision_at_n": {"n": ns_list, "precision": (p_at / nq).tolist()},
        "recall_at_n": {"n": ns_list, "recall": (r_at / nq).tolist()},
        "pr_curve": {"radius": list(range(eng.num_bits + 1)), "precision": curve_p,
                     "recall": (c_rec / nq).tolist()},
        "precision_radius2": curve_p[min(2, eng.num_bits)],
    }
